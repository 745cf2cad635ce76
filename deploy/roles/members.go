package roles

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Processes that serve requests (crypto or admin) share the tenants' rate
// quotas: each announces itself in the KV bucket kf_members, renewed every
// memberRenew, expiring memberTTL after its last renewal, and counts the
// live entries; rpc then admits 1/N of each quota (workers/rpc, quota.go).
// A process that joins is counted by the others within memberRenew (until
// then the tenants may get up to one share more); one that dies stays
// counted until its entry expires (the others admit less meanwhile).
const (
	MembersBucket = "kf_members"
	memberTTL     = 10 * time.Second
	memberRenew   = 3 * time.Second
)

// openMembers creates or updates the membership bucket.
func openMembers(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: MembersBucket, Description: "keyflow processes sharing tenant quotas",
		TTL: memberTTL, History: 1, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", MembersBucket, err)
	}
	return kv, nil
}

// members is this process's membership and the live count.
type members struct {
	kv    jetstream.KeyValue
	id    string
	count atomic.Int64
}

// joinMembers announces this process, counts the members once, and keeps
// both up to date until stop.
func joinMembers(ctx context.Context, js jetstream.JetStream) (*members, func(), error) {
	kv, err := openMembers(ctx, js)
	if err != nil {
		return nil, nil, err
	}
	m := &members{kv: kv, id: nuid.Next()}
	m.count.Store(1)
	if err := m.renew(ctx); err != nil {
		return nil, nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(memberRenew)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				_ = m.renew(runCtx) // a miss leaves the last count
			}
		}
	}()
	return m, func() {
		cancel()
		<-done
		dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer dcancel()
		_ = kv.Delete(dctx, m.id)
	}, nil
}

func (m *members) renew(ctx context.Context) error {
	host, _ := os.Hostname()
	if _, err := m.kv.Put(ctx, m.id, fmt.Appendf(nil, "%s/%d", host, os.Getpid())); err != nil {
		return fmt.Errorf("failed to announce this process in %s: %w", MembersBucket, err)
	}
	lister, err := m.kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("failed to count the processes in %s: %w", MembersBucket, err)
	}
	var n int64
	for range lister.Keys() {
		n++
	}
	m.count.Store(max(n, 1))
	return nil
}

// Count is the number of live members (at least 1).
func (m *members) Count() int { return int(m.count.Load()) }
