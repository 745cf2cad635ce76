package rpc_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/rpc"
)

// TestMultiRegionOverNATS drives the multi-region operations through the
// NATS API of one region (replication itself, across two linked
// deployments, is region's TestMultiRegion): create, replicate, describe
// with replicas, a replica's scheduled deletion and its cancel, and the
// refusals.
func TestMultiRegionOverNATS(t *testing.T) {
	ctx := context.Background()
	b := testbed.NewWith(t, testbed.Options{Region: "us-east"})
	b.StartRPC(nil)
	c := b.Client("alpha", "alice")

	k, err := c.CreateKey(ctx, api.CreateKeyRequest{MultiRegion: true, Alias: "mr"})
	if err != nil {
		t.Fatal(err)
	}
	if !k.MultiRegion || k.PrimaryRegion != "us-east" || len(k.Replicas) != 0 {
		t.Fatalf("create: %+v", k)
	}
	r, err := c.ReplicateKey(ctx, "alias/mr", "eu-west")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Replicas) != 1 || r.Replicas[0] != (api.ReplicaMetadata{Region: "eu-west", State: "CREATING"}) {
		t.Fatalf("replicate: %+v", r.Replicas)
	}
	d, err := c.DescribeKey(ctx, k.KeyID)
	if err != nil || len(d.Replicas) != 1 {
		t.Fatalf("describe: %+v %v", d, err)
	}
	if _, err := c.UpdatePrimaryRegion(ctx, k.KeyID, "eu-west"); !isCode(err, kms.CodeInvalidState) {
		t.Fatalf("update-primary-region to a replica without versions: %v", err)
	}
	if _, err := c.ScheduleReplicaDeletion(ctx, k.KeyID, "eu-west", 3); !isCode(err, kms.CodeValidation) {
		t.Fatalf("a 3-day window: %v", err)
	}
	del, err := c.ScheduleReplicaDeletion(ctx, k.KeyID, "eu-west", 7)
	if err != nil || del.Replicas[0].State != "PENDING_DELETION" {
		t.Fatalf("replica deletion: %+v %v", del, err)
	}
	// Cancelled before its window ends: DISABLED, as AWS leaves it;
	// replicating again enables it.
	kept, err := c.CancelReplicaDeletion(ctx, k.KeyID, "eu-west")
	if err != nil || kept.Replicas[0].State != "DISABLED" {
		t.Fatalf("cancel replica deletion: %+v %v", kept, err)
	}
	if _, err := c.CancelReplicaDeletion(ctx, k.KeyID, "eu-west"); !isCode(err, kms.CodeInvalidState) {
		t.Fatalf("a second cancel: %v", err)
	}
	if _, err := c.CancelReplicaDeletion(ctx, k.KeyID, "ap-south"); !isCode(err, kms.CodeNotFound) {
		t.Fatalf("cancel in a region with no replica: %v", err)
	}
	if again, err := c.ReplicateKey(ctx, k.KeyID, "eu-west"); err != nil || again.Replicas[0].State != "CREATING" {
		t.Fatalf("replicate a disabled replica: %+v %v", again, err)
	}
	if _, err := c.ReplicateKey(ctx, k.KeyID, "not a region"); !isCode(err, kms.CodeValidation) {
		t.Fatalf("a bad region name: %v", err)
	}
	single, err := c.CreateKey(ctx, api.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReplicateKey(ctx, single.KeyID, "eu-west"); !isCode(err, kms.CodeUnsupportedOperation) {
		t.Fatalf("replicating a single-region key: %v", err)
	}
	for _, typ := range []string{events.TypeKeyReplicaCreated, events.TypeKeyReplicaPrimaryChanged, events.TypeKeyReplicaDeletionScheduled, events.TypeKeyReplicaDeletionCancelled} {
		if len(b.EventsOfType("alpha", typ)) == 0 {
			t.Errorf("no %s record", typ)
		}
	}
}

