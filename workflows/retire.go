package workflows

import (
	"context"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/workflow"

	"github.com/keyflow/keyflow/kms"
)

// A version's retirement window (kms/retire.go): the RetirementWorkflow is
// a durable timer per version, like a key's DeletionWorkflow. SignalCancel
// ends it early; when it fires, one idempotent step (RetireDueVersion)
// destroys the material if the version is still pending retirement for
// that date. The metadata decides: a timer that was not stopped finds the
// retirement cancelled and destroys nothing.

func init() {
	// `key retire-version --now` under dual control: the approved
	// destruction runs here, as the requester.
	RegisterProtectedOp(kms.ApprovalRetireVersionNow, func(ctx workflow.Context, s ProtectedStep) error {
		var a *Activities
		return workflow.ExecuteActivity(withApprovalActivityOptions(ctx), a.RetireApprovedVersion, s).Get(ctx, nil)
	})
}

// RetirementParams start a version's retirement window.
type RetirementParams struct {
	Tenant         string
	KeyID          string
	Version        uint32
	RetirementDate time.Time
	Principal      string
	RequestID      string
}

// RetirementResult reports the outcome.
type RetirementResult struct {
	Cancelled bool
	State     kms.KeyState
	Copies    []string
}

// RetirementWorkflowID names the window of one version.
func RetirementWorkflowID(tenant, keyID string, version uint32) string {
	return fmt.Sprintf("retire/%s/%s/v%d", tenant, keyID, version)
}

// RetirementWorkflow waits for the retirement date (or SignalCancel) and
// then destroys the version's material.
func RetirementWorkflow(ctx workflow.Context, p RetirementParams) (*RetirementResult, error) {
	if waitUnlessCancelled(ctx, p.Tenant, p.RetirementDate) {
		return &RetirementResult{Cancelled: true}, nil
	}
	var a *Activities
	var res RetirementResult
	if err := workflow.ExecuteActivity(lifecycleOptions(ctx), a.RetireDueVersion, p).Get(ctx, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// RetireDueVersion destroys a version at the end of its window (kms
// RetireVersion with Due). The fact is "the retirement scheduled for this
// date", so a retry keeps its event ID.
func (a *Activities) RetireDueVersion(ctx context.Context, p RetirementParams) (*RetirementResult, error) {
	c := kms.Caller{Tenant: p.Tenant, Principal: p.Principal, RequestID: p.RequestID,
		IdempotencyKey: fmt.Sprintf("%s/%s/v%d/retirement-%d", p.Tenant, p.KeyID, p.Version, p.RetirementDate.Unix())}
	res, err := a.KMS.RetireVersion(ctx, c, kms.RetireVersionParams{KeyRef: p.KeyID, Version: p.Version, Due: p.RetirementDate})
	if err != nil {
		return nil, activityError(err)
	}
	return &RetirementResult{Cancelled: res.Cancelled, State: res.State, Copies: res.Copies}, nil
}

// RetireApprovedVersion runs an approved `retire-version --now`.
func (a *Activities) RetireApprovedVersion(ctx context.Context, s ProtectedStep) error {
	keyID, version, err := kms.ParseDisableTarget(s.Target)
	if err != nil {
		return activityError(err)
	}
	_, err = a.KMS.RetireVersion(ctx, approvedCaller(s), kms.RetireVersionParams{KeyRef: keyID, Version: version, Now: true})
	return activityError(err)
}

// ScheduleRetirement starts the retirement window of a version that
// kms.RetireVersion made pending retirement. A window cancelled and
// scheduled again replaces the old timer.
func (c *Client) ScheduleRetirement(ctx context.Context, kc kms.Caller, keyID string, version uint32, date time.Time) (string, error) {
	id := RetirementWorkflowID(kc.Tenant, keyID, version)
	_, err := c.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: id, TaskQueue: TaskQueue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_TERMINATE_EXISTING,
	}, RetirementWorkflow, RetirementParams{Tenant: kc.Tenant, KeyID: keyID, Version: version, RetirementDate: date, Principal: kc.Principal, RequestID: kc.RequestID})
	if err != nil {
		return id, fmt.Errorf("failed to start the retirement workflow: %w", err)
	}
	return id, nil
}

// CancelRetirement ends a version's retirement timer early, with a token
// that authorizes the signal (optoken.go).
func (c *Client) CancelRetirement(ctx context.Context, kc kms.Caller, keyID string, version uint32) error {
	id := RetirementWorkflowID(kc.Tenant, keyID, version)
	tok, err := mint(ctx, c.Tokens, kc, id, SignalCancel, "")
	if err != nil {
		return err
	}
	err = c.Temporal.SignalWorkflow(ctx, id, "", SignalCancel, CancelSignal{Principal: kc.Principal, RequestID: kc.RequestID, Token: tok})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("failed to signal the retirement workflow: %w", err)
	}
	return nil
}
