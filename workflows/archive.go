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

// Archival and recovery.
//
// ArchivalWorkflow moves a tenant's deactivated versions that are older
// than the retention age to the archive (kms.Service.ArchiveVersion). With
// an Interval it runs for ever on a timer: one pass, a durable sleep, the
// next pass, continuing as new every few passes so its history stays
// short. Without one it makes a single pass (keyflow archive run).
//
// RecoveryWorkflow restores one archived version once a principal other
// than the requester approves it, by signal (SignalRestoreDecision). If
// no decision arrives within the approval window, the request expires and
// nothing is restored. A requester's own approval is refused (and
// recorded as denied); the workflow keeps waiting for someone else. The
// governance work replaces the single approval with M-of-N.

// ArchivalParams start archival for one tenant. No material: IDs only.
type ArchivalParams struct {
	Tenant    string
	Principal string
	RequestID string
	// Retention is the age a deactivated version must reach; 0 means
	// kms.DefaultArchiveRetention (90 days).
	Retention time.Duration
	// Interval, when set, makes the workflow run a pass every Interval
	// until cancelled.
	Interval time.Duration
	// Passes counts passes across ContinueAsNew.
	Passes int
}

// ArchivalResult reports one pass.
type ArchivalResult struct {
	Archived []kms.VersionRef
	Failed   []kms.VersionRef
}

// ArchiveVersionStep is the input of the ArchiveVersion activity.
type ArchiveVersionStep struct {
	KeyStep
	Retention time.Duration
}

// passesPerRun bounds the history of a scheduled archival run.
const passesPerRun = 50

// ArchivalWorkflow archives what is due, once or on a timer.
func ArchivalWorkflow(ctx workflow.Context, p ArchivalParams) (*ArchivalResult, error) {
	ctx = workflow.WithActivityOptions(ctx, lifecycleActivityOptions)
	var a *Activities
	for pass := 0; ; pass++ {
		var due []kms.VersionRef
		step := ArchivalStep{Tenant: p.Tenant, Principal: p.Principal, RequestID: p.RequestID, Retention: p.Retention}
		if err := workflow.ExecuteActivity(ctx, a.ListArchivable, step).Get(ctx, &due); err != nil {
			return nil, err
		}
		res := &ArchivalResult{}
		for _, ref := range due {
			s := ArchiveVersionStep{KeyStep: KeyStep{Tenant: p.Tenant, KeyID: ref.KeyID, Version: ref.Version, Principal: p.Principal, RequestID: p.RequestID}, Retention: p.Retention}
			if err := workflow.ExecuteActivity(ctx, a.ArchiveVersion, s).Get(ctx, nil); err != nil {
				// One version that cannot move (it changed state
				// meanwhile) does not hold up the others; it is
				// recorded by the activity's audit event.
				workflow.GetLogger(ctx).Warn("version not archived", "key", ref.KeyID, "version", ref.Version, "err", err)
				res.Failed = append(res.Failed, ref)
				continue
			}
			res.Archived = append(res.Archived, ref)
		}
		if p.Interval <= 0 {
			return res, nil
		}
		if err := workflow.Sleep(ctx, p.Interval); err != nil {
			return res, err // cancelled
		}
		p.Passes++
		if pass+1 >= passesPerRun {
			return nil, workflow.NewContinueAsNewError(ctx, ArchivalWorkflow, p)
		}
	}
}

// lifecycleActivityOptions are the retry rules of the archival and recovery
// steps, as for rotation.
var lifecycleActivityOptions = workflow.ActivityOptions{
	StartToCloseTimeout: 30 * time.Second,
	RetryPolicy: &temporal.RetryPolicy{
		InitialInterval:    200 * time.Millisecond,
		BackoffCoefficient: 2,
		MaximumInterval:    10 * time.Second,
		MaximumAttempts:    20,
	},
}

// RecoveryParams start the recovery of one archived version.
type RecoveryParams struct {
	Tenant    string
	KeyID     string
	Version   uint32
	Principal string // the requester
	RequestID string
	// ApprovalTimeout is how long the request waits for a decision;
	// 0 means DefaultApprovalTimeout.
	ApprovalTimeout time.Duration
}

// DefaultApprovalTimeout is how long a restore request waits for approval.
const DefaultApprovalTimeout = 72 * time.Hour

// SignalRestoreDecision is the signal that carries a RestoreDecision.
const SignalRestoreDecision = "restore-decision"

// QueryRestoreRequester asks a waiting recovery who requested it.
const QueryRestoreRequester = "requester"

// RestoreDecision approves or rejects a restore. Principal is the
// approver as the transport established it, never as a request body said.
type RestoreDecision struct {
	Principal string
	RequestID string
	Approve   bool
	// Token authorizes the decision (optoken.go); its operation names
	// the decision (restoreOp).
	Token *kms.OpToken `json:",omitempty"`
}

// restoreOp is the token operation of a decision: approving and
// rejecting are different acts.
func restoreOp(approve bool) string {
	if approve {
		return SignalRestoreDecision + "/approve"
	}
	return SignalRestoreDecision + "/reject"
}

