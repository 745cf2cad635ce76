package workflows_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

// envWithClock is newEnv whose activities run on a KMS that tells time by
// the test environment's clock, so skipped time ages the key versions.
func envWithClock(t *testing.T, b *testbed.Bed) (*testsuite.TestWorkflowEnvironment, *kms.Service) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.SetWorkerOptions(worker.Options{DeadlockDetectionTimeout: time.Minute})
	env.SetTestTimeout(2 * time.Minute)
	svc, err := kms.New(context.Background(), kms.Config{
		HSM: b.HSM, Store: b.Store, Audit: b.Audit, Source: "/keyflow/test", Now: env.Now,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	workflows.Register(env, &workflows.Activities{KMS: svc})
	return env, svc
}

// rotated makes a key with v2 primary and v1 deactivated (set in the store,
// as the lifecycle state machine will), and a ciphertext under v1.
func rotated(t *testing.T, b *testbed.Bed) (*kms.Key, []byte) {
	t.Helper()
	ctx := context.Background()
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("kept for years")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.CreateVersion(ctx, alice, kms.CreateVersionParams{KeyID: k.ID, Version: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.SetPrimaryVersion(ctx, alice, kms.SetPrimaryParams{KeyID: k.ID, Version: 2}); err != nil {
		t.Fatal(err)
	}
	got, rev, err := b.Store.GetKey(ctx, "alpha", k.ID)
	if err != nil {
		t.Fatal(err)
	}
	got.Versions[0].State = kms.StateDeactivated
	if _, err := b.Store.UpdateKey(ctx, got, rev); err != nil {
		t.Fatal(err)
	}
	b.KMS.Invalidate("alpha", k.ID)
	return k, enc.Ciphertext
}

func archivedFlag(t *testing.T, b *testbed.Bed, keyID string, version uint32) bool {
	t.Helper()
	k, _, err := b.Store.GetKey(context.Background(), "alpha", keyID)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := k.Version(version)
	return v.Archived
}

// The scheduled archival sleeps durably between passes and archives the
// deactivated version once it is older than the retention age, not before.
func TestArchivalWorkflowOnATimer(t *testing.T) {
	b := testbed.New(t)
	k, ct := rotated(t, b)
	env, _ := envWithClock(t, b)
	const retention = 10 * 24 * time.Hour
	env.RegisterDelayedCallback(func() {
		if archivedFlag(t, b, k.ID, 1) {
			t.Error("archived before the retention age")
		}
	}, retention-36*time.Hour)
	env.RegisterDelayedCallback(func() {
		if !archivedFlag(t, b, k.ID, 1) {
			t.Error("not archived a day after the retention age")
		}
		env.CancelWorkflow()
	}, retention+36*time.Hour)
	env.ExecuteWorkflow(workflows.ArchivalWorkflow, workflows.ArchivalParams{Tenant: "alpha", Principal: "keyflow-archival", Retention: retention, Interval: 24 * time.Hour})
	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not end")
	}
	if err := env.GetWorkflowError(); err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Fatalf("workflow error %v, want cancelled", err)
	}
	_, err := b.KMS.Decrypt(context.Background(), alice, kms.DecryptParams{Ciphertext: ct})
	if !errors.Is(err, kms.ErrInvalidState) || !strings.Contains(err.Error(), "archived") {
		t.Fatalf("decrypt under the archived version: %v", err)
	}
	// One record for the one archival, though passes ran on after it.
	if evs := b.EventsOfType("alpha", events.TypeKeyVersionArchived); len(evs) != 1 || evs[0].Outcome != events.OutcomeSuccess {
		t.Fatalf("archived events: %+v", evs)
	}
}

// A single pass archives what is due and reports it; a second pass finds
// nothing.
func TestArchivalWorkflowSinglePass(t *testing.T) {
	b := testbed.New(t)
	k, _ := rotated(t, b)
	for i, want := range []int{1, 0} {
		env, _ := envWithClock(t, b)
		env.SetStartTime(time.Now().Add(kms.DefaultArchiveRetention + time.Hour))
		env.ExecuteWorkflow(workflows.ArchivalWorkflow, workflows.ArchivalParams{Tenant: "alpha", Principal: "keyflow-archival"})
		var res workflows.ArchivalResult
		if err := env.GetWorkflowResult(&res); err != nil {
			t.Fatal(err)
		}
		if len(res.Archived) != want || len(res.Failed) != 0 || (want == 1 && res.Archived[0] != (kms.VersionRef{KeyID: k.ID, Version: 1})) {
			t.Fatalf("pass %d: %+v, want %d archived", i+1, res, want)
		}
	}
}

// Recovery waits for an approval: the requester's own is refused (and
// recorded as denied), another principal's restores the version.
func TestRecoveryWorkflowNeedsAnotherPrincipal(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k, ct := rotated(t, b)
	env, svc := envWithClock(t, b)
	env.SetStartTime(time.Now().Add(kms.DefaultArchiveRetention + time.Hour))
	// Archive first, with the same aged clock.
	env.ExecuteWorkflow(workflows.ArchivalWorkflow, workflows.ArchivalParams{Tenant: "alpha", Principal: "keyflow-archival"})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RequestVersionRestore(ctx, alice, k.ID, 1); err != nil {
		t.Fatal(err)
	}

	env, _ = envWithClock(t, b)
	env.RegisterDelayedCallback(func() {
		v, err := env.QueryWorkflow(workflows.QueryRestoreRequester)
		var who string
		if err != nil || v.Get(&who) != nil || who != "alice" {
			t.Errorf("requester query: %q, %v", who, err)
		}
		env.SignalWorkflow(workflows.SignalRestoreDecision, workflows.RestoreDecision{Principal: "alice", Approve: true, Token: opToken(t, svc, "alice", workflows.SignalRestoreDecision+"/approve", "")})
	}, time.Hour)
	env.RegisterDelayedCallback(func() {
		if !archivedFlag(t, b, k.ID, 1) {
			t.Error("the requester's own approval restored the version")
		}
		env.SignalWorkflow(workflows.SignalRestoreDecision, workflows.RestoreDecision{Principal: "bob", Approve: true, RequestID: "r2", Token: opToken(t, svc, "bob", workflows.SignalRestoreDecision+"/approve", "")})
	}, 2*time.Hour)
	env.ExecuteWorkflow(workflows.RecoveryWorkflow, workflows.RecoveryParams{Tenant: "alpha", KeyID: k.ID, Version: 1, Principal: "alice", RequestID: "r1"})
	var res workflows.RecoveryResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Outcome != workflows.RecoveryRestored || res.DecidedBy != "bob" {
		t.Fatalf("recovery: %+v", res)
	}
	b.KMS.Invalidate("alpha", k.ID)
	dec, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: ct})
	if err != nil || string(dec.Plaintext) != "kept for years" {
		t.Fatalf("decrypt after recovery: %v", err)
	}
	approvals := b.EventsOfType("alpha", events.TypeKeyVersionRestoreApproved)
	if len(approvals) != 2 || approvals[0].Outcome != events.OutcomeDenied || approvals[0].Principal != "alice" ||
		approvals[1].Outcome != events.OutcomeSuccess || approvals[1].Principal != "bob" {
		t.Fatalf("approval events: %+v", approvals)
	}
	if n := len(b.EventsOfType("alpha", events.TypeKeyVersionRestored)); n != 1 {
		t.Fatalf("%d restored events, want 1", n)
	}
}

