package workflows_test

import (
	"context"
	"flag"
	"os"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/temporalproto"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

// A rollback takes effect at once in every phase that waits on a timer
// (issue 13): the dual-signing period and the grace period. Before the
// fix the campaign waited for the timer to fire (30 days here) and only
// then rolled back; now it is rolled back at the time of the signal.
func TestMigrationRollbackEndsTimerWaits(t *testing.T) {
	for _, tc := range []struct {
		phase string
		// steer is called an hour in; it brings the campaign to the phase.
		steer func(env *testsuite.TestWorkflowEnvironment, s *kms.Service)
	}{
		{phase: workflows.PhaseDualSigning},
		{phase: workflows.PhaseGrace, steer: func(env *testsuite.TestWorkflowEnvironment, s *kms.Service) {
			env.SignalWorkflow(workflows.SignalApprove, ctl(t, s, workflows.SignalApprove, "carol"))
		}},
	} {
		t.Run(tc.phase, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, 2)
			p := f.params()
			if tc.phase == workflows.PhaseDualSigning {
				p.DualSigningPeriod = 30 * 24 * time.Hour
			}
			env := newEnv(t, f.b)
			start := env.Now()
			if tc.steer != nil {
				env.RegisterDelayedCallback(func() { tc.steer(env, f.b.KMS) }, time.Hour)
			}
			asked := 2 * time.Hour
			env.RegisterDelayedCallback(func() {
				if s := queryStatus(t, env); s.Phase != tc.phase {
					t.Errorf("phase %s when the rollback was asked, want %s", s.Phase, tc.phase)
				}
				env.SignalWorkflow(workflows.SignalRollback, ctl(t, f.b.KMS, workflows.SignalRollback, "alice"))
			}, asked)
			env.ExecuteWorkflow(workflows.MigrationWorkflow, p)
			var res workflows.MigrationStatus
			if err := env.GetWorkflowResult(&res); err != nil {
				t.Fatal(err)
			}
			if res.Phase != workflows.PhaseRolledBack {
				t.Fatalf("phase %s, want rolled-back", res.Phase)
			}
			// Skipped time: the campaign ended when the rollback came,
			// not when the 30-day timer would have fired.
			if took := env.Now().Sub(start); took > asked+time.Minute {
				t.Fatalf("the rollback took effect %s after the start, asked at %s", took, asked)
			}
			for _, ref := range []string{"alias/billing", "alias/release-signing"} {
				k, err := f.b.KMS.DescribeKey(ctx, alice, ref)
				if err != nil || (k.ID != f.rsa.ID && k.ID != f.ec.ID) || k.State != kms.StateActive || k.Migration != nil {
					t.Fatalf("%s after rollback: %+v %v", ref, k, err)
				}
			}
			tgt, err := f.b.KMS.DescribeKey(ctx, alice, kms.TargetKeyID("alpha", f.campaign, f.ec.ID))
			if err != nil || tgt.State != kms.StateDeactivated || tgt.Migration != nil {
				t.Fatalf("signing target after rollback: %+v %v", tgt, err)
			}
		})
	}
}

var recordRollbackHistory = flag.Bool("record-migration-rollback-history", false,
	"record testdata/migration_rollback_v0_history.json (only meaningful on the code before the "+workflows.RollbackEndsTimerChange+" change)")

// On the real embedded Temporal server: a rollback during the grace
// period (here an hour long) takes effect within seconds, and the history
// it leaves replays on the current code.
func TestMigrationRollbackDuringGraceOnServer(t *testing.T) {
	grace := time.Hour
	if *recordRollbackHistory {
		grace = 20 * time.Second // the old code waits for the timer
	}
	ctx := context.Background()
	f := newFixture(t, 2)
	p := f.params()
	p.GracePeriod = grace
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) { workflows.Register(r, &workflows.Activities{KMS: f.b.KMS}) })
	tc := ts.GetDefaultClient()
	c := &workflows.Client{Temporal: tc, Tokens: f.b.KMS}
	id, err := c.StartMigration(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, func(s *workflows.MigrationStatus) bool { return s.Phase == workflows.PhaseAwaitingApproval })
	if err := c.SignalMigration(ctx, "alpha", f.campaign, workflows.SignalApprove, workflows.ControlSignal{Principal: "carol"}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, func(s *workflows.MigrationStatus) bool { return s.Phase == workflows.PhaseGrace })
	if k, _ := f.b.KMS.DescribeKey(ctx, alice, "alias/billing"); k.ID == f.rsa.ID {
		t.Fatal("the alias did not move at cutover; nothing to roll back")
	}
	// The sweep done, the grace timer runs: the rollback comes now.
	waitFor(t, "the grace timer", func() bool {
		for _, e := range workflowHistory(t, tc, id).Events {
			if e.EventType == enums.EVENT_TYPE_TIMER_STARTED {
				return true
			}
		}
		return false
	})
	asked := time.Now()
	if err := c.SignalMigration(ctx, "alpha", f.campaign, workflows.SignalRollback, workflows.ControlSignal{Principal: "alice"}); err != nil {
		t.Fatal(err)
	}
	// Bounded by the wait (a minute of polling), far below the hour.
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var res workflows.MigrationStatus
	if err := tc.GetWorkflow(rctx, id, "").Get(rctx, &res); err != nil {
		t.Fatalf("the campaign did not end after the rollback: %v", err)
	}
	if res.Phase != workflows.PhaseRolledBack {
		t.Fatalf("phase %s, want rolled-back", res.Phase)
	}
	// Measured, not asserted (timing is for benchmarks).
	t.Logf("rolled back %s after the signal, with %s of grace left", time.Since(asked).Round(time.Millisecond), grace)
	for _, ref := range []string{"alias/billing", "alias/release-signing"} {
		k, err := f.b.KMS.DescribeKey(ctx, alice, ref)
		if err != nil || (k.ID != f.rsa.ID && k.ID != f.ec.ID) || k.State != kms.StateActive || k.Migration != nil {
			t.Fatalf("%s after rollback: %+v %v", ref, k, err)
		}
	}
	h := workflowHistory(t, tc, id)
	rp := worker.NewWorkflowReplayer()
	rp.RegisterWorkflow(workflows.MigrationWorkflow)
	if err := rp.ReplayWorkflowHistory(nil, h); err != nil {
		t.Fatalf("replay: %v", err)
	}
	if *recordRollbackHistory {
		out, err := temporalproto.CustomJSONMarshalOptions{Indent: "  "}.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(rollbackV0History, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// rollbackV0History was recorded by the code before the change: a
// rollback during the grace period that waited for the grace timer. The
// current code must replay it the old way (workflow.GetVersion).
const rollbackV0History = "testdata/migration_rollback_v0_history.json"

func TestMigrationRollbackV0Replay(t *testing.T) {
	rp := worker.NewWorkflowReplayer()
	rp.RegisterWorkflow(workflows.MigrationWorkflow)
	if err := rp.ReplayWorkflowHistoryFromJSONFile(nil, rollbackV0History); err != nil {
		t.Fatalf("replay of %s: %v", rollbackV0History, err)
	}
}

func workflowHistory(t *testing.T, tc client.Client, id string) *historypb.History {
	t.Helper()
	iter := tc.GetWorkflowHistory(context.Background(), id, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var h historypb.History
	for iter.HasNext() {
		e, err := iter.Next()
		if err != nil {
			t.Fatal(err)
		}
		h.Events = append(h.Events, e)
	}
	return &h
}
