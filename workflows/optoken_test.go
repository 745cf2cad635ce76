package workflows_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	kfclient "github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

// refusals returns the signal-refused records about workflow id, by reason.
func refusals(b *testbed.Bed, id string) map[string]int {
	out := map[string]int{}
	for _, e := range b.EventsOfType("alpha", events.TypeWorkflowSignalRefused) {
		if e.Data["workflowId"] == id && e.Outcome == events.OutcomeDenied && e.Principal == "unauthenticated" {
			out[e.Data["reason"].(string)]++
		}
	}
	return out
}

// TestRawTemporalClientCannotVote replays the side-door attack: a program
// holding only a Temporal SDK client (no keyflow identity) votes on a
// pending approval, straight through the frontend. Without a token, with
// a forged one, an expired one, one for another workflow and one for the
// other decision, every vote is refused, the request is unchanged, and
// each attempt is on the audit trail. The legitimate vote through
// keyflow's API still works afterwards.
func TestRawTemporalClientCannotVote(t *testing.T) {
	ctx := context.Background()
	b, ts := dualControlBed(t)
	alice, bob := b.Client("alpha", "alice"), b.Client("alpha", "bob")
	if _, err := alice.SetTenantPolicy(ctx, api.TenantPolicy{Approvals: []api.ApprovalRule{{Operation: "rotate", Required: 1}}}); err != nil {
		t.Fatal(err)
	}
	k, err := alice.CreateKey(ctx, api.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = alice.RotateKey(ctx, k.KeyID)
	id := kfclient.PendingApproval(err)
	if id == "" {
		t.Fatalf("rotation not parked: %v", err)
	}

	// A clock an hour behind mints tokens that have already expired, with
	// the deployment's real key.
	past, err := kms.New(ctx, kms.Config{HSM: b.HSM, Store: b.Store, Audit: b.Audit, Source: "/keyflow/test",
		Now: func() time.Time { return time.Now().Add(-time.Hour) }, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(past.Close)
	bobCaller := kms.Caller{Tenant: "alpha", Principal: "bob"}
	mintWith := func(s *kms.Service, wfID, op string) *kms.OpToken {
		tok, err := s.MintOpToken(ctx, bobCaller, wfID, op, "")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	forged := mintWith(b.KMS, id, workflows.UpdateApprove)
	forged.MAC[0] ^= 1
	forgedFields := mintWith(b.KMS, id, workflows.UpdateApprove)
	forgedFields.Expires = forgedFields.Expires.Add(time.Hour)
	attempts := []struct {
		name, reason string
		tok          *kms.OpToken
	}{
		{"no token", "missing", nil},
		{"flipped MAC", "forged", forged},
		{"extended expiry", "forged", forgedFields},
		{"expired", "expired", mintWith(past, id, workflows.UpdateApprove)},
		{"another workflow's", "mismatch", mintWith(b.KMS, "rotate/alpha/"+k.KeyID, workflows.UpdateApprove)},
		{"a deny token", "mismatch", mintWith(b.KMS, id, workflows.UpdateDeny)},
	}
	raw := ts.GetDefaultClient() // the attacker's: Temporal access, nothing else
	for i, a := range attempts {
		h, err := raw.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
			WorkflowID: id, UpdateName: workflows.UpdateApprove, WaitForStage: client.WorkflowUpdateStageCompleted,
			Args: []any{workflows.ApprovalVoteInput{Tenant: "alpha", Principal: "bob", Comment: "side door", Token: a.tok}},
		})
		if err == nil {
			err = h.Get(ctx, nil)
		}
		var app *temporal.ApplicationError
		if !errors.As(err, &app) || app.Type() != string(kms.CodeAccessDenied) {
			t.Fatalf("%s: %v, want AccessDeniedException", a.name, err)
		}
		ap, err := alice.ShowApproval(ctx, id)
		if err != nil || ap.State != string(kms.ApprovalPending) || ap.Approvals != 0 || len(ap.Votes) != 0 {
			t.Fatalf("%s changed the request: %+v, %v", a.name, ap, err)
		}
		if got := refusals(b, id); got[a.reason] == 0 || sum(got) != i+1 {
			t.Fatalf("%s: refusal records %v, want one more %q", a.name, got, a.reason)
		}
	}
	if m, _ := alice.DescribeKey(ctx, k.KeyID); m.PrimaryVersion != 1 {
		t.Fatal("the rotation ran")
	}

	// keyflow's own path still works, and its token is not reusable.
	if _, err := bob.Approve(ctx, id, "CHG-7"); err != nil {
		t.Fatal(err)
	}
	a := waitState(t, alice, id, kms.ApprovalCompleted)
	if len(a.Votes) != 1 || a.Votes[0].Principal != "bob" {
		t.Fatalf("votes: %+v", a.Votes)
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestForgedCancelDoesNotStopDeletion: a cancel signal sent around
// keyflow (no token, or bob's token replayed from history into a later
// deletion of the same key) is recorded and ignored; the deletion timer
// runs on and destroys the key.
func TestForgedCancelDoesNotStopDeletion(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	env, s := lifecycleEnv(t, b)
	k, _ := s.CreateKey(ctx, alice, kms.CreateKeyParams{})
	pk, err := s.ScheduleDeletion(ctx, alice, kms.ScheduleDeletionParams{KeyRef: k.ID, Window: 7 * kms.Day})
	if err != nil {
		t.Fatal(err)
	}
	// A genuine token minted before this run started (for an earlier
	// deletion of the same key) is stale here.
	stale := opToken(t, s, "alice", workflows.SignalCancel, "")
	env.SetStartTime(env.Now().Add(5 * time.Minute))
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(workflows.SignalCancel, workflows.CancelSignal{Principal: "alice"})
		env.SignalWorkflow(workflows.SignalCancel, nil)
		env.SignalWorkflow(workflows.SignalCancel, workflows.CancelSignal{Principal: "alice", Token: stale})
	}, time.Minute)
	env.ExecuteWorkflow(workflows.DeletionWorkflow, workflows.DeletionParams{Tenant: "alpha", KeyID: k.ID, DeletionDate: pk.Lifecycle.DeletionDate})
	var res workflows.DeletionResult
	if err := env.GetWorkflowResult(&res); err != nil || res.Cancelled || res.State != kms.StateDestroyed {
		t.Fatalf("deletion: %+v, %v", res, err)
	}
	if got := refusals(b, testWorkflowID); got["missing"] != 2 || got["replayed"] != 1 {
		t.Fatalf("refusal records %v", got)
	}
}

// TestUnsignedCampaignSignalsIgnored: pause and rollback signals without a
// token leave a campaign running to its approval gate.
func TestUnsignedCampaignSignalsIgnored(t *testing.T) {
	f := newFixture(t, 1)
	env := newEnv(t, f.b)
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(workflows.SignalPause, workflows.ControlSignal{Principal: "alice"})
		env.SignalWorkflow(workflows.SignalRollback, workflows.ControlSignal{Principal: "alice"})
	}, 0)
	env.RegisterDelayedCallback(func() {
		s := queryStatus(t, env)
		if s.Paused || s.Phase != workflows.PhaseAwaitingApproval {
			t.Errorf("unsigned signals acted: %+v", s)
		}
		env.SignalWorkflow(workflows.SignalRollback, ctl(t, f.b.KMS, workflows.SignalRollback, "alice"))
	}, time.Hour)
	env.ExecuteWorkflow(workflows.MigrationWorkflow, f.params())
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if got := refusals(f.b, testWorkflowID); got["missing"] != 2 {
		t.Fatalf("refusal records %v", got)
	}
}
