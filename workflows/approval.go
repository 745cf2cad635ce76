package workflows

import (
	"context"
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/keyflow/keyflow/kms"
)

// Dual control (M-of-N approvals).
//
// A protected operation whose tenant policy needs approval does not run
// when requested: kms.RequireApproval stores a request and starts an
// ApprovalWorkflow whose workflow ID is the approval ID. Approvers vote
// with Temporal Updates ("approve", "deny"), so each gets a synchronous
// answer: the update validator refuses a self-approval, a second vote by
// the same principal, or a vote on a closed request with the domain's
// error code, and nothing is recorded in history for a refused vote. An
// accepted vote is stored and audited by an activity before the update
// returns. One denial ends the request; M approvals run the operation; a
// durable timer expires it.
//
// The operation itself is a ProtectedOp from a registry keyed by
// kms.ApprovalKind, so every feature plugs its own in
// (RegisterProtectedOp); the workflow carries IDs and names only.

// Approval update names.
const (
	UpdateApprove = "approve"
	UpdateDeny    = "deny"
)

// ApprovalParams start an approval workflow: the stored request's IDs,
// its rule and its time to live. No secrets.
type ApprovalParams struct {
	ID        string
	Tenant    string
	Operation kms.ApprovalKind
	Target    string
	Requester string
	RequestID string
	Required  int
	Approvers []string
	Timeout   time.Duration
}

// ApprovalVoteInput is one vote, the argument of both updates.
type ApprovalVoteInput struct {
	Tenant    string // the voter's; must be the request's
	Principal string
	Comment   string
	// Token authorizes the vote (optoken.go); the update fails, and the
	// attempt is recorded, without a valid one.
	Token *kms.OpToken `json:",omitempty"`
}

// ApprovalStatus answers a vote.
type ApprovalStatus struct {
	State     kms.ApprovalState
	Approvals int
	Required  int
}

// ApprovalResult is how the request ended.
type ApprovalResult struct {
	State     kms.ApprovalState
	Approvers []string
	ErrorCode string
	Message   string
}

// ProtectedStep is the input of a protected operation: the approval and
// its target, run as the requester.
type ProtectedStep struct {
	ApprovalID string
	Tenant     string
	Operation  kms.ApprovalKind
	Target     string
	Requester  string
	RequestID  string
}

// ProtectedOp runs one approved operation in the approval workflow: an
// activity, or a child workflow. It returns a domain error (activityError
// or a child's application error) when the operation fails.
type ProtectedOp func(ctx workflow.Context, s ProtectedStep) error

// protectedOps is the registry. It is filled at init time only (so a
// workflow's lookup is deterministic); ops not registered yet make an
// approved request end FAILED, never run something else.
var protectedOps = map[kms.ApprovalKind]ProtectedOp{
	kms.ApprovalRotate:       rotateOp,
	kms.ApprovalPolicyChange: policyChangeOp,
}

// RegisterProtectedOp plugs a feature's operation into dual control. Call
// it from an init function of package workflows (the registry is read by
// workflow code and must be the same on every worker and in replays).
func RegisterProtectedOp(kind kms.ApprovalKind, op ProtectedOp) {
	protectedOps[kind] = op
}

// rotateOp runs the rotation workflow as a child, under the key's
// rotation workflow ID (one rotation per key at a time).
func rotateOp(ctx workflow.Context, s ProtectedStep) error {
	ctx = workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID:               RotateKeyWorkflowID(s.Tenant, s.Target),
		WorkflowExecutionTimeout: 10 * time.Minute,
	})
	return workflow.ExecuteChildWorkflow(ctx, RotateKeyWorkflow, RotateKeyParams{
		Tenant: s.Tenant, KeyID: s.Target, Principal: s.Requester, RequestID: s.RequestID,
	}).Get(ctx, nil)
}

// policyChangeOp applies a parked tenant policy change. Key policy changes
// (another feature) name their key as the target; they are routed here
// when that feature registers them.
func policyChangeOp(ctx workflow.Context, s ProtectedStep) error {
	if s.Target != kms.TenantPolicyTarget {
		return temporal.NewNonRetryableApplicationError("no policy-change operation for target "+s.Target, string(kms.CodeInternal), nil)
	}
	var a *Activities
	return workflow.ExecuteActivity(withApprovalActivityOptions(ctx), a.ApplyProposedPolicy, s).Get(ctx, nil)
}

