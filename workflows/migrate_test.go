package workflows_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/temporalproto"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"go.temporal.io/server/temporaltest"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

// fixture is a tenant with an RSA encryption key holding registered
// RSA-OAEP data keys, and an ECDSA signing key behind an alias.
type fixture struct {
	b        *testbed.Bed
	rsa, ec  *kms.Key
	regs     []*kms.DataKey
	secrets  [][]byte
	campaign string
}

func newFixture(t *testing.T, n int) *fixture {
	ctx := context.Background()
	f := &fixture{b: testbed.New(t), campaign: "pq-2026"}
	var err error
	if f.rsa, err = f.b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Alias: "billing", Spec: kms.SpecRSA3072, Usage: kms.UsageEncryptDecrypt}); err != nil {
		t.Fatal(err)
	}
	if f.ec, err = f.b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Alias: "release-signing", Spec: kms.SpecECCP256}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		secret := bytes.Repeat([]byte{byte(i + 1)}, 32)
		ct, err := f.b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: f.rsa.ID, Plaintext: secret, Algorithm: kms.EncRSAOAEPSHA256})
		if err != nil {
			t.Fatal(err)
		}
		d, err := f.b.KMS.RegisterDataKey(ctx, alice, kms.RegisterDataKeyParams{Ciphertext: ct.Ciphertext, KeyRef: f.rsa.ID, Algorithm: kms.EncRSAOAEPSHA256, Label: fmt.Sprintf("row-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		f.regs = append(f.regs, d)
		f.secrets = append(f.secrets, secret)
	}
	return f
}

func (f *fixture) params() workflows.MigrationParams {
	return workflows.MigrationParams{
		CampaignID: f.campaign, Tenant: "alpha", Principal: "alice", RequestID: "r1",
		Keys: []workflows.MigrationKey{
			{SourceKeyID: f.rsa.ID, TargetSpec: string(kms.SpecXWing)},
			{SourceKeyID: f.ec.ID, TargetSpec: string(kms.SpecMLDSA65)},
		},
		GracePeriod: 30 * 24 * time.Hour, BatchSize: 2,
	}
}

// checkRewrapped asserts that every registration now opens under the
// target key with its original plaintext, after exactly one rewrap.
func (f *fixture) checkRewrapped(t *testing.T, target string) {
	t.Helper()
	ctx := context.Background()
	for i, r := range f.regs {
		d, err := f.b.KMS.GetDataKey(ctx, alice, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if d.KeyID != target || d.Rewraps != 1 {
			t.Fatalf("registration %d: key %s after %d rewraps, want %s after 1", i, d.KeyID, d.Rewraps, target)
		}
		pt, err := f.b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: d.Ciphertext, Context: d.Context})
		if err != nil || !bytes.Equal(pt.Plaintext, f.secrets[i]) {
			t.Fatalf("registration %d does not open to its data key: %v", i, err)
		}
	}
}

