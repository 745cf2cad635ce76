package kms_test

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// aliasCounter is the store with a count of alias lookups (KV reads of
// the alias bucket).
type aliasCounter struct {
	kms.Store
	resolves atomic.Int64
}

func (s *aliasCounter) ResolveAlias(ctx context.Context, tenant, alias string) (string, error) {
	s.resolves.Add(1)
	return s.Store.ResolveAlias(ctx, tenant, alias)
}

// frozenClock is a clock that moves only when told.
type frozenClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *frozenClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *frozenClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestAliasCacheFollowsMoves: a worker serves requests by alias from its
// cache (one alias read, however many requests), and follows an alias
// moved by another worker the way a migration cutover moves it (alias
// bucket, then both keys' Alias fields) through the key watch alone: its
// clock is frozen, so the cache's time bound never expires here.
func TestAliasCacheFollowsMoves(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	store := &aliasCounter{Store: b.Store}
	clock := &frozenClock{t: time.Now()}
	w2, err := kms.New(ctx, kms.Config{HSM: b.HSM, Store: store, Audit: b.Audit, Source: "/keyflow/test", Now: clock.now,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w2.Close)
	if err := b.Store.WatchKeys(t.Context(), w2); err != nil {
		t.Fatal(err)
	}
	k1 := mustCreate(t, b.KMS, alice, "alias/app")
	k2 := mustCreate(t, b.KMS, alice, "")
	encrypt := func(ref string) (*kms.EncryptResult, error) {
		return w2.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: ref, Plaintext: []byte("x")})
	}
	for i := range 5 {
		res, err := encrypt("alias/app")
		if err != nil || res.KeyID != k1.ID {
			t.Fatalf("encrypt %d by alias: %+v %v, want key %s", i, res, err, k1.ID)
		}
	}
	if n := store.resolves.Load(); n != 1 {
		t.Fatalf("5 requests by alias read the alias %d times, want 1 (cached)", n)
	}
	// "app" and "alias/app" are the same alias and the same cache entry.
	if res, err := encrypt("app"); err != nil || res.KeyID != k1.ID || store.resolves.Load() != 1 {
		t.Fatalf("encrypt by bare alias: %+v %v, %d alias reads", res, err, store.resolves.Load())
	}

	// Move the alias to k2 as kms.moveAlias does, behind w2's back.
	if err := b.Store.DeleteAlias(ctx, "alpha", "app"); err != nil {
		t.Fatal(err)
	}
	if err := b.Store.CreateAlias(ctx, "alpha", "app", k2.ID); err != nil {
		t.Fatal(err)
	}
	setAlias := func(id, alias string) {
		k, rev, err := b.Store.GetKey(ctx, "alpha", id)
		if err != nil {
			t.Fatal(err)
		}
		k.Alias = alias
		if _, err := b.Store.UpdateKey(ctx, k, rev); err != nil {
			t.Fatal(err)
		}
	}
	setAlias(k2.ID, "app")
	setAlias(k1.ID, "")
	checkFor(t, func() bool {
		res, err := encrypt("alias/app")
		return err == nil && res.KeyID == k2.ID
	})
	// The old key is still reachable by ID, and no longer by the alias.
	if res, err := encrypt(k1.ID); err != nil || res.KeyID != k1.ID {
		t.Fatalf("encrypt by the old key's ID: %+v %v", res, err)
	}
	if res, err := encrypt("alias/app"); err != nil || res.KeyID != k2.ID {
		t.Fatalf("alias after the move: %+v %v, want key %s", res, err, k2.ID)
	}

	// A deleted alias is refused within the time bound even with no key
	// write to report it (as when a backup restore re-points a clashing
	// alias after writing the key).
	if err := b.Store.DeleteAlias(ctx, "alpha", "app"); err != nil {
		t.Fatal(err)
	}
	clock.add(time.Minute)
	if _, err := encrypt("alias/app"); kms.CodeOf(err) != kms.CodeNotFound {
		t.Fatalf("encrypt by a deleted alias: %v, want %s", err, kms.CodeNotFound)
	}
}