func withApprovalActivityOptions(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    200 * time.Millisecond,
			BackoffCoefficient: 2,
			MaximumInterval:    10 * time.Second,
			MaximumAttempts:    20,
		},
	})
}

// approvalState is the workflow's view of the request; the store has the
// same, written by the activities.
type approvalState struct {
	p        ApprovalParams
	votes    []kms.ApprovalVote
	inflight int  // accepted votes whose activity has not finished
	closed   bool // decided or expired: no more votes
}

func (st *approvalState) asApproval() *kms.Approval {
	state := kms.ApprovalPending
	if st.closed {
		state = kms.ApprovalApproved // any non-pending state refuses votes
	}
	return &kms.Approval{ID: st.p.ID, Requester: st.p.Requester, Approvers: st.p.Approvers,
		Required: st.p.Required, State: state, Votes: st.votes, Operation: st.p.Operation}
}

func (st *approvalState) denied() bool {
	for _, v := range st.votes {
		if !v.Approve {
			return true
		}
	}
	return false
}

func (st *approvalState) approvals() int { return st.asApproval().Approvals() }

func (st *approvalState) decided() bool {
	return st.inflight == 0 && (st.denied() || st.approvals() >= st.p.Required)
}

func (st *approvalState) status() ApprovalStatus {
	s := ApprovalStatus{State: kms.ApprovalPending, Approvals: st.approvals(), Required: st.p.Required}
	switch {
	case st.denied():
		s.State = kms.ApprovalDenied
	case s.Approvals >= st.p.Required:
		s.State = kms.ApprovalApproved
	}
	return s
}

// ApprovalWorkflow runs one approval request to its end.
func ApprovalWorkflow(ctx workflow.Context, p ApprovalParams) (*ApprovalResult, error) {
	st := &approvalState{p: p}
	actx := withApprovalActivityOptions(ctx)
	var a *Activities
	tokens, ledger, started := tokensRequired(ctx), &tokenLedger{}, workflow.GetInfo(ctx).WorkflowStartTime
	vote := func(approve bool) func(workflow.Context, ApprovalVoteInput) (ApprovalStatus, error) {
		name := UpdateApprove
		if !approve {
			name = UpdateDeny
		}
		return func(ctx workflow.Context, in ApprovalVoteInput) (ApprovalStatus, error) {
			if tokens {
				// The validator cannot run activities, so the token is
				// checked here, before anything is reserved, and the
				// vote rules again after the check yielded.
				if !ledger.authorize(ctx, tokenRequest{Tenant: p.Tenant, Principal: in.Principal, Operation: name, Token: in.Token}, started) {
					return st.status(), refusedUpdate(name)
				}
				if err := kms.CheckVote(st.asApproval(), in.Principal); err != nil {
					return st.status(), temporal.NewApplicationError(kms.PublicMessage(err), string(kms.CodeOf(err)))
				}
			}
			v := kms.ApprovalVote{Principal: in.Principal, Approve: approve, Comment: in.Comment}
			// Reserve the vote before yielding, so a concurrent
			// duplicate fails validation.
			st.votes = append(st.votes, v)
			st.inflight++
			err := workflow.ExecuteActivity(actx, a.RecordApprovalVote, ApprovalVoteStep{
				ApprovalID: p.ID, Tenant: p.Tenant, RequestID: p.RequestID, Principal: in.Principal, Approve: approve, Comment: in.Comment,
			}).Get(ctx, nil)
			st.inflight--
			if err != nil {
				st.votes = removeVote(st.votes, in.Principal)
				return st.status(), err
			}
			return st.status(), nil
		}
	}
	validate := func(_ workflow.Context, in ApprovalVoteInput) error {
		if in.Tenant != p.Tenant { // defence in depth: the domain looked the request up in the voter's tenant
			return temporal.NewApplicationError("approval "+p.ID+" does not exist", string(kms.CodeNotFound))
		}
		if err := kms.CheckVote(st.asApproval(), in.Principal); err != nil {
			return temporal.NewApplicationError(kms.PublicMessage(err), string(kms.CodeOf(err)))
		}
		return nil
	}
	if err := workflow.SetUpdateHandlerWithOptions(ctx, UpdateApprove, vote(true), workflow.UpdateHandlerOptions{Validator: validate}); err != nil {
		return nil, fmt.Errorf("failed to register the approve handler: %w", err)
	}
	if err := workflow.SetUpdateHandlerWithOptions(ctx, UpdateDeny, vote(false), workflow.UpdateHandlerOptions{Validator: validate}); err != nil {
		return nil, fmt.Errorf("failed to register the deny handler: %w", err)
	}

	// The durable timer: the request expires unless decided first.
	if _, err := workflow.AwaitWithTimeout(ctx, p.Timeout, st.decided); err != nil {
		return nil, err
	}
	st.closed = true
	// A vote accepted just before the timer fired still counts.
	if err := workflow.Await(ctx, func() bool { return st.inflight == 0 }); err != nil {
		return nil, err
	}
	res := &ApprovalResult{}
	for _, v := range st.votes {
		if v.Approve {
			res.Approvers = append(res.Approvers, v.Principal)
		}
	}
	outcome := ApprovalOutcomeStep{ApprovalID: p.ID, Tenant: p.Tenant, RequestID: p.RequestID}
	switch {
	case st.denied():
		res.State = kms.ApprovalDenied // the deny vote's activity recorded it
	case st.approvals() >= p.Required:
		step := ProtectedStep{ApprovalID: p.ID, Tenant: p.Tenant, Operation: p.Operation, Target: p.Target, Requester: p.Requester, RequestID: p.RequestID}
		opErr := runProtected(ctx, step)
		res.State = kms.ApprovalCompleted
		if opErr != nil {
			de := DomainError(opErr)
			res.State, res.ErrorCode, res.Message = kms.ApprovalFailed, string(kms.CodeOf(de)), kms.PublicMessage(de)
			outcome.ErrorCode, outcome.Message = res.ErrorCode, res.Message
		}
		if err := workflow.ExecuteActivity(actx, a.RecordApprovalOutcome, outcome).Get(ctx, nil); err != nil {
			return nil, err
		}
	default:
		res.State = kms.ApprovalExpired
		outcome.Expired = true
		if err := workflow.ExecuteActivity(actx, a.RecordApprovalOutcome, outcome).Get(ctx, nil); err != nil {
			return nil, err
		}
	}
	if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
		return nil, err
	}
	return res, nil
}