// TestMultiRegionPrimaryDeletionOverNATS: scheduling the deletion of a
// multi-region primary is refused while any replica is not destroyed
// (AWS KMS makes such a primary wait for its replicas), with
// KMSInvalidStateException, a message naming the replica regions and the
// command that deletes them, and a failed audit record; no deletion timer
// starts. Once every replica is destroyed, the primary's deletion is
// scheduled as any key's.
func TestMultiRegionPrimaryDeletionOverNATS(t *testing.T) {
	ctx := context.Background()
	var shift atomic.Int64
	b := testbed.NewWith(t, testbed.Options{Region: "us-east", Now: func() time.Time { return time.Now().Add(time.Duration(shift.Load())) }})
	life := &recordingLifecycle{}
	srv, err := rpc.Start(rpc.Config{Conn: b.Conn, KMS: b.KMS, Tenants: b.Identity, JS: b.JS, Workers: 8, Lifecycle: life,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	c := b.Client("alpha", "alice")

	k, err := c.CreateKey(ctx, api.CreateKeyRequest{MultiRegion: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"eu-west", "ap-south"} {
		if _, err := c.ReplicateKey(ctx, k.KeyID, r); err != nil {
			t.Fatal(err)
		}
	}
	refused := func(step string, regions ...string) {
		t.Helper()
		_, err := c.ScheduleDeletion(ctx, api.ScheduleDeletionRequest{KeyID: k.KeyID, PendingWindowInDays: 7})
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != string(kms.CodeInvalidState) || !strings.Contains(ce.Message, "schedule-replica-deletion") {
			t.Fatalf("%s: scheduling the primary's deletion: %v", step, err)
		}
		for _, r := range regions {
			if !strings.Contains(ce.Message, r) {
				t.Errorf("%s: the refusal does not name region %s: %s", step, r, ce.Message)
			}
		}
	}
	refused("two live replicas", "eu-west", "ap-south")
	// One replica destroyed, the other only pending deletion: still refused,
	// naming the one left.
	alice := kms.Caller{Tenant: "alpha", Principal: "alice"}
	for _, r := range []string{"eu-west", "ap-south"} {
		if _, err := c.ScheduleReplicaDeletion(ctx, k.KeyID, r, 7); err != nil {
			t.Fatal(err)
		}
	}
	shift.Store(int64(7*kms.Day + time.Minute))
	if _, err := b.KMS.MarkReplicaDestroyed(ctx, kms.Caller{Tenant: "alpha", Principal: "region:eu-west"}, kms.ReplicaDestroyedParams{From: "eu-west", KeyID: k.KeyID}); err != nil {
		t.Fatal(err)
	}
	refused("ap-south pending deletion", "ap-south (PENDING_DELETION)")
	if d, err := b.KMS.GetKey(ctx, alice, k.KeyID); err != nil || d.Lifecycle.PendingDeletion || len(life.scheduled) != 0 {
		t.Fatalf("after the refusals the primary is pending deletion or has a timer: %+v %v %v", d, err, life.scheduled)
	}
	if _, err := b.KMS.MarkReplicaDestroyed(ctx, kms.Caller{Tenant: "alpha", Principal: "region:ap-south"}, kms.ReplicaDestroyedParams{From: "ap-south", KeyID: k.KeyID}); err != nil {
		t.Fatal(err)
	}
	sd, err := c.ScheduleDeletion(ctx, api.ScheduleDeletionRequest{KeyID: k.KeyID, PendingWindowInDays: 7})
	if err != nil || sd.KeyState != "ACTIVE" || len(life.scheduled) != 1 {
		t.Fatalf("the primary's deletion once its replicas are destroyed: %+v %v %v", sd, err, life.scheduled)
	}
	var failed int
	for _, e := range b.EventsOfType("alpha", events.TypeKeyDeletionScheduled) {
		if e.Outcome == "failure" && e.ErrorCode == "KMSInvalidStateException" && strings.HasSuffix(e.Subject, k.KeyID) {
			failed++
		}
	}
	if failed != 2 {
		t.Errorf("%d failed %s records for the two refusals, want 2", failed, events.TypeKeyDeletionScheduled)
	}
}