func queryStatus(t *testing.T, env *testsuite.TestWorkflowEnvironment) workflows.MigrationStatus {
	t.Helper()
	v, err := env.QueryWorkflow(workflows.QueryStatus)
	if err != nil {
		t.Fatal(err)
	}
	var s workflows.MigrationStatus
	if err := v.Get(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// runContinued runs a workflow in the test environment and, each time it
// continues as new, runs the next run with the input it carried, as the
// server would. before is called on each fresh environment.
func runContinued[P any](t *testing.T, b *testbed.Bed, wf any, p P, before func(env *testsuite.TestWorkflowEnvironment, run int)) (*testsuite.TestWorkflowEnvironment, int) {
	t.Helper()
	for run := 1; ; run++ {
		env := newEnv(t, b)
		if before != nil {
			before(env, run)
		}
		env.ExecuteWorkflow(wf, p)
		if !env.IsWorkflowCompleted() {
			t.Fatal("workflow did not complete")
		}
		var can *workflow.ContinueAsNewError
		if err := env.GetWorkflowError(); errors.As(err, &can) {
			if err := converter.GetDefaultDataConverter().FromPayloads(can.Input, &p); err != nil {
				t.Fatal(err)
			}
			if run > 100 {
				t.Fatal("too many runs")
			}
			continue
		}
		return env, run
	}
}

// The whole campaign: targets, dual signing, rewrap in batches across
// ContinueAsNew, the approval gate, cutover, the 30-day grace period
// (skipped) and retirement, every step audited once.
func TestMigrationWorkflowFullCampaign(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 5)
	p := f.params()
	p.MaxBatchesPerRun = 1 // a batch of 2 per run: 5 items need several runs
	rsaTarget := kms.TargetKeyID("alpha", f.campaign, f.rsa.ID)
	ecTarget := kms.TargetKeyID("alpha", f.campaign, f.ec.ID)
	sawGate := false
	env, runs := runContinued(t, f.b, workflows.MigrationWorkflow, p, func(env *testsuite.TestWorkflowEnvironment, run int) {
		env.RegisterDelayedCallback(func() {
			s := queryStatus(t, env)
			if s.Phase != workflows.PhaseAwaitingApproval {
				return // an earlier run: still rewrapping
			}
			sawGate = true
			if s.Total != 5 || s.Rewrapped != 5 || s.Failed != 0 {
				t.Errorf("at the gate: total %d rewrapped %d failed %d, want 5/5/0", s.Total, s.Rewrapped, s.Failed)
			}
			// Dual signing: Sign on the ECDSA key returns an ML-DSA
			// signature too, and either verifies on either key.
			msg := []byte("release 1.2.3")
			sig, err := f.b.KMS.Sign(ctx, alice, kms.SignParams{KeyRef: "alias/release-signing", Message: msg, Algorithm: kms.SignECDSASHA256})
			if err != nil || len(sig.Additional) != 1 || sig.Additional[0].KeyID != ecTarget || sig.Additional[0].Algorithm != kms.SignMLDSA {
				t.Errorf("dual signing: %+v %v", sig, err)
				return
			}
			for _, ref := range []string{f.ec.ID, ecTarget} {
				if _, err := f.b.KMS.Verify(ctx, alice, kms.VerifyParams{KeyRef: ref, Message: msg, Algorithm: kms.SignMLDSA, Signature: sig.Additional[0].Signature}); err != nil {
					t.Errorf("ML-DSA signature on %s: %v", ref, err)
				}
				if _, err := f.b.KMS.Verify(ctx, alice, kms.VerifyParams{KeyRef: ref, Message: msg, Algorithm: kms.SignECDSASHA256, Signature: sig.Signature}); err != nil {
					t.Errorf("ECDSA signature on %s: %v", ref, err)
				}
			}
			// A data key registered under the source after the rewrap
			// pass: the post-cutover sweep moves it before retirement.
			late := []byte("registered after the first pass..")
			ct, err := f.b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: f.rsa.ID, Plaintext: late, Algorithm: kms.EncRSAOAEPSHA256})
			if err != nil {
				t.Error(err)
				return
			}
			d, err := f.b.KMS.RegisterDataKey(ctx, alice, kms.RegisterDataKeyParams{Ciphertext: ct.Ciphertext, KeyRef: f.rsa.ID, Algorithm: kms.EncRSAOAEPSHA256})
			if err != nil {
				t.Error(err)
				return
			}
			f.regs, f.secrets = append(f.regs, d), append(f.secrets, late)
			env.SignalWorkflow(workflows.SignalApprove, ctl(t, f.b.KMS, workflows.SignalApprove, "carol"))
		}, time.Hour)
		env.RegisterDelayedCallback(func() {
			s := queryStatus(t, env)
			if s.Phase != workflows.PhaseGrace {
				return
			}
			// Cutover: the aliases name the targets, the sources only
			// decrypt and verify.
			src, _ := f.b.KMS.DescribeKey(ctx, alice, f.ec.ID)
			dst, _ := f.b.KMS.DescribeKey(ctx, alice, "alias/release-signing")
			if src.State != kms.StateDeactivated || dst.ID != ecTarget || dst.Spec != kms.SpecMLDSA65 {
				t.Errorf("after cutover: source %s, alias names %s (%s)", src.State, dst.ID, dst.Spec)
			}
			if _, err := f.b.KMS.Sign(ctx, alice, kms.SignParams{KeyRef: f.ec.ID, Message: []byte("x"), Algorithm: kms.SignECDSASHA256}); !errors.Is(err, kms.ErrInvalidState) {
				t.Errorf("sign on the retired-to-be source: %v, want KMSInvalidStateException", err)
			}
		}, 48*time.Hour)
	})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if runs < 3 {
		t.Fatalf("the campaign ran in %d runs; with one batch of 2 per run it must continue as new", runs)
	}
	if !sawGate {
		t.Fatal("the campaign never waited at the approval gate")
	}
	var res workflows.MigrationStatus
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Phase != workflows.PhaseRetired || !res.Done || len(res.Approvals) != 1 || res.Approvals[0].Principal != "carol" {
		t.Fatalf("result %+v", res)
	}
	for _, k := range res.Keys {
		if !k.Retired || k.RetireBlocked {
			t.Errorf("key %s not retired: %+v", k.SourceKeyID, k)
		}
	}
	f.checkRewrapped(t, rsaTarget)
	if n, _ := f.b.KMS.CountDataKeys(ctx, alice, f.rsa.ID); len(n) != 0 {
		t.Fatalf("registrations still under the source: %v", n)
	}
	// Every move and every step is recorded once.
	if n := len(f.b.EventsOfType("alpha", events.TypeDataKeyRewrapped)); n != 6 {
		t.Fatalf("%d rewrapped records, want 6 (5, and 1 by the sweep)", n)
	}
	if res.Rewrapped != 6 || res.Total != 6 {
		t.Fatalf("final counts: %d of %d rewrapped, want 6 of 6", res.Rewrapped, res.Total)
	}
	phases := map[string]int{}
	for _, e := range f.b.EventsOfType("alpha", events.TypeMigrationPhase) {
		phases[e.Data["phase"].(string)]++
	}
	for _, ph := range []string{workflows.PhaseDualSigning, workflows.PhaseRewrapping, workflows.PhaseAwaitingApproval, workflows.PhaseCutover, workflows.PhaseGrace, workflows.PhaseRetired} {
		if phases[ph] != 1 {
			t.Errorf("phase %s recorded %d times, want 1 (%v)", ph, phases[ph], phases)
		}
	}
	actions := map[string]int{}
	for _, e := range f.b.EventsOfType("alpha", events.TypeMigrationKey) {
		actions[e.Data["action"].(string)]++
	}
	for _, a := range []string{"target-created", "linked", "cutover", "retired"} {
		if actions[a] != 2 {
			t.Errorf("%s recorded %d times, want 2 (one per key): %v", a, actions[a], actions)
		}
	}
	if n := len(f.b.EventsOfType("alpha", events.TypeMigrationStarted)); n != 1 {
		t.Errorf("%d started records, want 1", n)
	}
}