func runProtected(ctx workflow.Context, s ProtectedStep) error {
	op, ok := protectedOps[s.Operation]
	if !ok {
		return temporal.NewNonRetryableApplicationError("no protected operation is registered for "+string(s.Operation)+" on this worker", string(kms.CodeInternal), nil)
	}
	return op(ctx, s)
}

func removeVote(votes []kms.ApprovalVote, principal string) []kms.ApprovalVote {
	out := votes[:0]
	for _, v := range votes {
		if v.Principal != principal {
			out = append(out, v)
		}
	}
	return out
}

// ApprovalVoteStep is the input of RecordApprovalVote.
type ApprovalVoteStep struct {
	ApprovalID string
	Tenant     string
	RequestID  string
	Principal  string
	Approve    bool
	Comment    string
}

// ApprovalOutcomeStep is the input of RecordApprovalOutcome.
type ApprovalOutcomeStep struct {
	ApprovalID string
	Tenant     string
	RequestID  string
	Expired    bool
	ErrorCode  string
	Message    string
}

// approvalPrincipal is who records an expiry or a completion: the
// approval workflow itself.
const approvalPrincipal = "keyflow-approvals"

// RecordApprovalVote stores and audits an accepted vote.
func (a *Activities) RecordApprovalVote(ctx context.Context, s ApprovalVoteStep) error {
	c := kms.Caller{Tenant: s.Tenant, Principal: s.Principal, RequestID: s.RequestID,
		IdempotencyKey: fmt.Sprintf("approval/%s/%s/vote/%s", s.Tenant, s.ApprovalID, s.Principal)}
	err := a.KMS.RecordApprovalVote(ctx, c, s.ApprovalID, kms.ApprovalVote{Principal: s.Principal, Approve: s.Approve, Comment: s.Comment})
	return activityError(err)
}