// Recovery outcomes.
const (
	RecoveryRestored = "RESTORED"
	RecoveryRejected = "REJECTED"
	RecoveryExpired  = "EXPIRED"
)

// RecoveryResult is how a recovery ended.
type RecoveryResult struct {
	KeyID     string
	Version   uint32
	Outcome   string
	DecidedBy string
}

// DecisionStep is the input of the RecordRestoreDecision activity.
type DecisionStep struct {
	KeyStep
	Requester string
	Approve   bool
	// Seq numbers the decisions of one recovery, so two attempts by the
	// same principal are two records.
	Seq int
}

// RecoveryWorkflow waits for an approval and restores the version.
func RecoveryWorkflow(ctx workflow.Context, p RecoveryParams) (*RecoveryResult, error) {
	ctx = workflow.WithActivityOptions(ctx, lifecycleActivityOptions)
	var a *Activities
	timeout := p.ApprovalTimeout
	if timeout <= 0 {
		timeout = DefaultApprovalTimeout
	}
	res := &RecoveryResult{KeyID: p.KeyID, Version: p.Version}
	requester := KeyStep{Tenant: p.Tenant, KeyID: p.KeyID, Version: p.Version, Principal: p.Principal, RequestID: p.RequestID}

	if err := workflow.SetQueryHandler(ctx, QueryRestoreRequester, func() (string, error) { return p.Principal, nil }); err != nil {
		return nil, err
	}
	tctx, cancelTimer := workflow.WithCancel(ctx)
	defer cancelTimer()
	timer := workflow.NewTimer(tctx, timeout)
	decisions := workflow.GetSignalChannel(ctx, SignalRestoreDecision)
	tokens, ledger, started := tokensRequired(ctx), &tokenLedger{}, workflow.GetInfo(ctx).WorkflowStartTime
	for seq := 1; ; seq++ {
		var d RestoreDecision
		expired := false
		sel := workflow.NewSelector(ctx)
		sel.AddReceive(decisions, func(c workflow.ReceiveChannel, _ bool) { c.Receive(ctx, &d) })
		sel.AddFuture(timer, func(workflow.Future) { expired = true })
		sel.Select(ctx)
		if !expired && tokens && !ledger.authorize(ctx, tokenRequest{Tenant: p.Tenant, Principal: d.Principal, Operation: restoreOp(d.Approve), Token: d.Token}, started) {
			continue // recorded by the check; wait on
		}
		if expired {
			if err := workflow.ExecuteActivity(ctx, a.RecordRestoreExpired, requester).Get(ctx, nil); err != nil {
				return nil, err
			}
			res.Outcome = RecoveryExpired
			return res, nil
		}
		step := DecisionStep{
			KeyStep:   KeyStep{Tenant: p.Tenant, KeyID: p.KeyID, Version: p.Version, Principal: d.Principal, RequestID: d.RequestID},
			Requester: p.Principal, Approve: d.Approve, Seq: seq,
		}
		if err := workflow.ExecuteActivity(ctx, a.RecordRestoreDecision, step).Get(ctx, nil); err != nil {
			var app *temporal.ApplicationError
			if errors.As(err, &app) && app.Type() == string(kms.CodeAccessDenied) {
				continue // the requester approving themselves: recorded as denied; wait on
			}
			return nil, err
		}
		res.DecidedBy = d.Principal
		if !d.Approve {
			res.Outcome = RecoveryRejected
			return res, nil
		}
		restore := KeyStep{Tenant: p.Tenant, KeyID: p.KeyID, Version: p.Version, Principal: d.Principal, RequestID: p.RequestID}
		if err := workflow.ExecuteActivity(ctx, a.RestoreVersion, restore).Get(ctx, nil); err != nil {
			return nil, err
		}
		res.Outcome = RecoveryRestored
		return res, nil
	}
}

// ArchivalStep is the input of the ListArchivable activity.
type ArchivalStep struct {
	Tenant    string
	Principal string
	RequestID string
	Retention time.Duration
}

// ListArchivable returns the versions due for archival.
func (a *Activities) ListArchivable(ctx context.Context, s ArchivalStep) ([]kms.VersionRef, error) {
	refs, err := a.KMS.ListArchivable(ctx, kms.Caller{Tenant: s.Tenant, Principal: s.Principal, RequestID: s.RequestID}, s.Retention)
	return refs, activityError(err)
}

// ArchiveVersion archives one version (a no-op if it is archived).
func (a *Activities) ArchiveVersion(ctx context.Context, s ArchiveVersionStep) error {
	return activityError(a.KMS.ArchiveVersion(ctx, caller(ctx, s.KeyStep), kms.ArchiveVersionParams{KeyID: s.KeyID, Version: s.Version, Retention: s.Retention}))
}

// RecordRestoreDecision records an approval or rejection; the requester's
// own is refused with AccessDeniedException (non-retryable).
func (a *Activities) RecordRestoreDecision(ctx context.Context, s DecisionStep) error {
	c := caller(ctx, s.KeyStep)
	c.IdempotencyKey = fmt.Sprintf("%s/%d", c.IdempotencyKey, s.Seq)
	return activityError(a.KMS.RecordRestoreDecision(ctx, c, s.KeyID, s.Version, s.Requester, s.Approve))
}

