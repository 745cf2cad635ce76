package roles

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.temporal.io/sdk/client"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/workers/sealer"
)

// Metrics are a node's Prometheus metrics, on a registry of their own.
// Every role reports into the same set; a role that does not run leaves
// its series empty.
type Metrics struct {
	Registry *prometheus.Registry

	requests     *prometheus.CounterVec
	reqLatency   *prometheus.HistogramVec
	hsmLatency   *prometheus.HistogramVec
	hsmErrors    *prometheus.CounterVec
	auditLatency prometheus.Histogram
	auditFailed  prometheus.Counter
	wfStarted    *prometheus.CounterVec
	wfEnded      *prometheus.CounterVec

	mu   sync.Mutex
	node *nodeCollector // the running node's parts (nodemetrics.go)
}

// NewMetrics registers keyflow's metrics and the Go runtime's.
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyflow_requests_total", Help: "Requests handled by the crypto and admin services, by operation and outcome (ok or the error code).",
		}, []string{"operation", "outcome"}),
		reqLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "keyflow_request_duration_seconds", Help: "Time to handle a request (after its admission), by operation and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}, []string{"operation", "outcome"}),
		hsmLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "keyflow_hsm_operation_duration_seconds", Help: "Time of a PKCS#11 operation, the wait for a session included.",
			Buckets: prometheus.ExponentialBuckets(0.00002, 3, 12),
		}, []string{"operation"}),
		hsmErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyflow_hsm_errors_total", Help: "PKCS#11 operations that failed (a failed decryption counts too).",
		}, []string{"operation"}),
		auditLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "keyflow_audit_publish_duration_seconds", Help: "Time to store an audit record (JetStream acknowledgement).",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2.5, 12),
		}),
		auditFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyflow_audit_publish_failures_total", Help: "Audit records that could not be stored.",
		}),
		wfStarted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyflow_workflows_started_total", Help: "Lifecycle workflows this worker started executing, by workflow type (replays after a restart do not count).",
		}, []string{"workflow"}),
		wfEnded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyflow_workflows_ended_total", Help: "Lifecycle workflows this worker finished, by workflow type and outcome: completed, failed, canceled or continued (as new).",
		}, []string{"workflow", "outcome"}),
	}
	r.MustRegister(m.requests, m.reqLatency, m.hsmLatency, m.hsmErrors, m.auditLatency, m.auditFailed, m.wfStarted, m.wfEnded,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveRequest is rpc.Config.Observe.
func (m *Metrics) ObserveRequest(op, outcome string, d time.Duration) {
	m.requests.WithLabelValues(op, outcome).Inc()
	m.reqLatency.WithLabelValues(op, outcome).Observe(d.Seconds())
}

// ObserveHSM is pkcs11.Config.Observe.
func (m *Metrics) ObserveHSM(op string, d time.Duration, err error) {
	m.hsmLatency.WithLabelValues(op).Observe(d.Seconds())
	if err != nil {
		m.hsmErrors.WithLabelValues(op).Inc()
	}
}

// Audit times the records a sink stores. The timed sink passes the
// audit record key on (events.Authenticating), so that wrapping the
// publisher never leaves its records unauthenticated.
func (m *Metrics) Audit(s events.Sink) events.Sink {
	return timedSink{m: m, sink: s}
}

type timedSink struct {
	m    *Metrics
	sink events.Sink
}

func (t timedSink) Emit(ctx context.Context, r events.Record) error {
	start := time.Now()
	err := t.sink.Emit(ctx, r)
	t.m.auditLatency.Observe(time.Since(start).Seconds())
	if err != nil {
		t.m.auditFailed.Inc()
	}
	return err
}

// SetRecordKey hands the key to the wrapped sink, when it authenticates.
func (t timedSink) SetRecordKey(k *events.RecordKey) {
	if a, ok := t.sink.(events.Authenticating); ok {
		a.SetRecordKey(k)
	}
}

// Check is one readiness check: nil when it passes.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Checks are the readiness checks of the node's roles: NATS connected,
// JetStream reachable, an HSM session works (roles with the HSM), the
// audit records left unsealed are at most Options.SealerMaxLag (the
// sealer role, active or standby: the lag is the deployment's), and
// Temporal reachable (roles with Temporal).
func (n *Node) Checks() []Check {
	cs := []Check{
		{"nats", func(context.Context) error {
			if s := n.Conn.Status(); s != nats.CONNECTED {
				return fmt.Errorf("connection %s", s)
			}
			return nil
		}},
		{"jetstream", func(ctx context.Context) error {
			js, err := n.infra.JetStream(n.Conn)
			if err != nil {
				return err
			}
			_, err = js.AccountInfo(ctx)
			return err
		}},
	}
	if r, ok := n.infra.HSM.(hsm.Random); ok && NeedsHSM(n.Roles) {
		cs = append(cs, Check{"hsm", func(ctx context.Context) error {
			_, err := r.GenerateRandom(ctx, 8)
			return err
		}})
	}
	if n.sealerJS != nil {
		limit := n.opts.SealerMaxLag
		if limit == 0 {
			limit = DefaultSealerMaxLag
		}
		cs = append(cs, Check{"sealer_lag", func(ctx context.Context) error {
			l, err := sealer.ReadLag(ctx, n.sealerJS)
			if err != nil {
				return err
			}
			if u := l.Unsealed(); u > limit {
				return fmt.Errorf("%d audit records unsealed (sealed to %d of %d), more than the %d allowed", u, l.Sealed, l.Last, limit)
			}
			return nil
		}})
	}
	if tc := n.infra.Temporal; tc != nil {
		cs = append(cs, Check{"temporal", func(ctx context.Context) error {
			_, err := tc.CheckHealth(ctx, &client.CheckHealthRequest{})
			return err
		}})
	}
	return cs
}

// OpsHandler serves /healthz (the process is alive), /readyz (every check
// passes: 200, else 503, with each check's result as JSON) and /metrics.
func OpsHandler(checks []Check, m *Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		results := make(map[string]string, len(checks))
		var mu sync.Mutex
		var wg sync.WaitGroup
		ready := true
		for _, c := range checks {
			wg.Go(func() {
				res := "ok"
				if err := c.Fn(ctx); err != nil {
					res = err.Error()
				}
				mu.Lock()
				results[c.Name] = res
				ready = ready && res == "ok"
				mu.Unlock()
			})
		}
		wg.Wait()
		w.Header().Set("Content-Type", "application/json")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ready": ready, "checks": results})
	})
	if m != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	}
	return mux
}

// ServeOps listens on addr for the operations endpoints and returns the
// address it listens on; stop closes it.
func ServeOps(addr string, h http.Handler) (bound string, stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("failed to listen for the ops endpoints on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }() // ErrServerClosed after stop
	return ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// Metrics are the node's metrics (nil when Infra had none).
func (n *Node) Metrics() *Metrics { return n.infra.Metrics }
