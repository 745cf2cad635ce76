package jsaudit_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/events/jsaudit"
)

// TestEmitPipelined: many records in flight on one connection, each Emit
// waiting on its own acknowledgement. Every Emit that returned nil has its
// record in the stream, once (a re-emitted ID is dropped as a duplicate),
// authenticated when a record key is set; the in-flight bound holds; and
// while the stream is unavailable every Emit fails, nothing is stored,
// and it works again once the stream is back.
func TestEmitPipelined(t *testing.T) {
	js := newJS(t)
	ctx := context.Background()
	p, err := jsaudit.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	const bound = 8
	p.MaxInFlight(bound)
	key, err := events.NewRecordKey(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	p.SetRecordKey(key)
	rec := func(id string) events.Record {
		return events.Record{ID: id, Type: events.TypeEncrypt, Source: "/keyflow/test", Subject: "kf:alpha:key/k1",
			Tenant: "alpha", Principal: "p", Outcome: events.OutcomeSuccess}
	}

	const goroutines, each = 32, 10
	var mu sync.Mutex
	acked := map[string]bool{}
	peak := 0
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("g%d-%d", g, i)
				if err := p.Emit(ctx, rec(id)); err != nil {
					t.Errorf("emit %s: %v", id, err)
					return
				}
				mu.Lock()
				acked[id] = true
				peak = max(peak, p.InFlight())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if peak > bound {
		t.Errorf("%d records in flight, above the bound %d", peak, bound)
	}
	// A retried step re-emits its record: acknowledged, not stored twice.
	if err := p.Emit(ctx, rec("g0-0")); err != nil {
		t.Fatal(err)
	}
	stored := readAll(t, js, "alpha")
	if len(stored) != goroutines*each {
		t.Fatalf("stream holds %d records, want %d", len(stored), goroutines*each)
	}
	for _, m := range stored {
		if !acked[m.Headers().Get("Nats-Msg-Id")] {
			t.Errorf("stored record %q was never acknowledged", m.Headers().Get("Nats-Msg-Id"))
		}
		if !key.Check(m.Subject(), m.Data(), m.Headers().Get(events.HeaderRecordMAC)) {
			t.Errorf("record %q lacks a valid %s", m.Headers().Get("Nats-Msg-Id"), events.HeaderRecordMAC)
		}
	}

	// The stream stops taking kf.audit.>: nothing answers the records.
	info, err := js.Stream(ctx, jsaudit.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.CachedInfo().Config
	off := cfg
	off.Subjects = []string{"kf.audit-offline.>"}
	if _, err := js.UpdateStream(ctx, off); err != nil {
		t.Fatal(err)
	}
	var failed sync.WaitGroup
	for i := range bound * 2 {
		failed.Go(func() {
			err := p.Emit(ctx, rec(fmt.Sprintf("offline-%d", i)))
			if !errors.Is(err, jetstream.ErrNoStreamResponse) {
				t.Errorf("emit with the stream unavailable: %v, want ErrNoStreamResponse", err)
			}
		})
	}
	failed.Wait()
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := p.Emit(ctx, rec("back")); err != nil {
		t.Fatalf("emit once the stream is back: %v", err)
	}
	stored = readAll(t, js, "alpha")
	if len(stored) != goroutines*each+1 || stored[len(stored)-1].Headers().Get("Nats-Msg-Id") != "back" {
		t.Fatalf("stream holds %d records after the outage, want %d ending with the one emitted after it", len(stored), goroutines*each+1)
	}

	// A caller that gives up while waiting for a slot fails, and the
	// slots it did not take stay free.
	full, err := jsaudit.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	full.MaxInFlight(1)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := full.Emit(cctx, rec("cancelled")); !errors.Is(err, context.Canceled) {
		t.Fatalf("emit with a cancelled context: %v, want context.Canceled", err)
	}
	if err := full.Emit(ctx, rec("after-cancel")); err != nil {
		t.Fatalf("emit after a cancelled one: %v", err)
	}
}

// readAll returns every stored record of tenant, in stream order.
func readAll(t *testing.T, js jetstream.JetStream, tenant string) []jetstream.Msg {
	t.Helper()
	ctx := context.Background()
	cons, err := js.OrderedConsumer(ctx, jsaudit.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{jsaudit.TenantSubjects(tenant)}})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			out = append(out, m)
			n++
		}
		if n == 0 {
			return out
		}
	}
}
