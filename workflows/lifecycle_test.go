package workflows_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

// lifecycleEnv is a test environment whose domain service reads the
// environment's (skipping) clock, so a 30-day window passes in no time
// for the workflow and the domain alike.
func lifecycleEnv(t *testing.T, b *testbed.Bed) (*testsuite.TestWorkflowEnvironment, *kms.Service) {
	t.Helper()
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestWorkflowEnvironment()
	env.SetWorkerOptions(worker.Options{DeadlockDetectionTimeout: time.Minute})
	env.SetTestTimeout(2 * time.Minute)
	s, err := kms.New(context.Background(), kms.Config{
		HSM: b.HSM, Store: b.Store, Audit: b.Audit, Source: "/keyflow/test", Now: env.Now,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	workflows.Register(env, &workflows.Activities{KMS: s})
	return env, s
}

func TestDeletionWorkflowDestroysAfterWindow(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	env, s := lifecycleEnv(t, b)
	k, err := s.CreateKey(ctx, alice, kms.CreateKeyParams{})
	if err != nil {
		t.Fatal(err)
	}
	pk, err := s.ScheduleDeletion(ctx, alice, kms.ScheduleDeletionParams{KeyRef: k.ID})
	if err != nil {
		t.Fatal(err)
	}
	start := env.Now()
	env.ExecuteWorkflow(workflows.DeletionWorkflow, workflows.DeletionParams{Tenant: "alpha", KeyID: k.ID, DeletionDate: pk.Lifecycle.DeletionDate, Principal: "alice"})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	var res workflows.DeletionResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Cancelled || res.State != kms.StateDestroyed || len(res.Versions) != 1 {
		t.Fatalf("result %+v", res)
	}
	if waited := env.Now().Sub(start); waited < 30*kms.Day-time.Minute {
		t.Fatalf("destroyed after %s, before the 30-day window", waited)
	}
	if _, err := b.Store.GetMaterial(ctx, "alpha", k.ID, 1); !errors.Is(err, kms.ErrStoreNotFound) {
		t.Fatalf("material after destruction: %v", err)
	}
	got, err := s.DescribeKey(ctx, alice, k.ID)
	if err != nil || got.State != kms.StateDestroyed {
		t.Fatalf("metadata after destruction: %v %+v", err, got)
	}
	for _, typ := range []string{events.TypeKeyMaterialDestroyed, events.TypeKeyDestroyed} {
		if evs := b.EventsOfType("alpha", typ); len(evs) != 1 || evs[0].Outcome != events.OutcomeSuccess {
			t.Fatalf("%s records: %+v", typ, evs)
		}
	}
}

// cancel-deletion during the window: the signal ends the timer and
// nothing is destroyed. Without the signal (metadata cancelled only), the
// timer fires and the first step finds nothing to do.
func TestDeletionWorkflowCancelled(t *testing.T) {
	ctx := context.Background()
	for _, signal := range []bool{true, false} {
		b := testbed.New(t)
		env, s := lifecycleEnv(t, b)
		k, _ := s.CreateKey(ctx, alice, kms.CreateKeyParams{})
		pk, err := s.ScheduleDeletion(ctx, alice, kms.ScheduleDeletionParams{KeyRef: k.ID, Window: 7 * kms.Day})
		if err != nil {
			t.Fatal(err)
		}
		env.RegisterDelayedCallback(func() {
			if _, err := s.CancelDeletion(ctx, alice, k.ID); err != nil {
				t.Error(err)
			}
			if signal {
				env.SignalWorkflow(workflows.SignalCancel, workflows.CancelSignal{Principal: "alice", Token: opToken(t, s, "alice", workflows.SignalCancel, "")})
			}
		}, 3*kms.Day)
		env.ExecuteWorkflow(workflows.DeletionWorkflow, workflows.DeletionParams{Tenant: "alpha", KeyID: k.ID, DeletionDate: pk.Lifecycle.DeletionDate})
		var res workflows.DeletionResult
		if err := env.GetWorkflowResult(&res); err != nil || !res.Cancelled {
			t.Fatalf("signal=%v: %v %+v", signal, err, res)
		}
		if _, err := s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("still here")}); err != nil {
			t.Fatalf("signal=%v: encrypt after cancel: %v", signal, err)
		}
		if n := len(b.EventsOfType("alpha", events.TypeKeyDestroyed)); n != 0 {
			t.Fatalf("signal=%v: %d destroyed records", signal, n)
		}
	}
}

