package rpc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/natsauth"
	"github.com/keyflow/keyflow/workers/rpc"
)

// ---------------------------------------------------------------------------
// helpers

// wantErr asserts that err is a keyflow refusal with the given code and
// returns it.
func wantErr(t *testing.T, err error, code kms.Code) *client.Error {
	t.Helper()
	var ce *client.Error
	if !errors.As(err, &ce) {
		t.Fatalf("got error %v (%T), want a *client.Error with code %s", err, err, code)
	}
	if ce.Code != string(code) {
		t.Fatalf("got code %s (%q), want %s", ce.Code, ce.Message, code)
	}
	if ce.Message == "" {
		t.Errorf("%s has an empty message", code)
	}
	return ce
}

// refusals collects refused requests so the test can check, at the end and
// in one read of the audit stream, that each one was recorded.
type refusals struct {
	tenant string
	list   []*client.Error
}

func (r *refusals) add(t *testing.T, err error, code kms.Code) *client.Error {
	t.Helper()
	ce := wantErr(t, err, code)
	if ce.RequestID == "" {
		t.Fatalf("refusal %s carries no request ID", code)
	}
	r.list = append(r.list, ce)
	return ce
}

// check asserts that every collected refusal produced exactly one audit
// event of the caller's tenant, with a failure (or denied) outcome and the
// code the caller was given.
func (r *refusals) check(t *testing.T, b *testbed.Bed, principal string) {
	t.Helper()
	byReq := map[string][]testbed.AuditEvent{}
	for _, e := range b.Events(r.tenant) {
		byReq[e.RequestID] = append(byReq[e.RequestID], e)
	}
	for _, ce := range r.list {
		evs := byReq[ce.RequestID]
		if len(evs) != 1 {
			t.Errorf("refusal %s (%s, request %s): %d audit events, want 1", ce.Code, ce.Message, ce.RequestID, len(evs))
			continue
		}
		e := evs[0]
		wantOutcome := events.OutcomeFailure
		if ce.Code == string(kms.CodeAccessDenied) {
			wantOutcome = events.OutcomeDenied
		}
		if e.Outcome != wantOutcome || e.ErrorCode != ce.Code || e.Tenant != r.tenant || e.Principal != principal {
			t.Errorf("refusal %s (request %s): audit event %s has outcome=%q errorcode=%q tenant=%q principal=%q; want %q, %q, %q, %q",
				ce.Code, ce.RequestID, e.Type, e.Outcome, e.ErrorCode, e.Tenant, e.Principal, wantOutcome, ce.Code, r.tenant, principal)
		}
	}
}

// keysState is the stored metadata of a tenant's keys, for no-change
// assertions.
func keysState(t *testing.T, b *testbed.Bed, tenant string) string {
	t.Helper()
	keys, err := b.Store.ListKeys(context.Background(), tenant)
	if err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(keys)
	if err != nil {
		t.Fatal(err)
	}
	return string(j)
}

// noMaterial asserts that no key material exists for a version.
func noMaterial(t *testing.T, b *testbed.Bed, tenant, keyID string, version uint32) {
	t.Helper()
	if _, err := b.Store.GetMaterial(context.Background(), tenant, keyID, version); !errors.Is(err, kms.ErrStoreNotFound) {
		t.Errorf("material for %s v%d: err = %v, want not found", keyID, version, err)
	}
}

