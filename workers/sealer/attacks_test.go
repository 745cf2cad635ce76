package sealer_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/events/chain"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/events/siem"
	"github.com/keyflow/keyflow/workers/natsauth"
	"github.com/keyflow/keyflow/workers/sealer"
)

// The attacks of issue 12, part 2, replayed: with each of keyflow's role
// credentials they are refused by the server; with a credential that may
// change the streams (the operator's) they are detected by verify.

// roleConn connects with creds and records the server's permission
// refusals.
type roleConn struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	mu      sync.Mutex
	refused []string
}

func (b *bed) connectRole(t *testing.T, creds []byte, name string) *roleConn {
	t.Helper()
	rc := &roleConn{}
	opt, err := natsauth.CredsOption(creds)
	if err != nil {
		t.Fatal(err)
	}
	rc.nc, err = nats.Connect("", nats.InProcessServer(b.NATS), opt, nats.Name(name), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			rc.mu.Lock()
			rc.refused = append(rc.refused, err.Error())
			rc.mu.Unlock()
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rc.nc.Close)
	if rc.js, err = jetstream.New(rc.nc, jetstream.WithDefaultTimeout(time.Second)); err != nil {
		t.Fatal(err)
	}
	return rc
}

// wasRefused waits for the server to refuse a publish to subject.
func (rc *roleConn) wasRefused(t *testing.T, subject string) {
	t.Helper()
	checkFor(t, 5*time.Second, "the server to refuse a publish to "+subject, func() bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		for _, r := range rc.refused {
			if strings.Contains(r, `Publish to "`+subject+`"`) {
				return true
			}
		}
		return false
	})
}

// provisioned sets up the streams as the operator does in a deployment.
func (b *bed) provisioned(t *testing.T, opts ...jsaudit.Option) {
	t.Helper()
	if _, err := jsaudit.Provision(context.Background(), b.JS, natsauth.AuditorDurable, opts...); err != nil {
		t.Fatal(err)
	}
}

func (b *bed) streamLimits(t *testing.T, name string) jsaudit.Limits {
	t.Helper()
	s, err := b.JS.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return jsaudit.LimitsOf(s.CachedInfo().Config)
}

func forgedEvent() []byte {
	return []byte(`{"specversion":"1.0","id":"f0f0f0f0-0000-4000-8000-000000000001","source":"/keyflow/worker/x","type":"io.keyflow.crypto.decrypt.v1",` +
		`"subject":"kf:alpha:key/0f9c3c0e-3b4e-4a57-9a36-1a7c1c2f8a11","time":"2026-12-05T10:00:00Z","tenant":"alpha","principal":"invented","outcome":"success","datacontenttype":"application/json","data":{}}`)
}

const forgedSubject = "kf.audit.alpha.0f9c3c0e-3b4e-4a57-9a36-1a7c1c2f8a11.io.keyflow.crypto.decrypt.v1"

