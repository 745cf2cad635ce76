package workflows

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/keyflow/keyflow/kms"
)

// RotateKeyParams start a rotation. No material: IDs and the requester only.
type RotateKeyParams struct {
	Tenant    string
	KeyID     string
	Principal string
	RequestID string
	// Rewrap asks for a rewrap of the registered data keys after the
	// rotation even if the key's policy does not (rotate_rewrap.go);
	// SkipRewrap suppresses it (remediation rewraps on its own).
	Rewrap     bool `json:",omitempty"`
	SkipRewrap bool `json:",omitempty"`
}

// RotateKeyResult reports the versions before and after, and the rewrap
// that followed, if any (RewrapProblem says why it did not finish).
type RotateKeyResult struct {
	KeyID           string
	PreviousVersion uint32
	NewVersion      uint32
	Rewrap          *RewrapResult `json:",omitempty"`
	RewrapProblem   string        `json:",omitempty"`
}

// RotateKeyWorkflow creates the key's next version and makes it primary.
// Old versions keep decrypting. Each step is an idempotent activity, so the
// workflow can be retried or replayed after a crash at any point.
func RotateKeyWorkflow(ctx workflow.Context, p RotateKeyParams) (*RotateKeyResult, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    200 * time.Millisecond,
			BackoffCoefficient: 2,
			MaximumInterval:    10 * time.Second,
			MaximumAttempts:    20,
		},
	})
	var a *Activities
	var next uint32
	if err := workflow.ExecuteActivity(ctx, a.NextVersion, KeyStep{Tenant: p.Tenant, KeyID: p.KeyID, Principal: p.Principal, RequestID: p.RequestID}).Get(ctx, &next); err != nil {
		return nil, err
	}
	step := KeyStep{Tenant: p.Tenant, KeyID: p.KeyID, Principal: p.Principal, RequestID: p.RequestID, Version: next}
	if err := workflow.ExecuteActivity(ctx, a.CreateVersion, step).Get(ctx, nil); err != nil {
		return nil, err
	}
	var prev uint32
	if err := workflow.ExecuteActivity(ctx, a.SetPrimaryVersion, step).Get(ctx, &prev); err != nil {
		return nil, err
	}
	res := &RotateKeyResult{KeyID: p.KeyID, PreviousVersion: prev, NewVersion: next}
	if err := rewrapAfterRotation(ctx, p, res); err != nil {
		return nil, err
	}
	return res, nil
}

// NextVersion returns the number the new version will have.
func (a *Activities) NextVersion(ctx context.Context, s KeyStep) (uint32, error) {
	n, err := a.KMS.NextVersion(ctx, caller(ctx, s), s.KeyID)
	return n, activityError(err)
}

// CreateVersion creates version s.Version (a no-op if it exists).
func (a *Activities) CreateVersion(ctx context.Context, s KeyStep) error {
	_, err := a.KMS.CreateVersion(ctx, caller(ctx, s), kms.CreateVersionParams{KeyID: s.KeyID, Version: s.Version})
	return activityError(err)
}

// SetPrimaryVersion makes s.Version primary and returns the previous one.
func (a *Activities) SetPrimaryVersion(ctx context.Context, s KeyStep) (uint32, error) {
	res, err := a.KMS.SetPrimaryVersion(ctx, caller(ctx, s), kms.SetPrimaryParams{KeyID: s.KeyID, Version: s.Version})
	if err != nil {
		return 0, activityError(err)
	}
	return res.PreviousPrimary, nil
}

// RotateKeyWorkflowID is one rotation per key at a time: a second request
// while one runs is refused with the running one's ID (RotateKey).
func RotateKeyWorkflowID(tenant, keyID string) string { return "rotate/" + tenant + "/" + keyID }

// RotateKey runs a rotation and waits for it.
func (c *Client) RotateKey(ctx context.Context, p RotateKeyParams) (*RotateKeyResult, string, error) {
	id := RotateKeyWorkflowID(p.Tenant, p.KeyID)
	run, err := c.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                       id,
		TaskQueue:                TaskQueue,
		WorkflowExecutionTimeout: 10 * time.Minute,
		// Not a silent join: the caller learns that its request did not
		// start anything, and which workflow to watch instead.
		WorkflowExecutionErrorWhenAlreadyStarted: true,
	}, RotateKeyWorkflow, p)
	var running *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &running) {
		return nil, id, &kms.Error{Code: kms.CodeConflict, Message: "a rotation of key " + p.KeyID + " is already running: " + id + "; this request started nothing"}
	}
	if err != nil {
		return nil, id, fmt.Errorf("failed to start rotation: %w", err)
	}
	var res RotateKeyResult
	if err := run.Get(ctx, &res); err != nil {
		return nil, id, DomainError(err)
	}
	return &res, id, nil
}