// rawConn connects as principal of tenant without the client package, so a
// test can send what a well-behaved client would not.
func rawConn(t *testing.T, b *testbed.Bed, tenant, principal, connName string) *nats.Conn {
	t.Helper()
	creds, err := b.Identity.UserCreds(tenant, principal)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := connectSigned(b.NATS, creds, connName)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// replyError decodes an error reply sent to a raw request.
func replyError(t *testing.T, m *nats.Msg) api.ErrorBody {
	t.Helper()
	if m.Header.Get(api.HeaderErrorCode) == "" {
		t.Fatalf("reply is not an error: %s", m.Data)
	}
	var er api.ErrorReply
	if err := json.Unmarshal(m.Data, &er); err != nil {
		t.Fatalf("error reply is not JSON: %v: %s", err, m.Data)
	}
	if er.Error.Code != m.Header.Get(api.HeaderErrorCode) {
		t.Errorf("error code in body %q differs from header %q", er.Error.Code, m.Header.Get(api.HeaderErrorCode))
	}
	return er.Error
}

// endpointRequests asks the micro service for the number of requests an
// endpoint has taken (handed to the pool).
func endpointRequests(t *testing.T, b *testbed.Bed, service, endpoint string) int {
	t.Helper()
	m, err := b.Conn.Request("$SRV.STATS."+service, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var st micro.Stats
	if err := json.Unmarshal(m.Data, &st); err != nil {
		t.Fatal(err)
	}
	for _, e := range st.Endpoints {
		if e.Name == endpoint {
			return e.NumRequests
		}
	}
	t.Fatalf("service %s has no endpoint %s", service, endpoint)
	return 0
}

// waitForRequests polls until an endpoint has taken n requests.
func waitForRequests(t *testing.T, b *testbed.Bed, service, endpoint string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for endpointRequests(t, b, service, endpoint) < n {
		if time.Now().After(deadline) {
			t.Fatalf("endpoint %s.%s did not take %d requests", service, endpoint, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func eventByRequestID(t *testing.T, b *testbed.Bed, tenant, reqID string) testbed.AuditEvent {
	t.Helper()
	var found []testbed.AuditEvent
	for _, e := range b.Events(tenant) {
		if e.RequestID == reqID {
			found = append(found, e)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d audit events of tenant %s with request ID %s, want 1", len(found), tenant, reqID)
	}
	return found[0]
}

func createKey(t *testing.T, c *client.Client, alias string) *api.KeyMetadata {
	t.Helper()
	k, err := c.CreateKey(t.Context(), api.CreateKeyRequest{Alias: alias})
	if err != nil {
		t.Fatalf("CreateKey(%q): %v", alias, err)
	}
	return k
}

func encrypt(t *testing.T, c *client.Client, keyID string, pt []byte, ec map[string]string) *api.EncryptReply {
	t.Helper()
	r, err := c.Encrypt(t.Context(), api.EncryptRequest{KeyID: keyID, Plaintext: pt, EncryptionContext: ec})
	if err != nil {
		t.Fatalf("Encrypt(%s): %v", keyID, err)
	}
	return r
}

// ---------------------------------------------------------------------------
// round trips

func TestRoundTrip(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	alice := b.Client("alpha", "alice")
	ctx := t.Context()
	start := time.Now().UTC()

	k := createKey(t, alice, "app")
	if !kms.ValidKeyID(k.KeyID) {
		t.Fatalf("key ID %q is not a UUID", k.KeyID)
	}
	if k.Alias != "app" || k.Arn != "kf:alpha:key/"+k.KeyID || k.KeySpec != "SYMMETRIC_DEFAULT" ||
		k.KeyUsage != "ENCRYPT_DECRYPT" || k.KeyState != "ACTIVE" || k.CreatedBy != "alice" || k.PrimaryVersion != 1 {
		t.Errorf("created key metadata: %+v", k)
	}
	if len(k.Versions) != 1 || k.Versions[0].Version != 1 || k.Versions[0].State != "ACTIVE" || k.Versions[0].Algorithm != "AES_256_GCM" {
		t.Errorf("created key versions: %+v", k.Versions)
	}
	if k.CreationDate.Before(start.Add(-time.Minute)) || k.CreationDate.After(time.Now().Add(time.Minute)) {
		t.Errorf("creation date %v is not now", k.CreationDate)
	}
	if k.LastRotationDate != nil {
		t.Errorf("a new key has a rotation date: %v", k.LastRotationDate)
	}

	ec := map[string]string{"purpose": "test", "table": "users"}
	pt := []byte("attack at dawn")
	for _, ref := range []string{k.KeyID, "app", "alias/app"} {
		t.Run("encrypt-by-"+strings.ReplaceAll(ref, "/", "_"), func(t *testing.T) {
			enc := encrypt(t, alice, ref, pt, ec)
			if enc.KeyID != k.KeyID || enc.KeyVersion != 1 {
				t.Errorf("Encrypt reply names %s v%d, want %s v1", enc.KeyID, enc.KeyVersion, k.KeyID)
			}
			if id, v, err := kms.EnvelopeKeyID(enc.CiphertextBlob); err != nil || id != k.KeyID || v != 1 {
				t.Errorf("ciphertext header: %s v%d, %v", id, v, err)
			}
			if bytes.Contains(enc.CiphertextBlob, pt) {
				t.Error("ciphertext contains the plaintext")
			}
			// Decrypt with no key named (the header names it), by ID, and
			// by alias.
			for _, dref := range []string{"", k.KeyID, "app", "alias/app"} {
				dec, err := alice.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec, KeyID: dref})
				if err != nil {
					t.Fatalf("Decrypt(keyId=%q): %v", dref, err)
				}
				if !bytes.Equal(dec.Plaintext, pt) || dec.KeyID != k.KeyID || dec.KeyVersion != 1 {
					t.Errorf("Decrypt(keyId=%q) = %q, %s v%d", dref, dec.Plaintext, dec.KeyID, dec.KeyVersion)
				}
			}
		})
	}

	// Two encryptions of the same plaintext differ (fresh IV).
	c1 := encrypt(t, alice, "app", pt, nil).CiphertextBlob
	c2 := encrypt(t, alice, "app", pt, nil).CiphertextBlob
	if bytes.Equal(c1, c2) {
		t.Error("two encryptions of the same plaintext are equal")
	}
	hdr := 3 + len(k.KeyID) + 4
	if bytes.Equal(c1[hdr:hdr+12], c2[hdr:hdr+12]) {
		t.Error("two encryptions share an IV")
	}

	t.Run("datakey", func(t *testing.T) {
		dk, err := alice.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: "alias/app", EncryptionContext: ec})
		if err != nil {
			t.Fatal(err)
		}
		if len(dk.Plaintext) != 32 || dk.KeyID != k.KeyID || dk.KeyVersion != 1 {
			t.Fatalf("data key: %d bytes, %s v%d", len(dk.Plaintext), dk.KeyID, dk.KeyVersion)
		}
		if bytes.Equal(dk.Plaintext, make([]byte, 32)) {
			t.Error("data key is all zeros")
		}
		dec, err := alice.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: dk.CiphertextBlob, EncryptionContext: ec})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(dec.Plaintext, dk.Plaintext) {
			t.Error("the data key blob does not decrypt to the data key")
		}
		dk2, err := alice.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: k.KeyID, NumberOfBytes: 16})
		if err != nil {
			t.Fatal(err)
		}
		if len(dk2.Plaintext) != 16 || bytes.Equal(dk2.Plaintext, dk.Plaintext[:16]) {
			t.Errorf("second data key: %d bytes, equal prefix %v", len(dk2.Plaintext), bytes.Equal(dk2.Plaintext, dk.Plaintext[:16]))
		}
	})

	t.Run("describe-and-list", func(t *testing.T) {
		k2 := createKey(t, alice, "")
		for _, ref := range []string{k.KeyID, "app", "alias/app"} {
			d, err := alice.DescribeKey(ctx, ref)
			if err != nil {
				t.Fatalf("DescribeKey(%q): %v", ref, err)
			}
			if d.KeyID != k.KeyID || d.Alias != "app" || d.KeyState != "ACTIVE" || d.PrimaryVersion != 1 || len(d.Versions) != 1 || d.CreatedBy != "alice" {
				t.Errorf("DescribeKey(%q) = %+v", ref, d)
			}
		}
		l, err := alice.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]api.KeyMetadata{}
		for _, m := range l.Keys {
			got[m.KeyID] = m
		}
		if len(l.Keys) != 2 || got[k.KeyID].Alias != "app" || got[k2.KeyID].KeyID != k2.KeyID || got[k2.KeyID].Alias != "" {
			t.Errorf("ListKeys = %+v, want %s (app) and %s", l.Keys, k.KeyID, k2.KeyID)
		}
		// The other tenant sees none of them.
		bl, err := b.Client("beta", "bob").ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(bl.Keys) != 0 {
			t.Errorf("beta lists %d keys of alpha", len(bl.Keys))
		}
	})

	// Successful operations are audited with the caller's identity.
	var enc, created int
	for _, e := range b.Events("alpha") {
		if e.Outcome != events.OutcomeSuccess || e.Principal != "alice" || e.Tenant != "alpha" || e.RequestID == "" {
			t.Errorf("event %s: outcome=%s principal=%q tenant=%q requestid=%q", e.Type, e.Outcome, e.Principal, e.Tenant, e.RequestID)
		}
		switch e.Type {
		case events.TypeEncrypt:
			enc++
			if e.Subject != k.Arn {
				t.Errorf("encrypt event subject %q, want %q", e.Subject, k.Arn)
			}
		case events.TypeKeyCreated:
			created++
		}
		if bytes.Contains(e.Raw, pt) || bytes.Contains(e.Raw, []byte("attack")) {
			t.Errorf("event %s contains the plaintext", e.Type)
		}
	}
	if enc != 5 || created != 2 {
		t.Errorf("audit has %d encrypt and %d created events, want 5 and 2", enc, created)
	}
}

