package roles_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/deploy/roles"
	"github.com/keyflow/keyflow/kms"
)

// BenchmarkEncryptTracing is the cost of tracing: encrypts through the
// Go client, NATS, a crypto node and SoftHSM, with tracing off (no
// provider, no hooks) and on (every request sampled: client, worker and
// HSM spans, batched to an exporter that discards them), in the same
// run. Run with -benchtime=3000x -count=5 and compare the medians; it
// reports the median request latency (p50-µs) and the throughput of 16
// requesters (ops/s).
func BenchmarkEncryptTracing(b *testing.B) {
	c := startNATS(b)
	var (
		node    *roles.Node
		cl      *client.Client
		keyID   string
		tracing *roles.Tracing
		mode    string
	)
	pb := b // what use starts lives as long as the whole benchmark
	use := func(m string) {
		if mode == m {
			return
		}
		if node != nil {
			node.Stop()
			_ = tracing.Stop(context.Background())
			tracing = nil
		}
		extra := ""
		if m == "on" {
			tracing = roles.InstallTracing(tracetest.NewNoopExporter(), roles.TracingOptions{SampleRatio: 1})
			extra = "tracing: {exporter: stdout}\n" // wires the HSM hook; the provider is the one above
		}
		cfg := c.config(pb, extra)
		if mode == "" {
			bootstrap(pb, cfg)
		}
		node, mode = serve(pb, cfg, "crypto"), m
		if keyID == "" {
			k, err := node.KMS.CreateKey(context.Background(), kms.Caller{Tenant: "default", Principal: "admin", RequestID: "bench"}, kms.CreateKeyParams{})
			if err != nil {
				pb.Fatal(err)
			}
			keyID = k.ID
		}
		if cl == nil {
			cl = c.adminClient(pb)
		}
	}
	b.Cleanup(func() { _ = tracing.Stop(context.Background()) })
	for _, m := range []string{"off", "on"} {
		b.Run(m, func(b *testing.B) {
			use(m)
			ctx := context.Background()
			req := api.EncryptRequest{KeyID: keyID, Plaintext: []byte("sixteen byte msg")}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				if _, err := cl.Encrypt(ctx, req); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")

			const requesters, each = 16, 200
			var wg sync.WaitGroup
			start := time.Now()
			for range requesters {
				wg.Go(func() {
					for range each {
						if _, err := cl.Encrypt(ctx, req); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(requesters*each/time.Since(start).Seconds(), "ops/s")
		})
	}
}
