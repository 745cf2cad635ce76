package workflows_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/testsuite"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

// captureEngine stores the requests RequireApproval opens, so the test can
// run their workflow in the test environment.
type captureEngine struct{ last *kms.Approval }

func (e *captureEngine) StartApproval(_ context.Context, a *kms.Approval) error {
	e.last = a
	return nil
}
func (e *captureEngine) CastVote(context.Context, string, string, kms.ApprovalVote) error {
	return errors.New("votes go through the test environment")
}

// openRotationApproval sets a policy making rotation need 2 approvals
// (expiring after ttl), creates a key and requests its rotation; it returns
// the key and the workflow parameters.
func openRotationApproval(t *testing.T, b *testbed.Bed, approvers []string, ttl string) (*kms.Key, workflows.ApprovalParams) {
	t.Helper()
	ctx := context.Background()
	if _, err := b.KMS.SetTenantPolicy(ctx, alice, &kms.TenantPolicy{Approvals: []kms.ApprovalRule{
		{Operation: kms.ApprovalRotate, Required: 2, Approvers: approvers, ExpiresAfter: ttl}}}); err != nil {
		t.Fatal(err)
	}
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	if err != nil {
		t.Fatal(err)
	}
	eng := &captureEngine{}
	b.KMS.SetApprovalEngine(eng)
	id, pending, err := b.KMS.RequireApproval(ctx, alice, kms.ApprovalRotate, k.ID)
	if err != nil || !pending {
		t.Fatalf("RequireApproval: %v %v", pending, err)
	}
	a := eng.last
	if a == nil || a.ID != id {
		t.Fatal("the engine was not asked to start the workflow")
	}
	return k, workflows.ApprovalParams{ID: a.ID, Tenant: a.Tenant, Operation: a.Operation, Target: a.Target, Requester: a.Requester,
		RequestID: a.RequestID, Required: a.Required, Approvers: a.Approvers, Timeout: a.ExpiresAt.Sub(a.CreatedAt)}
}

// voteMinter mints the votes' tokens, as keyflow's API would: newEnv
// sets it to the test bed's service.
var voteMinter *kms.Service

// vote sends one update at the given workflow time and records its answer.
type voteResult struct {
	err      error
	accepted bool
	st       workflows.ApprovalStatus
}

func scheduleVote(env *testsuite.TestWorkflowEnvironment, at time.Duration, update, principal string, out *voteResult) {
	scheduleTenantVote(env, at, update, "alpha", principal, out)
}

func scheduleTenantVote(env *testsuite.TestWorkflowEnvironment, at time.Duration, update, tenant, principal string, out *voteResult) {
	minter := voteMinter
	env.RegisterDelayedCallback(func() {
		tok, err := minter.MintOpToken(context.Background(), kms.Caller{Tenant: tenant, Principal: principal}, testWorkflowID, update, "")
		if err != nil {
			out.err = err
			return
		}
		// Update IDs must differ: Temporal answers a repeated ID with
		// the first answer (idempotent updates).
		env.UpdateWorkflow(update, fmt.Sprintf("%s-%s-%s", principal, update, at), &testsuite.TestUpdateCallback{
			OnReject: func(err error) { out.err = err },
			OnAccept: func() { out.accepted = true },
			OnComplete: func(v any, err error) {
				out.err = err
				if s, ok := v.(workflows.ApprovalStatus); ok {
					out.st = s
				}
			},
		}, workflows.ApprovalVoteInput{Tenant: tenant, Principal: principal, Comment: "ticket CHG-" + principal, Token: tok})
	}, at)
}

func codeOf(err error) kms.Code { return kms.CodeOf(workflows.DomainError(err)) }

func TestApprovalWorkflowApprovedRunsTheOperation(t *testing.T) {
	b := testbed.New(t)
	k, p := openRotationApproval(t, b, nil, "72h")
	env := newEnv(t, b)
	var self, bob, bobAgain, carol, late voteResult
	scheduleVote(env, time.Minute, workflows.UpdateApprove, "alice", &self)
	scheduleVote(env, 2*time.Minute, workflows.UpdateApprove, "bob", &bob)
	scheduleVote(env, 3*time.Minute, workflows.UpdateApprove, "bob", &bobAgain)
	scheduleVote(env, 4*time.Minute, workflows.UpdateApprove, "carol", &carol)
	scheduleVote(env, 4*time.Minute+time.Second, workflows.UpdateDeny, "dave", &late)
	env.ExecuteWorkflow(workflows.ApprovalWorkflow, p)
	if !env.IsWorkflowCompleted() || env.GetWorkflowError() != nil {
		t.Fatalf("workflow: %v", env.GetWorkflowError())
	}
	var res workflows.ApprovalResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.State != kms.ApprovalCompleted || strings.Join(res.Approvers, ",") != "bob,carol" {
		t.Fatalf("result %+v", res)
	}
	if codeOf(self.err) != kms.CodeAccessDenied {
		t.Errorf("self-approval: %v", self.err)
	}
	if codeOf(bobAgain.err) != kms.CodeConflict {
		t.Errorf("duplicate approver: %v", bobAgain.err)
	}
	if bob.err != nil || bob.st.Approvals != 1 || bob.st.State != kms.ApprovalPending {
		t.Errorf("bob's vote: %+v", bob)
	}
	if carol.err != nil || carol.st.State != kms.ApprovalApproved {
		t.Errorf("carol's vote: %+v", carol)
	}
	if late.accepted {
		t.Error("a vote after the decision was accepted")
	}
	// The operation ran: the key rotated.
	got, _ := b.KMS.DescribeKey(context.Background(), alice, k.ID)
	if got.PrimaryVersion != 2 {
		t.Fatalf("primary version %d after an approved rotation, want 2", got.PrimaryVersion)
	}
	a, _ := b.KMS.GetApproval(context.Background(), alice, p.ID)
	if a.State != kms.ApprovalCompleted || a.Approvals() != 2 {
		t.Fatalf("stored request: %+v", a)
	}
	approved := b.EventsOfType("alpha", events.TypeApprovalApproved)
	completed := b.EventsOfType("alpha", events.TypeApprovalCompleted)
	if len(approved) != 2 || approved[0].Principal != "bob" || approved[1].Principal != "carol" || len(completed) != 1 || completed[0].Data["result"] != "succeeded" {
		t.Fatalf("events: approved %+v, completed %+v", approved, completed)
	}
	if n := len(b.EventsOfType("alpha", events.TypeKeyRotated)); n != 1 {
		t.Fatalf("%d rotated events", n)
	}
}