// ---------------------------------------------------------------------------
// tenant isolation

func TestTenantIsolation(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	ctx := t.Context()
	alice := b.Client("alpha", "alice")
	bob := b.Client("beta", "bob")
	ak := createKey(t, alice, "shared-name")
	bk := createKey(t, bob, "shared-name") // aliases are per tenant
	if ak.KeyID == bk.KeyID {
		t.Fatal("two tenants got the same key ID")
	}
	ct := encrypt(t, alice, ak.KeyID, []byte("alpha secret"), nil).CiphertextBlob

	t.Run("other-tenant-subject-unreachable", func(t *testing.T) {
		// The NATS server itself refuses. Two walls stand in front of the
		// worker: beta's users may publish only to kf.v1.beta.> (user
		// permissions), and beta's account imports only kf.v1.beta.>
		// from KF. The user permission is checked first, so the request
		// is dropped with an asynchronous permissions violation and the
		// requester sees a timeout (not "no responders": that is what an
		// account without the import but with the permission would see).
		creds, err := b.Identity.UserCreds("beta", "bob")
		if err != nil {
			t.Fatal(err)
		}
		credsOpt, err := natsauth.CredsOption(creds)
		if err != nil {
			t.Fatal(err)
		}
		violations := make(chan error, 16)
		nc, err := nats.Connect("", nats.InProcessServer(b.NATS), credsOpt, nats.Name("bob"),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		body, _ := json.Marshal(api.EncryptRequest{KeyID: ak.KeyID, Plaintext: []byte("x")})
		for _, op := range []string{api.OpEncrypt, api.OpDecrypt, api.OpKeyList, api.OpAuditTail} {
			subj := api.Subject("alpha", op)
			_, err := nc.Request(subj, body, 300*time.Millisecond)
			if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, nats.ErrTimeout) {
				t.Errorf("beta → %s: err = %v, want no responders or timeout", subj, err)
			}
			select {
			case v := <-violations:
				if !errors.Is(v, nats.ErrPermissionViolation) || !strings.Contains(v.Error(), subj) {
					t.Errorf("beta → %s: async error %v, want a publish permissions violation", subj, v)
				}
			case <-time.After(5 * time.Second):
				if !errors.Is(err, nats.ErrNoResponders) {
					t.Errorf("beta → %s: neither a permissions violation nor no responders", subj)
				}
			}
		}
		// Beta's own subject works on the same connection.
		if _, err := nc.Request(api.Subject("beta", api.OpKeyList), nil, 5*time.Second); err != nil {
			t.Errorf("beta → its own subject: %v", err)
		}
		// Nothing of this reached a worker: alpha's trail has only alice's
		// create and encrypt.
		for _, e := range b.Events("alpha") {
			if e.Principal != "alice" {
				t.Errorf("alpha's trail has an event of %q: %s", e.Principal, e.Type)
			}
		}
	})

	t.Run("foreign-ciphertext-and-key", func(t *testing.T) {
		before := keysState(t, b, "alpha")
		rs := &refusals{tenant: "beta"}
		_, err := bob.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct})
		ce := rs.add(t, err, kms.CodeInvalidCiphertext)
		// Even naming beta's own key with the same alias gives the same answer.
		_, err = bob.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct, KeyID: "shared-name"})
		if ce2 := rs.add(t, err, kms.CodeInvalidCiphertext); ce2.Message != ce.Message {
			t.Errorf("messages differ: %q vs %q", ce2.Message, ce.Message)
		}
		// Re-labelling alpha's ciphertext with beta's key ID does not help:
		// the tenant and the header are in the AAD.
		relabelled := bytes.Clone(ct)
		copy(relabelled[3:3+36], bk.KeyID)
		_, err = bob.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: relabelled})
		if ce3 := rs.add(t, err, kms.CodeInvalidCiphertext); ce3.Message != ce.Message {
			t.Errorf("messages differ: %q vs %q", ce3.Message, ce.Message)
		}
		_, err = bob.DescribeKey(ctx, ak.KeyID)
		rs.add(t, err, kms.CodeNotFound)
		_, err = bob.Encrypt(ctx, api.EncryptRequest{KeyID: ak.KeyID, Plaintext: []byte("x")})
		rs.add(t, err, kms.CodeNotFound)
		_, err = bob.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: ak.KeyID})
		rs.add(t, err, kms.CodeNotFound)
		rs.check(t, b, "bob")
		if after := keysState(t, b, "alpha"); after != before {
			t.Errorf("alpha's keys changed:\n%s\n%s", before, after)
		}
		// Alpha still decrypts its own.
		if dec, err := alice.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct}); err != nil || string(dec.Plaintext) != "alpha secret" {
			t.Errorf("alpha's own decrypt: %v", err)
		}
	})

	t.Run("forged-request-info", func(t *testing.T) {
		// Bob claims, in the header the server owns, to be alice of alpha.
		alphaAcc, err := b.Identity.AddTenant("alpha") // idempotent: returns the account key
		if err != nil {
			t.Fatal(err)
		}
		forged, _ := json.Marshal(map[string]string{"acc": alphaAcc, "user": "UFORGED", "name": "alice", "name_tag": "alice"})
		nc := rawConn(t, b, "beta", "bob", "alice") // even the connection name lies
		send := func(keyID string) (*nats.Msg, string) {
			body, _ := json.Marshal(api.EncryptRequest{KeyID: keyID, Plaintext: []byte("forged")})
			m := nats.NewMsg(api.Subject("beta", api.OpEncrypt))
			m.Data = body
			m.Header.Set(natsauth.RequestInfoHeader, string(forged))
			reqID := uuid.NewString()
			m.Header.Set(api.HeaderRequestID, reqID)
			r, err := signedRequest(nc, m, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			return r, reqID
		}
		// On beta's own key: served, as beta/bob.
		r, reqID := send(bk.KeyID)
		if code := r.Header.Get(api.HeaderErrorCode); code != "" {
			t.Fatalf("encrypt with a forged header was refused: %s %s", code, r.Data)
		}
		var enc api.EncryptReply
		if err := json.Unmarshal(r.Data, &enc); err != nil || enc.KeyID != bk.KeyID {
			t.Fatalf("reply %s: %v", r.Data, err)
		}
		e := eventByRequestID(t, b, "beta", reqID)
		if e.Type != events.TypeEncrypt || e.Tenant != "beta" || e.Principal != "bob" || e.Outcome != events.OutcomeSuccess {
			t.Errorf("event of the forged request: type=%s tenant=%s principal=%q outcome=%s; want beta/bob success", e.Type, e.Tenant, e.Principal, e.Outcome)
		}
		// On alpha's key: beta has no such key.
		r, reqID = send(ak.KeyID)
		if eb := replyError(t, r); eb.Code != string(kms.CodeNotFound) {
			t.Errorf("forged request on alpha's key: %s, want NotFoundException", eb.Code)
		}
		e = eventByRequestID(t, b, "beta", reqID)
		if e.Tenant != "beta" || e.Principal != "bob" || e.Outcome != events.OutcomeFailure || e.ErrorCode != string(kms.CodeNotFound) {
			t.Errorf("event: tenant=%s principal=%q outcome=%s errorcode=%s", e.Tenant, e.Principal, e.Outcome, e.ErrorCode)
		}
		for _, e := range b.Events("alpha") {
			if e.RequestID == reqID {
				t.Error("the forged request was recorded in alpha's trail")
			}
		}
	})

	t.Run("service-account-without-identity", func(t *testing.T) {
		// The worker's own account reaches the endpoint directly, not
		// through a tenant import, so the request carries no identity the
		// server vouched for: the worker's check (the second wall) refuses.
		body, _ := json.Marshal(api.EncryptRequest{KeyID: ak.KeyID, Plaintext: []byte("x")})
		for _, withForged := range []bool{false, true} {
			m := nats.NewMsg(api.Subject("alpha", api.OpEncrypt))
			m.Data = body
			reqID := uuid.NewString()
			m.Header.Set(api.HeaderRequestID, reqID)
			if withForged {
				alphaAcc, _ := b.Identity.AddTenant("alpha")
				m.Header.Set(natsauth.RequestInfoHeader, `{"acc":"`+alphaAcc+`","name_tag":"alice"}`)
			}
			r, err := b.Conn.RequestMsg(m, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if withForged {
				// Inside the KF account nothing strips the header, so a
				// KF user can write one; the identity it names is not
				// one keyflow issued, and the request is not signed by
				// it (reqsig_test.go has the whole attack).
				if eb := replyError(t, r); eb.Code != string(rpc.CodeUnrecognizedClient) {
					t.Errorf("KF user with a forged %s header: %+v, want %s", natsauth.RequestInfoHeader, eb, rpc.CodeUnrecognizedClient)
				}
				continue
			}
			eb := replyError(t, r)
			{
				if eb.Code != string(kms.CodeAccessDenied) || eb.RequestID != reqID {
					t.Errorf("service account request: %+v, want AccessDeniedException", eb)
				}
				e := eventByRequestID(t, b, "alpha", reqID)
				if e.Type != events.TypeRequestRejected || e.Outcome != events.OutcomeDenied || e.ErrorCode != string(kms.CodeAccessDenied) || e.Principal != "" {
					t.Errorf("event: type=%s outcome=%s errorcode=%s principal=%q", e.Type, e.Outcome, e.ErrorCode, e.Principal)
				}
			}
		}
	})
}

// ---------------------------------------------------------------------------
// bad input

func TestBadInput(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	ctx := t.Context()
	alice := b.Client("alpha", "alice")
	k := createKey(t, alice, "app")
	other := createKey(t, alice, "other")
	ec := map[string]string{"purpose": "test"}
	pt := []byte("sixteen byte msg")
	ct := encrypt(t, alice, k.KeyID, pt, ec).CiphertextBlob
	before := keysState(t, b, "alpha")
	rs := &refusals{tenant: "alpha"}

	t.Run("unknown-key", func(t *testing.T) {
		for _, ref := range []string{uuid.NewString(), "nope", "alias/nope"} {
			_, err := alice.Encrypt(ctx, api.EncryptRequest{KeyID: ref, Plaintext: pt})
			rs.add(t, err, kms.CodeNotFound)
			_, err = alice.DescribeKey(ctx, ref)
			rs.add(t, err, kms.CodeNotFound)
			_, err = alice.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: ref})
			rs.add(t, err, kms.CodeNotFound)
		}
		_, err := alice.Encrypt(ctx, api.EncryptRequest{Plaintext: pt})
		rs.add(t, err, kms.CodeValidation)
	})

	t.Run("bad-ciphertext", func(t *testing.T) {
		hdr := 3 + len(k.KeyID) + 4
		iv := hdr
		body := hdr + 12
		tag := len(ct) - 16
		flip := func(i int) []byte { c := bytes.Clone(ct); c[i] ^= 0x01; return c }
		relabel := bytes.Clone(ct)
		copy(relabel[3:3+36], other.KeyID)
		unknown := bytes.Clone(ct)
		copy(unknown[3:3+36], uuid.NewString())
		cases := []struct {
			name string
			ct   []byte
			ec   map[string]string
			key  string
		}{
			{"empty", nil, ec, ""},
			{"truncated-to-2", ct[:2], ec, ""},
			{"truncated-header", ct[:hdr-1], ec, ""},
			{"truncated-before-tag", ct[:hdr+12+15], ec, ""},
			{"truncated-by-1", ct[:len(ct)-1], ec, ""},
			{"appended-byte", append(bytes.Clone(ct), 0), ec, ""},
			{"flip-format-version", flip(0), ec, ""},
			{"flip-algorithm", flip(1), ec, ""},
			{"flip-keyid-length", flip(2), ec, ""},
			{"flip-keyid", flip(3), ec, ""},
			{"flip-version", flip(hdr - 1), ec, ""},
			{"flip-iv", flip(iv), ec, ""},
			{"flip-iv-last", flip(iv + 11), ec, ""},
			{"flip-body", flip(body), ec, ""},
			{"flip-tag", flip(tag), ec, ""},
			{"flip-tag-last", flip(len(ct) - 1), ec, ""},
			{"relabelled-other-key", relabel, ec, ""},
			{"relabelled-unknown-key", unknown, ec, ""},
			{"wrong-context", ct, map[string]string{"purpose": "prod"}, ""},
			{"wrong-context-key", ct, map[string]string{"Purpose": "test"}, ""},
			{"missing-context", ct, nil, ""},
			{"extra-context-pair", ct, map[string]string{"purpose": "test", "x": "y"}, ""},
			{"other-key-named", ct, ec, other.KeyID},
			{"other-alias-named", ct, ec, "alias/other"},
			{"unknown-alias-named", ct, ec, "alias/nope"},
		}
		var msg string
		for _, tc := range cases {
			_, err := alice.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: tc.ct, EncryptionContext: tc.ec, KeyID: tc.key})
			ce := rs.add(t, err, kms.CodeInvalidCiphertext)
			if msg == "" {
				msg = ce.Message
			}
			if ce.Message != msg {
				t.Errorf("%s: message %q differs from %q: an oracle", tc.name, ce.Message, msg)
			}
		}
		// The intact ciphertext still decrypts.
		if dec, err := alice.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct, EncryptionContext: ec}); err != nil || !bytes.Equal(dec.Plaintext, pt) {
			t.Errorf("intact ciphertext: %v", err)
		}
	})

	t.Run("plaintext-size", func(t *testing.T) {
		_, err := alice.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID})
		rs.add(t, err, kms.CodeValidation)
		_, err = alice.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: []byte{}})
		rs.add(t, err, kms.CodeValidation)
		_, err = alice.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: make([]byte, kms.MaxPlaintext+1)})
		rs.add(t, err, kms.CodeValidation)
		big := bytes.Repeat([]byte{0xA5}, kms.MaxPlaintext)
		enc := encrypt(t, alice, k.KeyID, big, nil)
		dec, err := alice.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob})
		if err != nil || !bytes.Equal(dec.Plaintext, big) {
			t.Errorf("64 KiB round trip: %v", err)
		}
		one := encrypt(t, alice, k.KeyID, []byte{0}, nil)
		if dec, err := alice.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: one.CiphertextBlob}); err != nil || !bytes.Equal(dec.Plaintext, []byte{0}) {
			t.Errorf("1-byte round trip: %v", err)
		}
	})

	t.Run("context-limits", func(t *testing.T) {
		_, err := alice.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: pt, EncryptionContext: map[string]string{"": "v"}})
		rs.add(t, err, kms.CodeValidation)
		many := map[string]string{}
		for i := range 65 {
			many[fmt.Sprint("k", i)] = "v"
		}
		_, err = alice.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: pt, EncryptionContext: many})
		rs.add(t, err, kms.CodeValidation)
		_, err = alice.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct, EncryptionContext: many})
		rs.add(t, err, kms.CodeValidation)
	})

	t.Run("malformed-json", func(t *testing.T) {
		good := `{"keyId":"` + k.KeyID + `","plaintext":"AAEC"}`
		cases := []struct {
			name, op, body, wantInMsg string
		}{
			{"syntax", api.OpEncrypt, `{"keyId":`, "invalid JSON"},
			{"not-an-object", api.OpEncrypt, `[1,2]`, "must be a JSON object"},
			{"null", api.OpEncrypt, `null`, "must be a JSON object"},
			{"garbage", api.OpEncrypt, `hello`, "invalid JSON"},
			{"unknown-field", api.OpEncrypt, `{"keyId":"` + k.KeyID + `","plaintext":"AAEC","plaintxt":"AAEC"}`, "unknown field"},
			{"unknown-field-decrypt", api.OpDecrypt, `{"ciphertext":"AAEC"}`, "unknown field"},
			{"unknown-field-create", api.OpKeyCreate, `{"alias":"x1","tenant":"beta"}`, "unknown field"},
			{"unknown-field-list", api.OpKeyList, `{"tenant":"beta"}`, "unknown field"},
			{"trailing-object", api.OpEncrypt, good + `{}`, "trailing"},
			{"trailing-garbage", api.OpEncrypt, good + ` x`, "trailing"},
			{"trailing-close-brace", api.OpEncrypt, good + `}`, ""},
			{"trailing-close-bracket", api.OpEncrypt, good + `]`, ""},
			{"wrong-type-keyid", api.OpEncrypt, `{"keyId":5,"plaintext":"AAEC"}`, "wrong type"},
			{"wrong-type-context", api.OpEncrypt, `{"keyId":"` + k.KeyID + `","plaintext":"AAEC","encryptionContext":{"a":1}}`, "wrong type"},
			{"wrong-type-bytes", api.OpDataKey, `{"keyId":"` + k.KeyID + `","numberOfBytes":"32"}`, "wrong type"},
			{"bad-base64", api.OpEncrypt, `{"keyId":"` + k.KeyID + `","plaintext":"!!!!"}`, "base64"},
			{"bad-base64-decrypt", api.OpDecrypt, `{"ciphertextBlob":"AAE"}`, "base64"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				err := alice.CallRaw(ctx, tc.op, []byte(tc.body), nil)
				ce := rs.add(t, err, kms.CodeValidation)
				if !strings.Contains(ce.Message, tc.wantInMsg) {
					t.Errorf("message %q does not mention %q", ce.Message, tc.wantInMsg)
				}
				if strings.Contains(ce.Message, "AAEC") || strings.Contains(ce.Message, "!!!!") {
					t.Errorf("message %q echoes request content", ce.Message)
				}
			})
		}
		// An empty body is an empty request, not malformed.
		var l api.ListKeysReply
		if err := alice.CallRaw(ctx, api.OpKeyList, nil, &l); err != nil || len(l.Keys) != 2 {
			t.Errorf("list with an empty body: %v, %d keys", err, len(l.Keys))
		}
	})

	t.Run("create-key", func(t *testing.T) {
		_, err := alice.CreateKey(ctx, api.CreateKeyRequest{Alias: "app"})
		rs.add(t, err, kms.CodeAlreadyExists)
		_, err = alice.CreateKey(ctx, api.CreateKeyRequest{Alias: "alias/app"})
		rs.add(t, err, kms.CodeAlreadyExists)
		_, err = alice.CreateKey(ctx, api.CreateKeyRequest{Alias: "bad alias!"})
		rs.add(t, err, kms.CodeValidation)
		_, err = alice.CreateKey(ctx, api.CreateKeyRequest{Alias: uuid.NewString()})
		rs.add(t, err, kms.CodeValidation)
		_, err = alice.CreateKey(ctx, api.CreateKeyRequest{KeySpec: "NOT_A_SPEC"})
		rs.add(t, err, kms.CodeValidation)
		_, err = alice.CreateKey(ctx, api.CreateKeyRequest{KeyUsage: "NOT_A_USAGE"})
		rs.add(t, err, kms.CodeValidation)
		// The alias still names the original key.
		d, err := alice.DescribeKey(ctx, "app")
		if err != nil || d.KeyID != k.KeyID {
			t.Errorf("alias app now names %v (%v), want %s", d.KeyID, err, k.KeyID)
		}
	})

	t.Run("datakey-size", func(t *testing.T) {
		dk, err := alice.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: k.KeyID, NumberOfBytes: 0})
		if err != nil || len(dk.Plaintext) != 32 {
			t.Errorf("numberOfBytes 0: %v, %d bytes; want the default 32", err, len(dk.Plaintext))
		}
		for _, n := range []int{1, 1024} {
			dk, err := alice.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: k.KeyID, NumberOfBytes: n})
			if err != nil || len(dk.Plaintext) != n {
				t.Errorf("numberOfBytes %d: %v, %d bytes", n, err, len(dk.Plaintext))
			}
		}
		for _, n := range []int{1025, -1} {
			_, err := alice.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: k.KeyID, NumberOfBytes: n})
			rs.add(t, err, kms.CodeValidation)
		}
	})

	t.Run("rotate-unavailable", func(t *testing.T) {
		// This worker has no rotator: refused (and audited) before the
		// key is even looked up.
		for _, ref := range []string{k.KeyID, "alias/nope"} {
			_, err := alice.RotateKey(ctx, ref)
			ce := rs.add(t, err, kms.CodeInternal)
			if !strings.Contains(ce.Message, "rotation is not available") {
				t.Errorf("message %q", ce.Message)
			}
		}
	})

	// No refusal changed anything: same keys, same versions, no new
	// material, and no key was made for the refused creates.
	if after := keysState(t, b, "alpha"); after != before {
		t.Errorf("refused requests changed the stored keys:\n before %s\n after  %s", before, after)
	}
	noMaterial(t, b, "alpha", k.KeyID, 2)
	noMaterial(t, b, "alpha", other.KeyID, 2)
	rs.check(t, b, "alice")
	if t.Failed() {
		return
	}
	t.Logf("%d refusals checked against the audit trail", len(rs.list))
}