func TestActivationWorkflow(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	env, s := lifecycleEnv(t, b)
	at := env.Now().Add(10 * kms.Day)
	k, err := s.CreateKey(ctx, alice, kms.CreateKeyParams{ActivationDate: at})
	if err != nil || k.State != kms.StatePreActive {
		t.Fatalf("create: %v %+v", err, k)
	}
	env.RegisterDelayedCallback(func() {
		_, err := s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")})
		if !errors.Is(err, kms.ErrInvalidState) {
			t.Errorf("encrypt on day 5: %v, want KMSInvalidStateException", err)
		}
	}, 5*kms.Day)
	env.ExecuteWorkflow(workflows.ActivationWorkflow, workflows.ActivationParams{Tenant: "alpha", KeyID: k.ID, ActivationDate: at})
	var ok bool
	if err := env.GetWorkflowResult(&ok); err != nil || !ok {
		t.Fatalf("activation: %v %v", err, ok)
	}
	if env.Now().Before(at) {
		t.Fatalf("activated at %s, before %s", env.Now(), at)
	}
	if _, err := s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	var transitions []any
	for _, e := range b.EventsOfType("alpha", events.TypeKeyStateChanged) {
		transitions = append(transitions, e.Data["transition"])
	}
	if len(transitions) != 1 || transitions[0] != "T4" {
		t.Fatalf("state changes: %v", transitions)
	}
}

// The cryptoperiod timer deactivates the version at the end of its
// originator-usage period (T8), once.
func TestCryptoperiodWorkflow(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	env, s := lifecycleEnv(t, b)
	k, err := s.CreateKey(ctx, alice, kms.CreateKeyParams{Cryptoperiod: 2 * kms.Day})
	if err != nil {
		t.Fatal(err)
	}
	env.RegisterDelayedCallback(func() {
		got, _ := s.DescribeKey(ctx, alice, k.ID)
		if got.Versions[0].State != kms.StateActive {
			t.Errorf("day 1: version is %s", got.Versions[0].State)
		}
	}, kms.Day)
	env.RegisterDelayedCallback(func() {
		got, _ := s.DescribeKey(ctx, alice, k.ID)
		if got.Versions[0].State != kms.StateDeactivated {
			t.Errorf("day 3: version is %s", got.Versions[0].State)
		}
		env.CancelWorkflow()
	}, 3*kms.Day)
	env.ExecuteWorkflow(workflows.CryptoperiodWorkflow, workflows.CryptoperiodParams{Tenant: "alpha", KeyID: k.ID})
	var changes []string
	for _, e := range b.EventsOfType("alpha", events.TypeKeyStateChanged) {
		changes = append(changes, e.Data["transition"].(string)+" "+e.Data["to"].(string))
	}
	if len(changes) != 1 || changes[0] != "T8 DEACTIVATED" {
		t.Fatalf("state changes: %v", changes)
	}
}

// fakeRewrap stands in for the data-key registry's RewrapWorkflow: it
// reports one rewrapped data key and none left.
func fakeRewrap(ctx workflow.Context, p workflows.RewrapParams) (*workflows.RewrapResult, error) {
	if len(p.FromVersions) != 1 || p.FromVersions[0] != 1 {
		return nil, errors.New("rewrap asked for the wrong versions")
	}
	return &workflows.RewrapResult{Rewrapped: 1, Remaining: 0}, nil
}

