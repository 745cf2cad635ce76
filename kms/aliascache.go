package kms

import (
	"sync"
	"time"
)

// aliasCache remembers which key an alias named, so that a request by
// alias on the hot path (cachedKey) costs no KV read once the key's
// metadata is cached, like a request by key ID.
//
// Aliases can move (moveAlias in a migration, a backup restore), and the
// alias bucket is not watched. What keeps the cache honest is that every
// alias change is followed by a write of the keys involved (their Alias
// fields), which the key watch turns into Invalidate on every worker:
//
//   - Invalidate of any key of a tenant forgets all of that tenant's
//     aliases (key changes are rare next to crypto requests, so being
//     coarse costs nothing measurable and needs no reverse index);
//   - a hit is used only if the cached metadata of the key it names still
//     carries that alias (k.Alias), which the key watch keeps current;
//   - a lookup that raced with an Invalidate is not stored (gen);
//   - an entry lives at most aliasTTL. A backup restore writes a key
//     before it re-points a clashing alias, so the watch can fire before
//     the alias moves; the TTL bounds that window (and any alias write
//     that is not followed by a key write) without a watch on the alias
//     bucket, for one KV read per alias per aliasTTL.
type aliasCache struct {
	mu  sync.Mutex
	ids map[[2]string]aliasEntry // (tenant, alias) -> key ID
	gen map[string]uint64        // per tenant, bumped by forget
}

type aliasEntry struct {
	keyID string
	until time.Time
}

// aliasTTL bounds how long a cached alias is trusted.
const aliasTTL = 2 * time.Second

// lookup returns the key ID cached for alias and the tenant's generation
// to pass to store.
func (c *aliasCache) lookup(tenant, alias string, now time.Time) (string, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.ids[[2]string{tenant, alias}]
	if e.keyID != "" && now.After(e.until) {
		return "", c.gen[tenant]
	}
	return e.keyID, c.gen[tenant]
}

// store caches alias -> keyID unless the tenant's aliases were forgotten
// since lookup returned gen.
func (c *aliasCache) store(tenant, alias, keyID string, gen uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen[tenant] != gen {
		return
	}
	if c.ids == nil || len(c.ids) >= 10000 {
		c.ids = map[[2]string]aliasEntry{} // crude bound, as for meta
	}
	c.ids[[2]string{tenant, alias}] = aliasEntry{keyID: keyID, until: now.Add(aliasTTL)}
}

// forget drops every cached alias of tenant.
func (c *aliasCache) forget(tenant string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == nil {
		c.gen = map[string]uint64{}
	}
	c.gen[tenant]++
	for k := range c.ids {
		if k[0] == tenant {
			delete(c.ids, k)
		}
	}
}

// cachedAlias returns the cached metadata of the key alias names, or nil
// and the generation to store the result of a lookup under.
func (s *Service) cachedAlias(tenant, alias string) (*Key, uint64) {
	id, gen := s.aliasIDs.lookup(tenant, alias, s.now())
	if id == "" {
		return nil, gen
	}
	s.metaMu.RLock()
	k := s.meta[[2]string{tenant, id}]
	s.metaMu.RUnlock()
	if k == nil || k.Alias != alias {
		return nil, gen
	}
	return k, gen
}
