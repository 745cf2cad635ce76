package workflows

import (
	"context"
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/keyflow/keyflow/kms"
)

// RemediationParams start the remediation of a compromised version
// (Version 0: the key itself).
type RemediationParams struct {
	Tenant    string
	KeyID     string
	Version   uint32
	Reason    string
	Principal string
	RequestID string
}

// RemediationResult is the remediation's report: what it did and what is
// still exposed.
type RemediationResult struct {
	KeyID      string
	Version    uint32
	NewVersion uint32
	Rewrapped  int
	Failed     int
	// Remaining registered data keys still under the compromised version;
	// -1 when the rewrap did not run.
	Remaining int
	Problems  []string
}

// RemediationWorkflow answers a compromise: 1. it marks the version
// COMPROMISED (already done when the compromise came from the API; the
// step is idempotent), 2. rotates the key to fresh material, 3. rewraps
// every registered data key away from the compromised version
// (RewrapWorkflow, a child with its own progress), 4. records the report
// (io.keyflow.key.compromise.remediated.v1). A step that fails does not stop
// the later ones: the report lists it, and what it leaves exposed.
func RemediationWorkflow(ctx workflow.Context, p RemediationParams) (*RemediationResult, error) {
	actx := lifecycleOptions(ctx)
	var a *Activities
	step := KeyStep{Tenant: p.Tenant, KeyID: p.KeyID, Principal: p.Principal, RequestID: p.RequestID, Version: p.Version}
	res := &RemediationResult{KeyID: p.KeyID, Version: p.Version, Remaining: -1, Problems: []string{}}
	if err := workflow.ExecuteActivity(actx, a.MarkCompromised, RemediationStep{KeyStep: step, Reason: p.Reason}).Get(ctx, nil); err != nil {
		return nil, err
	}
	wid := workflow.GetInfo(ctx).WorkflowExecution.ID

	rctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID: wid + "/rotate", WorkflowExecutionTimeout: 10 * time.Minute,
	})
	var rot RotateKeyResult
	if err := workflow.ExecuteChildWorkflow(rctx, RotateKeyWorkflow, RotateKeyParams{Tenant: p.Tenant, KeyID: p.KeyID, Principal: p.Principal, RequestID: p.RequestID, SkipRewrap: true}).Get(ctx, &rot); err != nil {
		res.Problems = append(res.Problems, "rotation: "+failureMessage(err))
	} else {
		res.NewVersion = rot.NewVersion
	}

	var from []uint32
	if p.Version != 0 {
		from = []uint32{p.Version}
	}
	wctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{WorkflowID: wid + "/rewrap"})
	var rw RewrapResult
	if err := workflow.ExecuteChildWorkflow(wctx, RewrapWorkflow, RewrapParams{Tenant: p.Tenant, KeyID: p.KeyID, FromVersions: from, Principal: p.Principal, RequestID: p.RequestID, AllowCompromised: true}).Get(ctx, &rw); err != nil {
		res.Problems = append(res.Problems, "rewrap: "+failureMessage(err))
	} else {
		res.Rewrapped, res.Failed, res.Remaining = rw.Rewrapped, rw.Failed, rw.Remaining
	}

	if err := workflow.ExecuteActivity(actx, a.ReportRemediation, RemediationReportStep{KeyStep: step, Result: *res}).Get(ctx, nil); err != nil {
		return nil, err
	}
	return res, nil
}

// failureMessage is the innermost message of a child's failure (no
// material is ever in one).
func failureMessage(err error) string {
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		if app.Type() != "" {
			return app.Type() + ": " + app.Message()
		}
		return app.Message()
	}
	return err.Error()
}

// RemediationStep is the input of MarkCompromised.
type RemediationStep struct {
	KeyStep
	Reason string
}

// RemediationReportStep is the input of ReportRemediation.
type RemediationReportStep struct {
	KeyStep
	Result RemediationResult
}

// MarkCompromised moves the version (or the key) to COMPROMISED; a no-op
// when it is already.
func (a *Activities) MarkCompromised(ctx context.Context, s RemediationStep) error {
	_, err := a.KMS.SetState(ctx, caller(ctx, s.KeyStep), kms.SetStateParams{KeyRef: s.KeyID, Version: s.Version, To: kms.StateCompromised, Reason: s.Reason})
	return activityError(err)
}

// ReportRemediation records the report.
func (a *Activities) ReportRemediation(ctx context.Context, s RemediationReportStep) error {
	r := s.Result
	return activityError(a.KMS.RecordRemediation(ctx, caller(ctx, s.KeyStep), kms.RemediationReport{
		KeyID: r.KeyID, Version: r.Version, NewVersion: r.NewVersion, Rewrapped: r.Rewrapped, Failed: r.Failed, Remaining: r.Remaining, Problems: r.Problems,
	}))
}

// StartRemediation starts the remediation of one compromised version,
// once: the workflow ID is the (tenant, key, version), and a second start
// (a redelivered event, a repeated compromise) finds the first and returns
// its ID.
func (c *Client) StartRemediation(ctx context.Context, kc kms.Caller, keyID string, version uint32, reason string) (string, error) {
	id := RemediationWorkflowID(kc.Tenant, keyID, version)
	_, err := c.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: id, TaskQueue: TaskQueue,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
	}, RemediationWorkflow, RemediationParams{Tenant: kc.Tenant, KeyID: keyID, Version: version, Reason: reason, Principal: kc.Principal, RequestID: kc.RequestID})
	if err != nil && !temporal.IsWorkflowExecutionAlreadyStartedError(err) {
		return id, fmt.Errorf("failed to start remediation: %w", err)
	}
	return id, nil
}

// RemediationWorkflowID is StartRemediation's workflow ID (for replies
// that name it before the remediation worker starts it).
func (c *Client) RemediationWorkflowID(tenant, keyID string, version uint32) string {
	return RemediationWorkflowID(tenant, keyID, version)
}