// With no decision the request expires after the approval window (72 h by
// default, skipped here), and the version stays archived.
func TestRecoveryWorkflowExpires(t *testing.T) {
	b := testbed.New(t)
	k, _ := rotated(t, b)
	env, _ := envWithClock(t, b)
	env.SetStartTime(time.Now().Add(kms.DefaultArchiveRetention + time.Hour))
	env.ExecuteWorkflow(workflows.ArchivalWorkflow, workflows.ArchivalParams{Tenant: "alpha", Principal: "keyflow-archival"})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	env, _ = envWithClock(t, b)
	env.ExecuteWorkflow(workflows.RecoveryWorkflow, workflows.RecoveryParams{Tenant: "alpha", KeyID: k.ID, Version: 1, Principal: "alice"})
	var res workflows.RecoveryResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Outcome != workflows.RecoveryExpired {
		t.Fatalf("recovery: %+v, want EXPIRED", res)
	}
	if !archivedFlag(t, b, k.ID, 1) {
		t.Fatal("an expired request restored the version")
	}
	evs := b.EventsOfType("alpha", events.TypeKeyVersionRestoreRejected)
	if len(evs) != 1 || evs[0].Data["reason"] != "expired" {
		t.Fatalf("rejected events: %+v", evs)
	}
}

// The workflows' inputs and outputs (what Temporal stores in history)
// hold IDs, numbers, principals and durations only.
func TestArchivalHistoryHoldsNoMaterial(t *testing.T) {
	for _, v := range []any{
		workflows.ArchivalParams{Tenant: "alpha", Principal: "p", RequestID: "r", Retention: time.Hour, Interval: time.Hour, Passes: 1},
		workflows.ArchivalResult{Archived: []kms.VersionRef{{KeyID: "k", Version: 1}}},
		workflows.ArchiveVersionStep{KeyStep: workflows.KeyStep{Tenant: "alpha", KeyID: "k", Version: 1}, Retention: time.Hour},
		workflows.RecoveryParams{Tenant: "alpha", KeyID: "k", Version: 1, Principal: "p", RequestID: "r", ApprovalTimeout: time.Hour},
		workflows.RecoveryResult{KeyID: "k", Version: 1, Outcome: workflows.RecoveryRestored, DecidedBy: "bob"},
		workflows.RestoreDecision{Principal: "bob", RequestID: "r", Approve: true},
		workflows.DecisionStep{KeyStep: workflows.KeyStep{KeyID: "k"}, Requester: "p", Approve: true, Seq: 1},
	} {
		b, _ := json.Marshal(v)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		for k := range m {
			switch k {
			case "Tenant", "KeyID", "Principal", "RequestID", "Version", "Retention", "Interval", "Passes",
				"Archived", "Failed", "KeyStep", "ApprovalTimeout", "Outcome", "DecidedBy", "Approve", "Requester", "Seq":
			default:
				t.Errorf("%T: unexpected field %q in workflow payload", v, k)
			}
		}
	}
}
