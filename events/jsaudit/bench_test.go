package jsaudit_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/events/jsaudit"
)

// BenchmarkEmit isolates the audit stage of every request: encode one
// encrypt record, publish it on an in-process connection and wait for
// JetStream's acknowledgement, from 1 and 32 goroutines at once (32 is
// BenchmarkXKSEncrypt's load), on one connection and spread over 4. It reports ops/s and the latency p50/p99
// in µs; compare with BenchmarkXKSEncrypt's no-audit variant to see how
// much of a request's latency the audit stage is.
func BenchmarkEmit(b *testing.B) {
	js := newJS(b)
	ctx := context.Background()
	one, err := jsaudit.Open(ctx, js)
	if err != nil {
		b.Fatal(err)
	}
	four, err := jsaudit.Open(ctx, js)
	if err != nil {
		b.Fatal(err)
	}
	extra, err := four.Spread(4)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range extra {
		b.Cleanup(c.Close)
	}
	rec := events.Record{
		Type: events.TypeEncrypt, Source: "/keyflow/bench", Subject: "kf:alpha:key/" + uuid.NewString(),
		Tenant: "alpha", Principal: "bench", RequestID: "req", Outcome: events.OutcomeSuccess,
		Data: map[string]any{"keyVersion": 1, "plaintextBytes": 32},
	}
	for _, bc := range []struct {
		n, conns int
		p        *jsaudit.Publisher
	}{{1, 1, one}, {32, 1, one}, {32, 4, four}} {
		n, p := bc.n, bc.p
		b.Run(fmt.Sprintf("goroutines=%d/conns=%d", n, bc.conns), func(b *testing.B) {
			lat := make([][]time.Duration, n)
			var next atomic.Int64
			var failed atomic.Pointer[error]
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for i := range n {
				wg.Go(func() {
					r := rec
					for next.Add(1) <= int64(b.N) {
						r.ID = uuid.NewString() // a fresh record, not a duplicate
						t0 := time.Now()
						if err := p.Emit(ctx, r); err != nil {
							failed.CompareAndSwap(nil, &err)
							return
						}
						lat[i] = append(lat[i], time.Since(t0))
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if err := failed.Load(); err != nil {
				b.Fatal(*err)
			}
			all := slices.Concat(lat...)
			slices.Sort(all)
			b.ReportMetric(float64(len(all))/elapsed.Seconds(), "ops/s")
			b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(all[len(all)*95/100].Microseconds()), "p95-µs")
			b.ReportMetric(float64(all[len(all)*98/100].Microseconds()), "p98-µs")
		})
	}
}