// Pause holds the campaign between batches; resume continues it; rollback
// before retirement restores the sources and leaves the rewrapped data
// keys decryptable under the targets.
func TestMigrationWorkflowPauseResumeRollback(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 4)
	p := f.params()
	rsaTarget := kms.TargetKeyID("alpha", f.campaign, f.rsa.ID)
	env := newEnv(t, f.b)
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(workflows.SignalPause, ctl(t, f.b.KMS, workflows.SignalPause, "alice"))
	}, 0)
	env.RegisterDelayedCallback(func() {
		s := queryStatus(t, env)
		if !s.Paused || s.Phase == workflows.PhaseAwaitingApproval || s.Rewrapped == 4 {
			t.Errorf("paused campaign moved on: %+v", s)
		}
		env.SignalWorkflow(workflows.SignalResume, ctl(t, f.b.KMS, workflows.SignalResume, "alice"))
	}, time.Hour)
	env.RegisterDelayedCallback(func() {
		s := queryStatus(t, env)
		if s.Paused || s.Phase != workflows.PhaseAwaitingApproval || s.Rewrapped != 4 {
			t.Errorf("resumed campaign: %+v", s)
		}
		env.SignalWorkflow(workflows.SignalRollback, ctl(t, f.b.KMS, workflows.SignalRollback, "alice"))
	}, 2*time.Hour)
	env.ExecuteWorkflow(workflows.MigrationWorkflow, p)
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	var res workflows.MigrationStatus
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Phase != workflows.PhaseRolledBack {
		t.Fatalf("phase %s, want rolled-back", res.Phase)
	}
	// The sources are back: ACTIVE, with their aliases, no links, no
	// dual signing.
	for _, ref := range []string{"alias/billing", "alias/release-signing"} {
		k, err := f.b.KMS.DescribeKey(ctx, alice, ref)
		if err != nil || (k.ID != f.rsa.ID && k.ID != f.ec.ID) || k.State != kms.StateActive || k.Migration != nil {
			t.Fatalf("%s after rollback: %+v %v", ref, k, err)
		}
	}
	sig, err := f.b.KMS.Sign(ctx, alice, kms.SignParams{KeyRef: f.ec.ID, Message: []byte("m"), Algorithm: kms.SignECDSASHA256})
	if err != nil || len(sig.Additional) != 0 {
		t.Fatalf("sign after rollback: %+v %v", sig, err)
	}
	tgt, _ := f.b.KMS.DescribeKey(ctx, alice, rsaTarget)
	if tgt.State != kms.StateDeactivated {
		t.Fatalf("target after rollback is %s, want DEACTIVATED", tgt.State)
	}
	// Rewrapped data keys stay under the (decrypt-only) target and open.
	f.checkRewrapped(t, rsaTarget)
	ctl := f.b.EventsOfType("alpha", events.TypeMigrationPhase)
	var paused, resumed, rolled int
	for _, e := range ctl {
		switch {
		case e.Data["phase"] == workflows.PhaseRolledBack:
			rolled++
		case e.Data["paused"] == true:
			paused++
		case e.Data["paused"] == false && e.Data["phase"] != nil:
			resumed++
		}
	}
	if paused != 1 || rolled != 1 {
		t.Fatalf("paused %d, rolled back %d records; want 1 each", paused, rolled)
	}
	if n := len(f.b.EventsOfType("alpha", events.TypeMigrationKey)); n == 0 {
		t.Fatal("no key records")
	}
}

