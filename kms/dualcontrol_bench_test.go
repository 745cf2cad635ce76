package kms_test

import (
	"context"
	"testing"

	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// The cost the dual-control gates add to a lifecycle request, next to a
// plain key read (the baseline):
//
//	go test -run '^$' -bench 'Gate|GetKeyBaseline' -benchtime 2s -count 3 ./kms/
//
// BenchmarkGateUngoverned is what every keys.scheduledeletion and
// keys.setstate SUSPENDED pays when the tenant policy does not list the
// operation (NeedsApproval: a policy read). BenchmarkGatePrepareDeletion
// is the check a governed request runs before its approval opens.

func gateBench(b *testing.B) (*testbed.Bed, *kms.Key) {
	bed := testbed.New(b)
	ctx := context.Background()
	c := kms.Caller{Tenant: "alpha", Principal: "alice"}
	if _, err := bed.KMS.SetTenantPolicy(ctx, c, &kms.TenantPolicy{MinDeletionWindowDays: 14}); err != nil {
		b.Fatal(err)
	}
	k, err := bed.KMS.CreateKey(ctx, c, kms.CreateKeyParams{Alias: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	return bed, k
}

func BenchmarkGetKeyBaseline(b *testing.B) {
	bed, k := gateBench(b)
	ctx := context.Background()
	c := kms.Caller{Tenant: "alpha", Principal: "alice"}
	for b.Loop() {
		if _, err := bed.KMS.GetKey(ctx, c, k.ID); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGateUngoverned(b *testing.B) {
	bed, _ := gateBench(b)
	ctx := context.Background()
	c := kms.Caller{Tenant: "alpha", Principal: "alice"}
	for b.Loop() {
		if bed.KMS.NeedsApproval(ctx, c, kms.ApprovalScheduleDeletion) {
			b.Fatal("the policy lists no approvals")
		}
	}
}

func BenchmarkGatePrepareDeletion(b *testing.B) {
	bed, k := gateBench(b)
	ctx := context.Background()
	c := kms.Caller{Tenant: "alpha", Principal: "alice"}
	for b.Loop() {
		if _, err := bed.KMS.PrepareScheduleDeletion(ctx, c, kms.ScheduleDeletionParams{KeyRef: k.ID, Window: 14 * kms.Day}); err != nil {
			b.Fatal(err)
		}
	}
}
