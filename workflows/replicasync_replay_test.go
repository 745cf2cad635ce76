package workflows_test

import (
	"context"
	"errors"
	"flag"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"

	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

// ReplicaSyncWorkflow's histories: v0 was recorded before the sync
// retried in the workflow (its activity retried on the server, deaf to
// signals), v1 after (a failed step, a pause a signal can end, and the
// step again). Both must replay: syncs of the old code may be running
// through a partition when the new code is deployed.
var updateReplicaSyncHistory = flag.String("update-replica-sync-history", "", "record this file (testdata/replica_sync_v1_history.json) from a real Temporal server")

const (
	replicaSyncV0History = "testdata/replica_sync_v0_history.json"
	replicaSyncV1History = "testdata/replica_sync_v1_history.json"
)

func TestReplicaSyncReplay(t *testing.T) {
	if *updateReplicaSyncHistory != "" {
		recordReplicaSyncHistory(t, *updateReplicaSyncHistory)
	}
	replay(t, replicaSyncV0History, workflows.ReplicaSyncWorkflow)
	replay(t, replicaSyncV1History, workflows.ReplicaSyncWorkflow)
}

// unreachableLink stands for a link that is down for its first `down`
// metadata messages. The recording needs no material to cross: the
// replica is already up to date, so the step is the metadata message.
type unreachableLink struct {
	workflows.ReplicaLink
	down  int32
	calls atomic.Int32
}

func (l *unreachableLink) ApplyMetadata(context.Context, string, *kms.Key) (bool, error) {
	if l.calls.Add(1) <= l.down {
		return false, errors.New("no responders")
	}
	return true, nil
}

func recordReplicaSyncHistory(t *testing.T, path string) {
	ctx := context.Background()
	b := testbed.NewWith(t, testbed.Options{Region: "us-east"})
	alice := kms.Caller{Tenant: "alpha", Principal: "alice"}
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{MultiRegion: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.ReplicateKey(ctx, alice, kms.ReplicateKeyParams{KeyRef: k.ID, Region: "eu-west"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.MarkReplicaSynced(ctx, alice, kms.MarkReplicaParams{KeyID: k.ID, Region: "eu-west", Version: 1}); err != nil {
		t.Fatal(err)
	}
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	tc := ts.GetDefaultClient()
	ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) {
		workflows.Register(r, &workflows.Activities{KMS: b.KMS, Temporal: tc, Replicas: &unreachableLink{down: 2}})
	})
	p := workflows.ReplicaSyncParams{Tenant: "alpha", KeyID: k.ID, Region: "eu-west", RetryMax: 5 * time.Second}
	id := workflows.ReplicaSyncWorkflowID(p.Tenant, p.KeyID, p.Region)
	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue}, workflows.ReplicaSyncWorkflow, p)
	if err != nil {
		t.Fatal(err)
	}
	// A signal while the sync pauses after its first failure ends the
	// pause (v1); v0 takes it after its step.
	time.Sleep(300 * time.Millisecond)
	if err := tc.SignalWorkflow(ctx, id, "", workflows.ReplicaSyncSignal, nil); err != nil {
		t.Fatal(err)
	}
	if err := run.Get(ctx, nil); err != nil {
		t.Fatalf("replica sync: %v", err)
	}
	saveHistory(t, fetchHistory(t, tc, id), path)
}
