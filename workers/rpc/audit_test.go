package rpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/schemas"
	"github.com/keyflow/keyflow/workers/rpc"
)

// tailAll reads every page of a filtered tail, as the CLI does.
func tailAll(t *testing.T, c *client.Client, req api.AuditTailRequest) []testbed.AuditEvent {
	t.Helper()
	var out []testbed.AuditEvent
	for {
		r, err := c.AuditTail(context.Background(), req)
		if err != nil {
			t.Fatalf("audit tail %+v: %v", req, err)
		}
		for _, e := range r.Events {
			out = append(out, decodeEvent(t, e))
			req.After = e.Cursor
		}
		if r.KeyID != "" {
			req.KeyID = r.KeyID
		}
		if len(r.Events) == 0 {
			return out
		}
	}
}

func decodeEvent(t *testing.T, e api.AuditEvent) testbed.AuditEvent {
	t.Helper()
	var ev testbed.AuditEvent
	if err := json.Unmarshal(e.Event, &ev); err != nil {
		t.Fatal(err)
	}
	ev.Raw = e.Event
	return ev
}

// TestAuditTailFilters covers `audit tail --key/--type/--tenant`: the
// filters run as subject filters on the server, an alias is resolved there,
// patterns that are not subject filters are refused, and another tenant's
// trail is out of reach.
func TestAuditTailFilters(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	ctx := context.Background()
	c := b.Client("alpha", "alice")
	one, err := c.CreateKey(ctx, api.CreateKeyRequest{Alias: "one"})
	if err != nil {
		t.Fatal(err)
	}
	two, err := c.CreateKey(ctx, api.CreateKeyRequest{Alias: "two"})
	if err != nil {
		t.Fatal(err)
	}
	var ct []byte
	for _, k := range []string{one.KeyID, one.KeyID, two.KeyID} {
		r, err := c.Encrypt(ctx, api.EncryptRequest{KeyID: k, Plaintext: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		ct = r.CiphertextBlob
	}
	if _, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListKeys(ctx); err != nil {
		t.Fatal(err)
	}
	// Beta's records must never show up in alpha's reads.
	cb := b.Client("beta", "bob")
	if _, err := cb.CreateKey(ctx, api.CreateKeyRequest{Alias: "one"}); err != nil {
		t.Fatal(err)
	}

	// The stored subjects carry the key ID, or "none".
	str, err := b.JS.Stream(ctx, jsaudit.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range b.Events("alpha") {
		m, err := str.GetMsg(ctx, e.Seq)
		if err != nil {
			t.Fatal(err)
		}
		key := "none"
		if e.Subject != "" {
			key = strings.TrimPrefix(e.Subject, "kf:alpha:key/")
		}
		if want := "kf.audit.alpha." + key + "." + e.Type; m.Subject != want {
			t.Errorf("event %d (%s) stored on %s, want %s", e.Seq, e.Type, m.Subject, want)
		}
	}

	types := func(evs []testbed.AuditEvent) string {
		var s []string
		for _, e := range evs {
			s = append(s, strings.TrimPrefix(e.Type, "io.keyflow."))
		}
		return strings.Join(s, " ")
	}
	check := func(name string, req api.AuditTailRequest, want string, pred func(testbed.AuditEvent) bool) {
		t.Helper()
		evs := tailAll(t, c, req)
		// Without a filter on them, the read and describe records of
		// this very tail are in the answer; keep to the facts.
		var got []testbed.AuditEvent
		for _, e := range evs {
			if e.Tenant != "alpha" {
				t.Errorf("%s: an event of tenant %s", name, e.Tenant)
			}
			if !pred(e) {
				t.Errorf("%s: event %s does not match the filter: %s", name, e.Type, e.Raw)
			}
			if e.Type != events.TypeAuditRead && e.Type != events.TypeKeyDescribed {
				got = append(got, e)
			}
		}
		if g := types(got); g != want {
			t.Errorf("%s: got %q, want %q", name, g, want)
		}
	}
	about := func(id string) func(testbed.AuditEvent) bool {
		return func(e testbed.AuditEvent) bool { return e.Subject == "kf:alpha:key/"+id }
	}
	crypto := func(e testbed.AuditEvent) bool { return strings.HasPrefix(e.Type, "io.keyflow.crypto.") }
	check("--type io.keyflow.crypto.*", api.AuditTailRequest{Type: "io.keyflow.crypto.*"},
		"crypto.encrypt.v1 crypto.encrypt.v1 crypto.encrypt.v1 crypto.decrypt.v1", crypto)
	check("--type io.keyflow.*.encrypt.v1", api.AuditTailRequest{Type: "io.keyflow.*.encrypt.v1"},
		"crypto.encrypt.v1 crypto.encrypt.v1 crypto.encrypt.v1", func(e testbed.AuditEvent) bool { return e.Type == events.TypeEncrypt })
	check("--key ID", api.AuditTailRequest{KeyID: one.KeyID},
		"key.created.v1 crypto.encrypt.v1 crypto.encrypt.v1", about(one.KeyID))
	check("--key ID --type", api.AuditTailRequest{KeyID: two.KeyID, Type: "io.keyflow.crypto.*"},
		"crypto.encrypt.v1 crypto.decrypt.v1", about(two.KeyID))
	check("--type *", api.AuditTailRequest{Type: "*"},
		"key.created.v1 key.created.v1 crypto.encrypt.v1 crypto.encrypt.v1 crypto.encrypt.v1 crypto.decrypt.v1 key.listed.v1",
		func(testbed.AuditEvent) bool { return true })
	check("--tenant alpha", api.AuditTailRequest{Tenant: "alpha", Type: "io.keyflow.key.created.v1"},
		"key.created.v1 key.created.v1", func(e testbed.AuditEvent) bool { return e.Type == events.TypeKeyCreated })

	// An alias is resolved on the server, which says what it resolved to
	// and records the lookup.
	describedBefore := len(b.EventsOfType("alpha", events.TypeKeyDescribed))
	r, err := c.AuditTail(ctx, api.AuditTailRequest{KeyID: "alias/two", Type: "io.keyflow.crypto.decrypt.v1"})
	if err != nil {
		t.Fatal(err)
	}
	if r.KeyID != two.KeyID || len(r.Events) != 1 || decodeEvent(t, r.Events[0]).Subject != "kf:alpha:key/"+two.KeyID {
		t.Errorf("--key alias/two: keyId %q, %d events, want %s and 1", r.KeyID, len(r.Events), two.KeyID)
	}
	if n := len(b.EventsOfType("alpha", events.TypeKeyDescribed)); n != describedBefore+1 {
		t.Errorf("resolving the alias recorded %d describe events, want 1", n-describedBefore)
	}

	// A filter that matches nothing says how far it looked (an opaque
	// cursor), and pages that return nothing read nothing: no record.
	readsBefore := len(b.EventsOfType("alpha", events.TypeAuditRead))
	r, err = c.AuditTail(ctx, api.AuditTailRequest{Type: "io.keyflow.key.rotated.v1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Events) != 0 || r.Next == "" {
		t.Fatalf("a filter matching nothing: %d events, next %q", len(r.Events), r.Next)
	}
	for range 3 {
		r2, err := c.AuditTail(ctx, api.AuditTailRequest{Type: "io.keyflow.key.rotated.v1", After: r.Next})
		if err != nil || len(r2.Events) != 0 {
			t.Fatalf("next page: %v, %d events", err, len(r2.Events))
		}
	}
	if n := len(b.EventsOfType("alpha", events.TypeAuditRead)); n != readsBefore {
		t.Errorf("four empty pages recorded %d reads, want none", n-readsBefore)
	}

	// Refusals.
	refused := func(req api.AuditTailRequest, code, msg string) {
		t.Helper()
		_, err := c.AuditTail(ctx, req)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != code || !strings.Contains(ce.Message, msg) {
			t.Errorf("audit tail %+v: got %v, want %s mentioning %q", req, err, code, msg)
		}
	}
	for _, glob := range []string{"io.keyflow.crypto.enc*", "io..crypto", "io.keyflow.>", "io.keyflow.**", "IO.KEYFLOW.*", "io.keyflow.crypto.*.", "crypto encrypt"} {
		refused(api.AuditTailRequest{Type: glob}, "ValidationException", "part")
	}
	refused(api.AuditTailRequest{KeyID: "no-such-alias"}, "NotFoundException", "no-such-alias")
	refused(api.AuditTailRequest{KeyID: "bad key!"}, "ValidationException", "")
	refused(api.AuditTailRequest{Tenant: "beta"}, "AccessDeniedException", "own tenant")
	refused(api.AuditTailRequest{Tenant: "beta", After: "x"}, "AccessDeniedException", "own tenant")
	denied := 0
	for _, e := range b.EventsOfType("alpha", events.TypeRequestRejected) {
		if e.Outcome == events.OutcomeDenied && e.ErrorCode == "AccessDeniedException" {
			denied++
		}
	}
	if denied != 2 {
		t.Errorf("%d denied audit reads recorded, want 2", denied)
	}
}

// TestAuditFailOpen: with AuditFailOpen, an operation whose record cannot
// be stored succeeds, the loss is counted, and starting fail-open is on
// the record (tenant "-", failClosed=false). If even that record cannot be
// stored, the service does not start.
func TestAuditFailOpen(t *testing.T) {
	b := testbed.New(t)
	ctx := context.Background()
	var broken atomic.Bool
	sink := events.SinkFunc(func(ctx context.Context, r events.Record) error {
		if broken.Load() {
			return errors.New("stream unavailable")
		}
		return b.Audit.Emit(ctx, r)
	})
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 4}))
	cfg := kms.Config{HSM: b.HSM, Store: b.Store, Audit: sink, Source: "/keyflow/test/fail-open", AuditFailOpen: true, Logger: quiet}

	broken.Store(true)
	if _, err := kms.New(ctx, cfg); err == nil {
		t.Fatal("a fail-open service started although its policy could not be recorded")
	}
	broken.Store(false)
	k, err := kms.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	policy := b.EventsOfType("-", events.TypeAuditPolicyChanged)
	if len(policy) != 1 || policy[0].Data["failClosed"] != false || policy[0].Source != "/keyflow/test/fail-open" || policy[0].Outcome != events.OutcomeSuccess {
		t.Fatalf("policy events: %+v", policy)
	}
	if err := schemas.ValidateEvent(policy[0].Raw); err != nil {
		t.Errorf("the policy event does not match its schema: %v\n%s", err, policy[0].Raw)
	}

	srv, err := rpc.Start(rpc.Config{Conn: b.Conn, KMS: k, Tenants: b.Identity, JS: b.JS, Workers: 4, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	c := b.Client("alpha", "alice")
	key, err := c.CreateKey(ctx, api.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	broken.Store(true)
	for range 3 {
		if _, err := c.Encrypt(ctx, api.EncryptRequest{KeyID: key.KeyID, Plaintext: []byte("x")}); err != nil {
			t.Fatalf("encrypt with the trail down, fail-open: %v", err)
		}
	}
	if _, err := c.Encrypt(ctx, api.EncryptRequest{KeyID: "nope", Plaintext: []byte("x")}); err == nil {
		t.Fatal("encrypt under a missing key succeeded")
	}
	if n := k.DroppedAuditRecords(); n != 4 {
		t.Errorf("DroppedAuditRecords = %d, want 4", n)
	}
	broken.Store(false)
	if _, err := c.Encrypt(ctx, api.EncryptRequest{KeyID: key.KeyID, Plaintext: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if n := len(b.EventsOfType("alpha", events.TypeEncrypt)); n != 1 {
		t.Errorf("%d encrypt records, want 1 (the three while the trail was down are lost)", n)
	}
	// The default service, fail-closed, records no policy change.
	if n := len(b.EventsOfType("-", events.TypeAuditPolicyChanged)); n != 1 {
		t.Errorf("%d policy events, want 1", n)
	}
}
