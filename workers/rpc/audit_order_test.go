package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// TestAuditStoredBeforeReply: with the audit publish pipelined (many
// records in flight, each request waiting on its own acknowledgement),
// a reply still means a stored record. Concurrent encrypts: every one
// that got a ciphertext has exactly one success record with its request
// ID. With the audit stream unavailable, no encrypt gets a ciphertext:
// each gets AuditUnavailableException, and none left a success record.
// Once the stream is back, requests succeed and are recorded again.
func TestAuditStoredBeforeReply(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	ctx := context.Background()
	c := b.Client("alpha", "alice")
	k, err := c.CreateKey(ctx, api.CreateKeyRequest{Alias: "order"})
	if err != nil {
		t.Fatal(err)
	}
	encrypt := func(id string) error {
		r, err := c.Encrypt(client.WithRequestID(ctx, id), api.EncryptRequest{KeyID: k.KeyID, Plaintext: []byte("x")})
		if err == nil && len(r.CiphertextBlob) == 0 {
			return fmt.Errorf("%s: a success reply without a ciphertext", id)
		}
		return err
	}
	run := func(prefix string, n int) (ok []string, failed map[string]error) {
		var mu sync.Mutex
		failed = map[string]error{}
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Go(func() {
				for i := range n {
					id := fmt.Sprintf("%s-%d-%d", prefix, g, i)
					err := encrypt(id)
					mu.Lock()
					if err != nil {
						failed[id] = err
					} else {
						ok = append(ok, id)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return ok, failed
	}
	records := func() map[string][]testbed.AuditEvent {
		by := map[string][]testbed.AuditEvent{}
		for _, e := range b.EventsOfType("alpha", events.TypeEncrypt) {
			by[e.RequestID] = append(by[e.RequestID], e)
		}
		return by
	}
	checkRecorded := func(ok []string) {
		t.Helper()
		by := records()
		for _, id := range ok {
			if rs := by[id]; len(rs) != 1 || rs[0].Outcome != events.OutcomeSuccess {
				t.Errorf("request %s got a ciphertext, and has %d records (%+v), want one success", id, len(rs), rs)
			}
		}
	}

	ok, failed := run("up", 8)
	if len(failed) > 0 {
		t.Fatalf("%d of %d encrypts failed with the stream up: %v", len(failed), len(ok)+len(failed), failed)
	}
	checkRecorded(ok)

	// The stream stops taking kf.audit.>: records find no stream.
	st, err := b.JS.Stream(ctx, jsaudit.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	off := cfg
	off.Subjects = []string{"kf.audit-offline.>"}
	if _, err := b.JS.UpdateStream(ctx, off); err != nil {
		t.Fatal(err)
	}
	ok, failed = run("down", 2)
	if len(ok) > 0 {
		t.Errorf("%d encrypts got a ciphertext while the audit stream was unavailable: %v", len(ok), ok)
	}
	for id, err := range failed {
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != string(kms.CodeAuditUnavailable) {
			t.Errorf("%s with the audit stream unavailable: %v, want %s", id, err, kms.CodeAuditUnavailable)
		}
	}

	if _, err := b.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	ok, failed = run("back", 2)
	if len(failed) > 0 {
		t.Fatalf("%d encrypts failed once the stream was back: %v", len(failed), failed)
	}
	checkRecorded(ok)
	for id, rs := range records() {
		if len(id) > 5 && id[:5] == "down-" && len(rs) > 0 {
			t.Errorf("request %s was refused, yet has records %+v", id, rs)
		}
	}
}
