package rpc

import (
	"context"
	"errors"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
)

// Per-tenant admission: quotas and fairness.
//
// Every request passes admit before it may enter the shared worker pool.
// Two limits apply, per tenant:
//
//   - its request rate, a token bucket refilled at the tenant policy's
//     quotas.requestsPerSecond (bucket size quotas.burst), when it has
//     one;
//   - its requests in flight (queued or running), at most
//     Config.MaxInFlightPerTenant (default 1024, at least 16 per pool
//     worker), always: a bound on what one tenant may park in memory.
//
// A request over either limit is answered at once with
// ThrottlingException and a retry hint (message, retryAfterMillis in the
// body, Kf-Retry-After-Ms header). An admitted request joins its tenant's
// queue; the pool takes from the tenants' queues in turn (round robin), so
// a tenant with a backlog of thousands delays another tenant's request by
// at most one request per worker. Dispatch never blocks, so the endpoint's
// subscription (which every tenant's requests share) never backs up behind
// a flood either.
//
// Several processes: with Config.QuotaShares, each process admits its
// share of a tenant's rate and burst (rate/N, burst/N, at least 1), so N
// processes together never admit more than the tenant's quota (burst plus
// rate × time), whichever process each request reaches. It is exact when a
// tenant's requests spread evenly (NATS queue groups pick a member at
// random per request) and conservative otherwise: a tenant whose requests
// reach only some processes gets less than its rate. The in-flight bound
// stays per process.
//
// The tenant here is the one named in the subject. The NATS account
// imports let a tenant publish only on its own subjects, and serve
// verifies the server-vouched identity before anything runs.

type limiter struct {
	quotas      func(tenant string) *kms.Quotas // in memory
	maxInFlight int
	now         func() time.Time
	shares      func() int // Config.QuotaShares

	mu      sync.Mutex
	tenants map[string]*tenantGate
}

type tenantGate struct {
	tokens   float64
	last     time.Time
	inflight int
	// throttled requests not yet recorded in the audit trail
	pending kms.ThrottleSummary
}

func newLimiter(quotas func(tenant string) *kms.Quotas, maxInFlight int) *limiter {
	return &limiter{quotas: quotas, maxInFlight: maxInFlight, now: time.Now, tenants: map[string]*tenantGate{}}
}

// admit decides on one request of tenant. On success it returns the
// release function to call when the request is done.
func (l *limiter) admit(tenant, op, reqID string) (release func(), err error) {
	q := l.quotas(tenant)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.tenants[tenant]
	if g == nil {
		g = &tenantGate{last: now, tokens: math.Inf(1)}
		l.tenants[tenant] = g
	}
	throttle := func(reason, msg string, after time.Duration) error {
		g.pending.Count++
		g.pending.Operation, g.pending.Reason, g.pending.RequestID = op, reason, reqID
		return kms.ThrottlingError(msg, after)
	}
	if g.inflight >= l.maxInFlight {
		return nil, throttle("concurrency", "tenant "+tenant+" has too many requests in flight", 50*time.Millisecond)
	}
	if q != nil && q.RequestsPerSecond > 0 {
		burst := float64(q.Burst)
		if burst <= 0 {
			burst = math.Max(1, math.Ceil(q.RequestsPerSecond))
		}
		// This process's share of the tenant's quota (see Config.QuotaShares).
		rate := q.RequestsPerSecond
		if l.shares != nil {
			if n := float64(max(l.shares(), 1)); n > 1 {
				rate, burst = rate/n, math.Max(1, math.Floor(burst/n))
			}
		}
		g.tokens = math.Min(burst, g.tokens+now.Sub(g.last).Seconds()*rate)
		g.last = now
		if g.tokens < 1 {
			after := time.Duration((1 - g.tokens) / rate * float64(time.Second))
			return nil, throttle("rate", "tenant "+tenant+" is over its request rate quota", after)
		}
		g.tokens--
	} else {
		g.last = now
	}
	g.inflight++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			g.inflight--
			l.mu.Unlock()
		})
	}, nil
}

// drain returns and resets the tenants' throttle counts, sorted by
// tenant.
func (l *limiter) drain() (tenants []string, sums []kms.ThrottleSummary) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for t, g := range l.tenants {
		if g.pending.Count > 0 {
			tenants = append(tenants, t)
		}
	}
	sort.Strings(tenants)
	for _, t := range tenants {
		g := l.tenants[t]
		sums = append(sums, g.pending)
		g.pending = kms.ThrottleSummary{}
	}
	return tenants, sums
}

