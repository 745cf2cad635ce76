package jsaudit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/schemas"
)

func TestTypeFilter(t *testing.T) {
	for glob, want := range map[string]string{
		"io.keyflow.crypto.encrypt.v1": "io.keyflow.crypto.encrypt.v1",
		"io.keyflow.crypto.*":          "io.keyflow.crypto.>",
		"io.keyflow.*.encrypt.v1":      "io.keyflow.*.encrypt.v1",
		"io.keyflow.*.*":               "io.keyflow.*.>",
		"*":                            ">",
		"*.keyflow.key.rotated.v1":     "*.keyflow.key.rotated.v1",
	} {
		got, err := jsaudit.TypeFilter(glob)
		if err != nil || got != want {
			t.Errorf("TypeFilter(%q) = %q, %v; want %q", glob, got, err, want)
		}
	}
	for _, glob := range []string{"", "io.keyflow.crypto.enc*", "io..crypto", "io.keyflow.>", "io.keyflow.**",
		"IO.keyflow", "io.keyflow.", ".io", "io keyflow", "io.key-flow", "io.keyflow.?", string(make([]byte, 300))} {
		if got, err := jsaudit.TypeFilter(glob); !errors.Is(err, jsaudit.ErrInvalidFilter) {
			t.Errorf("TypeFilter(%q) = %q, %v; want ErrInvalidFilter", glob, got, err)
		}
	}
}

func TestFilterSubject(t *testing.T) {
	const id = "0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b"
	for _, c := range []struct{ tenant, key, typ, want string }{
		{"alpha", "", "", "kf.audit.alpha.*.>"},
		{"alpha", id, "", "kf.audit.alpha." + id + ".>"},
		{"alpha", "", "io.keyflow.crypto.*", "kf.audit.alpha.*.io.keyflow.crypto.>"},
		{"alpha", id, "io.keyflow.crypto.decrypt.v1", "kf.audit.alpha." + id + ".io.keyflow.crypto.decrypt.v1"},
		{"*", jsaudit.NoKey, "io.keyflow.key.*", "kf.audit.*.none.io.keyflow.key.>"},
		{"-", "", "", "kf.audit.-.*.>"},
	} {
		got, err := jsaudit.FilterSubject(c.tenant, c.key, c.typ)
		if err != nil || got != c.want {
			t.Errorf("FilterSubject(%q, %q, %q) = %q, %v; want %q", c.tenant, c.key, c.typ, got, err, c.want)
		}
	}
	for _, c := range [][3]string{{"al.pha", "", ""}, {">", "", ""}, {"alpha", "a.b", ""}, {"alpha", "*", ""}, {"alpha", "", "a*"}} {
		if _, err := jsaudit.FilterSubject(c[0], c[1], c[2]); !errors.Is(err, jsaudit.ErrInvalidFilter) {
			t.Errorf("FilterSubject%q: %v, want ErrInvalidFilter", c, err)
		}
	}
}

func TestSubject(t *testing.T) {
	const id = "0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b"
	for resource, want := range map[string]string{
		"kf:alpha:key/" + id: "kf.audit.alpha." + id + ".io.keyflow.crypto.encrypt.v1",
		"":                   "kf.audit.alpha.none.io.keyflow.crypto.encrypt.v1",
		"kf:alpha:key/a.b":   "kf.audit.alpha.none.io.keyflow.crypto.encrypt.v1", // never a subject wildcard or extra token
		"kf:alpha:key/>":     "kf.audit.alpha.none.io.keyflow.crypto.encrypt.v1",
		"something/else":     "kf.audit.alpha.none.io.keyflow.crypto.encrypt.v1",
	} {
		if got := jsaudit.Subject("alpha", resource, "io.keyflow.crypto.encrypt.v1"); got != want {
			t.Errorf("Subject(%q) = %q, want %q", resource, got, want)
		}
	}
}

