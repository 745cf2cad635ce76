package workflows_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/temporalproto"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/rpc"
	"github.com/keyflow/keyflow/workflows"
)

// temporalRotator runs rotations through the workflow, as the dev stack's.
type temporalRotator struct{ c *workflows.Client }

func (r temporalRotator) Rotate(ctx context.Context, c kms.Caller, keyID string) (*rpc.RotateResult, error) {
	res, id, err := r.c.RotateKey(ctx, workflows.RotateKeyParams{Tenant: c.Tenant, KeyID: keyID, Principal: c.Principal, RequestID: c.RequestID})
	if err != nil {
		return nil, err
	}
	return &rpc.RotateResult{KeyID: res.KeyID, PreviousVersion: res.PreviousVersion, NewVersion: res.NewVersion, WorkflowID: id}, nil
}

func wantCode(t *testing.T, what string, err error, code kms.Code) {
	t.Helper()
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != string(code) {
		t.Fatalf("%s: %v, want %s", what, err, code)
	}
}

// waitState polls an approval until it reaches state (checkFor style: no
// timing assertion, only a generous bound).
func waitState(t *testing.T, c *client.Client, id string, state kms.ApprovalState) *api.Approval {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		a, err := c.ShowApproval(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if a.State == string(state) {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("approval %s is %s, want %s", id, a.State, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// findEvent returns the events of typ by principal with error code code
// ("" for successes) about approval id.
func findEvents(b *testbed.Bed, typ, principal, code, id string) []testbed.AuditEvent {
	var out []testbed.AuditEvent
	for _, e := range b.EventsOfType("alpha", typ) {
		if e.Principal == principal && e.ErrorCode == code && e.Data["approvalId"] == id {
			out = append(out, e)
		}
	}
	return out
}

// dualControlBed is a test bed whose rpc handlers run rotations and
// approvals on a real Temporal server, with a lifecycle worker, as the dev
// stack wires them (tokens minted by the bed's service). It returns the
// server too, for tests that go around keyflow to it.
func dualControlBed(t *testing.T) (*testbed.Bed, *temporaltest.TestServer) {
	t.Helper()
	b := testbed.New(t)
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	w := ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) { workflows.Register(r, &workflows.Activities{KMS: b.KMS}) })
	t.Cleanup(w.Stop)
	b.KMS.SetApprovalEngine(&workflows.ApprovalEngine{Temporal: ts.GetDefaultClient(), Tokens: b.KMS})
	b.StartRPC(temporalRotator{&workflows.Client{Temporal: ts.GetDefaultClient(), Tokens: b.KMS}})
	return b, ts
}

// TestDualControlOverNATS drives dual control the way users do: requests
// and votes from separate principals through the real NATS server (tenant
// accounts, server-vouched identity), the approval workflow on a real
// Temporal server, and the audit stream. Each path: approved (the
// operation runs), self-approval and duplicate approver refused, denied,
// a policy change under dual control, and expiry.
func TestDualControlOverNATS(t *testing.T) {
	ctx := context.Background()
	b, ts := dualControlBed(t)
	alice, bob, carol, dave := b.Client("alpha", "alice"), b.Client("alpha", "bob"), b.Client("alpha", "carol"), b.Client("alpha", "dave")

	if _, err := alice.SetTenantPolicy(ctx, api.TenantPolicy{Approvals: []api.ApprovalRule{
		{Operation: "rotate", Required: 2, ExpiresAfter: "1h"},
		{Operation: "policy-change", Required: 1},
	}}); err != nil {
		t.Fatal(err)
	}
	k, err := alice.CreateKey(ctx, api.CreateKeyRequest{Alias: "payments"})
	if err != nil {
		t.Fatal(err)
	}

	// Approved: the rotation waits, then runs.
	_, err = alice.RotateKey(ctx, "alias/payments")
	wantCode(t, "rotation under dual control", err, kms.CodePendingApproval)
	id := client.PendingApproval(err)
	if id == "" {
		t.Fatal("no approval ID in the pending reply")
	}
	if m, _ := alice.DescribeKey(ctx, k.KeyID); m.PrimaryVersion != 1 {
		t.Fatal("the rotation ran before approval")
	}
	if l, err := bob.ListApprovals(ctx, "PENDING"); err != nil || len(l.Approvals) != 1 || l.Approvals[0].ApprovalID != id || l.Approvals[0].Target != k.KeyID {
		t.Fatalf("pending list: %+v, %v", l, err)
	}
	_, err = alice.Approve(ctx, id, "")
	wantCode(t, "self-approval", err, kms.CodeAccessDenied)
	a, err := bob.Approve(ctx, id, "CHG-42")
	if err != nil || a.State != "PENDING" || a.Approvals != 1 {
		t.Fatalf("bob's approval: %+v, %v", a, err)
	}
	_, err = bob.Approve(ctx, id, "again")
	wantCode(t, "duplicate approver", err, kms.CodeConflict)
	if a, err = carol.Approve(ctx, id, ""); err != nil || a.Approvals != 2 {
		t.Fatalf("carol's approval: %+v, %v", a, err)
	}
	a = waitState(t, alice, id, kms.ApprovalCompleted)
	if len(a.Votes) != 2 || a.Votes[0].Principal != "bob" || a.Votes[0].Comment != "CHG-42" {
		t.Fatalf("votes: %+v", a.Votes)
	}
	if m, _ := alice.DescribeKey(ctx, k.KeyID); m.PrimaryVersion != 2 {
		t.Fatalf("primary version %d after the approved rotation", m.PrimaryVersion)
	}
	// The refusals and each step are on the record.
	if e := findEvents(b, events.TypeApprovalApproved, "alice", "AccessDeniedException", id); len(e) != 1 || e[0].Outcome != events.OutcomeDenied {
		t.Fatalf("self-approval record: %+v", e)
	}
	if e := findEvents(b, events.TypeApprovalApproved, "bob", "ConflictException", id); len(e) != 1 || e[0].Outcome != events.OutcomeFailure {
		t.Fatalf("duplicate approval record: %+v", e)
	}
	for _, p := range []string{"bob", "carol"} {
		if e := findEvents(b, events.TypeApprovalApproved, p, "", id); len(e) != 1 {
			t.Fatalf("%s's approval: %d records", p, len(e))
		}
	}
	if e := findEvents(b, events.TypeApprovalRequested, "alice", "", id); len(e) != 1 || e[0].Data["operation"] != "rotate" {
		t.Fatalf("requested record: %+v", e)
	}
	if e := findEvents(b, events.TypeApprovalCompleted, "keyflow-approvals", "", id); len(e) != 1 || e[0].Data["result"] != "succeeded" {
		t.Fatalf("completed record: %+v", e)
	}

	// Denied: one denial ends it, and the rotation never runs.
	_, err = alice.RotateKey(ctx, k.KeyID)
	id2 := client.PendingApproval(err)
	if id2 == "" {
		t.Fatalf("second rotation: %v", err)
	}
	_, err = dave.Deny(ctx, id2, "")
	wantCode(t, "denial without a reason", err, kms.CodeValidation)
	if a, err = dave.Deny(ctx, id2, "not during the freeze"); err != nil || a.State != "DENIED" {
		t.Fatalf("dave's denial: %+v, %v", a, err)
	}
	_, err = bob.Approve(ctx, id2, "")
	wantCode(t, "approval of a denied request", err, kms.CodeInvalidState)
	if e := findEvents(b, events.TypeApprovalDenied, "dave", "", id2); len(e) != 1 || e[0].Data["comment"] != "not during the freeze" {
		t.Fatalf("denied record: %+v", e)
	}

	// A policy change under dual control: parked, approved, applied. The
	// new policy makes rotation requests expire after one second.
	_, err = alice.SetTenantPolicy(ctx, api.TenantPolicy{Approvals: []api.ApprovalRule{{Operation: "rotate", Required: 2, ExpiresAfter: "1s"}}})
	id3 := client.PendingApproval(err)
	if id3 == "" {
		t.Fatalf("guarded policy change: %v", err)
	}
	if p, _ := alice.GetTenantPolicy(ctx); len(p.Policy.Approvals) != 2 {
		t.Fatal("the policy changed before approval")
	}
	if _, err := carol.Approve(ctx, id3, "reviewed"); err != nil {
		t.Fatal(err)
	}
	waitState(t, alice, id3, kms.ApprovalCompleted)
	if p, _ := alice.GetTenantPolicy(ctx); len(p.Policy.Approvals) != 1 || p.Policy.Approvals[0].ExpiresAfter != "1s" {
		t.Fatalf("policy after the approved change: %+v", p.Policy)
	}

	// Expired: nobody decides in time.
	_, err = alice.RotateKey(ctx, k.KeyID)
	id4 := client.PendingApproval(err)
	if id4 == "" {
		t.Fatalf("third rotation: %v", err)
	}
	waitState(t, alice, id4, kms.ApprovalExpired)
	_, err = bob.Approve(ctx, id4, "")
	wantCode(t, "approval of an expired request", err, kms.CodeInvalidState)
	if e := findEvents(b, events.TypeApprovalExpired, "keyflow-approvals", "", id4); len(e) != 1 {
		t.Fatalf("expired record: %+v", e)
	}
	if e := findEvents(b, events.TypeApprovalApproved, "bob", "KMSInvalidStateException", id4); len(e) != 1 {
		t.Fatalf("refused vote on an expired request: %+v", e)
	}
	if m, _ := alice.DescribeKey(ctx, k.KeyID); m.PrimaryVersion != 2 {
		t.Fatalf("primary version %d: a denied or expired rotation ran", m.PrimaryVersion)
	}
	// Beta sees none of alpha's requests.
	if l, err := b.Client("beta", "eve").ListApprovals(ctx, ""); err != nil || len(l.Approvals) != 0 {
		t.Fatalf("beta's list: %+v, %v", l, err)
	}
	if _, err := b.Client("beta", "eve").ShowApproval(ctx, id); err == nil {
		t.Fatal("beta read alpha's approval")
	}

	// The real server's histories replay (determinism: approved with a
	// child rotation and refused updates, denied, policy change,
	// expired), and they name no key material.
	for _, wid := range []string{id, id2, id3, id4} {
		var h historypb.History
		iter := ts.GetDefaultClient().GetWorkflowHistory(ctx, wid, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for iter.HasNext() {
			e, err := iter.Next()
			if err != nil {
				t.Fatal(err)
			}
			h.Events = append(h.Events, e)
		}
		if *updateApprovalHistory && wid == id {
			saveHistory(t, &h, approvalHistory)
		}
		r := worker.NewWorkflowReplayer()
		r.RegisterWorkflow(workflows.ApprovalWorkflow)
		r.RegisterWorkflow(workflows.RotateKeyWorkflow)
		if err := r.ReplayWorkflowHistory(nil, &h); err != nil {
			t.Errorf("replay of %s: %v", wid, err)
		}
		raw, _ := temporalproto.CustomJSONMarshalOptions{}.Marshal(&h)
		if bytes.Contains(raw, []byte("wrapped")) || bytes.Contains(raw, []byte("Wrapped")) {
			t.Errorf("history of %s mentions wrapped material", wid)
		}
	}
}
