// Package loadbench is the one load loop of keyflow's protocol benchmarks
// (NATS, XKS, the AWS KMS API and KMIP): it runs a benchmark's operation
// b.N times from n goroutines and measures each call, so that every table
// of `go tool task bench` computes ops/s, p50/p99 and CPU per call the same
// way, and their figures compare. Only benchmarks import it.
//
// Use it as
//
//	r := loadbench.Run(b, 8, func(worker int) error { _, err := c.Encrypt(ctx, req); return err })
//	r.Report(b, 1, time.Microsecond, "µs")
package loadbench

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Result is one run: every call's latency (sorted), the wall time, and the
// CPU time this process used meanwhile (0 where it cannot be read).
type Result struct {
	Latencies []time.Duration
	Elapsed   time.Duration
	CPU       time.Duration
}

// Run resets b's timer, runs b.N calls of op from n goroutines (op gets its
// goroutine's index, for per-worker clients), stops the timer, and fails b
// with the first error.
func Run(b *testing.B, n int, op func(worker int) error) Result {
	lat := make([][]time.Duration, n)
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	for i := range n {
		lat[i] = make([]time.Duration, 0, b.N/n+1)
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				err := op(i)
				lat[i] = append(lat[i], time.Since(t0))
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	r := Result{Elapsed: time.Since(start), CPU: processCPU() - cpu0}
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	r.Latencies = slices.Concat(lat...)
	slices.Sort(r.Latencies)
	return r
}

// ReportPeerCPU reports the CPU per operation, in µs, that a server in
// another process used meanwhile (see PeerCPU), as server-cpu-µs/op:
// cpu-µs/op then counts only the load client, and the sum of both is
// what one call cost, to compare with a server measured in process.
func (r Result) ReportPeerCPU(b *testing.B, perOp int, peer time.Duration) {
	if peer > 0 && len(r.Latencies) > 0 {
		b.ReportMetric(float64(peer)/float64(time.Microsecond)/float64(len(r.Latencies)*perOp), "server-cpu-µs/op")
	}
}

// Percentile is the q-quantile of the latencies (nearest rank).
func (r Result) Percentile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(q*float64(len(r.Latencies))+0.5) - 1
	return r.Latencies[max(0, min(i, len(r.Latencies)-1))]
}

// Report reports ops/s (each call counting perOp operations, e.g. the
// items of a batch), p50 and p99 in unit (named "ms" or "µs" in the
// metric), and, where it was read, the process's CPU per operation in µs:
// on a shared machine it varies far less than ops/s does.
func (r Result) Report(b *testing.B, perOp int, unit time.Duration, unitName string) {
	in := func(d time.Duration) float64 { return float64(d) / float64(unit) }
	b.ReportMetric(float64(len(r.Latencies)*perOp)/r.Elapsed.Seconds(), "ops/s")
	b.ReportMetric(in(r.Percentile(0.50)), "p50-"+unitName)
	b.ReportMetric(in(r.Percentile(0.99)), "p99-"+unitName)
	if r.CPU > 0 && len(r.Latencies) > 0 {
		b.ReportMetric(float64(r.CPU)/float64(time.Microsecond)/float64(len(r.Latencies)*perOp), "cpu-µs/op")
	}
}
