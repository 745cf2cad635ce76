package workflows_test

import (
	"bytes"
	"context"
	"flag"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/temporalproto"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

var updateDeletionHistory = flag.Bool("update-deletion-history", false, "record testdata/deletion_history.json from a real Temporal server")

// waitFor polls cond until it holds or a minute passes (no sleeps as
// assertions: the condition is what is tested).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A key's rotation schedule is a Temporal Schedule that runs the rotation
// workflow; it is created, updated and deleted with the key's policy.
func TestRotationSchedule(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Temporal server")
	}
	ctx := context.Background()
	b := testbed.New(t)
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	tc := ts.GetDefaultClient()
	ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) {
		workflows.Register(r, &workflows.Activities{KMS: b.KMS, Temporal: tc})
	})
	c := &workflows.Client{Temporal: tc}
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{RotationPeriod: 90 * kms.Day})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.KeyChanged(ctx, alice, k); err != nil {
		t.Fatal(err)
	}
	h := tc.ScheduleClient().GetHandle(ctx, workflows.RotationScheduleID("alpha", k.ID))
	desc, err := h.Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if iv := desc.Schedule.Spec.Intervals; len(iv) != 1 || iv[0].Every != 90*kms.Day {
		t.Fatalf("schedule intervals %+v, want every 90 days", iv)
	}
	// Updating the period updates the one schedule.
	if err := c.SetRotationSchedule(ctx, "alpha", k.ID, 30*kms.Day); err != nil {
		t.Fatal(err)
	}
	if desc, err = h.Describe(ctx); err != nil || desc.Schedule.Spec.Intervals[0].Every != 30*kms.Day {
		t.Fatalf("after the update: %v %+v", err, desc)
	}
	// The schedule's action is a rotation.
	if err := h.Trigger(ctx, client.ScheduleTriggerOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the scheduled rotation", func() bool {
		got, _ := b.KMS.GetKey(ctx, alice, k.ID)
		return got.PrimaryVersion == 2
	})
	rotated := b.EventsOfType("alpha", events.TypeKeyRotated)
	if len(rotated) != 1 || rotated[0].Principal != workflows.SchedulerPrincipal {
		t.Fatalf("rotated records: %+v", rotated)
	}
	// Period 0 (or destruction) deletes it.
	if err := c.SetRotationSchedule(ctx, "alpha", k.ID, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Describe(ctx); err == nil {
		t.Fatal("the schedule still exists after period 0")
	}
	if err := c.SetRotationSchedule(ctx, "alpha", k.ID, 0); err != nil {
		t.Fatalf("deleting a deleted schedule: %v", err)
	}
}

// Replaying a recorded deletion history catches non-deterministic changes
// to DeletionWorkflow. Re-record with -update-deletion-history.
func TestDeletionReplay(t *testing.T) {
	const path = "testdata/deletion_history.json"
	if *updateDeletionHistory {
		recordDeletionHistory(t, path)
	}
	r := worker.NewWorkflowReplayer()
	r.RegisterWorkflow(workflows.DeletionWorkflow)
	if err := r.ReplayWorkflowHistoryFromJSONFile(nil, path); err != nil {
		t.Fatalf("replay of %s: %v", path, err)
	}
}

func recordDeletionHistory(t *testing.T, path string) {
	ctx := context.Background()
	b := testbed.New(t)
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	if err != nil {
		t.Fatal(err)
	}
	// A window that ends two seconds from now, so the history has the
	// timer and the destruction.
	early, err := kms.New(ctx, kms.Config{HSM: b.HSM, Store: b.Store, Audit: b.Audit, Now: func() time.Time { return time.Now().Add(-7*kms.Day + 2*time.Second) },
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	pk, err := early.ScheduleDeletion(ctx, alice, kms.ScheduleDeletionParams{KeyRef: k.ID, Window: 7 * kms.Day})
	if err != nil {
		t.Fatal(err)
	}
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	tc := ts.GetDefaultClient()
	ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) {
		workflows.Register(r, &workflows.Activities{KMS: b.KMS, Temporal: tc})
	})
	id := workflows.DeletionWorkflowID("alpha", k.ID)
	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue}, workflows.DeletionWorkflow,
		workflows.DeletionParams{Tenant: "alpha", KeyID: k.ID, DeletionDate: pk.Lifecycle.DeletionDate, Principal: "alice", RequestID: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	var res workflows.DeletionResult
	if err := run.Get(ctx, &res); err != nil || res.State != kms.StateDestroyed {
		t.Fatalf("deletion: %v %+v", err, res)
	}
	iter := tc.GetWorkflowHistory(ctx, id, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var h historypb.History
	for iter.HasNext() {
		e, err := iter.Next()
		if err != nil {
			t.Fatal(err)
		}
		h.Events = append(h.Events, e)
	}
	out, err := temporalproto.CustomJSONMarshalOptions{Indent: "  "}.Marshal(&h)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out, []byte("wrapped")) {
		t.Fatal("history mentions wrapped material")
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}