// RecordApprovalOutcome stores and audits the end of a request.
func (a *Activities) RecordApprovalOutcome(ctx context.Context, s ApprovalOutcomeStep) error {
	c := kms.Caller{Tenant: s.Tenant, Principal: approvalPrincipal, RequestID: s.RequestID,
		IdempotencyKey: fmt.Sprintf("approval/%s/%s/outcome", s.Tenant, s.ApprovalID)}
	err := a.KMS.RecordApprovalOutcome(ctx, c, s.ApprovalID, kms.ApprovalOutcome{Expired: s.Expired, ErrorCode: kms.Code(s.ErrorCode), Message: s.Message})
	return activityError(err)
}

// ApplyProposedPolicy applies an approved tenant policy change, as its
// requester.
func (a *Activities) ApplyProposedPolicy(ctx context.Context, s ProtectedStep) error {
	c := kms.Caller{Tenant: s.Tenant, Principal: s.Requester, RequestID: s.RequestID,
		IdempotencyKey: fmt.Sprintf("approval/%s/%s/apply", s.Tenant, s.ApprovalID)}
	return activityError(a.KMS.ApplyProposedPolicy(ctx, c, s.ApprovalID))
}

// ApprovalEngine runs approval workflows on Temporal; it implements
// kms.ApprovalEngine (wire it with kms.Service.SetApprovalEngine).
type ApprovalEngine struct {
	Temporal client.Client
	// Tokens mints each vote's authorization token (optoken.go).
	Tokens TokenMinter
}

var _ kms.ApprovalEngine = (*ApprovalEngine)(nil)

// StartApproval implements kms.ApprovalEngine. The workflow ID is the
// approval ID; starting it twice is harmless.
func (e *ApprovalEngine) StartApproval(ctx context.Context, a *kms.Approval) error {
	ttl := a.ExpiresAt.Sub(a.CreatedAt)
	_, err := e.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                    a.ID,
		TaskQueue:             TaskQueue,
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		// The timer decides; this only bounds a stuck operation.
		WorkflowExecutionTimeout: ttl + 24*time.Hour,
	}, ApprovalWorkflow, ApprovalParams{
		ID: a.ID, Tenant: a.Tenant, Operation: a.Operation, Target: a.Target, Requester: a.Requester,
		RequestID: a.RequestID, Required: a.Required, Approvers: a.Approvers, Timeout: ttl,
	})
	var already *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &already) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to start approval workflow: %w", err)
	}
	return nil
}

// CastVote implements kms.ApprovalEngine with a Temporal Update, waiting
// until the workflow recorded the vote.
func (e *ApprovalEngine) CastVote(ctx context.Context, tenant, id string, v kms.ApprovalVote) error {
	name := UpdateApprove
	if !v.Approve {
		name = UpdateDeny
	}
	// kms.DecideApproval authorized the voter before calling here.
	tok, err := mint(ctx, e.Tokens, kms.Caller{Tenant: tenant, Principal: v.Principal}, id, name, "")
	if err != nil {
		return err
	}
	var nf *serviceerror.NotFound
	// A request opened by a workflow activity (a campaign's cutover) is
	// stored a moment before its workflow starts: a vote in between finds
	// no workflow, so NotFound is retried briefly before it means closed.
	for attempt := 0; attempt < 20; attempt++ {
		var h client.WorkflowUpdateHandle
		h, err = e.Temporal.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
			WorkflowID: id, UpdateName: name, WaitForStage: client.WorkflowUpdateStageCompleted,
			Args: []any{ApprovalVoteInput{Tenant: tenant, Principal: v.Principal, Comment: v.Comment, Token: tok}},
		})
		if err == nil {
			var st ApprovalStatus
			err = h.Get(ctx, &st)
		}
		if !errors.As(err, &nf) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err == nil {
		return nil
	}
	if errors.As(err, &nf) {
		// The workflow ended between the caller's read and its vote.
		return &kms.Error{Code: kms.CodeInvalidState, Message: "approval " + id + " is closed and takes no more votes"}
	}
	var app *temporal.ApplicationError
	if errors.As(err, &app) && app.Type() != "" {
		return &kms.Error{Code: kms.Code(app.Type()), Message: app.Message()}
	}
	return fmt.Errorf("failed to vote on approval %s: %w", id, err)
}
