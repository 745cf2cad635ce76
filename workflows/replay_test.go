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
	"go.temporal.io/api/temporalproto"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"

	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"

	historypb "go.temporal.io/api/history/v1"
)

// Replay tests of recorded histories, one per long-lived workflow (rotation
// and deletion are in rotate_test.go and schedule_test.go). Each history was
// recorded from a real Temporal server and is committed under testdata; a
// change to the workflow code that would not replay it (a new, removed or
// reordered command) fails the test. When a workflow changes on purpose,
// re-record its history with the flag named below, and keep the old
// behaviour behind workflow.GetVersion while histories of the old code may
// still be running.
var (
	updateApprovalHistory  = flag.Bool("update-approval-history", false, "record testdata/approval_history.json (run with -run 'TestDualControlOverNATS|TestApprovalReplay')")
	updateMigrationHistory = flag.Bool("update-migration-history", false, "record testdata/migration_history.json (run with -run 'TestMigrationCutoverGateOverNATS|TestMigrationReplay')")
	updateArchivalHistory  = flag.Bool("update-archival-history", false, "record testdata/archival_history.json from a real Temporal server")
)

const (
	approvalHistory  = "testdata/approval_history.json"
	migrationHistory = "testdata/migration_history.json"
	archivalHistory  = "testdata/archival_history.json"
)

// An approved rotation: refused self- and duplicate approvals, two votes,
// and the rotation run as a child workflow (recorded by
// TestDualControlOverNATS).
func TestApprovalReplay(t *testing.T) {
	replay(t, approvalHistory, workflows.ApprovalWorkflow, workflows.RotateKeyWorkflow)
}

// A migration campaign through its governed cutover gate, with two approval
// rounds (recorded by TestMigrationCutoverGateOverNATS).
func TestMigrationReplay(t *testing.T) {
	replay(t, migrationHistory, workflows.MigrationWorkflow, workflows.ApprovalWorkflow)
}

// A single archival pass that archives one deactivated version.
func TestArchivalReplay(t *testing.T) {
	if *updateArchivalHistory {
		recordArchivalHistory(t, archivalHistory)
	}
	replay(t, archivalHistory, workflows.ArchivalWorkflow)
}

func replay(t *testing.T, path string, wfs ...any) {
	t.Helper()
	r := worker.NewWorkflowReplayer()
	for _, wf := range wfs {
		r.RegisterWorkflow(wf)
	}
	if err := r.ReplayWorkflowHistoryFromJSONFile(nil, path); err != nil {
		t.Fatalf("replay of %s: %v", path, err)
	}
}

// saveHistory writes a history fetched from a real server to path, after
// checking that it names no key material.
func saveHistory(t *testing.T, h *historypb.History, path string) {
	t.Helper()
	out, err := temporalproto.CustomJSONMarshalOptions{Indent: "  "}.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out, []byte("wrapped")) || bytes.Contains(out, []byte("Wrapped")) {
		t.Fatalf("history for %s mentions wrapped material", path)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

func recordArchivalHistory(t *testing.T, path string) {
	ctx := context.Background()
	b := testbed.New(t)
	k, _ := rotated(t, b)
	// Activities that tell time past the retention age, so v1 is due.
	later, err := kms.New(ctx, kms.Config{HSM: b.HSM, Store: b.Store, Audit: b.Audit, Source: "/keyflow/test",
		Now:    func() time.Time { return time.Now().Add(kms.DefaultArchiveRetention + time.Hour) },
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	defer later.Close()
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	tc := ts.GetDefaultClient()
	ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) { workflows.Register(r, &workflows.Activities{KMS: later}) })
	const id = "archival/alpha/replay"
	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue}, workflows.ArchivalWorkflow,
		workflows.ArchivalParams{Tenant: "alpha", Principal: "keyflow-archival", RequestID: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	var res workflows.ArchivalResult
	if err := run.Get(ctx, &res); err != nil || len(res.Archived) != 1 || res.Archived[0] != (kms.VersionRef{KeyID: k.ID, Version: 1}) {
		t.Fatalf("archival: %v %+v", err, res)
	}
	saveHistory(t, fetchHistory(t, tc, id), path)
}

func fetchHistory(t *testing.T, tc client.Client, id string) *historypb.History {
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