// TestRoleCredentialsRefuseTheAttacks: the auditor (and the sealer, the
// worker and the operator where it applies) cannot shrink the audit
// streams, forge a record or act as a tenant; the auditor still reads the
// trail, verifies it and forwards it.
func TestRoleCredentialsRefuseTheAttacks(t *testing.T) {
	b := newBed(t, false)
	b.provisioned(t)
	s := b.start(t, 20, 20*time.Millisecond)
	b.emit(t, 50)
	sealedThrough(t, s, 50)
	ctx := context.Background()

	// A tenant service stand-in: nothing may reach it except through a
	// tenant's import.
	var hits int
	var hmu sync.Mutex
	sub, err := b.Conn.Subscribe("kf.v1.>", func(m *nats.Msg) { hmu.Lock(); hits++; hmu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	issue := map[string]func(string) ([]byte, error){
		"auditor": b.Identity.AuditorCreds, "sealer": b.Identity.SealerCreds,
		"worker": b.Identity.WorkerCreds, "operator": b.Identity.OperatorCreds,
	}
	for _, role := range []string{"auditor", "sealer", "worker", "operator"} {
		creds, err := issue[role]("probe-" + role)
		if err != nil {
			t.Fatal(err)
		}
		rc := b.connectRole(t, creds, "probe-"+role)
		before := b.lastSeq(t)

		// 1. Shrink the trail (not the operator: it administers the
		// streams, and verify catches it; see the next test).
		if role != "operator" {
			for _, name := range []string{jsaudit.StreamName, jsaudit.DigestStreamName} {
				_, err := rc.js.UpdateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{"kf.audit.>"}, MaxMsgs: 1})
				if err == nil {
					t.Errorf("%s: UpdateStream(%s) succeeded", role, name)
				}
				rc.wasRefused(t, "$JS.API.STREAM.UPDATE."+name)
			}
			if got := b.streamLimits(t, jsaudit.StreamName); got.MaxMsgs != -1 {
				t.Fatalf("%s shrank the stream: %+v", role, got)
			}
		}
		// 2. Forge a record (the worker is the one role that publishes
		// records; the others are refused).
		if role != "worker" {
			if err := rc.nc.Publish(forgedSubject, forgedEvent()); err != nil {
				t.Fatal(err)
			}
			_ = rc.nc.Flush()
			rc.wasRefused(t, forgedSubject)
			if after := b.lastSeq(t); after != before {
				t.Fatalf("%s: a forged record was stored (seq %d -> %d)", role, before, after)
			}
		}
		// 3. Act as a tenant: a request on the service subject with a
		// forged identity header.
		msg := nats.NewMsg("kf.v1.alpha.crypto.encrypt")
		msg.Header.Set(natsauth.RequestInfoHeader, `{"acc":"x","user":"u","name_tag":"admin","tags":["role:crypto-user","role:key-admin"]}`)
		msg.Data = []byte(`{}`)
		if err := rc.nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
		_ = rc.nc.Flush()
		rc.wasRefused(t, "kf.v1.alpha.crypto.encrypt")
	}
	time.Sleep(50 * time.Millisecond)
	hmu.Lock()
	if hits != 0 {
		t.Errorf("%d forged tenant requests reached the service subject", hits)
	}
	hmu.Unlock()

	// The auditor cannot create a consumer either (a push consumer could
	// deliver the trail onto any subject).
	acreds, _ := b.Identity.AuditorCreds("auditor")
	aud := b.connectRole(t, acreds, "auditor")
	if _, err := aud.js.CreateConsumer(ctx, jsaudit.StreamName, jetstream.ConsumerConfig{Name: "push"}); err == nil {
		t.Error("the auditor created a consumer")
	}
	// But it verifies the whole trail and forwards it, read-only.
	r, err := sealer.Verify(ctx, aud.js, sealer.VerifyParams{Keys: b.keys(t)})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Verified < 50 {
		t.Fatalf("the auditor's verify: %d verified, %v", r.Verified, r.Findings)
	}
	out := &memOut{}
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- siem.Forward(fctx, aud.js, siem.Config{Out: out, Consumer: natsauth.AuditorDurable, Pinned: true, Logger: quietLogger()})
	}()
	checkFor(t, 10*time.Second, "the auditor's forwarder to forward 50 records", func() bool { return out.count() >= 50 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// memOut is a siem.Output in memory.
type memOut struct {
	mu    sync.Mutex
	lines []siem.Line
}

func (o *memOut) Write(ls []siem.Line) error {
	o.mu.Lock()
	o.lines = append(o.lines, ls...)
	o.mu.Unlock()
	return nil
}
func (o *memOut) LastSeq() uint64 { return 0 }
func (o *memOut) count() int      { o.mu.Lock(); defer o.mu.Unlock(); return len(o.lines) }

// TestShrinkingTheTrailIsDetected: with a credential that may change the
// streams (the operator's, or a full keyflow-account user's), shrinking
// both streams is recorded by the workers' watch, makes them fail closed,
// and is reported by verify with the number of records missing.
func TestShrinkingTheTrailIsDetected(t *testing.T) {
	b := newBed(t, false)
	b.provisioned(t)
	ctx := context.Background()
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	b.Audit.Watch(wctx, 20*time.Millisecond)
	s := b.start(t, 20, 20*time.Millisecond)
	b.emit(t, 200)
	sealedThrough(t, s, 200)

	ocreds, _ := b.Identity.OperatorCreds("probe-operator")
	op := b.connectRole(t, ocreds, "probe-operator")
	for name, n := range map[string]int64{jsaudit.StreamName: 50, jsaudit.DigestStreamName: 1} {
		st, err := op.js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		cfg.MaxMsgs = n
		if _, err := op.js.UpdateStream(ctx, cfg); err != nil {
			t.Fatalf("the operator's UpdateStream(%s): %v", name, err)
		}
	}
	// The workers fail closed while the limits differ.
	checkFor(t, 5*time.Second, "the workers to fail closed", func() bool {
		return errors.Is(b.Audit.Emit(ctx, sampleRecord()), jsaudit.ErrStreamPolicy)
	})
	if _, err := jsaudit.Attach(ctx, b.JS, "/test"); !errors.Is(err, jsaudit.ErrStreamPolicy) {
		t.Fatalf("a worker started on a shrunk stream: %v", err)
	}
	r, err := sealer.Verify(ctx, b.JS, sealer.VerifyParams{Keys: b.keys(t)})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[chain.Kind][]chain.Finding{}
	for _, f := range r.Findings {
		kinds[f.Kind] = append(kinds[f.Kind], f)
	}
	if len(kinds[chain.KindTruncated]) != 2 {
		t.Fatalf("want 2 truncation findings (records and digests), got %v", r.Findings)
	}
	for _, f := range kinds[chain.KindTruncated] {
		if f.Missing == 0 {
			t.Errorf("a truncation finding without the number of records missing: %v", f)
		}
		t.Logf("detected: %v", f)
	}
	if len(kinds[chain.KindStreamChanged]) == 0 {
		t.Errorf("the change of the stream limits is not in the trail: %v", r.Findings)
	}
	// Restoring the policy (the operator, as keyflow dev does at start)
	// lets the workers serve again.
	b.provisioned(t)
	checkFor(t, 5*time.Second, "the workers to serve again", func() bool { return b.Audit.Emit(ctx, sampleRecord()) == nil })
}

// TestCheckpoint: a trail replaced after a checkpoint (streams deleted
// and a new chain started) verifies on its own, but not against the
// checkpoint.
func TestCheckpoint(t *testing.T) {
	b := newBed(t, false)
	ctx := context.Background()
	s := b.start(t, 20, 20*time.Millisecond)
	b.emit(t, 60)
	sealedThrough(t, s, 60)
	cp, _, err := jsaudit.LastDigest(ctx, b.JS)
	if err != nil || cp == nil {
		t.Fatalf("no digest to checkpoint: %v", err)
	}
	cpJSON, _ := json.Marshal(cp)
	var c chain.Digest
	if err := json.Unmarshal(cpJSON, &c); err != nil {
		t.Fatal(err)
	}
	r, err := sealer.Verify(ctx, b.JS, sealer.VerifyParams{Keys: b.keys(t), Checkpoint: &c})
	if err != nil || !r.OK() {
		t.Fatalf("against its own checkpoint: %v %v", err, r.Findings)
	}
	s.Stop()
	// Replace the whole trail.
	for _, name := range []string{jsaudit.StreamName, jsaudit.DigestStreamName} {
		if err := b.JS.DeleteStream(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	b.provisioned(t)
	s2 := b.start(t, 20, 20*time.Millisecond)
	b.emit(t, 30)
	sealedThrough(t, s2, 30)
	if r := b.verify(t, 0); !r.OK() {
		t.Fatalf("the new chain: %v", r.Findings)
	}
	r, err = sealer.Verify(ctx, b.JS, sealer.VerifyParams{Keys: b.keys(t), Checkpoint: &c})
	if err != nil {
		t.Fatal(err)
	}
	if r.OK() {
		t.Fatal("a replaced trail verified against the checkpoint")
	}
	t.Logf("detected: %v", r.First())
}

func sampleRecord() events.Record {
	return events.Record{Type: events.TypeEncrypt, Tenant: "alpha", Principal: "app", Outcome: events.OutcomeSuccess,
		Subject: "kf:alpha:key/0f9c3c0e-3b4e-4a57-9a36-1a7c1c2f8a11", Data: map[string]any{"keyVersion": 1, "plaintextBytes": 32}}
}
