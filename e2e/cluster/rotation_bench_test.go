package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/deploy/devstack"
	"github.com/keyflow/keyflow/e2e/cluster/temporalpg"
)

// BenchmarkRotationTemporal is the latency of one rotation (keyflow key
// rotate: the admin role starts the workflow and waits for it, the
// lifecycle worker runs it), with the same two `keyflow serve` processes
// in front of three Temporal servers in one run:
//   - postgres: Temporal's own server process on PostgreSQL 15, Temporal's
//     defaults (what production runs);
//   - postgres-devtuned: the same with the dev stack's tuning as dynamic
//     configuration (eager activities and workflow start, a fast transfer
//     queue, short long polls);
//   - sqlite: the dev stack's embedded server on SQLite (deploy/devstack,
//     in the benchmark's process), with that tuning.
//
// It reports p50 and p99 (ms) of rotations after a warm-up one.
func BenchmarkRotationTemporal(b *testing.B) {
	b.Run("postgres", func(b *testing.B) {
		benchRotations(b, startTemporalServer(b, temporalpg.TemporalConfig{}))
	})
	b.Run("postgres-devtuned", func(b *testing.B) {
		benchRotations(b, startTemporalServer(b, temporalpg.TemporalConfig{DevTuning: true}))
	})
	b.Run("sqlite", func(b *testing.B) {
		benchRotations(b, startEmbeddedTemporal(b))
	})
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// startEmbeddedTemporal runs the dev stack's Temporal on SQLite, with the
// dev stack's generated certificates.
func startEmbeddedTemporal(b *testing.B) temporalEndpoint {
	dir := b.TempDir()
	tlsFiles, err := devstack.DevTemporalTLS(filepath.Join(dir, "tls"))
	if err != nil {
		b.Fatal(err)
	}
	ts, err := devstack.StartTemporal(context.Background(), devstack.TemporalConfig{DataDir: dir, ListenAddr: "127.0.0.1:0", TLS: tlsFiles})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ts.Stop() })
	return temporalEndpoint{Addr: ts.HostPort(), Namespace: ts.Namespace(), CAFile: tlsFiles.CAFile, CertFile: tlsFiles.ClientCertFile, KeyFile: tlsFiles.ClientKeyFile}
}

func benchRotations(b *testing.B, ep temporalEndpoint) {
	rig := startLifecycleRig(b, ep)
	rig.serve(b, "crypto,admin")
	rig.serve(b, "lifecycle")
	cl := rig.client(b)
	ctx := context.Background()
	key, err := cl.CreateKey(ctx, api.CreateKeyRequest{Description: "rotation benchmark"})
	if err != nil {
		b.Fatal(err)
	}
	var last string
	rotate := func() {
		r, err := cl.RotateKey(ctx, key.KeyID)
		if err != nil {
			b.Fatal(err)
		}
		if r.Running {
			b.Fatalf("rotation still running after the admin role's wait: %+v", r)
		}
		last = r.WorkflowID
	}
	rotate() // warm-up: first workflow on the task queue, HSM sessions
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		rotate()
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[(len(lat)*99)/100]), "p99-ms")
	logHistory(b, ep, last)
}

// logHistory logs where the last rotation's time went: each history
// event's type and the milliseconds since the one before.
func logHistory(b *testing.B, ep temporalEndpoint, wid string) {
	tc, err := temporalClient(b, endpointConfig(ep))
	if err != nil {
		b.Fatal(err)
	}
	it := tc.GetWorkflowHistory(context.Background(), wid, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var steps []string
	var prev time.Time
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			b.Fatal(err)
		}
		at := ev.GetEventTime().AsTime()
		if !prev.IsZero() {
			steps = append(steps, fmt.Sprintf("%s +%.0fms", strings.TrimPrefix(ev.GetEventType().String(), "EVENT_TYPE_"), ms(at.Sub(prev))))
		}
		prev = at
	}
	b.Logf("last rotation's history: %s", strings.Join(steps, ", "))
}
