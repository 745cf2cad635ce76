package sealer_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/workers/sealer"
)

// standby starts a lease-holding sealer on a connection of its own, as a
// separate process would have; closing the connection is its death.
func (b *bed) standby(t *testing.T, holder string, ttl time.Duration) (*sealer.Standby, *nats.Conn) {
	t.Helper()
	nc, err := natsserver.ConnectService(b.NATS, b.Identity, holder)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sealer.StartStandby(context.Background(), sealer.Config{JS: js, KMS: b.KMS, Every: 50, Interval: 200 * time.Millisecond, Logger: quietLogger()}, holder, ttl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s, nc
}

func (b *bed) sealedTo(t *testing.T) uint64 {
	t.Helper()
	d, _, err := jsaudit.LastDigest(context.Background(), b.JS)
	if err != nil {
		t.Fatal(err)
	}
	if d == nil {
		return 0
	}
	return d.ToSeq
}

// Two sealers, one lease: one seals; when it dies (its connection gone, no
// release), the other takes over and continues the same chain, with no
// second digest for any range.
func TestStandbyTakesOverWithoutFork(t *testing.T) {
	b := newBed(t, false)
	ttl := 3 * time.Second
	first, firstConn := b.standby(t, "sealer-a", ttl)
	checkFor(t, 10*time.Second, "a sealer to take the lease", func() bool { return first.Active() })
	second, _ := b.standby(t, "sealer-b", ttl)

	b.emit(t, 120)
	seq := b.lastSeq(t)
	checkFor(t, 30*time.Second, "the first sealer to seal", func() bool { return b.sealedTo(t) >= seq })
	if second.Active() || second.Acquired() != 0 {
		t.Fatal("the standby sealed while the active one held the lease")
	}

	killed := time.Now()
	firstConn.Close()
	checkFor(t, 30*time.Second, "the standby to take over", func() bool { return second.Active() })
	t.Logf("takeover %v after the active sealer's death (lease TTL %v)", time.Since(killed).Round(10*time.Millisecond), ttl)
	checkFor(t, 10*time.Second, "the dead sealer to stop", func() bool { return !first.Active() })

	b.emit(t, 120)
	seq = b.lastSeq(t)
	checkFor(t, 30*time.Second, "the new sealer to seal", func() bool { return b.sealedTo(t) >= seq })
	r := b.verify(t, 0)
	if !r.OK() || r.Verified < 240 {
		t.Fatalf("after failover: %+v", r)
	}
	var next uint64 = 1
	for _, d := range b.digests(t) {
		if d.FromSeq != next {
			t.Fatalf("digest %d-%d after %d: the chain forked or skipped", d.FromSeq, d.ToSeq, next-1)
		}
		next = d.ToSeq + 1
	}

	// A clean stop releases the lease at once, for the next to take.
	second.Stop()
	kv, err := b.JS.KeyValue(context.Background(), sealer.LeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(context.Background(), "active"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("lease after a clean stop: %v, %v", e, err)
	}
}