// ---------------------------------------------------------------------------
// the pool

func TestConcurrentRequests(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil) // 16 workers
	ctx := t.Context()
	alice := b.Client("alpha", "alice")
	k := createKey(t, alice, "app")

	t.Run("32-encrypts", func(t *testing.T) {
		const n = 32
		var wg sync.WaitGroup
		cts := make([][]byte, n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				r, err := alice.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: fmt.Appendf(nil, "message %d", i)})
				if err == nil {
					cts[i] = r.CiphertextBlob
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("encrypt %d: %v", i, errs[i])
			}
			dec, err := alice.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: cts[i]})
			if err != nil || string(dec.Plaintext) != fmt.Sprintf("message %d", i) {
				t.Errorf("decrypt %d: %q, %v", i, dec.Plaintext, err)
			}
		}
		if got := len(b.EventsOfType("alpha", events.TypeEncrypt)); got != n {
			t.Errorf("%d encrypt events, want %d", got, n)
		}
	})

	t.Run("slow-requests-do-not-block", func(t *testing.T) {
		// Long-polling audit tails each hold a worker for their whole
		// wait. If the pool serialised them (one endpoint, one handler at
		// a time), an encrypt sent meanwhile would wait behind them. The
		// check is an ordering, not a timing: the encrypt must finish
		// while every tail is still waiting.
		const tails, wait = 4, 8 * time.Second
		bob := b.Client("beta", "bob")
		// The end of beta's trail: read until a page comes back empty.
		end := ""
		for {
			r, err := bob.AuditTail(ctx, api.AuditTailRequest{After: end})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Events) == 0 {
				break
			}
			end = r.Next
		}
		tailsBefore := endpointRequests(t, b, "keyflow-audit", "tail")
		var wg sync.WaitGroup
		var finished atomic.Int32
		tailErrs := make([]error, tails)
		for i := range tails {
			wg.Go(func() {
				// At the end of the trail: nothing arrives, so the tail
				// waits the whole WaitMillis.
				_, tailErrs[i] = bob.AuditTail(ctx, api.AuditTailRequest{After: end, WaitMillis: int(wait / time.Millisecond)})
				finished.Add(1)
			})
		}
		// Wait until every tail has been handed to the pool, then encrypt.
		waitForRequests(t, b, "keyflow-audit", "tail", tailsBefore+tails)
		encrypt(t, alice, k.KeyID, []byte("not blocked"), nil)
		if n := finished.Load(); n != 0 {
			t.Errorf("the encrypt finished after %d of %d waiting tails: it waited behind them", n, tails)
		}
		wg.Wait()
		for i, err := range tailErrs {
			if err != nil {
				t.Errorf("tail %d: %v", i, err)
			}
		}
	})
}

