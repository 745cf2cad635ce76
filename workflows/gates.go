package workflows

import (
	"context"
	"fmt"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/workflow"

	"github.com/keyflow/keyflow/kms"
)

// Protected key lifecycle operations (dual control). The rpc handlers
// check a request and park it for approval (workers/rpc/gates.go); once
// approved, the approval workflow runs the operation here, from the
// target, which carries the request's parameters (kms.DeletionTarget,
// kms.DisableTarget), as the requester.

func init() {
	RegisterProtectedOp(kms.ApprovalScheduleDeletion, func(ctx workflow.Context, s ProtectedStep) error {
		var a *Activities
		return workflow.ExecuteActivity(withApprovalActivityOptions(ctx), a.ScheduleApprovedDeletion, s).Get(ctx, nil)
	})
	// An approved import is a one-time permit that the requester's next
	// import of the key consumes (kms importGate): nothing to run here,
	// and the wrapped material never enters the workflow.
	RegisterProtectedOp(kms.ApprovalImport, func(workflow.Context, ProtectedStep) error { return nil })
	RegisterProtectedOp(kms.ApprovalDisable, func(ctx workflow.Context, s ProtectedStep) error {
		var a *Activities
		return workflow.ExecuteActivity(withApprovalActivityOptions(ctx), a.DisableApprovedKey, s).Get(ctx, nil)
	})
}

// approvedCaller is the requester, for the approved operation's own
// events; the fact is "approval X's operation".
func approvedCaller(s ProtectedStep) kms.Caller {
	return kms.Caller{Tenant: s.Tenant, Principal: s.Requester, RequestID: s.RequestID,
		IdempotencyKey: fmt.Sprintf("approval/%s/%s/%s", s.Tenant, s.ApprovalID, s.Operation)}
}

// ScheduleApprovedDeletion runs an approved schedule-deletion: the same
// two steps as the keys.scheduledeletion handler (kms.ScheduleDeletion,
// then the deletion workflow's timer), with the approved window. A retry
// that finds the key already pending deletion only (re)starts the timer,
// with the key's deletion date; the first attempt refuses a key that was
// scheduled by someone else in the meantime.
func (a *Activities) ScheduleApprovedDeletion(ctx context.Context, s ProtectedStep) error {
	if a.Temporal == nil {
		return activityError(&kms.Error{Code: kms.CodeInternal, Message: "the lifecycle workflows are not available on this worker"})
	}
	p, err := kms.ParseDeletionTarget(s.Target)
	if err != nil {
		return activityError(err)
	}
	c := approvedCaller(s)
	k, err := a.KMS.GetKey(ctx, c, p.KeyRef) // a plain read, no event
	if err != nil {
		return activityError(err)
	}
	if !k.Lifecycle.PendingDeletion || activity.GetInfo(ctx).Attempt == 1 {
		if k, err = a.KMS.ScheduleDeletion(ctx, c, p); err != nil {
			return activityError(err)
		}
	}
	if _, err := (&Client{Temporal: a.Temporal}).ScheduleDeletion(ctx, c, k); err != nil {
		return err // retried; the next attempt finds the key pending
	}
	return nil
}

// DisableApprovedKey runs an approved disable: the key (or version)
// becomes SUSPENDED. SetState is idempotent.
func (a *Activities) DisableApprovedKey(ctx context.Context, s ProtectedStep) error {
	keyID, version, err := kms.ParseDisableTarget(s.Target)
	if err != nil {
		return activityError(err)
	}
	_, err = a.KMS.SetState(ctx, approvedCaller(s), kms.SetStateParams{KeyRef: keyID, Version: version, To: kms.StateSuspended,
		Reason: "approved (approval " + s.ApprovalID + ")"})
	return activityError(err)
}
