package workflows

import (
	"context"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/workflow"

	"github.com/keyflow/keyflow/kms"
)

// DeletionParams start a scheduled destruction. DeletionDate is the date
// kms.ScheduleDeletion set; the workflow destroys nothing if the key's
// pending deletion no longer has that date (it was cancelled, and maybe
// scheduled again).
type DeletionParams struct {
	Tenant       string
	KeyID        string
	DeletionDate time.Time
	Principal    string
	RequestID    string
}

// DeletionResult reports the outcome.
type DeletionResult struct {
	Cancelled bool
	State     kms.KeyState
	Versions  []uint32
	Copies    []string
}

// CancelSignal is the payload of SignalCancel: who cancelled, and the
// token that authorizes it (optoken.go).
type CancelSignal struct {
	Principal string
	RequestID string
	Token     *kms.OpToken `json:",omitempty"`
}

// DestroyStep is the input of a destruction activity.
type DestroyStep struct {
	KeyStep
	DeletionDate time.Time
}

// DeletionWorkflow is the waiting period of a key pending deletion, a
// durable timer that SignalCancel ends early. When it fires, three
// idempotent steps destroy the key: DestroyMaterial (HSM objects, stored
// blobs, registered archives and backups), MarkDestroyed (the metadata
// says DESTROYED, and stays), DeleteRotationSchedule. The replica of a
// multi-region key, whose primary scheduled its deletion, runs the same
// workflow in its own region and then reports to the primary
// (replica_deletion.go).
func DeletionWorkflow(ctx workflow.Context, p DeletionParams) (*DeletionResult, error) {
	if waitUnlessCancelled(ctx, p.Tenant, p.DeletionDate) {
		return &DeletionResult{Cancelled: true}, nil
	}
	actx := lifecycleOptions(ctx)
	var a *Activities
	step := DestroyStep{KeyStep: KeyStep{Tenant: p.Tenant, KeyID: p.KeyID, Principal: p.Principal, RequestID: p.RequestID}, DeletionDate: p.DeletionDate}
	var res kms.DestroyResult
	if err := workflow.ExecuteActivity(actx, a.DestroyMaterial, step).Get(ctx, &res); err != nil {
		return nil, err
	}
	if res.Cancelled {
		return &DeletionResult{Cancelled: true}, nil
	}
	copies := res.Copies
	if err := workflow.ExecuteActivity(actx, a.MarkDestroyed, step).Get(ctx, &res); err != nil {
		return nil, err
	}
	if err := workflow.ExecuteActivity(actx, a.DeleteRotationSchedule, step.KeyStep).Get(ctx, nil); err != nil {
		return nil, err
	}
	if err := reportReplicaDestroyed(ctx, step); err != nil {
		return nil, err
	}
	return &DeletionResult{State: res.State, Versions: res.Versions, Copies: copies}, nil
}

// waitUnlessCancelled waits until date on a durable timer and reports
// whether an authorized SignalCancel ended the wait first (the timer is
// then cancelled). A cancel without a valid token is recorded and ignored:
// the timer runs on. A date already past returns at once. The deletion and
// retirement windows share it.
func waitUnlessCancelled(ctx workflow.Context, tenant string, date time.Time) (cancelled bool) {
	tokens, ledger, started := tokensRequired(ctx), &tokenLedger{}, workflow.GetInfo(ctx).WorkflowStartTime
	d := date.Sub(workflow.Now(ctx))
	if d <= 0 {
		return false
	}
	tctx, cancelTimer := workflow.WithCancel(ctx)
	defer cancelTimer()
	fired := false
	timer := workflow.NewTimer(tctx, d)
	cancels := workflow.GetSignalChannel(ctx, SignalCancel)
	for !fired && !cancelled {
		sel := workflow.NewSelector(ctx)
		sel.AddFuture(timer, func(workflow.Future) { fired = true })
		sel.AddReceive(cancels, func(c workflow.ReceiveChannel, _ bool) {
			var sig CancelSignal
			c.Receive(ctx, &sig)
			cancelled = !tokens || ledger.authorize(ctx, tokenRequest{Tenant: tenant, Principal: sig.Principal, Operation: SignalCancel, Token: sig.Token}, started)
		})
		sel.Select(ctx)
	}
	return cancelled
}

// destroyCaller is caller() for a destruction step: the fact is "the
// destruction scheduled for this date", so a retried step keeps its event
// ID, and a later deletion of the same key (after a cancelled one) gets
// new ones.
func destroyCaller(ctx context.Context, s DestroyStep) kms.Caller {
	c := caller(ctx, s.KeyStep)
	c.IdempotencyKey = fmt.Sprintf("%s/%s/deletion-%d/%s", s.Tenant, s.KeyID, s.DeletionDate.Unix(), activity.GetInfo(ctx).ActivityType.Name)
	return c
}

// DestroyMaterial destroys every copy of the key's material.
func (a *Activities) DestroyMaterial(ctx context.Context, s DestroyStep) (*kms.DestroyResult, error) {
	res, err := a.KMS.DestroyMaterial(ctx, destroyCaller(ctx, s), kms.DestroyParams{KeyID: s.KeyID, DeletionDate: s.DeletionDate})
	return res, activityError(err)
}

// MarkDestroyed records the destruction in the key's metadata.
func (a *Activities) MarkDestroyed(ctx context.Context, s DestroyStep) (*kms.DestroyResult, error) {
	res, err := a.KMS.MarkDestroyed(ctx, destroyCaller(ctx, s), kms.DestroyParams{KeyID: s.KeyID, DeletionDate: s.DeletionDate})
	return res, activityError(err)
}

// DeleteRotationSchedule deletes the key's rotation schedule, if any.
func (a *Activities) DeleteRotationSchedule(ctx context.Context, s KeyStep) error {
	if a.Temporal == nil {
		return nil
	}
	err := a.Temporal.ScheduleClient().GetHandle(ctx, RotationScheduleID(s.Tenant, s.KeyID)).Delete(ctx)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("failed to delete the rotation schedule: %w", err)
	}
	return nil
}

// ScheduleDeletion starts the destruction workflow of a key that
// kms.ScheduleDeletion put into pending deletion.
func (c *Client) ScheduleDeletion(ctx context.Context, kc kms.Caller, k *kms.Key) (string, error) {
	id := DeletionWorkflowID(k.Tenant, k.ID)
	_, err := c.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: id, TaskQueue: TaskQueue,
		// A deletion cancelled and scheduled again replaces the old
		// timer (which would destroy nothing, its date being stale).
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_TERMINATE_EXISTING,
	}, DeletionWorkflow, DeletionParams{Tenant: k.Tenant, KeyID: k.ID, DeletionDate: k.Lifecycle.DeletionDate, Principal: kc.Principal, RequestID: kc.RequestID})
	if err != nil {
		return id, fmt.Errorf("failed to start the deletion workflow: %w", err)
	}
	return id, nil
}

// CancelDeletion ends a key's deletion timer. The key's metadata is what
// counts (kms.CancelDeletion); this only stops the timer early.
func (c *Client) CancelDeletion(ctx context.Context, kc kms.Caller, keyID string) error {
	id := DeletionWorkflowID(kc.Tenant, keyID)
	tok, err := mint(ctx, c.Tokens, kc, id, SignalCancel, "")
	if err != nil {
		return err
	}
	err = c.Temporal.SignalWorkflow(ctx, id, "", SignalCancel, CancelSignal{Principal: kc.Principal, RequestID: kc.RequestID, Token: tok})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("failed to signal the deletion workflow: %w", err)
	}
	return nil
}