// panicRotator misbehaves: it reports success with no result, which makes
// the rotate handler dereference nil. It exists to drive the recover path;
// nothing real is replaced by it.
type panicRotator struct{}

func (panicRotator) Rotate(context.Context, kms.Caller, string) (*rpc.RotateResult, error) {
	return nil, nil
}

func TestHandlerPanicKeepsWorkers(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(panicRotator{}) // 16 workers
	ctx := t.Context()
	alice := b.Client("alpha", "alice")
	k := createKey(t, alice, "app")
	// More panics than workers: if a panic killed its worker, the pool
	// would be empty afterwards and the encrypt would time out.
	for range 20 {
		_, err := alice.RotateKey(ctx, k.KeyID)
		ce := wantErr(t, err, kms.CodeInternal)
		if ce.RequestID == "" {
			t.Fatal("panic reply carries no request ID")
		}
		if strings.Contains(ce.Message, "nil pointer") || strings.Contains(ce.Message, "panic") {
			t.Fatalf("panic reply leaks the panic: %q", ce.Message)
		}
	}
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := alice.Encrypt(short, api.EncryptRequest{KeyID: k.KeyID, Plaintext: []byte("still here")}); err != nil {
		t.Fatalf("encrypt after 20 handler panics: %v", err)
	}
}