// RecordRestoreExpired records that the approval window closed.
func (a *Activities) RecordRestoreExpired(ctx context.Context, s KeyStep) error {
	return activityError(a.KMS.RecordRestoreExpired(ctx, caller(ctx, s), s.KeyID, s.Version, s.Principal))
}

// RestoreVersion restores the version (a no-op if it is not archived).
func (a *Activities) RestoreVersion(ctx context.Context, s KeyStep) error {
	return activityError(a.KMS.RestoreVersion(ctx, caller(ctx, s), s.KeyID, s.Version))
}

// ArchivalWorkflowID is one archival per tenant at a time.
func ArchivalWorkflowID(tenant string) string { return "archive/" + tenant }

// RecoveryWorkflowID is one recovery per version at a time.
func RecoveryWorkflowID(tenant, keyID string, version uint32) string {
	return fmt.Sprintf("recover/%s/%s/v%d", tenant, keyID, version)
}

// RunArchival runs one archival pass for a tenant and waits for it; with
// p.Interval set it starts the recurring run (or finds it running) and
// returns at once with a nil result.
func (c *Client) RunArchival(ctx context.Context, p ArchivalParams) (*ArchivalResult, string, error) {
	id := ArchivalWorkflowID(p.Tenant)
	opts := client.StartWorkflowOptions{ID: id, TaskQueue: TaskQueue}
	if p.Interval > 0 {
		id += "/scheduled"
		opts.ID = id
		opts.WorkflowIDConflictPolicy = enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING
		if _, err := c.Temporal.ExecuteWorkflow(ctx, opts, ArchivalWorkflow, p); err != nil {
			return nil, id, fmt.Errorf("failed to start scheduled archival: %w", err)
		}
		return nil, id, nil
	}
	opts.WorkflowExecutionTimeout = 30 * time.Minute
	run, err := c.Temporal.ExecuteWorkflow(ctx, opts, ArchivalWorkflow, p)
	if err != nil {
		return nil, id, fmt.Errorf("failed to start archival: %w", err)
	}
	var res ArchivalResult
	if err := run.Get(ctx, &res); err != nil {
		return nil, id, DomainError(err)
	}
	return &res, id, nil
}

// StartRecovery starts the recovery of an archived version, or finds the
// one already waiting, and returns its workflow ID without waiting.
func (c *Client) StartRecovery(ctx context.Context, p RecoveryParams) (string, error) {
	id := RecoveryWorkflowID(p.Tenant, p.KeyID, p.Version)
	_, err := c.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: id, TaskQueue: TaskQueue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
	}, RecoveryWorkflow, p)
	if err != nil {
		return id, fmt.Errorf("failed to start recovery: %w", err)
	}
	return id, nil
}

// DecideRecovery signals a decision to a waiting recovery and waits for
// its outcome. A decision by the requester is still signalled (the
// workflow records it as denied and keeps waiting) and reported at once as
// AccessDenied.
func (c *Client) DecideRecovery(ctx context.Context, tenant, keyID string, version uint32, d RestoreDecision) (*RecoveryResult, error) {
	id := RecoveryWorkflowID(tenant, keyID, version)
	notWaiting := &kms.Error{Code: kms.CodeNotFound, Message: fmt.Sprintf("no restore of version %d of key %s is waiting for a decision", version, keyID)}
	v, err := c.Temporal.QueryWorkflow(ctx, id, "", QueryRestoreRequester)
	if err != nil {
		return nil, notWaiting
	}
	var requester string
	if err := v.Get(&requester); err != nil {
		return nil, fmt.Errorf("failed to read the restore request: %w", err)
	}
	tok, err := mint(ctx, c.Tokens, kms.Caller{Tenant: tenant, Principal: d.Principal, RequestID: d.RequestID}, id, restoreOp(d.Approve), "")
	if err != nil {
		return nil, err
	}
	d.Token = tok
	if err := c.Temporal.SignalWorkflow(ctx, id, "", SignalRestoreDecision, d); err != nil {
		return nil, notWaiting
	}
	if d.Principal == requester {
		return nil, &kms.Error{Code: kms.CodeAccessDenied, Message: "the requester of a restore cannot decide it; another principal must (the request is still waiting)"}
	}
	var res RecoveryResult
	if err := c.Temporal.GetWorkflow(ctx, id, "").Get(ctx, &res); err != nil {
		return nil, DomainError(err)
	}
	return &res, nil
}

// DestroyArchivedMaterial destroys a key's archived material and revokes
// the registered backups that hold it (kms.Service.DestroyArchivedMaterial):
// the step the key destruction workflow runs for the copies keyflow manages
// outside the live store. Idempotent.
func (a *Activities) DestroyArchivedMaterial(ctx context.Context, s KeyStep) error {
	_, err := a.KMS.DestroyArchivedMaterial(ctx, caller(ctx, s), s.KeyID)
	return activityError(err)
}
