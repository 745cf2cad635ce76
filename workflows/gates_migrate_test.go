package workflows_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/rpc"
	"github.com/keyflow/keyflow/workflows"
)

// testMigrator is the rpc Migrator over the workflow client (the dev
// stack's, reduced to what the gate test reads).
type testMigrator struct{ c *workflows.Client }

func (m testMigrator) StartMigration(context.Context, kms.Caller, api.MigrationStartRequest) (*api.MigrationStatus, error) {
	return nil, &kms.Error{Code: kms.CodeUnsupportedOperation, Message: "the test starts campaigns itself"}
}

func (m testMigrator) SignalMigration(ctx context.Context, c kms.Caller, campaignID, action string) error {
	if action != kms.ControlApprove {
		return &kms.Error{Code: kms.CodeUnsupportedOperation, Message: "approve only"}
	}
	return m.c.SignalMigration(ctx, c.Tenant, campaignID, workflows.SignalApprove, workflows.ControlSignal{Principal: c.Principal, RequestID: c.RequestID})
}

func (m testMigrator) MigrationStatus(ctx context.Context, c kms.Caller, campaignID string) (*api.MigrationStatus, error) {
	s, err := m.c.MigrationStatus(ctx, c.Tenant, campaignID)
	if err != nil {
		return nil, err
	}
	out := &api.MigrationStatus{CampaignID: campaignID, Phase: s.Phase, Done: s.Done, Approvals: []string{}}
	for _, a := range s.Approvals {
		out.Approvals = append(out.Approvals, a.Principal)
	}
	return out, nil
}

