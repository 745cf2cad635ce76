package workflows

import (
	"context"
	"fmt"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/workflow"

	"github.com/keyflow/keyflow/kms"
)

// Rotation and rewrap (issue #4, docs/lifecycle.md "Rotation and rewrap").
//
// After a rotation has made the new version primary, the registered
// wrapped data keys are still under the older versions. When the request
// asks for it (RotateKeyParams.Rewrap, `keyflow key rotate --rewrap`) or the
// key's lifecycle policy does (KeyLifecycle.RewrapOnRotation, which also
// covers the rotations its schedule starts), RotateKeyWorkflow continues
// into RewrapWorkflow as a child, under the key's one rewrap workflow ID
// (RewrapWorkflowID), so `keyflow rewrap status KEY` finds it with the
// progress query. Once the rewrap reports nothing remaining, the old
// versions can be retired (kms.RetireVersion).
//
// The step is behind workflow.GetVersion: histories recorded before it
// existed replay without it.

// rewrapAfterRotationChange is the GetVersion change ID of the step.
const rewrapAfterRotationChange = "rewrap-after-rotation"

// rewrapAfterRotation runs the rewrap step of a rotation when asked for,
// recording its counts in res. A rewrap that fails leaves the rotation
// done (the new version is primary): the failure is reported in
// res.RewrapProblem, and a later rewrap picks up where it stopped.
func rewrapAfterRotation(ctx workflow.Context, p RotateKeyParams, res *RotateKeyResult) error {
	if p.SkipRewrap {
		return nil
	}
	if workflow.GetVersion(ctx, rewrapAfterRotationChange, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return nil
	}
	want := p.Rewrap
	if !want {
		var a *Activities
		step := KeyStep{Tenant: p.Tenant, KeyID: p.KeyID, Principal: p.Principal, RequestID: p.RequestID, Version: res.NewVersion}
		if err := workflow.ExecuteActivity(ctx, a.RewrapOnRotation, step).Get(ctx, &want); err != nil {
			return err
		}
	}
	if !want {
		return nil
	}
	// The rewrap outlives a rotation cut short (its own history is
	// bounded by ContinueAsNew): abandoning it keeps it running.
	cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID:        RewrapWorkflowID(p.Tenant, p.KeyID),
		ParentClosePolicy: enumspb.PARENT_CLOSE_POLICY_ABANDON,
	})
	var rw RewrapResult
	err := workflow.ExecuteChildWorkflow(cctx, RewrapWorkflow, RewrapParams{
		Tenant: p.Tenant, KeyID: p.KeyID, Principal: p.Principal, RequestID: p.RequestID,
	}).Get(ctx, &rw)
	if err != nil {
		res.RewrapProblem = failureMessage(err)
		return nil
	}
	res.Rewrap = &rw
	return nil
}

// RewrapOnRotation reports whether the key's lifecycle policy asks its
// rotations to rewrap the registered data keys. A plain read: no event.
func (a *Activities) RewrapOnRotation(ctx context.Context, s KeyStep) (bool, error) {
	k, err := a.KMS.GetKey(ctx, kms.Caller{Tenant: s.Tenant, Principal: s.Principal, RequestID: s.RequestID}, s.KeyID)
	if err != nil {
		return false, activityError(err)
	}
	return k.Lifecycle.RewrapOnRotation, nil
}

// RewrapProgress asks the key's rewrap workflow (running or finished) for
// its progress. It answers kms.ErrNotFound when the key has had no rewrap
// workflow yet.
func (c *Client) RewrapProgress(ctx context.Context, tenant, keyID string) (*RewrapProgress, string, error) {
	id := RewrapWorkflowID(tenant, keyID)
	v, err := c.Temporal.QueryWorkflow(ctx, id, "", QueryProgress)
	if err != nil {
		if isNotFound(err) {
			return nil, id, &kms.Error{Code: kms.CodeNotFound, Message: "key " + keyID + " has no rewrap workflow"}
		}
		return nil, id, fmt.Errorf("failed to query the rewrap: %w", err)
	}
	var pr RewrapProgress
	if err := v.Get(&pr); err != nil {
		return nil, id, fmt.Errorf("failed to read the rewrap progress: %w", err)
	}
	return &pr, id, nil
}