func TestApprovalWorkflowDenied(t *testing.T) {
	b := testbed.New(t)
	k, p := openRotationApproval(t, b, []string{"bob", "carol", "dave"}, "72h")
	env := newEnv(t, b)
	var mallory, bob, dave, carol, foreign voteResult
	scheduleVote(env, time.Minute, workflows.UpdateApprove, "mallory", &mallory)
	scheduleTenantVote(env, time.Minute+time.Second, workflows.UpdateApprove, "beta", "bob", &foreign)
	scheduleVote(env, 2*time.Minute, workflows.UpdateApprove, "bob", &bob)
	scheduleVote(env, 3*time.Minute, workflows.UpdateDeny, "dave", &dave)
	scheduleVote(env, 4*time.Minute, workflows.UpdateApprove, "carol", &carol)
	env.ExecuteWorkflow(workflows.ApprovalWorkflow, p)
	var res workflows.ApprovalResult
	if err := env.GetWorkflowResult(&res); err != nil || res.State != kms.ApprovalDenied {
		t.Fatalf("result %+v, %v", res, err)
	}
	if codeOf(mallory.err) != kms.CodeAccessDenied {
		t.Errorf("a principal not among the approvers: %v", mallory.err)
	}
	if codeOf(foreign.err) != kms.CodeNotFound || foreign.accepted {
		t.Errorf("a vote from another tenant: %+v", foreign)
	}
	if bob.err != nil || dave.err != nil || dave.st.State != kms.ApprovalDenied {
		t.Errorf("bob %+v, dave %+v", bob, dave)
	}
	if carol.accepted {
		t.Error("an approval after a denial was accepted")
	}
	got, _ := b.KMS.DescribeKey(context.Background(), alice, k.ID)
	if got.PrimaryVersion != 1 {
		t.Fatal("a denied rotation ran")
	}
	denied := b.EventsOfType("alpha", events.TypeApprovalDenied)
	if len(denied) != 1 || denied[0].Principal != "dave" || denied[0].Data["state"] != "DENIED" {
		t.Fatalf("denied events: %+v", denied)
	}
	if n := len(b.EventsOfType("alpha", events.TypeApprovalCompleted)); n != 0 {
		t.Fatalf("%d completed events for a denied request", n)
	}
}

func TestApprovalWorkflowExpires(t *testing.T) {
	b := testbed.New(t)
	k, p := openRotationApproval(t, b, nil, "72h")
	env := newEnv(t, b)
	var bob, carol voteResult
	scheduleVote(env, time.Hour, workflows.UpdateApprove, "bob", &bob)
	scheduleVote(env, 73*time.Hour, workflows.UpdateApprove, "carol", &carol) // too late
	env.ExecuteWorkflow(workflows.ApprovalWorkflow, p)
	var res workflows.ApprovalResult
	if err := env.GetWorkflowResult(&res); err != nil || res.State != kms.ApprovalExpired {
		t.Fatalf("result %+v, %v", res, err)
	}
	if bob.err != nil {
		t.Fatalf("bob: %v", bob.err)
	}
	got, _ := b.KMS.DescribeKey(context.Background(), alice, k.ID)
	if got.PrimaryVersion != 1 {
		t.Fatal("an expired rotation ran")
	}
	a, _ := b.KMS.GetApproval(context.Background(), alice, p.ID)
	if a.State != kms.ApprovalExpired {
		t.Fatalf("stored state %s", a.State)
	}
	exp := b.EventsOfType("alpha", events.TypeApprovalExpired)
	if len(exp) != 1 || exp[0].Principal != "keyflow-approvals" || exp[0].Data["approvals"] != float64(1) {
		t.Fatalf("expired events: %+v", exp)
	}
}

// An approved operation that fails ends FAILED with its code, recorded.
func TestApprovalWorkflowOperationFails(t *testing.T) {
	b := testbed.New(t)
	_, p := openRotationApproval(t, b, nil, "1h")
	p.Target = "0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b" // no such key
	env := newEnv(t, b)
	var bob, carol voteResult
	scheduleVote(env, time.Minute, workflows.UpdateApprove, "bob", &bob)
	scheduleVote(env, 2*time.Minute, workflows.UpdateApprove, "carol", &carol)
	env.ExecuteWorkflow(workflows.ApprovalWorkflow, p)
	var res workflows.ApprovalResult
	if err := env.GetWorkflowResult(&res); err != nil || res.State != kms.ApprovalFailed || res.ErrorCode != string(kms.CodeNotFound) {
		t.Fatalf("result %+v, %v", res, err)
	}
	completed := b.EventsOfType("alpha", events.TypeApprovalCompleted)
	if len(completed) != 1 || completed[0].Data["result"] != "failed" || completed[0].Data["errorCode"] != "NotFoundException" {
		t.Fatalf("completed events: %+v", completed)
	}
}
