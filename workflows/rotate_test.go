package workflows_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/temporalproto"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

var updateHistory = flag.Bool("update-history", false, "record testdata/rotate_history.json from a real Temporal server")

var alice = kms.Caller{Tenant: "alpha", Principal: "alice", RequestID: "r1"}

func newEnv(t *testing.T, b *testbed.Bed) *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	// The deadlock detector fires when a workflow task takes over 1 s of
	// wall time, which a loaded 2-core CI machine can cause with no bug in
	// the workflow; determinism is checked by the replay test and
	// workflowcheck instead.
	env.SetWorkerOptions(worker.Options{DeadlockDetectionTimeout: time.Minute})
	env.SetTestTimeout(2 * time.Minute)
	workflows.Register(env, &workflows.Activities{KMS: b.KMS})
	voteMinter = b.KMS
	return env
}

func TestRotateKeyWorkflow(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	if err != nil {
		t.Fatal(err)
	}
	old, _ := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("before")})

	for want := uint32(2); want <= 3; want++ {
		env := newEnv(t, b)
		env.ExecuteWorkflow(workflows.RotateKeyWorkflow, workflows.RotateKeyParams{Tenant: "alpha", KeyID: k.ID, Principal: "alice", RequestID: "r1"})
		if !env.IsWorkflowCompleted() || env.GetWorkflowError() != nil {
			t.Fatalf("workflow: %v", env.GetWorkflowError())
		}
		var res workflows.RotateKeyResult
		if err := env.GetWorkflowResult(&res); err != nil {
			t.Fatal(err)
		}
		if res.NewVersion != want || res.PreviousVersion != want-1 || res.KeyID != k.ID {
			t.Fatalf("result %+v, want %d -> %d", res, want-1, want)
		}
	}
	got, _ := b.KMS.DescribeKey(ctx, alice, k.ID)
	if got.PrimaryVersion != 3 || len(got.Versions) != 3 {
		t.Fatalf("key after two rotations: primary %d, %d versions", got.PrimaryVersion, len(got.Versions))
	}
	dec, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: old.Ciphertext})
	if err != nil || string(dec.Plaintext) != "before" {
		t.Fatalf("old ciphertext after rotation: %v", err)
	}
	if n := len(b.EventsOfType("alpha", events.TypeKeyRotated)); n != 2 {
		t.Fatalf("%d rotated events, want 2", n)
	}
}

// A rotation of a key that does not exist fails at once with the domain's
// code (non-retryable), and changes nothing.
func TestRotateKeyWorkflowUnknownKey(t *testing.T) {
	b := testbed.New(t)
	env := newEnv(t, b)
	env.ExecuteWorkflow(workflows.RotateKeyWorkflow, workflows.RotateKeyParams{Tenant: "alpha", KeyID: "6f1e2d3c-4b5a-4968-8776-655443322110"})
	err := env.GetWorkflowError()
	if err == nil {
		t.Fatal("rotation of an unknown key succeeded")
	}
	if !errors.Is(workflows.DomainError(err), kms.ErrNotFound) {
		t.Fatalf("err = %v, want NotFoundException", err)
	}
}

// The workflow's inputs and outputs (what Temporal stores in history) hold
// IDs and numbers only.
func TestRotateKeyHistoryHoldsNoMaterial(t *testing.T) {
	p, _ := json.Marshal(workflows.RotateKeyParams{Tenant: "alpha", KeyID: "k", Principal: "p", RequestID: "r"})
	r, _ := json.Marshal(workflows.RotateKeyResult{KeyID: "k", PreviousVersion: 1, NewVersion: 2})
	s, _ := json.Marshal(workflows.KeyStep{Tenant: "alpha", KeyID: "k", Version: 2})
	for _, b := range [][]byte{p, r, s} {
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		for k := range m {
			switch k {
			case "Tenant", "KeyID", "Principal", "RequestID", "PreviousVersion", "NewVersion", "Version":
			default:
				t.Errorf("unexpected field %q in workflow payload", k)
			}
		}
	}
}

// Replaying a history recorded from a real server catches non-deterministic
// changes to the workflow code. Re-record with -update-history when the
// workflow changes on purpose.
func TestRotateKeyReplay(t *testing.T) {
	const path = "testdata/rotate_history.json"
	if *updateHistory {
		recordHistory(t, path)
	}
	r := worker.NewWorkflowReplayer()
	r.RegisterWorkflow(workflows.RotateKeyWorkflow)
	if err := r.ReplayWorkflowHistoryFromJSONFile(nil, path); err != nil {
		t.Fatalf("replay of %s: %v", path, err)
	}
}