// startQuotas sets up admission and the goroutine that records throttled
// requests, one summary per tenant per second.
func (s *Server) startQuotas() {
	n := s.cfg.MaxInFlightPerTenant
	if n <= 0 {
		n = max(1024, 16*s.cfg.Workers)
	}
	s.queue = newFairQueue()
	s.limits = newLimiter(func(tenant string) *kms.Quotas {
		return s.cfg.KMS.TenantQuotas(context.Background(), tenant) // from memory
	}, n)
	s.limits.shares = s.cfg.QuotaShares
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				s.recordThrottled()
			case <-s.done:
				s.queue.close()
				s.recordThrottled()
				return
			}
		}
	}()
}

func (s *Server) recordThrottled() {
	tenants, sums := s.limits.drain()
	for i, t := range tenants {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s.cfg.KMS.RecordThrottled(ctx, t, sums[i])
		cancel()
	}
}

// admit is dispatch's hook: it returns the release function of an
// admitted request, or the ThrottlingException to answer at once.
func (s *Server) admit(op string, r micro.Request) (tenant string, release func(), err error) {
	parts := strings.SplitN(r.Subject(), ".", 4)
	if len(parts) < 4 || !kms.ValidTenant(parts[2]) {
		return "", func() {}, nil // serve refuses it, audited
	}
	reqID := r.Headers().Get(api.HeaderRequestID)
	if reqID == "" || len(reqID) > 128 {
		reqID = nuid.Next()
	}
	release, err = s.limits.admit(parts[2], op, reqID)
	if err != nil {
		return "", nil, &throttled{err: err, reqID: reqID}
	}
	return parts[2], release, nil
}

// throttled carries the request ID a throttled reply names.
type throttled struct {
	err   error
	reqID string
}

func (t *throttled) Error() string { return t.err.Error() }
func (t *throttled) Unwrap() error { return t.err }

// requestIDOf returns the request ID of a throttled request.
func requestIDOf(err error) string {
	var t *throttled
	if errors.As(err, &t) {
		return t.reqID
	}
	return ""
}

// fairQueue holds admitted jobs in one FIFO queue per tenant and hands
// them to the pool round robin across the tenants that have any.
type fairQueue struct {
	mu      sync.Mutex
	cond    *sync.Cond
	tenants map[string][]job
	ring    []string // tenants with queued jobs, in turn order
	next    int
	closed  bool
}

func newFairQueue() *fairQueue {
	q := &fairQueue{tenants: map[string][]job{}}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// push queues j for tenant; false once the queue is closed.
func (q *fairQueue) push(tenant string, j job) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	jobs := q.tenants[tenant]
	if len(jobs) == 0 {
		q.ring = append(q.ring, tenant)
	}
	q.tenants[tenant] = append(jobs, j)
	q.cond.Signal()
	return true
}

// pop waits for a job and returns the next tenant's oldest; false once
// the queue is closed and empty.
func (q *fairQueue) pop() (job, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.ring) == 0 && !q.closed {
		q.cond.Wait()
	}
	if len(q.ring) == 0 {
		return job{}, false
	}
	if q.next >= len(q.ring) {
		q.next = 0
	}
	tenant := q.ring[q.next]
	jobs := q.tenants[tenant]
	j := jobs[0]
	jobs[0] = job{}
	if len(jobs) == 1 {
		delete(q.tenants, tenant)
		q.ring = append(q.ring[:q.next], q.ring[q.next+1:]...) // next now names the following tenant
	} else {
		q.tenants[tenant] = jobs[1:]
		q.next++
	}
	return j, true
}

// depths returns the number of jobs queued per tenant (tenants with none
// are absent).
func (q *fairQueue) depths() map[string]int {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make(map[string]int, len(q.tenants))
	for t, jobs := range q.tenants {
		out[t] = len(jobs)
	}
	return out
}

// QueueDepths is how many admitted requests wait for the pool, per tenant
// (tenants with none waiting are absent); for metrics.
func (s *Server) QueueDepths() map[string]int { return s.queue.depths() }

// close makes pop return false once the queued jobs are handed out.
func (q *fairQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}
