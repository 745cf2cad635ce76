package devstack_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

// BenchmarkRotationRewrap is one rotation with rewrap through Temporal on
// the embedded stack: each iteration rotates the key and moves its
// KEYFLOW_BENCH_DATAKEYS registered data keys (default 100) to the new
// version. Compare with BenchmarkRotationWorkflow (the rotation alone) in
// the same run; ms/datakey is the rewrap's cost per data key.
func BenchmarkRotationRewrap(b *testing.B) {
	st, wc := benchStack(b)
	ctx := context.Background()
	n := envInt(b, "KEYFLOW_BENCH_DATAKEYS", 100)
	k, err := st.KMS.CreateKey(ctx, benchCaller, kms.CreateKeyParams{})
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		ec := kms.EncryptionContext{"row": fmt.Sprint(i)}
		dk, err := st.KMS.GenerateDataKey(ctx, benchCaller, kms.GenerateDataKeyParams{KeyRef: k.ID, Context: ec})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := st.KMS.RegisterDataKey(ctx, benchCaller, kms.RegisterDataKeyParams{Ciphertext: dk.CiphertextBlob, Context: ec}); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		res, _, err := wc.RotateKey(ctx, workflows.RotateKeyParams{Tenant: benchCaller.Tenant, KeyID: k.ID, Principal: "bench", RequestID: "bench", Rewrap: true})
		if err != nil {
			b.Fatal(err)
		}
		if res.Rewrap == nil || res.Rewrap.Rewrapped != n || res.Rewrap.Remaining != 0 {
			b.Fatalf("rotation with rewrap: %+v %+v, want %d rewrapped", res, res.Rewrap, n)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportLatency(b, lat)
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N*n), "ms/datakey")
}
