package rpc_test

import (
	"context"
	"testing"

	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// BenchmarkEncryptNATSQuota is BenchmarkEncryptNATS with the tenant under
// a rate quota it never reaches: the cost of per-tenant admission with a
// token bucket (the policy lookup is in memory). Run it with
// BenchmarkEncryptNATS and compare.
func BenchmarkEncryptNATSQuota(b *testing.B) {
	bed := testbed.New(b)
	if _, err := bed.KMS.SetTenantPolicy(context.Background(), kms.Caller{Tenant: "alpha", Principal: "bench", RequestID: "bench"},
		&kms.TenantPolicy{Quotas: &kms.Quotas{RequestsPerSecond: 1e6, Burst: 1e6}}); err != nil {
		b.Fatal(err)
	}
	benchEncryptNATS(b, bed)
}