// The gate holds until enough distinct principals approve: with two
// required, the same principal approving twice counts once, and the
// campaign waits (here a year of skipped time) without cutting over; a
// rollback from there restores everything.
func TestMigrationWorkflowApprovalGateHolds(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1)
	p := f.params()
	p.RequiredApprovals = 2
	env := newEnv(t, f.b)
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(workflows.SignalApprove, ctl(t, f.b.KMS, workflows.SignalApprove, "carol"))
		env.SignalWorkflow(workflows.SignalApprove, ctl(t, f.b.KMS, workflows.SignalApprove, "carol"))
	}, time.Hour)
	env.RegisterDelayedCallback(func() {
		s := queryStatus(t, env)
		if s.Phase != workflows.PhaseAwaitingApproval || len(s.Approvals) != 1 {
			t.Errorf("after a year with one approver: phase %s, %d approvals", s.Phase, len(s.Approvals))
		}
		if k, _ := f.b.KMS.DescribeKey(ctx, alice, "alias/billing"); k.ID != f.rsa.ID {
			t.Errorf("the alias moved without approval")
		}
		env.SignalWorkflow(workflows.SignalRollback, ctl(t, f.b.KMS, workflows.SignalRollback, "alice"))
	}, 365*24*time.Hour)
	env.ExecuteWorkflow(workflows.MigrationWorkflow, p)
	var res workflows.MigrationStatus
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Phase != workflows.PhaseRolledBack {
		t.Fatalf("result %+v", res)
	}
}