// waitOpened waits until approval id exists (a generous bound, no timing
// assertion).
func waitOpened(t *testing.T, c *client.Client, id string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := c.ShowApproval(context.Background(), id)
		if err == nil {
			return
		}
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != string(kms.CodeNotFound) || time.Now().After(deadline) {
			t.Fatalf("approval %s: %v", id, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMigrationCutoverGateOverNATS: with "migration-cutover" in the tenant
// policy (2 of N), the campaign's gate opens an approval request as the
// campaign's starter and `migrate approve` (through NATS) is a vote on
// it: the starter's is refused, a second vote by the same approver is
// refused, one approval does not cut over, a denial leaves the campaign
// at its gate, the next `migrate approve` opens a new round, and two
// distinct approvers cut over.
func TestMigrationCutoverGateOverNATS(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 2)
	b := f.b
	p := f.params()
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	tc := ts.GetDefaultClient()
	w := ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) { workflows.Register(r, &workflows.Activities{KMS: b.KMS, Temporal: tc}) })
	defer w.Stop()
	b.KMS.SetApprovalEngine(&workflows.ApprovalEngine{Temporal: tc, Tokens: b.KMS})
	wc := &workflows.Client{Temporal: tc, Tokens: b.KMS}
	srv, err := rpc.Start(rpc.Config{Conn: b.Conn, KMS: b.KMS, Tenants: b.Identity, JS: b.JS, Migrator: testMigrator{wc}, Workers: 8,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	alice, bob, carol, dave := b.Client("alpha", "alice"), b.Client("alpha", "bob"), b.Client("alpha", "carol"), b.Client("alpha", "dave")
	if _, err := alice.SetTenantPolicy(ctx, api.TenantPolicy{Approvals: []api.ApprovalRule{{Operation: "migration-cutover", Required: 2, ExpiresAfter: "1h"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := wc.StartMigration(ctx, p); err != nil { // alice starts it
		t.Fatal(err)
	}
	waitStatus(t, wc, func(s *workflows.MigrationStatus) bool { return s.Phase == workflows.PhaseAwaitingApproval })
	round1 := kms.CutoverApprovalID("alpha", f.campaign, 1)
	waitOpened(t, bob, round1) // the gate's activity opens it after the phase changed
	a := waitState(t, bob, round1, kms.ApprovalPending)
	if a.Operation != "migration-cutover" || a.Target != f.campaign || a.Requester != "alice" || a.Required != 2 {
		t.Fatalf("cutover request: %+v", a)
	}

	// The starter cannot approve her own campaign.
	_, err = alice.ControlMigration(ctx, api.OpMigrateApprove, f.campaign)
	wantCode(t, "starter's approval", err, kms.CodeAccessDenied)
	if _, err := bob.ControlMigration(ctx, api.OpMigrateApprove, f.campaign); err != nil {
		t.Fatal(err)
	}
	_, err = bob.ControlMigration(ctx, api.OpMigrateApprove, f.campaign)
	wantCode(t, "bob twice", err, kms.CodeConflict)
	if s, err := wc.MigrationStatus(ctx, "alpha", f.campaign); err != nil || s.Phase != workflows.PhaseAwaitingApproval {
		t.Fatalf("after one approval of two: %+v, %v", s, err)
	}
	// A denial ends round 1; the campaign stays at its gate.
	if _, err := dave.Deny(ctx, round1, "wait for the freeze to end"); err != nil {
		t.Fatal(err)
	}
	waitState(t, bob, round1, kms.ApprovalDenied)
	if s, _ := wc.MigrationStatus(ctx, "alpha", f.campaign); s.Phase != workflows.PhaseAwaitingApproval {
		t.Fatalf("after a denial: phase %s", s.Phase)
	}
	if k, _ := b.KMS.DescribeKey(ctx, kms.Caller{Tenant: "alpha", Principal: "alice"}, "alias/billing"); k.ID != f.rsa.ID {
		t.Fatal("the alias moved without approval")
	}

	// The next `migrate approve` opens round 2 (no vote yet); two
	// distinct approvers then cut over.
	if _, err := carol.ControlMigration(ctx, api.OpMigrateApprove, f.campaign); err != nil {
		t.Fatal(err)
	}
	round2 := kms.CutoverApprovalID("alpha", f.campaign, 2)
	waitOpened(t, bob, round2)
	if a := waitState(t, bob, round2, kms.ApprovalPending); a.Requester != "alice" || a.Approvals != 0 {
		t.Fatalf("round 2: %+v", a)
	}
	for _, who := range []string{"bob", "carol"} {
		if _, err := b.Client("alpha", who).ControlMigration(ctx, api.OpMigrateApprove, f.campaign); err != nil {
			t.Fatalf("%s: %v", who, err)
		}
	}
	waitState(t, bob, round2, kms.ApprovalCompleted)
	waitStatus(t, wc, func(s *workflows.MigrationStatus) bool { return s.Phase == workflows.PhaseGrace })
	if k, _ := b.KMS.DescribeKey(ctx, kms.Caller{Tenant: "alpha", Principal: "alice"}, "alias/billing"); k.ID == f.rsa.ID {
		t.Fatal("the alias did not move after the approved cutover")
	}
	if e := findEvents(b, events.TypeApprovalCompleted, "keyflow-approvals", "", round2); len(e) != 1 || e[0].Data["result"] != "succeeded" {
		t.Fatalf("completed record: %+v", e)
	}
	if e := findEvents(b, events.TypeApprovalRequested, "alice", "", round1); len(e) != 1 {
		t.Fatalf("round 1 requested records: %+v", e)
	}
	if e := findEvents(b, events.TypeApprovalApproved, "alice", "AccessDeniedException", round1); len(e) != 1 {
		t.Fatalf("starter's refused approval: %+v", e)
	}
	allValid(t, b)
	// The histories replay on the current code: the campaign with its
	// governed gate (two rounds), and the approval workflows that signal it
	// or were denied.
	for _, wid := range []string{workflows.MigrationWorkflowID("alpha", f.campaign), round1, round2} {
		var h historypb.History
		iter := tc.GetWorkflowHistory(ctx, wid, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for iter.HasNext() {
			e, err := iter.Next()
			if err != nil {
				t.Fatal(err)
			}
			h.Events = append(h.Events, e)
		}
		if *updateMigrationHistory && wid == workflows.MigrationWorkflowID("alpha", f.campaign) {
			saveHistory(t, &h, migrationHistory)
		}
		r := worker.NewWorkflowReplayer()
		r.RegisterWorkflow(workflows.MigrationWorkflow)
		r.RegisterWorkflow(workflows.ApprovalWorkflow)
		if err := r.ReplayWorkflowHistory(nil, &h); err != nil {
			t.Errorf("replay of %s: %v", wid, err)
		}
	}
	if _, err := b.KMS.CutoverVote(ctx, kms.Caller{Tenant: "alpha", Principal: "erin"}, f.campaign); err != nil {
		t.Fatalf("a vote with no request pending: %v", err)
	}
}
