package sealer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Active/standby across processes.
//
// One sealer seals at a time; [StartStandby] runs one in every process that
// has the sealer role, and the one that holds a lease in a NATS KV bucket
// seals. The lease is the key "active" of the bucket kf_sealer_lease, whose
// entries expire after the bucket's TTL: the holder creates it (a create
// fails while another holds it) and renews it every TTL/3 with a
// compare-and-set on its revision. A standby tries to create it every
// TTL/5. When the holder dies the entry expires, and a standby takes over
// within TTL plus one try (about 6 s with the default 5 s TTL).
//
// The lease keeps two sealers from working at once; it is not what keeps
// the chain from forking. That is the digest stream's expected last
// sequence (see the package doc, "Restart"): a holder that lost the lease
// without noticing (a pause longer than the TTL) can publish at most a
// digest that fails, and then stops when its renewal fails. A holder stops
// sealing once it could not renew for 2/3 of the TTL, before the lease can
// pass to another.
const (
	LeaseBucket     = "kf_sealer_lease"
	leaseKey        = "active"
	DefaultLeaseTTL = 5 * time.Second
)

// OpenLease creates or updates the lease bucket (keyflow bootstrap, and
// StartStandby).
func OpenLease(ctx context.Context, js jetstream.JetStream, ttl time.Duration) (jetstream.KeyValue, error) {
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: LeaseBucket, Description: "keyflow audit sealer lease (active/standby)",
		TTL: ttl, History: 1, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", LeaseBucket, err)
	}
	return kv, nil
}

// Standby is a sealer that seals while it holds the lease.
type Standby struct {
	cfg    Config
	kv     jetstream.KeyValue
	holder string
	ttl    time.Duration
	cancel context.CancelFunc
	done   chan struct{}
	active atomic.Bool
	taken  atomic.Int64 // leases acquired
}

// StartStandby starts a sealer that takes part in the lease; holder names
// this process in the lease (host and process, for operators). Stop it
// with Stop, which hands the lease over at once.
func StartStandby(ctx context.Context, cfg Config, holder string, ttl time.Duration) (*Standby, error) {
	if cfg.JS == nil || cfg.KMS == nil {
		return nil, errors.New("sealer: JS and KMS are required")
	}
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	kv, err := OpenLease(ctx, cfg.JS, ttl)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &Standby{cfg: cfg, kv: kv, holder: holder, ttl: ttl, cancel: cancel, done: make(chan struct{})}
	go s.run(runCtx)
	return s, nil
}

// Active reports whether this process holds the lease and seals.
func (s *Standby) Active() bool { return s.active.Load() }

// Acquired is how many times this process took the lease.
func (s *Standby) Acquired() int64 { return s.taken.Load() }

// Stop stops sealing (sealing what is pending) and releases the lease.
func (s *Standby) Stop() {
	s.cancel()
	<-s.done
}

func (s *Standby) run(ctx context.Context) {
	defer close(s.done)
	poll := min(s.ttl/5, time.Second)
	log := s.cfg.Logger
	for {
		rev, err := s.kv.Create(ctx, leaseKey, []byte(s.holder))
		if err == nil {
			s.taken.Add(1)
			s.hold(ctx, rev)
		} else if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
			log.Warn("audit sealer: the lease could not be read", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(poll):
		}
	}
}

// hold seals while the lease is renewed, and releases it on Stop.
func (s *Standby) hold(ctx context.Context, rev uint64) {
	release := func() {
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.kv.Delete(rctx, leaseKey, jetstream.LastRevision(rev))
	}
	sl, err := Start(ctx, s.cfg)
	if err != nil {
		release()
		return
	}
	s.active.Store(true)
	defer s.active.Store(false)
	tick := time.NewTicker(s.ttl / 3)
	defer tick.Stop()
	renewed := time.Now()
	for {
		select {
		case <-ctx.Done():
			sl.Stop()
			release()
			return
		case <-tick.C:
			rctx, cancel := context.WithTimeout(ctx, s.ttl/3)
			next, err := s.kv.Update(rctx, leaseKey, []byte(s.holder), rev)
			cancel()
			if err == nil {
				rev, renewed = next, time.Now()
				continue
			}
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) || time.Since(renewed) > s.ttl*2/3 {
				// Another holds it, or it may lapse before a renewal
				// gets through: stop before another can start.
				sl.Stop()
				return
			}
		}
	}
}