// ---------------------------------------------------------------------------
// rotation

// domainRotator runs a rotation with the same domain calls the Temporal
// workflow's activities make, synchronously.
type domainRotator struct {
	kms   *kms.Service
	calls int
}

func (r *domainRotator) Rotate(ctx context.Context, c kms.Caller, keyID string) (*rpc.RotateResult, error) {
	r.calls++
	// The workflow records its own start (and failure, see evtFlakyRotator).
	if err := r.kms.RecordRotationStarted(ctx, c, keyID); err != nil {
		return nil, err
	}
	next, err := r.kms.NextVersion(ctx, c, keyID)
	if err != nil {
		return nil, err
	}
	if _, err := r.kms.CreateVersion(ctx, c, kms.CreateVersionParams{KeyID: keyID, Version: next}); err != nil {
		return nil, err
	}
	res, err := r.kms.SetPrimaryVersion(ctx, c, kms.SetPrimaryParams{KeyID: keyID, Version: next})
	if err != nil {
		return nil, err
	}
	return &rpc.RotateResult{KeyID: keyID, PreviousVersion: res.PreviousPrimary, NewVersion: next, WorkflowID: "test-rotate-" + keyID}, nil
}

func TestRotate(t *testing.T) {
	b := testbed.New(t)
	rot := &domainRotator{kms: b.KMS}
	b.StartRPC(rot)
	ctx := t.Context()
	alice := b.Client("alpha", "alice")
	k := createKey(t, alice, "app")
	ec := map[string]string{"a": "b"}
	old := encrypt(t, alice, "app", []byte("before"), ec)
	oldDK, err := alice.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: "app"})
	if err != nil {
		t.Fatal(err)
	}

	r, err := alice.RotateKey(ctx, "alias/app")
	if err != nil {
		t.Fatal(err)
	}
	if r.KeyID != k.KeyID || r.PreviousVersion != 1 || r.NewVersion != 2 || r.WorkflowID == "" {
		t.Errorf("RotateKey = %+v", r)
	}
	d, err := alice.DescribeKey(ctx, k.KeyID)
	if err != nil {
		t.Fatal(err)
	}
	if d.PrimaryVersion != 2 || len(d.Versions) != 2 || d.Versions[1].Version != 2 || d.Versions[1].State != "ACTIVE" || d.LastRotationDate == nil {
		t.Errorf("after rotation: %+v", d)
	}

	// New ciphertexts carry version 2 (the cache was invalidated).
	nw := encrypt(t, alice, k.KeyID, []byte("after"), ec)
	if nw.KeyVersion != 2 {
		t.Errorf("encrypt after rotation used v%d", nw.KeyVersion)
	}
	if _, v, _ := kms.EnvelopeKeyID(nw.CiphertextBlob); v != 2 {
		t.Errorf("header of new ciphertext says v%d", v)
	}
	// Old ones still decrypt, reporting their own version.
	dec, err := alice.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: old.CiphertextBlob, EncryptionContext: ec})
	if err != nil || string(dec.Plaintext) != "before" || dec.KeyVersion != 1 {
		t.Errorf("old ciphertext: %q v%d, %v", dec.Plaintext, dec.KeyVersion, err)
	}
	if dec, err := alice.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: oldDK.CiphertextBlob}); err != nil || !bytes.Equal(dec.Plaintext, oldDK.Plaintext) {
		t.Errorf("old data key: %v", err)
	}
	dec, err = alice.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: nw.CiphertextBlob, EncryptionContext: ec})
	if err != nil || string(dec.Plaintext) != "after" || dec.KeyVersion != 2 {
		t.Errorf("new ciphertext: %q v%d, %v", dec.Plaintext, dec.KeyVersion, err)
	}
	// A version-2 ciphertext relabelled as version 1 fails like any other.
	relabel := bytes.Clone(nw.CiphertextBlob)
	relabel[3+36+3] = 1
	_, err = alice.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: relabel, EncryptionContext: ec})
	wantErr(t, err, kms.CodeInvalidCiphertext)

	// Rotating again gives v3; an unknown key is refused before the
	// rotator runs.
	if r, err := alice.RotateKey(ctx, k.KeyID); err != nil || r.NewVersion != 3 || r.PreviousVersion != 2 {
		t.Errorf("second rotation: %+v, %v", r, err)
	}
	calls := rot.calls
	_, err = alice.RotateKey(ctx, uuid.NewString())
	wantErr(t, err, kms.CodeNotFound)
	if rot.calls != calls {
		t.Error("the rotator ran for an unknown key")
	}
	// Beta cannot rotate alpha's key.
	_, err = b.Client("beta", "bob").RotateKey(ctx, k.KeyID)
	wantErr(t, err, kms.CodeNotFound)
	if rot.calls != calls {
		t.Error("the rotator ran for another tenant's key")
	}

	var started, rotated int
	for _, e := range b.Events("alpha") {
		switch e.Type {
		case events.TypeKeyRotationStart:
			if e.Outcome == events.OutcomeSuccess {
				started++
			}
		case events.TypeKeyRotated:
			rotated++
			if e.Principal != "alice" || e.Subject != k.Arn {
				t.Errorf("rotated event: principal=%q subject=%q", e.Principal, e.Subject)
			}
		}
	}
	if started != 2 || rotated != 2 {
		t.Errorf("%d rotation-started and %d rotated events, want 2 and 2", started, rotated)
	}
}

