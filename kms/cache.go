package kms

import (
	"container/list"
	"context"
	"sync"
	"sync/atomic"

	"github.com/keyflow/keyflow/hsm"
)

// handleCache keeps unwrapped key versions as HSM session objects, so the hot
// path (encrypt, decrypt) costs one HSM operation and no unwrap. It is
// bounded (LRU), and an entry that is evicted while in use is destroyed only
// when its last user releases it.
type handleCache struct {
	hsm  hsm.KeyWrapper
	max  int
	mu   sync.Mutex
	ll   *list.List // of *cacheEntry, most recent first
	byID map[versionRef]*list.Element

	hits, misses atomic.Uint64 // acquire found the handle, or loaded it
}

type versionRef struct {
	tenant, keyID string
	version       uint32
	public        bool // the public half of a key pair
}

type cacheEntry struct {
	ref     versionRef
	handle  hsm.KeyHandle
	refs    int
	evicted bool
}

func newHandleCache(w hsm.KeyWrapper, max int) *handleCache {
	if max <= 0 {
		max = 1024
	}
	return &handleCache{hsm: w, max: max, ll: list.New(), byID: map[versionRef]*list.Element{}}
}

// acquire returns a handle for ref, loading it with load on a miss. The
// caller must call the returned release exactly once.
func (c *handleCache) acquire(ctx context.Context, ref versionRef, load func(context.Context) (hsm.KeyHandle, error)) (hsm.KeyHandle, func(), error) {
	c.mu.Lock()
	if el, ok := c.byID[ref]; ok {
		e := el.Value.(*cacheEntry)
		e.refs++
		c.ll.MoveToFront(el)
		c.mu.Unlock()
		c.hits.Add(1)
		return e.handle, c.releaser(e), nil
	}
	c.mu.Unlock()
	c.misses.Add(1)

	// Unwrap outside the lock: it is an HSM round trip. Two concurrent
	// misses may both unwrap; the loser destroys its copy.
	h, err := load(ctx)
	if err != nil {
		return 0, nil, err
	}
	c.mu.Lock()
	if el, ok := c.byID[ref]; ok {
		e := el.Value.(*cacheEntry)
		e.refs++
		c.ll.MoveToFront(el)
		c.mu.Unlock()
		_ = c.hsm.DestroyKey(context.WithoutCancel(ctx), h)
		return e.handle, c.releaser(e), nil
	}
	e := &cacheEntry{ref: ref, handle: h, refs: 1}
	c.byID[ref] = c.ll.PushFront(e)
	var victims []hsm.KeyHandle
	for c.ll.Len() > c.max {
		victims = append(victims, c.evictLocked(c.ll.Back())...)
	}
	c.mu.Unlock()
	c.destroy(victims)
	return h, c.releaser(e), nil
}

func (c *handleCache) releaser(e *cacheEntry) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			e.refs--
			destroy := e.evicted && e.refs == 0
			c.mu.Unlock()
			if destroy {
				c.destroy([]hsm.KeyHandle{e.handle})
			}
		})
	}
}

// evictLocked removes el and returns the handles that can be destroyed now.
func (c *handleCache) evictLocked(el *list.Element) []hsm.KeyHandle {
	e := el.Value.(*cacheEntry)
	c.ll.Remove(el)
	delete(c.byID, e.ref)
	e.evicted = true
	if e.refs == 0 {
		return []hsm.KeyHandle{e.handle}
	}
	return nil
}

// drop evicts the entry for ref if it still holds h, after the HSM said
// that h no longer names a key (hsm.ErrKeyHandleInvalid: the HSM session
// that held it was lost, the token was reset). The next acquire loads the
// key again from its wrapped blob. Callers still holding h keep their
// reference; the destroy after the last release is harmless on a dead
// handle. If the entry already holds another handle (someone reloaded it
// first), nothing happens.
func (c *handleCache) drop(ref versionRef, h hsm.KeyHandle) {
	c.mu.Lock()
	var victims []hsm.KeyHandle
	if el, ok := c.byID[ref]; ok && el.Value.(*cacheEntry).handle == h {
		victims = c.evictLocked(el)
	}
	c.mu.Unlock()
	c.destroy(victims)
}

// invalidateKey drops every cached version of one key; called on any change
// to the key (state change, rotation, destruction).
func (c *handleCache) invalidateKey(tenant, keyID string) {
	c.mu.Lock()
	var victims []hsm.KeyHandle
	for ref, el := range c.byID {
		if ref.tenant == tenant && ref.keyID == keyID {
			victims = append(victims, c.evictLocked(el)...)
		}
	}
	c.mu.Unlock()
	c.destroy(victims)
}

func (c *handleCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

func (c *handleCache) closeAll() {
	c.mu.Lock()
	var victims []hsm.KeyHandle
	for c.ll.Len() > 0 {
		victims = append(victims, c.evictLocked(c.ll.Back())...)
	}
	c.mu.Unlock()
	c.destroy(victims)
}

func (c *handleCache) destroy(hs []hsm.KeyHandle) {
	for _, h := range hs {
		// Best effort: a session object the HSM already dropped is gone anyway.
		_ = c.hsm.DestroyKey(context.Background(), h)
	}
}

// HandleCacheStats counts the lookups of the handle cache: hits found an
// unwrapped key version in the HSM, misses unwrapped it.
type HandleCacheStats struct {
	Hits, Misses uint64
	Size         int // versions held now
}

// HandleCacheStats reports the handle cache's lookups so far (metrics).
func (s *Service) HandleCacheStats() HandleCacheStats {
	return HandleCacheStats{Hits: s.handles.hits.Load(), Misses: s.handles.misses.Load(), Size: s.handles.len()}
}
