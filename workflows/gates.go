package workflows

import (
	"context"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/keyflow/keyflow/kms"
)

// Protected key lifecycle operations (dual control). The rpc handlers
// check a request and park it for approval (workers/rpc/gates.go); once
// approved, the approval workflow runs the operation here, from the
// target, which carries the request's parameters (kms.DeletionTarget,
// kms.DisableTarget), as the requester.

func init() {
	RegisterProtectedOp(kms.ApprovalScheduleDeletion, scheduleDeletionOp)
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

// scheduleDeletionOp runs an approved schedule-deletion: the same steps
// as the keys.scheduledeletion handler, with the approved window. The
// domain step first (ScheduleApprovedDeletion: the key is pending
// deletion, a refusal ends the request FAILED), then the deletion timer
// (StartApprovedDeletionTimer); when the timer cannot be started, the
// pending deletion is cancelled (as the handler does), so no key is left
// refusing every use with nothing to destroy it.
func scheduleDeletionOp(ctx workflow.Context, s ProtectedStep) error {
	var a *Activities
	actx := withApprovalActivityOptions(ctx)
	var date time.Time
	if err := workflow.ExecuteActivity(actx, a.ScheduleApprovedDeletion, s).Get(ctx, &date); err != nil {
		return err
	}
	timerErr := workflow.ExecuteActivity(actx, a.StartApprovedDeletionTimer, s, date).Get(ctx, nil)
	if timerErr == nil {
		return nil
	}
	if err := workflow.ExecuteActivity(actx, a.CancelApprovedDeletion, s).Get(ctx, nil); err != nil {
		return err
	}
	return temporal.NewNonRetryableApplicationError("the deletion timer could not be started, so the approved deletion was cancelled; request it again", string(kms.CodeInternal), nil)
}

// ScheduleApprovedDeletion puts the key into pending deletion with the
// approved window (kms.ScheduleDeletion) and returns its deletion date
// (the history holds that date, not the key's metadata). A retry that
// finds the key already pending deletion returns it as it is (its reply
// was lost); the first attempt refuses a key that someone else
// scheduled in the meantime.
func (a *Activities) ScheduleApprovedDeletion(ctx context.Context, s ProtectedStep) (time.Time, error) {
	p, err := kms.ParseDeletionTarget(s.Target)
	if err != nil {
		return time.Time{}, activityError(err)
	}
	c := approvedCaller(s)
	k, err := a.KMS.GetKey(ctx, c, p.KeyRef) // a plain read, no event
	if err != nil {
		return time.Time{}, activityError(err)
	}
	if !k.Lifecycle.PendingDeletion || activity.GetInfo(ctx).Attempt == 1 {
		if k, err = a.KMS.ScheduleDeletion(ctx, c, p); err != nil {
			return time.Time{}, activityError(err)
		}
	}
	return k.Lifecycle.DeletionDate, nil
}

// StartApprovedDeletionTimer starts the key's deletion workflow, as the
// requester (starting it again replaces it with the same timer).
func (a *Activities) StartApprovedDeletionTimer(ctx context.Context, s ProtectedStep, date time.Time) error {
	if a.Temporal == nil {
		return activityError(&kms.Error{Code: kms.CodeInternal, Message: "the lifecycle workflows are not available on this worker"})
	}
	p, err := kms.ParseDeletionTarget(s.Target)
	if err != nil {
		return activityError(err)
	}
	k := &kms.Key{ID: p.KeyRef, Tenant: s.Tenant}
	k.Lifecycle.DeletionDate = date
	if _, err = (&Client{Temporal: a.Temporal}).ScheduleDeletion(ctx, approvedCaller(s), k); err != nil {
		return err
	}
	k.Lifecycle.PendingDeletion = true
	return a.stateToClouds(ctx, approvedCaller(s), k) // distributed keys (cloud_propagate.go)
}

// CancelApprovedDeletion undoes ScheduleApprovedDeletion when its timer
// could not be started. A key no longer pending is left alone.
func (a *Activities) CancelApprovedDeletion(ctx context.Context, s ProtectedStep) error {
	p, err := kms.ParseDeletionTarget(s.Target)
	if err != nil {
		return activityError(err)
	}
	c := approvedCaller(s)
	c.IdempotencyKey += "/undo"
	if k, err := a.KMS.GetKey(ctx, c, p.KeyRef); err != nil || !k.Lifecycle.PendingDeletion {
		return activityError(err)
	}
	_, err = a.KMS.CancelDeletion(ctx, c, p.KeyRef)
	return activityError(err)
}

// DisableApprovedKey runs an approved disable: the key (or version)
// becomes SUSPENDED. SetState is idempotent.
func (a *Activities) DisableApprovedKey(ctx context.Context, s ProtectedStep) error {
	keyID, version, err := kms.ParseDisableTarget(s.Target)
	if err != nil {
		return activityError(err)
	}
	res, err := a.KMS.SetState(ctx, approvedCaller(s), kms.SetStateParams{KeyRef: keyID, Version: version, To: kms.StateSuspended,
		Reason: "approved (approval " + s.ApprovalID + ")"})
	if err != nil {
		return activityError(err)
	}
	return a.stateToClouds(ctx, approvedCaller(s), res.Key) // distributed keys (cloud_propagate.go)
}

// Dual control of a migration campaign's cutover. When the tenant policy
// lists "migration-cutover", the readiness gate does not count `migrate
// approve` signals: it opens an approval request (kms.OpenCutoverApproval,
// as the campaign's starter, who therefore cannot approve it) and waits
// for the approval workflow, which enforces M distinct approvers holding
// the approver role (or listed), one denial, expiry, and on approval
// signals the campaign with the request's ID (cutoverOp). `migrate
// approve` becomes a vote on that request (kms.CutoverVote, in the rpc
// handler). After a denial or expiry the campaign stays at its gate; the
// next `migrate approve` (no request pending) opens a new round.

// CutoverGate is the gate's dual-control state.
type CutoverGate struct {
	Round      int
	ApprovalID string // the round's request; "" when not governed
	Approved   bool
	Reopen     bool // a plain approve arrived with no request pending
}

// CutoverStep is the input of OpenCutoverApproval.
type CutoverStep struct {
	Tenant     string
	Principal  string // the campaign's starter: the requester
	RequestID  string
	CampaignID string
	Round      int
}

func init() {
	RegisterProtectedOp(kms.ApprovalMigrationCutover, cutoverOp)
}

// cutoverOp tells the campaign (the target) that its cutover request was
// approved. A campaign that is gone (rolled back) makes the request end
// FAILED.
//
// The signal's token is minted by an activity, as the approval workflow
// itself, bound to the approval ID: the request that M approvers' own
// tokens carried to completion.
func cutoverOp(ctx workflow.Context, s ProtectedStep) error {
	id := MigrationWorkflowID(s.Tenant, s.Target)
	var a *Activities
	var tok *kms.OpToken
	if workflow.GetVersion(ctx, opTokenVersion, workflow.DefaultVersion, 1) >= 1 {
		if err := workflow.ExecuteActivity(withApprovalActivityOptions(ctx), a.MintCutoverToken, s).Get(ctx, &tok); err != nil {
			return err
		}
	}
	return workflow.SignalExternalWorkflow(ctx, id, "", SignalApprove,
		ControlSignal{Principal: approvalPrincipal, RequestID: s.RequestID, ApprovalID: s.ApprovalID, Token: tok}).Get(ctx, nil)
}

// MintCutoverToken mints the token of an approved cutover's signal.
func (a *Activities) MintCutoverToken(ctx context.Context, s ProtectedStep) (*kms.OpToken, error) {
	c := kms.Caller{Tenant: s.Tenant, Principal: approvalPrincipal, RequestID: s.RequestID}
	t, err := a.KMS.MintOpToken(ctx, c, MigrationWorkflowID(s.Tenant, s.Target), SignalApprove, s.ApprovalID)
	return t, activityError(err)
}

// cutoverSignal applies an approve signal under dual control; it reports
// false when the gate is not governed (the signal counts as before).
func (m *campaign) cutoverSignal(sig ControlSignal, now time.Time) bool {
	g := &m.st.Cutover
	if g.ApprovalID == "" {
		return false
	}
	if sig.ApprovalID == "" {
		g.Reopen = true
		return true
	}
	// Only the approval workflow sends an ApprovalID (the rpc handlers
	// never do), for a cutover request of this campaign; an earlier
	// round's request approved late counts too.
	g.Approved = true
	m.st.Approvals = append(m.st.Approvals, Approval{Principal: "approval/" + sig.ApprovalID, At: now})
	return true
}

// awaitCutover is the readiness gate: with dual control, round after
// round of approval requests until one is approved; without, the
// campaign's own approvals (cutoverReady).
func (m *campaign) awaitCutover(ctx workflow.Context) error {
	if workflow.GetVersion(ctx, "cutover-dual-control", workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return m.waitFor(ctx, nil, func() bool { return cutoverReady(m.st, m.p.RequiredApprovals) })
	}
	g := &m.st.Cutover
	if g.Round == 0 {
		if err := m.openCutoverRound(ctx); err != nil {
			return err
		}
	}
	for {
		if err := m.waitFor(ctx, nil, func() bool { return cutoverReady(m.st, m.p.RequiredApprovals) || g.Reopen }); err != nil {
			return err
		}
		if cutoverReady(m.st, m.p.RequiredApprovals) {
			return nil
		}
		if err := m.openCutoverRound(ctx); err != nil {
			return err
		}
	}
}

func (m *campaign) openCutoverRound(ctx workflow.Context) error {
	g := &m.st.Cutover
	g.Round++
	g.Reopen = false
	var a *Activities
	var id string
	if err := m.exec(ctx, a.OpenCutoverApproval, CutoverStep{Tenant: m.p.Tenant, Principal: m.p.Principal, RequestID: m.p.RequestID,
		CampaignID: m.p.CampaignID, Round: g.Round}, &id); err != nil {
		return err
	}
	g.ApprovalID = id
	return nil
}

// OpenCutoverApproval opens (or finds) a round's approval request; "" when
// the tenant policy does not put the cutover under dual control.
func (a *Activities) OpenCutoverApproval(ctx context.Context, s CutoverStep) (string, error) {
	c := kms.Caller{Tenant: s.Tenant, Principal: s.Principal, RequestID: s.RequestID,
		IdempotencyKey: fmt.Sprintf("migration/%s/%s/cutover-approval/%d", s.Tenant, s.CampaignID, s.Round)}
	id, err := a.KMS.OpenCutoverApproval(ctx, c, s.CampaignID, s.Round)
	return id, activityError(err)
}