// The rewrap workflow (rotation's and remediation's) moves registered
// data keys of old versions to the primary, continuing as new with its
// cursor, and skips what is already there.
func TestRewrapWorkflowContinuesAsNew(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 5 {
		dk, err := b.KMS.GenerateDataKey(ctx, alice, kms.GenerateDataKeyParams{KeyRef: k.ID, Context: kms.EncryptionContext{"row": fmt.Sprint(i)}})
		if err != nil {
			t.Fatal(err)
		}
		d, err := b.KMS.RegisterDataKey(ctx, alice, kms.RegisterDataKeyParams{Ciphertext: dk.CiphertextBlob, Context: kms.EncryptionContext{"row": fmt.Sprint(i)}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.ID)
	}
	if _, err := b.KMS.CreateVersion(ctx, alice, kms.CreateVersionParams{KeyID: k.ID, Version: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.SetPrimaryVersion(ctx, alice, kms.SetPrimaryParams{KeyID: k.ID, Version: 2}); err != nil {
		t.Fatal(err)
	}
	// One registration made after the rotation is already current.
	dk, _ := b.KMS.GenerateDataKey(ctx, alice, kms.GenerateDataKeyParams{KeyRef: k.ID})
	if _, err := b.KMS.RegisterDataKey(ctx, alice, kms.RegisterDataKeyParams{Ciphertext: dk.CiphertextBlob}); err != nil {
		t.Fatal(err)
	}
	env, runs := runContinued(t, b, workflows.RewrapWorkflow, workflows.RewrapParams{
		Tenant: "alpha", KeyID: k.ID, Principal: "alice", RequestID: "r1", BatchSize: 2, MaxBatchesPerRun: 1,
	}, nil)
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if runs < 3 {
		t.Fatalf("%d runs; want ContinueAsNew", runs)
	}
	var res workflows.RewrapResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Rewrapped != 5 || res.Skipped != 0 || res.Failed != 0 || res.Remaining != 0 {
		t.Fatalf("result %+v, want 5 rewrapped, none left (the current one is not even listed)", res)
	}
	for _, id := range ids {
		d, _ := b.KMS.GetDataKey(ctx, alice, id)
		if d.KeyVersion != 2 || d.Rewraps != 1 {
			t.Fatalf("registration %s: version %d, %d rewraps", id, d.KeyVersion, d.Rewraps)
		}
	}
	if err := b.KMS.CheckVersionUnused(ctx, alice, k.ID, 1); err != nil {
		t.Fatalf("version 1 still in use: %v", err)
	}
	if n := len(b.EventsOfType("alpha", events.TypeDataKeyRewrapped)); n != 5 {
		t.Fatalf("%d rewrapped records, want 5", n)
	}
}

// The campaign survives the loss of its worker: a worker stops in the
// middle of the rewrap, another one takes over, and the campaign completes
// with every data key rewrapped exactly once and every fact recorded once.
func TestMigrationSurvivesWorkerRestart(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 12)
	p := f.params()
	p.GracePeriod = time.Second
	p.MaxBatchesPerRun = 2
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	register := func(r worker.Registry) { workflows.Register(r, &workflows.Activities{KMS: f.b.KMS}) }
	c := &workflows.Client{Temporal: ts.GetDefaultClient(), Tokens: f.b.KMS}
	w1 := ts.NewWorker(workflows.TaskQueue, register)
	id, err := c.StartMigration(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, func(s *workflows.MigrationStatus) bool { return s.Rewrapped >= 4 })
	w1.Stop()
	if left, _ := f.b.KMS.CountDataKeys(ctx, alice, f.rsa.ID); left[1] == 0 {
		t.Fatal("the rewrap finished before the worker stopped; nothing was tested")
	}
	w2 := ts.NewWorker(workflows.TaskQueue, register)
	defer w2.Stop()
	// Starting the same campaign again joins it.
	if id2, err := c.StartMigration(ctx, p); err != nil || id2 != id {
		t.Fatalf("second start: %s %v", id2, err)
	}
	waitStatus(t, c, func(s *workflows.MigrationStatus) bool { return s.Phase == workflows.PhaseAwaitingApproval })
	if err := c.SignalMigration(ctx, "alpha", f.campaign, workflows.SignalApprove, workflows.ControlSignal{Principal: "carol"}); err != nil {
		t.Fatal(err)
	}
	var res workflows.MigrationStatus
	if err := ts.GetDefaultClient().GetWorkflow(ctx, id, "").Get(ctx, &res); err != nil {
		t.Fatal(err)
	}
	if res.Phase != workflows.PhaseRetired || res.Rewrapped != 12 {
		t.Fatalf("result: phase %s, %d rewrapped", res.Phase, res.Rewrapped)
	}
	// The recorded history replays on the current code (determinism),
	// and holds no material.
	iter := ts.GetDefaultClient().GetWorkflowHistory(ctx, id, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var h historypb.History
	for iter.HasNext() {
		e, err := iter.Next()
		if err != nil {
			t.Fatal(err)
		}
		h.Events = append(h.Events, e)
	}
	rp := worker.NewWorkflowReplayer()
	rp.RegisterWorkflow(workflows.MigrationWorkflow)
	if err := rp.ReplayWorkflowHistory(nil, &h); err != nil {
		t.Fatalf("replay: %v", err)
	}
	hist, _ := temporalproto.CustomJSONMarshalOptions{}.Marshal(&h)
	for _, s := range f.secrets {
		if bytes.Contains(hist, s) || bytes.Contains(hist, []byte(base64.StdEncoding.EncodeToString(s))) {
			t.Fatal("the workflow history holds a data key")
		}
	}
	f.checkRewrapped(t, kms.TargetKeyID("alpha", f.campaign, f.rsa.ID))
	perReg := map[string]int{}
	for _, e := range f.b.EventsOfType("alpha", events.TypeDataKeyRewrapped) {
		if e.Outcome == events.OutcomeSuccess {
			perReg[e.Data["registrationId"].(string)]++
		}
	}
	for _, r := range f.regs {
		if perReg[r.ID] != 1 {
			t.Errorf("registration %s has %d rewrapped records, want 1", r.ID, perReg[r.ID])
		}
	}
	phases := map[string]int{}
	for _, e := range f.b.EventsOfType("alpha", events.TypeMigrationPhase) {
		phases[e.Data["phase"].(string)]++
	}
	for ph, n := range phases {
		if n != 1 {
			t.Errorf("phase %s recorded %d times", ph, n)
		}
	}
	actions := map[string]int{}
	for _, e := range f.b.EventsOfType("alpha", events.TypeMigrationKey) {
		actions[e.Data["action"].(string)+"/"+e.Subject]++
	}
	for a, n := range actions {
		if n != 1 {
			t.Errorf("%s recorded %d times", a, n)
		}
	}
}

// waitStatus polls the campaign until ok holds (no sleeps in assertions:
// a bounded poll, as nats-server's checkFor does).
func waitStatus(t *testing.T, c *workflows.Client, ok func(*workflows.MigrationStatus) bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		s, err := c.MigrationStatus(context.Background(), "alpha", "pq-2026")
		if err == nil && ok(s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("campaign status never reached the expected state: %+v %v", s, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
