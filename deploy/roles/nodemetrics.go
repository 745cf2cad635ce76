package roles

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/workflow"

	"github.com/keyflow/keyflow/workers/sealer"
)

// The per-role metrics read from the running parts at scrape time: the
// handle cache and the pool's queues (crypto, admin), the sealer's
// progress and lag (sealer), the running workflows (lifecycle). Each
// node reports only the series of the roles it runs.
var (
	descCacheHits   = prometheus.NewDesc("keyflow_handle_cache_hits_total", "Key version lookups that found the version already unwrapped in the HSM.", nil, nil)
	descCacheMisses = prometheus.NewDesc("keyflow_handle_cache_misses_total", "Key version lookups that unwrapped the version into the HSM.", nil, nil)
	descCacheSize   = prometheus.NewDesc("keyflow_handle_cache_entries", "Key versions held unwrapped in the HSM now.", nil, nil)
	descQueueDepth  = prometheus.NewDesc("keyflow_pool_queue_depth", "Admitted requests waiting for the request pool, per tenant (tenants with none waiting are absent).", []string{"tenant"}, nil)
	descSealerLag   = prometheus.NewDesc("keyflow_audit_sealer_lag_records", "Audit records not yet sealed into a signed digest (the stream's last sequence minus the last digest's). At rest: the sealer's own two signature records.", nil, nil)
	descSealedSeq   = prometheus.NewDesc("keyflow_audit_sealed_seq", "Last audit stream sequence sealed into a digest.", nil, nil)
	descStreamSeq   = prometheus.NewDesc("keyflow_audit_stream_last_seq", "Last audit stream sequence.", nil, nil)
	descSealerRead  = prometheus.NewDesc("keyflow_audit_sealer_records_read_total", "Audit records this process's sealer has read and chained, its replay from the last digest after a start or takeover included.", nil, nil)
	descSealerActv  = prometheus.NewDesc("keyflow_audit_sealer_active", "1 while this process holds the sealer lease and seals, else 0 (standby).", nil, nil)
	descWfRunning   = prometheus.NewDesc("keyflow_workflows_running", "Lifecycle workflows running in the namespace (all workers; Temporal visibility, which lags by up to a second).", nil, nil)
)

// scrapeTimeout bounds each scrape-time read of NATS or Temporal.
const scrapeTimeout = 2 * time.Second

// nodeCollector reports what a Node's parts know. It is an unchecked
// collector (Describe sends nothing): its series depend on the roles.
type nodeCollector struct {
	n          *Node
	sealerJS   jetstream.JetStream // the sealer's connection, for the lag
	sealerRead *atomic.Uint64
	readErrs   *prometheus.CounterVec
}

func (c *nodeCollector) Describe(chan<- *prometheus.Desc) {}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	if k := n.KMS; k != nil {
		s := k.HandleCacheStats()
		ch <- prometheus.MustNewConstMetric(descCacheHits, prometheus.CounterValue, float64(s.Hits))
		ch <- prometheus.MustNewConstMetric(descCacheMisses, prometheus.CounterValue, float64(s.Misses))
		ch <- prometheus.MustNewConstMetric(descCacheSize, prometheus.GaugeValue, float64(s.Size))
	}
	if r := n.RPC; r != nil {
		for t, d := range r.QueueDepths() {
			ch <- prometheus.MustNewConstMetric(descQueueDepth, prometheus.GaugeValue, float64(d), t)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	if c.sealerJS != nil {
		ch <- prometheus.MustNewConstMetric(descSealerRead, prometheus.CounterValue, float64(c.sealerRead.Load()))
		active := 1.0
		if n.Standby != nil && !n.Standby.Active() {
			active = 0
		}
		ch <- prometheus.MustNewConstMetric(descSealerActv, prometheus.GaugeValue, active)
		if l, err := sealer.ReadLag(ctx, c.sealerJS); err != nil {
			c.readErrs.WithLabelValues("sealer_lag").Inc()
		} else {
			ch <- prometheus.MustNewConstMetric(descSealerLag, prometheus.GaugeValue, float64(l.Unsealed()))
			ch <- prometheus.MustNewConstMetric(descSealedSeq, prometheus.GaugeValue, float64(l.Sealed))
			ch <- prometheus.MustNewConstMetric(descStreamSeq, prometheus.GaugeValue, float64(l.Last))
		}
	}
	if n.Has(Lifecycle) && n.infra.Temporal != nil {
		if res, err := n.infra.Temporal.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{Query: "ExecutionStatus='Running'"}); err != nil {
			c.readErrs.WithLabelValues("workflows_running").Inc()
		} else {
			ch <- prometheus.MustNewConstMetric(descWfRunning, prometheus.GaugeValue, float64(res.GetCount()))
		}
	}
	c.readErrs.Collect(ch)
}

// watch registers the node's collector (once per node; a registry that
// already holds one for this Metrics, as after a restart of the roles in
// tests, keeps the first).
func (m *Metrics) watch(n *Node, sealerJS jetstream.JetStream, read *atomic.Uint64) {
	c := &nodeCollector{n: n, sealerJS: sealerJS, sealerRead: read, readErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyflow_metrics_read_errors_total", Help: "Scrape-time reads that failed (sealer lag, running workflows), by metric.",
	}, []string{"metric"})}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.node != nil {
		m.Registry.Unregister(m.node)
	}
	m.node = c
	m.Registry.MustRegister(c)
}

// workflowCounter counts the lifecycle workflows this worker runs, by
// type: started, completed and failed. Workflow code is replayed after a
// worker restart or a cache eviction; only the first, live execution of
// each step counts (workflow.IsReplaying), so a replay counts nothing.
type workflowCounter struct {
	interceptor.WorkerInterceptorBase
	m *Metrics
}

func (w workflowCounter) InterceptWorkflow(_ workflow.Context, next interceptor.WorkflowInboundInterceptor) interceptor.WorkflowInboundInterceptor {
	i := &workflowCounting{m: w.m}
	i.Next = next
	return i
}

type workflowCounting struct {
	interceptor.WorkflowInboundInterceptorBase
	m *Metrics
}

func (i *workflowCounting) ExecuteWorkflow(ctx workflow.Context, in *interceptor.ExecuteWorkflowInput) (any, error) {
	typ := workflow.GetInfo(ctx).WorkflowType.Name
	if !workflow.IsReplaying(ctx) {
		i.m.wfStarted.WithLabelValues(typ).Inc()
	}
	res, err := i.Next.ExecuteWorkflow(ctx, in)
	if !workflow.IsReplaying(ctx) {
		switch {
		case err == nil:
			i.m.wfEnded.WithLabelValues(typ, "completed").Inc()
		case workflow.IsContinueAsNewError(err):
			i.m.wfEnded.WithLabelValues(typ, "continued").Inc()
		case errors.Is(err, workflow.ErrCanceled):
			i.m.wfEnded.WithLabelValues(typ, "canceled").Inc()
		default:
			i.m.wfEnded.WithLabelValues(typ, "failed").Inc()
		}
	}
	return res, err
}

// WorkerInterceptors are the lifecycle worker's interceptors for the
// metrics (none without metrics).
func (m *Metrics) WorkerInterceptors() []interceptor.WorkerInterceptor {
	if m == nil {
		return nil
	}
	return []interceptor.WorkerInterceptor{&workflowCounter{m: m}}
}
