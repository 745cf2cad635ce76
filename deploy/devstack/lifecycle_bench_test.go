package devstack_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/keyflow/keyflow/deploy/devstack"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

var benchCaller = kms.Caller{Tenant: devstack.DefaultTenant, Principal: "bench", RequestID: "bench"}

// benchStack starts the embedded stack (NATS, Temporal on SQLite, SoftHSM,
// the lifecycle worker) on a temp dir, as `keyflow dev` runs it.
func benchStack(b *testing.B) (*devstack.Stack, *workflows.Client) {
	b.Helper()
	ctx := context.Background()
	st, err := devstack.Start(ctx, devstack.Config{
		DataDir: b.TempDir(), NATSListen: "127.0.0.1:0", TemporalListen: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(st.Stop)
	tc, err := st.Temporal.NewClient(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(tc.Close)
	return st, &workflows.Client{Temporal: tc}
}

// BenchmarkRotationWorkflow is the latency of one rotation through the
// Temporal workflow on the embedded stack (target: p50 <= 150 ms).
func BenchmarkRotationWorkflow(b *testing.B) {
	st, wc := benchStack(b)
	ctx := context.Background()
	k, err := st.KMS.CreateKey(ctx, benchCaller, kms.CreateKeyParams{})
	if err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, _, err := wc.RotateKey(ctx, workflows.RotateKeyParams{Tenant: benchCaller.Tenant, KeyID: k.ID, Principal: "bench", RequestID: "bench"}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportLatency(b, lat)
}

// BenchmarkRotationDirect is the baseline: the same three domain steps
// called directly, without Temporal.
func BenchmarkRotationDirect(b *testing.B) {
	st, _ := benchStack(b)
	ctx := context.Background()
	k, err := st.KMS.CreateKey(ctx, benchCaller, kms.CreateKeyParams{})
	if err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		next, err := st.KMS.NextVersion(ctx, benchCaller, k.ID)
		if err == nil {
			_, err = st.KMS.CreateVersion(ctx, benchCaller, kms.CreateVersionParams{KeyID: k.ID, Version: next})
		}
		if err == nil {
			_, err = st.KMS.SetPrimaryVersion(ctx, benchCaller, kms.SetPrimaryParams{KeyID: k.ID, Version: next})
		}
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportLatency(b, lat)
}

func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	p := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(p(0.5), "p50-ms")
	b.ReportMetric(p(0.99), "p99-ms")
}

// fleet creates the bench fleet: KEYFLOW_BENCH_FLEET keys (default 1000;
// the figure is for 10000).
func fleet(b *testing.B, st *devstack.Stack) []string {
	b.Helper()
	n := envInt(b, "KEYFLOW_BENCH_FLEET", 1000)
	ctx := context.Background()
	keys := make([]string, n)
	for i := range keys {
		k, err := st.KMS.CreateKey(ctx, benchCaller, kms.CreateKeyParams{})
		if err != nil {
			b.Fatal(err)
		}
		keys[i] = k.ID
	}
	return keys
}

// BenchmarkFleetRotation rotates a fleet with FleetRotateWorkflow: batches
// of KEYFLOW_BENCH_BATCH keys per activity (default 500), rotated
// KEYFLOW_BENCH_CONCURRENCY at a time (default 16). Target: >= 100
// rotations/s sustained, no errors.
func BenchmarkFleetRotation(b *testing.B) {
	st, wc := benchStack(b)
	keys := fleet(b, st)
	batch := envInt(b, "KEYFLOW_BENCH_BATCH", 500)
	conc := envInt(b, "KEYFLOW_BENCH_CONCURRENCY", 16)
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		res, err := wc.RotateFleet(ctx, workflows.FleetRotateParams{Tenant: benchCaller.Tenant, Principal: "bench", RequestID: "fleet", BatchSize: batch, Concurrency: conc})
		if err != nil {
			b.Fatal(err)
		}
		if res.Rotated != len(keys) || res.Failed != 0 {
			b.Fatalf("fleet rotation: %+v, want %d rotated", res, len(keys))
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(len(keys)*b.N)/elapsed.Seconds(), "rotations/s")
	b.ReportMetric(float64(len(keys)), "keys")
}

// BenchmarkFleetRotationPerKey is the comparison: one RotateKeyWorkflow
// per key, KEYFLOW_BENCH_CONCURRENCY (default 64) at a time.
func BenchmarkFleetRotationPerKey(b *testing.B) {
	st, wc := benchStack(b)
	keys := fleet(b, st)
	n := len(keys)
	conc := envInt(b, "KEYFLOW_BENCH_CONCURRENCY", 64)
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	var failed int
	for range b.N {
		sem := make(chan struct{}, conc)
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, id := range keys {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				if _, _, err := wc.RotateKey(ctx, workflows.RotateKeyParams{Tenant: benchCaller.Tenant, KeyID: id, Principal: "bench", RequestID: "fleet"}); err != nil {
					mu.Lock()
					failed++
					if failed == 1 {
						fmt.Fprintf(os.Stderr, "fleet rotation failed: %v\n", err)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if failed > 0 {
		b.Fatalf("%d of %d rotations failed", failed, n*b.N)
	}
	b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "rotations/s")
	b.ReportMetric(float64(n), "keys")
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q is not a positive number", name, v)
	}
	return n
}