func TestRemediationWorkflow(t *testing.T) {
	ctx := context.Background()
	for _, fake := range []bool{true, false} {
		b := testbed.New(t)
		env, s := lifecycleEnv(t, b)
		if fake {
			env.RegisterWorkflowWithOptions(fakeRewrap, workflow.RegisterOptions{Name: "RewrapWorkflow", DisableAlreadyRegisteredCheck: true})
		}
		k, _ := s.CreateKey(ctx, alice, kms.CreateKeyParams{})
		old, _ := s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")})
		// A registered data key under the version about to be compromised:
		// the real RewrapWorkflow must move it away (it may open it only
		// because remediation asks with the compromise override).
		reg, err := s.RegisterDataKey(ctx, alice, kms.RegisterDataKeyParams{Ciphertext: old.Ciphertext})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Compromise(ctx, alice, kms.CompromiseParams{KeyRef: k.ID, Reason: "leaked"}); err != nil {
			t.Fatal(err)
		}
		env.ExecuteWorkflow(workflows.RemediationWorkflow, workflows.RemediationParams{Tenant: "alpha", KeyID: k.ID, Version: 1, Reason: "leaked", Principal: "alice"})
		var res workflows.RemediationResult
		if err := env.GetWorkflowResult(&res); err != nil {
			t.Fatal(err)
		}
		if res.NewVersion != 2 || res.Rewrapped != 1 || res.Remaining != 0 || len(res.Problems) != 0 {
			t.Fatalf("fake rewrap=%v: %+v", fake, res)
		}
		if !fake {
			got, err := s.GetDataKey(ctx, alice, reg.ID)
			if err != nil || got.KeyVersion != 2 {
				t.Fatalf("registration after remediation: %+v, %v", got, err)
			}
		}
		got, _ := s.DescribeKey(ctx, alice, k.ID)
		if got.PrimaryVersion != 2 || got.Versions[0].State != kms.StateCompromised || got.Versions[1].State != kms.StateActive {
			t.Fatalf("key after remediation: %+v", got)
		}
		if _, err := s.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: old.Ciphertext}); !errors.Is(err, kms.ErrInvalidState) {
			t.Fatalf("decrypt under the compromised version: %v", err)
		}
		rep := b.EventsOfType("alpha", events.TypeKeyRemediated)
		if len(rep) != 1 || rep[0].Data["newVersion"] != float64(2) {
			t.Fatalf("report records: %+v", rep)
		}
	}
}

// A fleet rotation rotates every ACTIVE key once, skips the others, and a
// second run of the same campaign (a retry) rotates nothing again.
func TestFleetRotateWorkflow(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	env, s := lifecycleEnv(t, b)
	var ids []string
	for i := range 7 {
		k, err := s.CreateKey(ctx, alice, kms.CreateKeyParams{})
		if err != nil {
			t.Fatal(err)
		}
		if i == 3 {
			if _, err := s.SetState(ctx, alice, kms.SetStateParams{KeyRef: k.ID, To: kms.StateSuspended}); err != nil {
				t.Fatal(err)
			}
		}
		ids = append(ids, k.ID)
	}
	since := env.Now()
	p := workflows.FleetRotateParams{Tenant: "alpha", Principal: "alice", BatchSize: 3, Concurrency: 2, Since: since}
	env.ExecuteWorkflow(workflows.FleetRotateWorkflow, p)
	var res workflows.FleetRotateResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Rotated != 6 || res.Skipped != 1 || res.Failed != 0 {
		t.Fatalf("result %+v", res)
	}
	// The same campaign again: every key is done already.
	env2, _ := lifecycleEnv(t, b)
	env2.ExecuteWorkflow(workflows.FleetRotateWorkflow, p)
	if err := env2.GetWorkflowResult(&res); err != nil || res.Rotated != 0 || res.Skipped != 7 {
		t.Fatalf("second run: %v %+v", err, res)
	}
	for i, id := range ids {
		k, _ := s.GetKey(ctx, alice, id)
		want := 2
		if i == 3 {
			want = 1
		}
		if len(k.Versions) != want {
			t.Errorf("key %d has %d versions, want %d", i, len(k.Versions), want)
		}
	}
	if n := len(b.EventsOfType("alpha", events.TypeKeyRotated)); n != 6 {
		t.Fatalf("%d rotated records, want 6", n)
	}
}