// TestOpenLimits: the retention options reach the stream, a later Open
// changes them, and a max age under the duplicate window shortens it.
func TestOpenLimits(t *testing.T) {
	js := newJS(t)
	ctx := context.Background()
	config := func() jetstream.StreamConfig {
		t.Helper()
		s, err := js.Stream(ctx, jsaudit.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Config
	}
	if _, err := jsaudit.Open(ctx, js); err != nil {
		t.Fatal(err)
	}
	if c := config(); c.MaxAge != 0 || c.MaxBytes != -1 || c.MaxMsgs != -1 || c.Duplicates != jsaudit.DuplicateWindow || !c.DenyDelete || !c.DenyPurge {
		t.Errorf("default limits: %+v", c)
	}
	if _, err := jsaudit.Open(ctx, js, jsaudit.MaxAge(90*24*time.Hour), jsaudit.MaxBytes(1<<30), jsaudit.MaxMsgs(1e6)); err != nil {
		t.Fatal(err)
	}
	if c := config(); c.MaxAge != 90*24*time.Hour || c.MaxBytes != 1<<30 || c.MaxMsgs != 1e6 || c.Discard != jetstream.DiscardOld || c.Duplicates != jsaudit.DuplicateWindow {
		t.Errorf("limits: max age %v bytes %d msgs %d discard %v duplicates %v", c.MaxAge, c.MaxBytes, c.MaxMsgs, c.Discard, c.Duplicates)
	}
	if _, err := jsaudit.Open(ctx, js, jsaudit.MaxAge(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if c := config(); c.MaxAge != time.Minute || c.Duplicates != time.Minute || c.MaxBytes != -1 {
		t.Errorf("short max age: max age %v duplicates %v bytes %d", c.MaxAge, c.Duplicates, c.MaxBytes)
	}
}

// newJS starts a plain JetStream server and connects to it.
func newJS(t testing.TB) jetstream.JetStream {
	t.Helper()
	ns, err := server.NewServer(&server.Options{JetStream: true, StoreDir: t.TempDir(), DontListen: true, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// TestStreamChangedValidates: a worker attaching to a stream whose limits
// were changed refuses, and records the change; the record matches its
// schema.
func TestStreamChangedValidates(t *testing.T) {
	js := newJS(t)
	ctx := context.Background()
	policy := jsaudit.MaxMsgs(1000)
	changes, err := jsaudit.Provision(ctx, js, "auditor", policy)
	if err != nil || len(changes) != 2 {
		t.Fatalf("provision: %v, %d changes", err, len(changes))
	}
	p, err := jsaudit.Attach(ctx, js, "/test", policy)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.RecordChanges(ctx, changes); err != nil {
		t.Fatal(err)
	}
	s, _ := js.Stream(ctx, jsaudit.StreamName)
	cfg := s.CachedInfo().Config
	cfg.MaxMsgs = 10
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := jsaudit.Attach(ctx, js, "/test", policy); !errors.Is(err, jsaudit.ErrStreamPolicy) {
		t.Fatalf("attach to a changed stream: %v", err)
	}
	var kinds []bool
	if err := jsaudit.ReadAll(ctx, js, jsaudit.ReadAllParams{}, func(_ uint64, body []byte) error {
		if err := schemas.ValidateEvent(body); err != nil {
			t.Errorf("%v: %s", err, body)
		}
		var ev struct {
			Type string `json:"type"`
			Data struct {
				Provisioned bool `json:"provisioned"`
			} `json:"data"`
		}
		_ = json.Unmarshal(body, &ev)
		if ev.Type == events.TypeAuditStreamChanged {
			kinds = append(kinds, ev.Data.Provisioned)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(kinds) != 3 || !kinds[0] || !kinds[1] || kinds[2] {
		t.Fatalf("stream-changed records (provisioned?): %v, want [true true false]", kinds)
	}
}

// TestSpread: a publisher spread over several connections stores every
// record once, and a record emitted again (a retried step) is dropped as
// a duplicate whichever connection carries it; closing the connections
// makes Emit fail instead of dropping records silently.
func TestSpread(t *testing.T) {
	ns, err := server.NewServer(&server.Options{JetStream: true, StoreDir: t.TempDir(), DontListen: true, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.Name("audit"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p, err := jsaudit.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	extra, err := p.Spread(3)
	if err != nil {
		t.Fatal(err)
	}
	if len(extra) != 2 {
		t.Fatalf("Spread(3) opened %d connections, want 2", len(extra))
	}
	for _, c := range extra {
		if c.Opts.Name != "audit" || !c.IsConnected() {
			t.Fatalf("extra connection %q connected=%v, want a connected clone named audit", c.Opts.Name, c.IsConnected())
		}
	}
	rec := func(id string) events.Record {
		return events.Record{ID: id, Type: events.TypeEncrypt, Source: "/keyflow/test", Subject: "kf:alpha:key/k1",
			Tenant: "alpha", Principal: "p", Outcome: events.OutcomeSuccess}
	}
	// Each ID three times: every copy goes out on another connection.
	for _, id := range []string{"e1", "e2", "e3", "e4"} {
		for range 3 {
			if err := p.Emit(ctx, rec(id)); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, err := jsaudit.Read(ctx, js, jsaudit.ReadParams{Tenant: "alpha", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("stored %d records for 4 distinct IDs emitted 3 times each, want 4", len(got))
	}
	for _, c := range extra {
		c.Close()
	}
	failed := 0
	for i := range 3 {
		if err := p.Emit(ctx, rec(fmt.Sprintf("after-%d", i))); err != nil {
			failed++
		}
	}
	if failed != 2 {
		t.Fatalf("%d of 3 emits failed with 2 of 3 connections closed, want 2", failed)
	}
}
