package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/kms"
)

// Governance buckets.
//
//	kf_tenant_policy  <tenant>.current          -> the tenant policy (JSON)
//	                  <tenant>.proposed.<id>    -> a policy change waiting for approval <id>
//	kf_approvals      <tenant>.<id>             -> an approval request (JSON)
const (
	BucketTenantPolicy = "kf_tenant_policy"
	BucketApprovals    = "kf_approvals"
)

// Governance implements kms.GovernanceStore. Tenant policies are read on
// every request (the quotas), so it keeps the current policies in memory:
// a watch on the bucket keeps every worker's copy current within
// milliseconds, and a worker's own writes are visible to it at once.
type Governance struct {
	policies, approvals jetstream.KeyValue

	mu    sync.RWMutex
	cache map[string]cachedPolicy // tenant -> current policy
}

type cachedPolicy struct {
	p   *kms.TenantPolicy
	rev uint64
}

var _ kms.GovernanceStore = (*Governance)(nil)

var errNoPolicy = fmt.Errorf("no tenant policy: %w", kms.ErrStoreNotFound)

// OpenGovernance creates the buckets if needed, loads the current tenant
// policies and watches them until ctx ends.
func OpenGovernance(ctx context.Context, js jetstream.JetStream) (*Governance, error) {
	g := &Governance{cache: map[string]cachedPolicy{}}
	var err error
	if g.policies, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: BucketTenantPolicy, Description: "keyflow tenant policies", History: 8, Storage: jetstream.FileStorage,
	}); err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", BucketTenantPolicy, err)
	}
	if g.approvals, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: BucketApprovals, Description: "keyflow approval requests", History: 1, Storage: jetstream.FileStorage,
	}); err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", BucketApprovals, err)
	}
	// The watcher lives as long as the process's context, not the
	// caller's request.
	w, err := g.policies.Watch(context.WithoutCancel(ctx), "*.current")
	if err != nil {
		return nil, fmt.Errorf("failed to watch tenant policies: %w", err)
	}
	ready := make(chan struct{})
	go func() {
		defer w.Stop()
		initial := true
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil { // end of the initial values
					if initial {
						initial = false
						close(ready)
					}
					continue
				}
				g.observe(e)
			}
		}
	}()
	select {
	case <-ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("failed to load tenant policies: %w", ctx.Err())
	}
	return g, nil
}

// observe applies one watched change to the cache, never going back to an
// older revision than the one a local write put there.
func (g *Governance) observe(e jetstream.KeyValueEntry) {
	tenant, _, _ := strings.Cut(e.Key(), ".")
	g.mu.Lock()
	defer g.mu.Unlock()
	if cur, ok := g.cache[tenant]; ok && cur.rev >= e.Revision() {
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		delete(g.cache, tenant)
		return
	}
	var p kms.TenantPolicy
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return // not ours to judge here; GetTenantPolicy reports not found
	}
	g.cache[tenant] = cachedPolicy{p: &p, rev: e.Revision()}
}

// GetTenantPolicy implements kms.GovernanceStore, from memory.
func (g *Governance) GetTenantPolicy(_ context.Context, tenant string) (*kms.TenantPolicy, kms.Revision, error) {
	g.mu.RLock()
	c, ok := g.cache[tenant]
	g.mu.RUnlock()
	if !ok {
		return nil, 0, errNoPolicy // on every request of such a tenant: no allocation
	}
	cp := *c.p
	return &cp, kms.Revision(c.rev), nil
}

