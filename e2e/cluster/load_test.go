package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/internal/clusterlab"
)

// load is a bounded mixed load: each client encrypts, decrypts what it
// encrypted and asks for a data key, one request at a time, each under its
// own request ID, and remembers which requests it saw succeed. Outcomes are
// counted per phase (the phase names the process being killed).
type load struct {
	phase atomic.Pointer[string]

	mu     sync.Mutex
	ok     map[string]string // request ID -> operation, for the requests a client saw succeed
	stats  map[string]*phaseStats
	order  []string
	okAt   []time.Time // every success, for the rate over time
	cancel context.CancelFunc
	done   sync.WaitGroup
}

type phaseStats struct {
	ok, failed int
	start, end time.Time
	errs       map[string]int // error message (first 80 characters) -> count
}

func newLoad() *load {
	l := &load{ok: map[string]string{}, stats: map[string]*phaseStats{}}
	l.setPhase("warm-up")
	return l
}

// setPhase starts counting under a new phase name.
func (l *load) setPhase(name string) {
	now := time.Now()
	l.mu.Lock()
	if p := l.phase.Load(); p != nil {
		l.stats[*p].end = now
	}
	if l.stats[name] == nil {
		l.stats[name] = &phaseStats{start: now, errs: map[string]int{}}
		l.order = append(l.order, name)
	}
	l.mu.Unlock()
	l.phase.Store(&name)
}

func (l *load) record(reqID, op string, err error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.stats[*l.phase.Load()]
	if err == nil {
		st.ok++
		l.ok[reqID] = op
		l.okAt = append(l.okAt, now)
		return
	}
	st.failed++
	msg := err.Error()
	if len(msg) > 80 {
		msg = msg[:80]
	}
	st.errs[msg]++
}

// start runs n clients against key until stop.
func (l *load) start(t testing.TB, lab *clusterlab.Lab, n int, key string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	for w := range n {
		// Each client starts at a different server and fails over to the others.
		urls := append(append([]string{}, lab.URLs[w%len(lab.URLs):]...), lab.URLs[:w%len(lab.URLs)]...)
		cl, err := client.Dial(ctx, client.Options{Server: strings.Join(urls, ","), CredsFile: lab.Ceremony.Creds["default-admin"], Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		l.done.Add(1)
		go func() {
			defer l.done.Done()
			defer cl.Close()
			for i := 0; ctx.Err() == nil; i++ {
				id := fmt.Sprintf("load-%d-%d", w, i)
				enc, err := cl.Encrypt(client.WithRequestID(ctx, id+"-enc"), api.EncryptRequest{KeyID: key, Plaintext: []byte("cluster load " + id)})
				if ctx.Err() != nil {
					return
				}
				l.record(id+"-enc", "encrypt", err)
				if err == nil {
					dec, err := cl.Decrypt(client.WithRequestID(ctx, id+"-dec"), api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob})
					if ctx.Err() != nil {
						return
					}
					if err == nil && string(dec.Plaintext) != "cluster load "+id {
						err = errors.New("decrypt returned other plaintext")
					}
					l.record(id+"-dec", "decrypt", err)
				}
				_, err = cl.GenerateDataKey(client.WithRequestID(ctx, id+"-dk"), api.DataKeyRequest{KeyID: key, NumberOfBytes: 32})
				if ctx.Err() != nil {
					return
				}
				l.record(id+"-dk", "datakey", err)
			}
		}()
	}
}

func (l *load) stop() {
	l.cancel()
	l.done.Wait()
	l.setPhase("stopped")
}

// rate is successes per second over [from, to).
func (l *load) rate(from, to time.Time) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, at := range l.okAt {
		if !at.Before(from) && at.Before(to) {
			n++
		}
	}
	return float64(n) / to.Sub(from).Seconds()
}

// recovery is how long after kill the rate over a sliding second first
// came back to frac of base (-1: never).
func (l *load) recovery(kill time.Time, base, frac float64, until time.Time) time.Duration {
	for at := kill; at.Add(time.Second).Before(until); at = at.Add(100 * time.Millisecond) {
		if l.rate(at, at.Add(time.Second)) >= frac*base {
			return at.Add(time.Second).Sub(kill)
		}
	}
	return -1
}

// dip is the lowest rate over a sliding second in [from, to), as a
// fraction of base.
func (l *load) dip(from, to time.Time, base float64) float64 {
	low := -1.0
	for at := from; !at.Add(time.Second).After(to); at = at.Add(100 * time.Millisecond) {
		if r := l.rate(at, at.Add(time.Second)); low < 0 || r < low {
			low = r
		}
	}
	return low / base
}

// report logs each phase's outcomes and errors.
func (l *load) report(t testing.TB) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, name := range l.order {
		st := l.stats[name]
		if name == "stopped" {
			continue
		}
		d := st.end.Sub(st.start).Seconds()
		t.Logf("phase %-22s %5.1fs  ok %6d (%6.0f/s)  client-visible errors %d", name, d, st.ok, float64(st.ok)/d, st.failed)
		msgs := make([]string, 0, len(st.errs))
		for m := range st.errs {
			msgs = append(msgs, m)
		}
		sort.Strings(msgs)
		for _, m := range msgs {
			t.Logf("    %4d × %s", st.errs[m], m)
		}
	}
}
