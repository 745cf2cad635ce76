package rpc_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/events/chain"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
	"github.com/keyflow/keyflow/workers/natsauth"
	"github.com/keyflow/keyflow/workers/rpc"
	"github.com/keyflow/keyflow/workers/sealer"
)

// Issue 12, part 2: "it acted as any tenant". A holder of a full
// keyflow-account NATS credential publishes straight onto a service
// subject, where nothing stamps or strips Nats-Request-Info, with a header
// of its own. Each request signature (reqsig.go) stops it: the worker
// refuses every variant with a stable code, records the refusal, and
// audit verify reports the attempts.
func TestFullAccountCredentialCannotActAsTenant(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	b.StartRPC(nil)
	admin := b.Principal("alpha", "kadmin", keypolicy.RoleKeyAdmin)
	k := createKey(t, admin, "payroll")
	appCreds := b.PrincipalCreds("alpha", "app", keypolicy.RoleCryptoUser)
	app := b.ClientWithCreds("alpha", "app", appCreds)
	ct, err := app.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: []byte("TOPSECRET")})
	if err != nil {
		t.Fatal(err)
	}
	seal := startSealer(t, b)

	// The attacker: a user of keyflow's own account with no restriction
	// (minted with the account key, or an auditor.creds of old).
	full, err := natsserver.ConnectService(b.NATS, b.Identity, "probe")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(full.Close)
	// It sees the genuine requests in its account, headers included.
	captured := make(chan *nats.Msg, 4)
	sub, err := full.ChanSubscribe("kf.v1.alpha.crypto.>", captured)
	if err != nil {
		t.Fatal(err)
	}
	if err := full.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct.CiphertextBlob}); err != nil {
		t.Fatal(err)
	}
	var genuine *nats.Msg
	select {
	case genuine = <-captured:
	case <-time.After(10 * time.Second):
		t.Fatal("the probe saw no genuine request")
	}
	_ = sub.Unsubscribe()
	ri, err := natsauth.ParseRequestInfo(genuine.Header.Get(natsauth.RequestInfoHeader))
	if err != nil || ri.NameTag != "app" {
		t.Fatalf("captured request info %+v: %v", ri, err)
	}
	decryptBody, _ := json.Marshal(api.DecryptRequest{CiphertextBlob: ct.CiphertextBlob})
	header := func(ri natsauth.RequestInfo) string {
		b, _ := json.Marshal(map[string]any{"acc": ri.Account, "user": ri.User, "name_tag": ri.NameTag, "tags": ri.Tags})
		return string(b)
	}
	// An attacker's own key, which it can sign with.
	own, _ := nkeys.CreateUser()
	ownPub, _ := own.PublicKey()
	ownSeed, _ := own.Seed()
	ownSigner, err := api.NewRequestSigner(ownSeed)
	if err != nil {
		t.Fatal(err)
	}
	moreRoles := ri
	moreRoles.Tags = append(append([]string{}, ri.Tags...), natsauth.RoleTagPrefix+string(keypolicy.RoleKeyAdmin))
	madeUp := ri
	madeUp.User = ownPub

	type attack struct {
		name     string
		body     []byte
		info     natsauth.RequestInfo
		sign     func(m *nats.Msg) // nil: unsigned
		wantCode kms.Code
	}
	copyHeaders := func(m *nats.Msg) {
		for _, h := range []string{api.HeaderRequestID, api.HeaderDate, api.HeaderNonce, api.HeaderSignature} {
			m.Header.Set(h, genuine.Header.Get(h))
		}
	}
	attacks := []attack{
		{"unsigned, naming app as the server would", decryptBody, ri, nil, rpc.CodeMissingSignature},
		{"app's captured signature on another body", []byte(`{"keyId":"` + k.KeyID + `","plaintext":"Zm9yZ2Vk"}`), ri, copyHeaders, rpc.CodeInvalidSignature},
		{"app's captured request replayed whole", genuine.Data, ri, copyHeaders, rpc.CodeInvalidSignature},
		{"app with a role it was never issued", decryptBody, moreRoles, nil, rpc.CodeUnrecognizedClient},
		{"app under a key the attacker made and signs with", decryptBody, madeUp, func(m *nats.Msg) {
			for h, v := range ownSigner.Sign(m.Subject, m.Header.Get(api.HeaderRequestID), m.Data, time.Now()) {
				m.Header.Set(h, v)
			}
		}, rpc.CodeUnrecognizedClient},
	}
	before := len(b.Events("alpha"))
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			m := nats.NewMsg(genuine.Subject)
			m.Data = a.body
			m.Header.Set(natsauth.RequestInfoHeader, header(a.info))
			m.Header.Set(api.HeaderRequestID, uuid.NewString())
			if a.sign != nil {
				a.sign(m)
			}
			reqID := m.Header.Get(api.HeaderRequestID)
			lastBefore := lastAuditSeq(t, b)
			r, err := full.RequestMsg(m, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			eb := replyError(t, r)
			if eb.Code != string(a.wantCode) {
				t.Fatalf("refused with %s (%s), want %s", eb.Code, eb.Message, a.wantCode)
			}
			if strings.Contains(string(r.Data), "TOPSECRET") || strings.Contains(string(r.Data), "VE9QU0VDUkVU") {
				t.Fatal("the reply carries the plaintext")
			}
			// (The replays carry app's request ID, so its genuine
			// record shares it, and so do the other replays'.)
			var refusals []testbed.AuditEvent
			for _, e := range b.EventsOfType("alpha", events.TypeRequestRejected) {
				if e.RequestID == reqID && e.Seq > lastBefore {
					refusals = append(refusals, e)
				}
			}
			if len(refusals) != 1 || refusals[0].ErrorCode != string(a.wantCode) || refusals[0].Outcome == events.OutcomeSuccess {
				t.Errorf("audit records of the refusal: %+v", refusals)
			}
			t.Logf("refused: %s: %s", eb.Code, eb.Message)
		})
	}
	// Nothing ran: every record since is a refusal.
	for _, e := range b.Events("alpha")[before:] {
		if e.Type != events.TypeRequestRejected {
			t.Errorf("an attack ran: %s %s %s", e.Type, e.Principal, e.Outcome)
		}
	}

	// The genuine client still works, and so does an in-process caller
	// (the gateways), which has no NATS signature at all.
	if _, err := app.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct.CiphertextBlob}); err != nil {
		t.Fatalf("app after the attacks: %v", err)
	}

	// The same credential re-publishes a genuine record, MAC and all.
	// Within the duplicate window, under its own Nats-Msg-Id, JetStream
	// drops it; under another one (or after two minutes) it is stored.
	st, err := b.JS.Stream(ctx, jsaudit.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	fullJS, err := jetstreamOf(full)
	if err != nil {
		t.Fatal(err)
	}
	replay := func(msgID string) *jetstream.PubAck {
		m := nats.NewMsg(orig.Subject)
		m.Data = orig.Data
		for _, h := range []string{events.HeaderRecordMAC, "Content-Type"} {
			m.Header.Set(h, orig.Header.Get(h))
		}
		m.Header.Set(jetstream.MsgIDHeader, msgID)
		ack, err := fullJS.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return ack
	}
	if ack := replay(orig.Header.Get(jetstream.MsgIDHeader)); !ack.Duplicate {
		t.Errorf("a replay under the record's own Nats-Msg-Id was stored (seq %d)", ack.Sequence)
	}
	replayedAt := replay(uuid.NewString()).Sequence

	// audit verify: the attempts under identities keyflow never issued
	// are findings, and so is the replayed record; the unsigned ones are
	// listed.
	last := lastAuditSeq(t, b)
	checkForSeal(t, seal, last)
	keys, err := sealer.StoredPublicKeys(ctx, b.Store)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := sealer.Verify(ctx, b.JS, sealer.VerifyParams{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	var forged, replayed int
	for _, f := range rep.Findings {
		t.Logf("verify: %v", f)
		switch {
		case f.Kind == chain.KindForgedRequest:
			forged++
		case f.Kind == chain.KindReplayed && f.Seq == replayedAt && strings.Contains(f.Detail, "seq 1,"):
			replayed++
		default:
			t.Errorf("unexpected finding %v", f)
		}
	}
	if replayed != 1 {
		t.Errorf("the record replayed at seq %d is not reported: %v", replayedAt, rep.Findings)
	}
	if forged != 2 {
		t.Errorf("%d forged-request findings, want 2 (the made-up roles and key): %v", forged, rep.Findings)
	}
	if len(rep.Unsigned) != 3 {
		t.Errorf("%d unsigned-request entries, want 3: %v", len(rep.Unsigned), rep.Unsigned)
	}
	for _, f := range rep.Unsigned {
		if !strings.Contains(f.Detail, `"app"`) {
			t.Errorf("unsigned entry does not name the claimed principal: %v", f)
		}
	}
}

// A genuine principal whose signature is wrong, late or reused is refused
// with a message that says what to fix; its creds without the signature
// (a hand-written client) too.
func TestRequestSignatureRefusals(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	b.StartRPC(nil)
	creds := b.PrincipalCreds("alpha", "app", keypolicy.RoleCryptoUser, keypolicy.RoleKeyAdmin)
	nc, err := natsserver.Connect(b.NATS, creds, "app")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	signer, err := client.SignerFromCreds(creds)
	if err != nil {
		t.Fatal(err)
	}
	send := func(m *nats.Msg) api.ErrorBody {
		t.Helper()
		r, err := nc.RequestMsg(m, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if r.Header.Get(api.HeaderErrorCode) == "" {
			return api.ErrorBody{}
		}
		return replyError(t, r)
	}
	msg := func(at time.Time) *nats.Msg {
		m := nats.NewMsg(api.Subject("alpha", api.OpKeyList))
		m.Data = []byte(`{}`)
		m.Header.Set(api.HeaderRequestID, uuid.NewString())
		if !at.IsZero() {
			for h, v := range signer.Sign(m.Subject, m.Header.Get(api.HeaderRequestID), m.Data, at) {
				m.Header.Set(h, v)
			}
		}
		return m
	}
	if eb := send(msg(time.Now())); eb.Code != "" {
		t.Fatalf("a signed request was refused: %+v", eb)
	}
	cases := []struct {
		name string
		m    *nats.Msg
		code kms.Code
		says string
	}{
		{"unsigned", msg(time.Time{}), rpc.CodeMissingSignature, "creds"},
		{"ten minutes late", msg(time.Now().Add(-10 * time.Minute)), rpc.CodeInvalidSignature, "clock"},
		{"ten minutes early", msg(time.Now().Add(10 * time.Minute)), rpc.CodeInvalidSignature, "clock"},
		{"garbled signature", func() *nats.Msg {
			m := msg(time.Now())
			m.Header.Set(api.HeaderSignature, "not base64!")
			return m
		}(), rpc.CodeIncompleteSignature, api.HeaderSignature},
		{"another request ID", func() *nats.Msg {
			m := msg(time.Now())
			m.Header.Set(api.HeaderRequestID, "swapped")
			return m
		}(), rpc.CodeInvalidSignature, "does not verify"},
	}
	for _, c := range cases {
		eb := send(c.m)
		if eb.Code != string(c.code) || !strings.Contains(eb.Message, c.says) {
			t.Errorf("%s: %s %q, want %s saying %q", c.name, eb.Code, eb.Message, c.code, c.says)
		}
	}
	// A replay of an accepted request is refused.
	m := msg(time.Now())
	if eb := send(m); eb.Code != "" {
		t.Fatal(eb)
	}
	again := nats.NewMsg(m.Subject)
	again.Data, again.Header = m.Data, m.Header
	if eb := send(again); eb.Code != string(rpc.CodeInvalidSignature) || !strings.Contains(eb.Message, "already used") {
		t.Errorf("replay: %+v", eb)
	}
	// The client signs by itself when given the creds.
	c, err := client.Dial(ctx, client.Options{Conn: nc, Creds: creds, Tenant: "alpha"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListKeys(ctx); err != nil {
		t.Fatal(err)
	}
}

// startSealer seals the bed's audit stream on a connection of its own.
func startSealer(t *testing.T, b *testbed.Bed) *sealer.Sealer {
	t.Helper()
	nc, err := natsserver.ConnectService(b.NATS, b.Identity, "sealer")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstreamOf(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sealer.Start(context.Background(), sealer.Config{JS: js, KMS: b.KMS, Every: 20, Interval: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func checkForSeal(t *testing.T, s *sealer.Sealer, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for s.Status().SealedTo < seq {
		if time.Now().After(deadline) {
			t.Fatalf("the sealer did not reach seq %d (%+v)", seq, s.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func jetstreamOf(nc *nats.Conn) (jetstream.JetStream, error) { return jetstream.New(nc) }

// lastAuditSeq is the audit stream's last sequence.
func lastAuditSeq(t *testing.T, b *testbed.Bed) uint64 {
	t.Helper()
	st, err := b.JS.Stream(context.Background(), jsaudit.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}