// ---------------------------------------------------------------------------
// audit tail

func TestAuditTail(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	ctx := t.Context()
	alice := b.Client("alpha", "alice")
	bob := b.Client("beta", "bob")
	// Interleave both tenants' activity.
	ak := createKey(t, alice, "a")
	bk := createKey(t, bob, "b")
	for i := range 3 {
		encrypt(t, alice, ak.KeyID, fmt.Appendf(nil, "a%d", i), nil)
		encrypt(t, bob, bk.KeyID, fmt.Appendf(nil, "b%d", i), nil)
	}
	_, err := alice.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: []byte("junk")})
	wantErr(t, err, kms.CodeInvalidCiphertext)

	type ev struct {
		Type, Tenant, Principal, Outcome, Subject string
	}
	decode := func(t *testing.T, raw json.RawMessage) ev {
		t.Helper()
		var e ev
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatalf("event is not JSON: %v", err)
		}
		return e
	}

	// A tail is itself audited, after the read, naming what it returned
	// (the next page starts with that record).
	all, err := alice.AuditTail(ctx, api.AuditTailRequest{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	wantTypes := []string{events.TypeKeyCreated, events.TypeEncrypt, events.TypeEncrypt, events.TypeEncrypt, events.TypeDecrypt}
	if len(all.Events) != len(wantTypes) {
		t.Fatalf("tail returned %d events, want %d", len(all.Events), len(wantTypes))
	}
	for i, se := range all.Events {
		e := decode(t, se.Event)
		if e.Tenant != "alpha" || e.Principal != "alice" {
			t.Errorf("event %d belongs to %s/%s", i, e.Tenant, e.Principal)
		}
		if e.Type != wantTypes[i] {
			t.Errorf("event %d is %s, want %s", i, e.Type, wantTypes[i])
		}
	}
	if e := decode(t, all.Events[4].Event); e.Outcome != events.OutcomeFailure {
		t.Errorf("failed decrypt recorded as %s", e.Outcome)
	}
	// The same as the testbed reads directly from the stream, followed by
	// the record of the read, which names what it returned.
	direct := b.Events("alpha")
	if len(direct) != len(all.Events)+1 {
		t.Fatalf("stream has %d alpha events, tail %d (+1 read record)", len(direct), len(all.Events))
	}
	for i := range all.Events {
		if !bytes.Equal(direct[i].Raw, all.Events[i].Event) {
			t.Errorf("event %d differs between the tail and the stream", i)
		}
	}
	read := direct[len(direct)-1]
	if read.Type != events.TypeAuditRead || read.Data["events"] != float64(len(all.Events)) ||
		read.Data["firstEventId"] != direct[0].ID || read.Data["lastEventId"] != direct[len(all.Events)-1].ID {
		t.Errorf("the read record does not name the range returned: %s", read.Raw)
	}
	// No global position is on the wire.
	if raw, _ := json.Marshal(all); bytes.Contains(raw, []byte(`"seq"`)) || bytes.Contains(raw, []byte(`lastSeq`)) {
		t.Errorf("the tail reply carries a stream sequence: %s", raw)
	}

	t.Run("paging", func(t *testing.T) {
		// Every page that returns events, later pages included, leaves
		// one record naming its range.
		readsBefore := len(b.EventsOfType("alpha", events.TypeAuditRead))
		var got []api.AuditEvent
		after := all.Events[0].Cursor
		got = append(got, all.Events[0])
		pages := 0
		for len(got) < len(all.Events) {
			page, err := alice.AuditTail(ctx, api.AuditTailRequest{After: after, Limit: 2, WaitMillis: 50})
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Events) == 0 || len(page.Events) > 2 {
				t.Fatalf("page of %d events with limit 2", len(page.Events))
			}
			pages++
			got = append(got, page.Events...)
			after = page.Next
		}
		for i := range all.Events {
			if !bytes.Equal(got[i].Event, all.Events[i].Event) {
				t.Errorf("page event %d differs", i)
			}
		}
		if n := len(b.EventsOfType("alpha", events.TypeAuditRead)) - readsBefore; n != pages {
			t.Errorf("%d pages recorded %d reads, want one each", pages, n)
		}
	})

	t.Run("cursors-are-bound-to-the-tenant", func(t *testing.T) {
		// Beta replaying alpha's cursor is refused: a cursor neither
		// reveals nor moves to a position in another tenant's trail.
		_, err := bob.AuditTail(ctx, api.AuditTailRequest{After: all.Events[0].Cursor, Limit: 1000, WaitMillis: 50})
		wantErr(t, err, kms.CodeValidation)
		forged := all.Events[0].Cursor[:len(all.Events[0].Cursor)-2] + "AA"
		_, err = alice.AuditTail(ctx, api.AuditTailRequest{After: forged, Limit: 1})
		wantErr(t, err, kms.CodeValidation)
		page, err := bob.AuditTail(ctx, api.AuditTailRequest{Limit: 1000, WaitMillis: 50})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Events) == 0 {
			t.Fatal("beta's tail is empty")
		}
		for _, se := range page.Events {
			if e := decode(t, se.Event); e.Tenant != "beta" {
				t.Errorf("beta's tail has an event of %s/%s", e.Tenant, e.Principal)
			}
		}
	})

	t.Run("follow", func(t *testing.T) {
		// A long poll wakes up for an event stored while it waits. Start
		// at the end of the trail (after the reads recorded so far).
		end := ""
		for {
			r, err := alice.AuditTail(ctx, api.AuditTailRequest{After: end})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Events) == 0 {
				break
			}
			end = r.Next
		}
		before := endpointRequests(t, b, "keyflow-audit", "tail")
		// The server caps waits at 10 s. A tail that only returned at the
		// end of its wait would come back empty, so getting the event back
		// proves the long poll woke for it.
		const wait = 10 * time.Second
		type result struct {
			page *api.AuditTailReply
			err  error
		}
		done := make(chan result, 1)
		go func() {
			page, err := alice.AuditTail(ctx, api.AuditTailRequest{After: end, Limit: 10, WaitMillis: int(wait / time.Millisecond)})
			done <- result{page, err}
		}()
		waitForRequests(t, b, "keyflow-audit", "tail", before+1)
		encrypt(t, alice, ak.KeyID, []byte("wake"), nil)
		var r result
		select {
		case r = <-done:
		case <-time.After(wait + 10*time.Second):
			t.Fatal("follow did not return")
		}
		if r.err != nil {
			t.Fatal(r.err)
		}
		if len(r.page.Events) != 1 {
			t.Fatalf("follow returned %d events, want 1", len(r.page.Events))
		}
		if e := decode(t, r.page.Events[0].Event); e.Type != events.TypeEncrypt {
			t.Errorf("follow returned %s", e.Type)
		}
	})
}
