package rpc_test

import (
	"context"
	"testing"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
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