func recordHistory(t *testing.T, path string) {
	ctx := context.Background()
	b := testbed.New(t)
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	if err != nil {
		t.Fatal(err)
	}
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	w := ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) { workflows.Register(r, &workflows.Activities{KMS: b.KMS}) })
	defer w.Stop()
	c := &workflows.Client{Temporal: ts.GetDefaultClient()}
	if _, _, err := c.RotateKey(ctx, workflows.RotateKeyParams{Tenant: "alpha", KeyID: k.ID, Principal: "alice", RequestID: "r1"}); err != nil {
		t.Fatal(err)
	}
	iter := ts.GetDefaultClient().GetWorkflowHistory(ctx, workflows.RotateKeyWorkflowID("alpha", k.ID), "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
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

// A second rotate while one runs is refused with the running workflow's
// ID, instead of silently joining it (here no worker runs, so the first
// rotation stays running).
func TestSecondRotateNamesTheRunningOne(t *testing.T) {
	ctx := context.Background()
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	c := &workflows.Client{Temporal: ts.GetDefaultClient()}
	p := workflows.RotateKeyParams{Tenant: "alpha", KeyID: "0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b", Principal: "alice", RequestID: "r1"}
	id := workflows.RotateKeyWorkflowID(p.Tenant, p.KeyID)
	if _, err := c.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue}, workflows.RotateKeyWorkflow, p); err != nil {
		t.Fatal(err)
	}
	_, gotID, err := c.RotateKey(ctx, p)
	if kms.CodeOf(err) != kms.CodeConflict || !strings.Contains(err.Error(), "already running: "+id) || gotID != id {
		t.Fatalf("second rotate: %v (%s), want ConflictException naming %s", err, gotID, id)
	}
}

// A rotation that outlives the caller's wait (here no worker runs until the
// wait is over, as after a crash of the lifecycle worker) is reported
// promptly as still running, with its workflow ID, and not as a failure.
// When a worker comes back it finishes, and the workflow's own records
// pair up: one rotation.started and one key.rotated under the request's ID.
func TestRotateReturnsWhileRunning(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	if err != nil {
		t.Fatal(err)
	}
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	c := &workflows.Client{Temporal: ts.GetDefaultClient(), RotateWait: 300 * time.Millisecond}
	p := workflows.RotateKeyParams{Tenant: "alpha", KeyID: k.ID, Principal: "alice", RequestID: "held"}
	res, id, err := c.RotateKey(ctx, p)
	if !errors.Is(err, workflows.ErrStillRunning) || errors.Is(err, workflows.ErrRotationNotStarted) || res != nil || id != workflows.RotateKeyWorkflowID("alpha", k.ID) {
		t.Fatalf("rotate with no worker: %+v, %q, %v; want ErrStillRunning naming the workflow", res, id, err)
	}

	w := worker.New(c.Temporal, workflows.TaskQueue, worker.Options{})
	workflows.Register(w, &workflows.Activities{KMS: b.KMS})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var done workflows.RotateKeyResult
	if err := c.Temporal.GetWorkflow(ctx, id, "").Get(ctx, &done); err != nil || done.NewVersion != 2 {
		t.Fatalf("the held rotation: %+v, %v", done, err)
	}
	n := map[string]int{}
	for _, e := range b.Events("alpha") {
		if e.RequestID == "held" {
			n[e.Type+"/"+e.Outcome]++
		}
	}
	if s, r, f := n[events.TypeKeyRotationStart+"/success"], n[events.TypeKeyRotated+"/success"], n[events.TypeKeyRotationFailed+"/failure"]; s != 1 || r != 1 || f != 0 {
		t.Fatalf("records of the held rotation: %d started, %d rotated, %d failed; want 1, 1, 0", s, r, f)
	}
}

// A rotation whose step fails records its own outcome: one started and
// one rotation.failed record with the step's code, even when retried.
func TestRotateKeyWorkflowRecordsFailure(t *testing.T) {
	b := testbed.New(t)
	env := newEnv(t, b)
	missing := "6f1e2d3c-4b5a-4968-8776-655443322110"
	env.ExecuteWorkflow(workflows.RotateKeyWorkflow, workflows.RotateKeyParams{Tenant: "alpha", KeyID: missing, Principal: "alice", RequestID: "doomed"})
	if env.GetWorkflowError() == nil {
		t.Fatal("rotation of an unknown key succeeded")
	}
	started := b.EventsOfType("alpha", events.TypeKeyRotationStart)
	failed := b.EventsOfType("alpha", events.TypeKeyRotationFailed)
	if len(started) != 1 || started[0].RequestID != "doomed" || started[0].Outcome != "success" {
		t.Fatalf("started records: %+v", started)
	}
	if len(failed) != 1 || failed[0].RequestID != "doomed" || failed[0].ErrorCode != string(kms.CodeNotFound) {
		t.Fatalf("failed records: %+v, want one with NotFoundException", failed)
	}
}
