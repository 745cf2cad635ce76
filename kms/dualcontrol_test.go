package kms_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// TestScheduleDeletionMinWindow: the tenant policy's minDeletionWindowDays
// refuses a shorter window in ScheduleDeletion itself (the path without
// dual control), records the refusal, and leaves the key alone; the
// minimum itself is allowed.
func TestScheduleDeletionMinWindow(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	alice := kms.Caller{Tenant: "alpha", Principal: "alice", RequestID: "r-min"}
	if _, err := b.KMS.SetTenantPolicy(ctx, alice, &kms.TenantPolicy{MinDeletionWindowDays: 14}); err != nil {
		t.Fatal(err)
	}
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.KMS.ScheduleDeletion(ctx, alice, kms.ScheduleDeletionParams{KeyRef: k.ID, Window: 7 * kms.Day})
	if !errors.Is(err, kms.ErrValidation) {
		t.Fatalf("7 days under a 14-day minimum: %v", err)
	}
	if got, _ := b.KMS.GetKey(ctx, alice, k.ID); got.Lifecycle.PendingDeletion {
		t.Fatal("the refused deletion was scheduled")
	}
	recs := b.EventsOfType("alpha", events.TypeKeyDeletionScheduled)
	if len(recs) != 1 || recs[0].ErrorCode != string(kms.CodeValidation) {
		t.Fatalf("refusal records: %+v", recs)
	}
	// The same check guards the dual-control path before it parks anything.
	if _, err := b.KMS.PrepareScheduleDeletion(ctx, alice, kms.ScheduleDeletionParams{KeyRef: k.ID, Window: 13 * kms.Day}); !errors.Is(err, kms.ErrValidation) {
		t.Fatalf("prepare with 13 days: %v", err)
	}
	target, err := b.KMS.PrepareScheduleDeletion(ctx, alice, kms.ScheduleDeletionParams{KeyRef: k.ID, Window: 14 * kms.Day, CancelOnUse: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := kms.ParseDeletionTarget(target)
	if err != nil || p.KeyRef != k.ID || p.Window != 14*kms.Day || !p.CancelOnUse {
		t.Fatalf("target %q read back as %+v, %v", target, p, err)
	}
	got, err := b.KMS.ScheduleDeletion(ctx, alice, p)
	if err != nil || !got.Lifecycle.PendingDeletion {
		t.Fatalf("14 days: %+v, %v", got, err)
	}
	if d := got.Lifecycle.DeletionDate.Sub(time.Now()); d < 13*kms.Day || d > 15*kms.Day {
		t.Fatalf("deletion date %s", got.Lifecycle.DeletionDate)
	}
}

// TestApprovalTargets: the parameter-carrying targets read back, and a
// malformed one is a ValidationException (never a different operation).
func TestApprovalTargets(t *testing.T) {
	for _, bad := range []string{"k", "k;window=x;cancelOnUse=true", "k;window=7d;cancelOnUse=maybe", "k;cancelOnUse=true;window=7d"} {
		if _, err := kms.ParseDeletionTarget(bad); !errors.Is(err, kms.ErrValidation) {
			t.Errorf("ParseDeletionTarget(%q): %v", bad, err)
		}
	}
	if id, v, err := kms.ParseDisableTarget(kms.DisableTarget("k1", 3)); err != nil || id != "k1" || v != 3 {
		t.Errorf("disable target with a version: %s %d %v", id, v, err)
	}
	if id, v, err := kms.ParseDisableTarget(kms.DisableTarget("k1", 0)); err != nil || id != "k1" || v != 0 {
		t.Errorf("disable target: %s %d %v", id, v, err)
	}
	if _, _, err := kms.ParseDisableTarget("k1;version=0"); !errors.Is(err, kms.ErrValidation) {
		t.Errorf("version 0: %v", err)
	}
}
