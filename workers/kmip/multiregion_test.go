package kmip_test

import (
	"context"
	"strings"
	"testing"

	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// TestDestroyMultiRegionPrimary: KMIP Destroy of a multi-region primary
// whose replicas are not destroyed is refused by the domain, as on the
// NATS and AWS APIs, naming the replica region; no deletion workflow
// starts and the key is not pending deletion.
func TestDestroyMultiRegionPrimary(t *testing.T) {
	ctx := context.Background()
	f := newFixtureOn(t, testbed.NewWith(t, testbed.Options{Region: "us-east"}))
	c := f.dial(t, f.principal(t, "alpha", "ada"))
	ada := kms.Caller{Tenant: "alpha", Principal: "ada"}
	k, err := f.bed.KMS.CreateKey(ctx, ada, kms.CreateKeyParams{MultiRegion: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.bed.KMS.ReplicateKey(ctx, ada, kms.ReplicateKeyParams{KeyRef: k.ID, Region: "eu-west"}); err != nil {
		t.Fatal(err)
	}
	r := c.do(opDestroy, uidItem(k.ID))
	if r.ok() || !strings.Contains(r.message, "eu-west") || !strings.Contains(r.message, "schedule-replica-deletion") {
		t.Fatalf("Destroy of a primary with a replica: %v", r)
	}
	got, err := f.bed.KMS.GetKey(ctx, ada, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Lifecycle.PendingDeletion || len(f.life.keys) != 0 {
		t.Fatalf("after the refused Destroy: pending %v, workflows %v", got.Lifecycle.PendingDeletion, f.life.keys)
	}
}
