package kvstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/kms"
)

// The key-create lock (kms.KeyCreateLocker): one entry per tenant in the
// key bucket, under a name no tenant can have (tenant names never start
// with "_"), so listing a tenant's keys never meets it:
//
//	kf_keys  _keycreate.<tenant>  -> the holder's expiry (unix ns, 8 bytes)
//
// Taking it is an exclusive create; a holder that died is replaced once its
// expiry has passed, with a revision check, so two takers never both win.

var _ kms.KeyCreateLocker = (*Store)(nil)

func keyCreateLockKey(tenant string) string { return "_keycreate." + tenant }

// LockKeyCreate implements kms.KeyCreateLocker. It waits while another
// worker holds the lock, until ctx ends or 10 s pass.
func (s *Store) LockKeyCreate(ctx context.Context, tenant string, ttl time.Duration) (func(), error) {
	name := keyCreateLockKey(tenant)
	give := time.Now().Add(10 * time.Second)
	pause := 2 * time.Millisecond
	for {
		val := binary.BigEndian.AppendUint64(nil, uint64(time.Now().Add(ttl).UnixNano()))
		rev, err := s.keys.Create(ctx, name, val)
		if err == nil {
			return s.unlocker(name, rev), nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("failed to take the key-create lock: %w", err)
		}
		// Held: take it over if its holder's time is up.
		if e, gerr := s.keys.Get(ctx, name); gerr == nil && len(e.Value()) == 8 &&
			time.Now().UnixNano() > int64(binary.BigEndian.Uint64(e.Value())) {
			if rev, uerr := s.keys.Update(ctx, name, val, e.Revision()); uerr == nil {
				return s.unlocker(name, rev), nil
			}
		}
		if time.Now().After(give) {
			return nil, errors.New("the key-create lock stayed busy for 10 s")
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pause):
		}
		pause = min(pause*2, 50*time.Millisecond)
	}
}

// unlocker releases the lock if it is still the revision this worker took.
func (s *Store) unlocker(name string, rev uint64) func() {
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.keys.Delete(ctx, name, jetstream.LastRevision(rev))
	}
}