// PutTenantPolicy implements kms.GovernanceStore.
func (g *Governance) PutTenantPolicy(ctx context.Context, tenant string, p *kms.TenantPolicy, rev kms.Revision) (kms.Revision, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return 0, fmt.Errorf("failed to encode tenant policy: %w", err)
	}
	var nrev uint64
	if rev == 0 {
		nrev, err = g.policies.Create(ctx, tenant+".current", b)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("tenant policy of %s: %w", tenant, kms.ErrStoreConflict)
		}
	} else {
		nrev, err = g.policies.Update(ctx, tenant+".current", b, uint64(rev))
	}
	if err != nil {
		return 0, fmt.Errorf("failed to store tenant policy: %w", mapErr(err))
	}
	cp := *p
	g.mu.Lock()
	if cur, ok := g.cache[tenant]; !ok || cur.rev < nrev {
		g.cache[tenant] = cachedPolicy{p: &cp, rev: nrev}
	}
	g.mu.Unlock()
	return kms.Revision(nrev), nil
}

// PutProposedPolicy implements kms.GovernanceStore.
func (g *Governance) PutProposedPolicy(ctx context.Context, tenant, approvalID string, p *kms.TenantPolicy) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("failed to encode tenant policy: %w", err)
	}
	if _, err := g.policies.Create(ctx, tenant+".proposed."+approvalID, b); err != nil {
		return fmt.Errorf("failed to store proposed policy: %w", mapErr(err))
	}
	return nil
}

// GetProposedPolicy implements kms.GovernanceStore.
func (g *Governance) GetProposedPolicy(ctx context.Context, tenant, approvalID string) (*kms.TenantPolicy, error) {
	e, err := g.policies.Get(ctx, tenant+".proposed."+approvalID)
	if err != nil {
		return nil, fmt.Errorf("failed to read proposed policy: %w", mapErr(err))
	}
	var p kms.TenantPolicy
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return nil, fmt.Errorf("failed to decode proposed policy: %w", err)
	}
	return &p, nil
}

// CreateApproval implements kms.GovernanceStore.
func (g *Governance) CreateApproval(ctx context.Context, a *kms.Approval) error {
	b, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("failed to encode approval: %w", err)
	}
	if _, err := g.approvals.Create(ctx, a.Tenant+"."+a.ID, b); err != nil {
		return fmt.Errorf("failed to create approval: %w", mapErr(err))
	}
	return nil
}

// GetApproval implements kms.GovernanceStore.
func (g *Governance) GetApproval(ctx context.Context, tenant, id string) (*kms.Approval, kms.Revision, error) {
	e, err := g.approvals.Get(ctx, tenant+"."+id)
	if err != nil {
		return nil, 0, fmt.Errorf("failed to get approval: %w", mapErr(err))
	}
	var a kms.Approval
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		return nil, 0, fmt.Errorf("failed to decode approval %s: %w", id, err)
	}
	if a.Tenant != tenant {
		return nil, 0, fmt.Errorf("approval %s: %w", id, kms.ErrStoreNotFound)
	}
	return &a, kms.Revision(e.Revision()), nil
}

// UpdateApproval implements kms.GovernanceStore.
func (g *Governance) UpdateApproval(ctx context.Context, a *kms.Approval, rev kms.Revision) (kms.Revision, error) {
	b, err := json.Marshal(a)
	if err != nil {
		return 0, fmt.Errorf("failed to encode approval: %w", err)
	}
	nrev, err := g.approvals.Update(ctx, a.Tenant+"."+a.ID, b, uint64(rev))
	if err != nil {
		return 0, fmt.Errorf("failed to update approval: %w", mapErr(err))
	}
	return kms.Revision(nrev), nil
}

// ListApprovals implements kms.GovernanceStore.
func (g *Governance) ListApprovals(ctx context.Context, tenant string) ([]*kms.Approval, error) {
	l, err := g.approvals.ListKeysFiltered(ctx, tenant+".*")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("failed to list approvals: %w", err)
	}
	defer func() { _ = l.Stop() }()
	var out []*kms.Approval
	for k := range l.Keys() {
		_, id, _ := strings.Cut(k, ".")
		a, _, err := g.GetApproval(ctx, tenant, id)
		if errors.Is(err, kms.ErrStoreNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}
