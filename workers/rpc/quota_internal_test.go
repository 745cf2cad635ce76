package rpc

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyflow/keyflow/kms"
)

// TestLimiter checks the admission rules on a set clock: the token
// bucket's exact counts and retry hints, the in-flight bound, and that
// one tenant's state never affects another's.
func TestLimiter(t *testing.T) {
	quotas := map[string]*kms.Quotas{"alpha": {RequestsPerSecond: 2, Burst: 3}}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLimiter(func(tenant string) *kms.Quotas { return quotas[tenant] }, 4)
	l.now = func() time.Time { return now }

	var releases []func()
	for i := range 3 { // the burst
		r, err := l.admit("alpha", "crypto.encrypt", "r")
		if err != nil {
			t.Fatalf("request %d of the burst: %v", i, err)
		}
		releases = append(releases, r)
	}
	_, err := l.admit("alpha", "crypto.encrypt", "r")
	if !errors.Is(err, kms.ErrThrottling) || kms.RetryAfterOf(err) != 500*time.Millisecond {
		t.Fatalf("over the burst: %v (retry after %s), want ThrottlingException after 500ms", err, kms.RetryAfterOf(err))
	}
	now = now.Add(250 * time.Millisecond) // half a token
	if _, err := l.admit("alpha", "crypto.encrypt", "r"); kms.RetryAfterOf(err) != 250*time.Millisecond {
		t.Fatalf("half a token later: %v", err)
	}
	now = now.Add(250 * time.Millisecond) // one token
	r, err := l.admit("alpha", "crypto.decrypt", "r")
	if err != nil {
		t.Fatal(err)
	}
	releases = append(releases, r)

	// Four in flight: the bound, whatever the rate.
	now = now.Add(time.Hour)
	if _, err := l.admit("alpha", "crypto.encrypt", "r"); !errors.Is(err, kms.ErrThrottling) {
		t.Fatalf("a fifth request in flight: %v", err)
	}
	// Beta, with no quota, is not affected by alpha's state.
	for i := range 4 {
		if _, err := l.admit("beta", "crypto.encrypt", "r"); err != nil {
			t.Fatalf("beta request %d: %v", i, err)
		}
	}
	releases[0]()
	releases[0]() // releasing twice frees one slot only
	if _, err := l.admit("alpha", "crypto.encrypt", "r"); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	if _, err := l.admit("alpha", "crypto.encrypt", "r"); !errors.Is(err, kms.ErrThrottling) {
		t.Fatalf("a double release freed two slots: %v", err)
	}

	tenants, sums := l.drain()
	if len(tenants) != 1 || tenants[0] != "alpha" || sums[0].Count != 4 || sums[0].Reason != "concurrency" {
		t.Fatalf("throttle summary: %v %+v", tenants, sums)
	}
	if tenants, _ := l.drain(); len(tenants) != 0 {
		t.Fatal("drain did not reset the counts")
	}
}

// BenchmarkLimiterAdmit is one admission and its release, without and with
// a rate quota, serially and from every core (one tenant: the worst case
// for the limiter's lock).
func BenchmarkLimiterAdmit(b *testing.B) {
	for _, q := range []struct {
		name string
		q    *kms.Quotas
	}{{"no-quota", nil}, {"rate-quota", &kms.Quotas{RequestsPerSecond: 1e9, Burst: 1e9}}} {
		l := newLimiter(func(string) *kms.Quotas { return q.q }, 1<<30)
		b.Run(q.name, func(b *testing.B) {
			for b.Loop() {
				r, err := l.admit("alpha", "crypto.encrypt", "r")
				if err != nil {
					b.Fatal(err)
				}
				r()
			}
		})
		b.Run(q.name+"/parallel", func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r, err := l.admit("alpha", "crypto.encrypt", "r")
					if err != nil {
						b.Error(err)
						return
					}
					r()
				}
			})
		})
	}
}

// TestFairQueue: a tenant's backlog does not hold up another tenant's
// request; each tenant's own requests keep their order; close hands out
// what is queued, then ends.
func TestFairQueue(t *testing.T) {
	q := newFairQueue()
	for i := range 5 {
		q.push("alpha", job{op: fmt.Sprint("a", i)})
	}
	q.push("beta", job{op: "b0"})
	q.push("gamma", job{op: "c0"})
	var got []string
	for range 3 {
		j, _ := q.pop()
		got = append(got, j.op)
	}
	q.push("beta", job{op: "b1"})
	q.close()
	if q.push("beta", job{op: "late"}) {
		t.Error("push after close accepted")
	}
	for {
		j, ok := q.pop()
		if !ok {
			break
		}
		got = append(got, j.op)
	}
	want := "a0 b0 c0 b1 a1 a2 a3 a4" // beta rejoined at the turn after gamma
	if s := strings.Join(got, " "); s != want {
		t.Fatalf("served %s, want %s", s, want)
	}
}
