package kmip

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/keyflow/keyflow/kms"
)

// admission applies the tenant policy's request quota (quotas.requestsPerSecond,
// quotas.burst) to KMIP batch items, as the NATS services do to requests:
// a token bucket per tenant. An item over it fails at once with the
// ThrottlingException message (KMIP General Failure) and is recorded.
type admission struct {
	kms *kms.Service
	mu  sync.Mutex
	b   map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newAdmission(k *kms.Service) *admission { return &admission{kms: k, b: map[string]*bucket{}} }

func (a *admission) admit(ctx context.Context, c kms.Caller, op string) (func(), error) {
	q := a.kms.TenantQuotas(ctx, c.Tenant)
	if q == nil || q.RequestsPerSecond <= 0 {
		return func() {}, nil
	}
	burst := float64(max(q.Burst, int(math.Ceil(q.RequestsPerSecond)), 1))
	now := time.Now()
	a.mu.Lock()
	b := a.b[c.Tenant]
	if b == nil {
		b = &bucket{tokens: burst, last: now}
		a.b[c.Tenant] = b
	}
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*q.RequestsPerSecond)
	b.last = now
	ok := b.tokens >= 1
	if ok {
		b.tokens--
	}
	a.mu.Unlock()
	if !ok {
		after := time.Duration(float64(time.Second) / q.RequestsPerSecond)
		return nil, a.kms.Reject(ctx, c, op, kms.ThrottlingError("the tenant's request quota is exhausted", after))
	}
	return func() {}, nil
}
