package xks_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/schemas"
	"github.com/keyflow/keyflow/workers/xks"
)

func TestMain(m *testing.M) { pkcs11test.Main(m) }

const (
	prefix    = "/keystores/ks1"
	apiBase   = prefix + "/kms/xks/v1"
	extKey    = "xks-demo"
	principal = "arn:aws:iam::111122223333:role/app"
	kmsKeyARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
)

// fixture is one proxy over a real testbed (SoftHSM, NATS, audit stream)
// behind an httptest TLS server, on a clock the test controls.
type fixture struct {
	bed   *testbed.Bed
	srv   *xks.Server
	ts    *httptest.Server
	cfg   *xks.Config
	keyID string
	cred  xks.Credential
	cred2 xks.Credential

	mu  sync.Mutex
	now time.Time
}

func (f *fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func newCred(t testing.TB) xks.Credential {
	t.Helper()
	c, err := xks.NewCredential()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newFixture(t testing.TB, edit func(*xks.Config)) *fixture {
	t.Helper()
	bed := testbed.New(t)
	f := &fixture{bed: bed, now: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC), cred: newCred(t), cred2: newCred(t)}
	k, err := bed.KMS.CreateKey(t.Context(), kms.Caller{Tenant: "alpha", Principal: "admin"}, kms.CreateKeyParams{Alias: "xks-demo"})
	if err != nil {
		t.Fatal(err)
	}
	f.keyID = k.ID
	f.cfg = &xks.Config{
		RequestTimeout: xks.Duration(30 * time.Second), // a loaded test machine is not AWS's 250ms
		KeyStores: []xks.KeyStore{{
			URIPrefix: prefix, Tenant: "alpha", Credentials: []xks.Credential{f.cred, f.cred2},
			Keys: map[string]xks.Key{extKey: {KeyRef: "alias/xks-demo"}, "by-id": {KeyRef: k.ID}},
		}},
	}
	if edit != nil {
		edit(f.cfg)
	}
	f.srv, err = xks.New(xks.Options{
		KMS: bed.KMS, Config: f.cfg, Now: f.clock,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.ts = httptest.NewTLSServer(f.srv)
	t.Cleanup(f.ts.Close)
	return f
}

// signed builds a request signed by the real AWS SDK signer.
func (f *fixture) signed(t testing.TB, cred xks.Credential, path string, body []byte, service, region string, at time.Time) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.ts.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	sum := sha256.Sum256(body)
	err = v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: cred.AccessKeyID, SecretAccessKey: cred.SecretAccessKey},
		req, hex.EncodeToString(sum[:]), service, region, at)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

type response struct {
	status int
	body   map[string]any
	raw    []byte
}

func (r response) str(k string) string { s, _ := r.body[k].(string); return s }

func (r response) bytes(t testing.TB, k string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(r.str(k))
	if err != nil {
		t.Fatalf("%s is not Base64: %v", k, err)
	}
	return b
}

func (f *fixture) do(t testing.TB, req *http.Request) response {
	t.Helper()
	res, err := f.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := response{status: res.StatusCode, raw: raw}
	_ = json.Unmarshal(raw, &out.body)
	return out
}

// call signs body with the first credential at the fixture's time.
func (f *fixture) call(t testing.TB, path string, body any) response {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return f.do(t, f.signed(t, f.cred, path, b, "kms-xks-proxy", "us-east-1", f.clock()))
}

func meta(op, reqID string) map[string]any {
	return map[string]any{"awsPrincipalArn": principal, "kmsKeyArn": kmsKeyARN, "kmsOperation": op, "kmsRequestId": reqID}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func encryptBody(pt, aad []byte, cdiv bool) map[string]any {
	body := map[string]any{"requestMetadata": meta("Encrypt", "req-enc"), "plaintext": b64(pt), "encryptionAlgorithm": "AES_GCM"}
	if aad != nil {
		body["additionalAuthenticatedData"] = b64(aad)
	}
	if cdiv {
		body["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256"
	}
	return body
}

// encrypted is an Encrypt response, decoded.
type encrypted struct{ ct, meta, iv, tag, cdiv []byte }

func (f *fixture) encrypt(t testing.TB, key string, pt, aad []byte) encrypted {
	t.Helper()
	r := f.call(t, apiBase+"/keys/"+key+"/encrypt", encryptBody(pt, aad, true))
	if r.status != http.StatusOK {
		t.Fatalf("encrypt: %d %s", r.status, r.raw)
	}
	return encrypted{r.bytes(t, "ciphertext"), r.bytes(t, "ciphertextMetadata"), r.bytes(t, "initializationVector"), r.bytes(t, "authenticationTag"), r.bytes(t, "ciphertextDataIntegrityValue")}
}

func decryptBody(e encrypted, aad []byte) map[string]any {
	body := map[string]any{
		"requestMetadata": meta("Decrypt", "req-dec"), "encryptionAlgorithm": "AES_GCM",
		"ciphertext": b64(e.ct), "initializationVector": b64(e.iv), "authenticationTag": b64(e.tag),
	}
	if e.meta != nil {
		body["ciphertextMetadata"] = b64(e.meta)
	}
	if aad != nil {
		body["additionalAuthenticatedData"] = b64(aad)
	}
	return body
}

func wantError(t *testing.T, r response, status int, name string) {
	t.Helper()
	if r.status != status || r.str("errorName") != name {
		t.Fatalf("got %d %s, want %d %s", r.status, r.raw, status, name)
	}
	if msg := r.str("errorMessage"); len(msg) >= 512 {
		t.Fatalf("errorMessage is %d characters; the spec wants fewer than 512", len(msg))
	}
}

// TestRoundTrip runs the whole flow AWS KMS runs: GetKeyMetadata (as for
// CreateKey), Encrypt with AAD and an integrity value, Decrypt, health;
// and checks the audit trail names the AWS caller and never the plaintext.
func TestRoundTrip(t *testing.T) {
	f := newFixture(t, nil)
	r := f.call(t, apiBase+"/keys/"+extKey+"/metadata", map[string]any{"requestMetadata": map[string]any{"awsPrincipalArn": principal, "kmsOperation": "CreateKey", "kmsRequestId": "req-meta"}})
	if r.status != http.StatusOK || r.str("keySpec") != "AES_256" || r.str("keyStatus") != "ENABLED" || string(mustJSON(t, r.body["keyUsage"])) != `["ENCRYPT","DECRYPT"]` {
		t.Fatalf("metadata: %d %s", r.status, r.raw)
	}

	pt := []byte("a data key that AWS KMS wraps under the external key")
	aad := []byte("aws kms ciphertext blob header and encryption context")
	e := f.encrypt(t, extKey, pt, aad)
	if len(e.ct) != len(pt) || len(e.iv) != 12 || len(e.tag) != 16 || len(e.meta) != 5 {
		t.Fatalf("encrypt shapes: ct %d iv %d tag %d meta %d", len(e.ct), len(e.iv), len(e.tag), len(e.meta))
	}
	// Appendix C, computed here independently.
	h := sha256.New()
	for _, b := range [][]byte{aad, e.meta, e.iv, e.ct, e.tag} {
		h.Write(b)
	}
	if !bytes.Equal(h.Sum(nil), e.cdiv) {
		t.Fatal("ciphertextDataIntegrityValue is not SHA-256(AAD || metadata || IV || ciphertext || tag)")
	}
	r = f.call(t, apiBase+"/keys/"+extKey+"/decrypt", decryptBody(e, aad))
	if r.status != http.StatusOK || !bytes.Equal(r.bytes(t, "plaintext"), pt) {
		t.Fatalf("decrypt: %d %s", r.status, r.raw)
	}
	// The same key through its key ID mapping.
	r = f.call(t, apiBase+"/keys/by-id/decrypt", decryptBody(e, aad))
	if r.status != http.StatusOK {
		t.Fatalf("decrypt by key ID: %d %s", r.status, r.raw)
	}
	// Without an integrity value asked for, none is returned.
	r = f.call(t, apiBase+"/keys/"+extKey+"/encrypt", encryptBody(pt, nil, false))
	if _, ok := r.body["ciphertextDataIntegrityValue"]; r.status != http.StatusOK || ok {
		t.Fatalf("encrypt without CDIV: %d %s", r.status, r.raw)
	}

	r = f.call(t, apiBase+"/health", map[string]any{"requestMetadata": map[string]any{"kmsOperation": "KmsHealthCheck", "kmsRequestId": "req-health"}})
	details, _ := r.body["ekmFleetDetails"].([]any)
	if r.status != http.StatusOK || r.body["xksProxyFleetSize"] != float64(1) || len(details) != 1 || details[0].(map[string]any)["healthStatus"] != "ACTIVE" {
		t.Fatalf("health: %d %s", r.status, r.raw)
	}

	subject := kms.ResourceName("alpha", f.keyID)
	enc := f.bed.EventsOfType("alpha", events.TypeXKSEncrypt)
	if len(enc) != 2 {
		t.Fatalf("%d encrypt events, want 2", len(enc))
	}
	ev := enc[0]
	if ev.Subject != subject || ev.Outcome != events.OutcomeSuccess || ev.RequestID != "req-enc" || ev.Principal != "xks:"+f.cred.AccessKeyID ||
		ev.Data["awsPrincipalArn"] != principal || ev.Data["kmsOperation"] != "Encrypt" || ev.Data["kmsKeyArn"] != kmsKeyARN ||
		ev.Data["externalKeyId"] != extKey || ev.Data["keyStore"] != prefix || ev.Data["plaintextBytes"] != float64(len(pt)) || ev.Data["keyVersion"] != float64(1) {
		t.Fatalf("encrypt event: %s", ev.Raw)
	}
	if n := len(f.bed.EventsOfType("alpha", events.TypeXKSDecrypt)); n != 2 {
		t.Fatalf("%d decrypt events, want 2", n)
	}
	if m := f.bed.EventsOfType("alpha", events.TypeXKSMetadata); len(m) != 1 || m[0].Data["keyStatus"] != "ENABLED" || m[0].RequestID != "req-meta" {
		t.Fatalf("metadata events: %v", m)
	}
	if hs := f.bed.EventsOfType("alpha", events.TypeXKSHealth); len(hs) != 1 || hs[0].Data["healthStatus"] != "ACTIVE" || hs[0].Subject != "" {
		t.Fatalf("health events: %v", hs)
	}
	for _, ev := range f.bed.Events("alpha") {
		for _, secret := range [][]byte{pt, []byte(b64(pt)), aad, []byte(b64(aad))} {
			if bytes.Contains(ev.Raw, secret) {
				t.Fatalf("an audit event carries the plaintext or AAD: %s", ev.Raw)
			}
		}
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSigV4 checks authentication against requests signed by the real AWS
// SDK signer.
func TestSigV4(t *testing.T) {
	f := newFixture(t, nil)
	body := mustJSON(t, map[string]any{"requestMetadata": map[string]any{"kmsOperation": "KmsHealthCheck", "kmsRequestId": "r"}})
	path := apiBase + "/health"
	now := f.clock()
	wrongSecret := f.cred
	wrongSecret.SecretAccessKey = f.cred2.SecretAccessKey
	unknown := newCred(t)
	other := newCred(t)
	cases := []struct {
		name string
		req  func() *http.Request
		ok   bool
	}{
		{"valid", func() *http.Request { return f.signed(t, f.cred, path, body, "kms-xks-proxy", "us-east-1", now) }, true},
		{"second credential", func() *http.Request { return f.signed(t, f.cred2, path, body, "kms-xks-proxy", "eu-west-1", now) }, true},
		{"4 minutes skew", func() *http.Request {
			return f.signed(t, f.cred, path, body, "kms-xks-proxy", "us-east-1", now.Add(-4*time.Minute))
		}, true},
		{"wrong secret", func() *http.Request { return f.signed(t, wrongSecret, path, body, "kms-xks-proxy", "us-east-1", now) }, false},
		{"unknown access key", func() *http.Request { return f.signed(t, unknown, path, body, "kms-xks-proxy", "us-east-1", now) }, false},
		{"expired", func() *http.Request {
			return f.signed(t, f.cred, path, body, "kms-xks-proxy", "us-east-1", now.Add(-6*time.Minute))
		}, false},
		{"from the future", func() *http.Request {
			return f.signed(t, f.cred, path, body, "kms-xks-proxy", "us-east-1", now.Add(6*time.Minute))
		}, false},
		{"wrong service", func() *http.Request { return f.signed(t, f.cred, path, body, "kms", "us-east-1", now) }, false},
		{"region changed after signing", func() *http.Request {
			r := f.signed(t, f.cred, path, body, "kms-xks-proxy", "us-east-1", now)
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/us-east-1/", "/us-west-2/", 1))
			return r
		}, false},
		{"body changed after signing", func() *http.Request {
			r := f.signed(t, f.cred, path, body, "kms-xks-proxy", "us-east-1", now)
			changed := bytes.Replace(body, []byte(`"r"`), []byte(`"s"`), 1)
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(changed)), int64(len(changed))
			return r
		}, false},
		{"path of another key store", func() *http.Request {
			r := f.signed(t, f.cred, "/keystores/ks2/kms/xks/v1/health", body, "kms-xks-proxy", "us-east-1", now)
			r.URL.Path = path
			return r
		}, false},
		{"no Authorization", func() *http.Request {
			r := f.signed(t, f.cred, path, body, "kms-xks-proxy", "us-east-1", now)
			r.Header.Del("Authorization")
			return r
		}, false},
		{"credential of nobody", func() *http.Request { return f.signed(t, other, path, body, "kms-xks-proxy", "us-east-1", now) }, false},
	}
	failures := 0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := f.do(t, c.req())
			if c.ok {
				if r.status != http.StatusOK {
					t.Fatalf("got %d %s, want 200", r.status, r.raw)
				}
				return
			}
			failures++
			wantError(t, r, http.StatusUnauthorized, "AuthenticationFailedException")
		})
	}
	rej := f.bed.EventsOfType("alpha", events.TypeXKSRejected)
	if len(rej) != failures {
		t.Fatalf("%d rejected events, want %d", len(rej), failures)
	}
	for _, ev := range rej {
		if ev.ErrorCode != "AuthenticationFailedException" || ev.Outcome != events.OutcomeFailure || ev.Data["operation"] != "health" {
			t.Fatalf("rejected event: %s", ev.Raw)
		}
		if bytes.Contains(ev.Raw, []byte(f.cred.SecretAccessKey)) || bytes.Contains(ev.Raw, []byte(f.cred2.SecretAccessKey)) {
			t.Fatalf("a secret in the audit trail: %s", ev.Raw)
		}
	}
}

// TestCredentialRotation follows the spec's rotation steps on a running
// proxy: add a pair, both work; remove the old one, it stops working.
func TestCredentialRotation(t *testing.T) {
	f := newFixture(t, func(c *xks.Config) { c.KeyStores[0].Credentials = c.KeyStores[0].Credentials[:1] })
	body := map[string]any{"requestMetadata": map[string]any{"kmsOperation": "KmsHealthCheck", "kmsRequestId": "r"}}
	path := apiBase + "/health"
	callWith := func(c xks.Credential) int {
		return f.do(t, f.signed(t, c, path, mustJSON(t, body), "kms-xks-proxy", "us-east-1", f.clock())).status
	}
	if got := callWith(f.cred2); got != http.StatusUnauthorized {
		t.Fatalf("new credential before it was added: %d", got)
	}
	next := *f.cfg
	next.KeyStores = []xks.KeyStore{f.cfg.KeyStores[0]}
	next.KeyStores[0].Credentials = []xks.Credential{f.cred, f.cred2}
	if err := f.srv.SetConfig(&next); err != nil {
		t.Fatal(err)
	}
	if a, b := callWith(f.cred), callWith(f.cred2); a != http.StatusOK || b != http.StatusOK {
		t.Fatalf("while rotating: old %d new %d", a, b)
	}
	final := next
	final.KeyStores = []xks.KeyStore{next.KeyStores[0]}
	final.KeyStores[0].Credentials = []xks.Credential{f.cred2}
	if err := f.srv.SetConfig(&final); err != nil {
		t.Fatal(err)
	}
	if a, b := callWith(f.cred), callWith(f.cred2); a != http.StatusUnauthorized || b != http.StatusOK {
		t.Fatalf("after rotating: old %d new %d", a, b)
	}
	three := final
	three.KeyStores = []xks.KeyStore{final.KeyStores[0]}
	three.KeyStores[0].Credentials = []xks.Credential{f.cred, f.cred2, newCred(t)}
	if err := f.srv.SetConfig(&three); err == nil {
		t.Fatal("three credential pairs were accepted")
	}
}

// TestGETIs405: the spec's MUST for every API URI.
func TestGETIs405(t *testing.T) {
	f := newFixture(t, nil)
	for _, p := range []string{"/keys/" + extKey + "/metadata", "/keys/" + extKey + "/encrypt", "/keys/" + extKey + "/decrypt", "/health"} {
		res, err := f.ts.Client().Get(f.ts.URL + apiBase + p)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != http.MethodPost {
			t.Errorf("GET %s: %d (Allow %q), want 405", p, res.StatusCode, res.Header.Get("Allow"))
		}
	}
	res, err := f.ts.Client().Get(f.ts.URL + "/ping")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("GET /ping (load balancer check): %d", res.StatusCode)
	}
}

// setState changes a key's state in the store, as a lifecycle operation
// would, and drops the cached copy as the KV watch does.
func setState(t *testing.T, f *fixture, s kms.KeyState) {
	t.Helper()
	k, rev, err := f.bed.Store.GetKey(t.Context(), "alpha", f.keyID)
	if err != nil {
		t.Fatal(err)
	}
	k.State = s
	if _, err := f.bed.Store.UpdateKey(t.Context(), k, rev); err != nil {
		t.Fatal(err)
	}
	f.bed.KMS.Invalidate("alpha", f.keyID)
}

// TestKeyStatus maps keyflow states onto keyStatus: only ACTIVE is
// ENABLED; a SUSPENDED key refuses Encrypt but opens what it made.
func TestKeyStatus(t *testing.T) {
	f := newFixture(t, nil)
	e := f.encrypt(t, extKey, []byte("before suspension"), nil)
	setState(t, f, kms.StateSuspended)
	r := f.call(t, apiBase+"/keys/"+extKey+"/metadata", map[string]any{"requestMetadata": meta("DescribeKey", "r")})
	if r.status != http.StatusOK || r.str("keyStatus") != "DISABLED" {
		t.Fatalf("metadata of a suspended key: %d %s", r.status, r.raw)
	}
	wantError(t, f.call(t, apiBase+"/keys/"+extKey+"/encrypt", encryptBody([]byte("x"), nil, false)), http.StatusBadRequest, "InvalidStateException")
	if r := f.call(t, apiBase+"/keys/"+extKey+"/decrypt", decryptBody(e, nil)); r.status != http.StatusOK {
		t.Fatalf("decrypt under a suspended key: %d %s", r.status, r.raw)
	}
	setState(t, f, kms.StateCompromised)
	wantError(t, f.call(t, apiBase+"/keys/"+extKey+"/decrypt", decryptBody(e, nil)), http.StatusBadRequest, "InvalidStateException")
	for _, s := range []kms.KeyState{kms.StateActive, kms.StatePreActive, kms.StateDeactivated, kms.StateDestroyed} {
		want := "DISABLED"
		if s == kms.StateActive {
			want = "ENABLED"
		}
		if got := kms.XKSKeyStatus(s); got != want {
			t.Errorf("XKSKeyStatus(%s) = %s, want %s", s, got, want)
		}
	}
}

// TestCiphertextMetadataCarriesVersion: after a rotation Encrypt uses the
// new version and says so in ciphertextMetadata; old ciphertexts still
// open, and a metadata naming another version fails.
func TestCiphertextMetadataCarriesVersion(t *testing.T) {
	f := newFixture(t, nil)
	ctx := t.Context()
	admin := kms.Caller{Tenant: "alpha", Principal: "admin"}
	old := f.encrypt(t, extKey, []byte("under version 1"), []byte("aad"))
	if _, err := f.bed.KMS.CreateVersion(ctx, admin, kms.CreateVersionParams{KeyID: f.keyID, Version: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.bed.KMS.SetPrimaryVersion(ctx, admin, kms.SetPrimaryParams{KeyID: f.keyID, Version: 2}); err != nil {
		t.Fatal(err)
	}
	f.bed.KMS.Invalidate("alpha", f.keyID)
	cur := f.encrypt(t, extKey, []byte("under version 2"), []byte("aad"))
	if v1, v2 := binary.BigEndian.Uint32(old.meta[1:]), binary.BigEndian.Uint32(cur.meta[1:]); v1 != 1 || v2 != 2 {
		t.Fatalf("ciphertextMetadata versions %d, %d; want 1, 2", v1, v2)
	}
	for _, e := range []encrypted{old, cur} {
		if r := f.call(t, apiBase+"/keys/"+extKey+"/decrypt", decryptBody(e, []byte("aad"))); r.status != http.StatusOK {
			t.Fatalf("decrypt: %d %s", r.status, r.raw)
		}
	}
	swapped := old
	swapped.meta = cur.meta
	wantError(t, f.call(t, apiBase+"/keys/"+extKey+"/decrypt", decryptBody(swapped, []byte("aad"))), http.StatusBadRequest, "InvalidCiphertextException")
}

// importKnownKey stores a keyflow key whose AES-256 material the test
// knows: imported into the HSM, wrapped under the root key and stored
// exactly as CreateKey stores a generated one. Only a test can do this.
func importKnownKey(t *testing.T, f *fixture, raw []byte) string {
	t.Helper()
	ctx := t.Context()
	root, err := f.bed.HSM.EnsureRootKey(ctx, "keyflow-root")
	if err != nil {
		t.Fatal(err)
	}
	h, err := f.bed.HSM.ImportAESKeyForTesting(ctx, raw, true)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := f.bed.HSM.WrapKey(ctx, root, h)
	if err != nil {
		t.Fatal(err)
	}
	_ = f.bed.HSM.DestroyKey(ctx, h)
	id := "0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b"
	if err := f.bed.Store.PutMaterial(ctx, &kms.VersionMaterial{Tenant: "alpha", KeyID: id, Version: 1, Algorithm: kms.AlgAES256GCM, Wrapped: blob, WrappedBy: "keyflow-root"}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if _, err := f.bed.Store.CreateKey(ctx, &kms.Key{ID: id, Tenant: "alpha", Spec: kms.SpecSymmetricDefault, Usage: kms.UsageEncryptDecrypt, State: kms.StateActive,
		CreatedAt: now, PrimaryVersion: 1, Versions: []kms.Version{{Number: 1, State: kms.StateActive, Algorithm: kms.AlgAES256GCM, CreatedAt: now}}}); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestInteropWithGoGCM: a ciphertext sealed outside keyflow by Go's
// AES-GCM, under the same key, with the spec's AAD construction (2-byte
// AAD length, AAD, 1-byte metadata length, metadata), opens through the
// proxy, with a 12-byte and with a 16-byte IV; and keyflow's own
// ciphertexts open in Go. This pins the AAD construction to the spec.
func TestInteropWithGoGCM(t *testing.T) {
	f := newFixture(t, nil)
	raw := bytes.Repeat([]byte{0x42}, 32)
	id := importKnownKey(t, f, raw)
	next := *f.cfg
	next.KeyStores = []xks.KeyStore{f.cfg.KeyStores[0]}
	next.KeyStores[0].Keys = map[string]xks.Key{"known": {KeyRef: id}}
	if err := f.srv.SetConfig(&next); err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(raw)
	aad, md := []byte("project=nile,department=marketing"), []byte{0x01, 0, 0, 0, 1}
	full := binary.BigEndian.AppendUint16(nil, uint16(len(aad)))
	full = append(append(append(full, aad...), byte(len(md))), md...)
	pt := []byte("Hello World!")
	for _, n := range []int{12, 16} {
		gcm, err := cipher.NewGCMWithNonceSize(block, n)
		if err != nil {
			t.Fatal(err)
		}
		iv := bytes.Repeat([]byte{byte(n)}, n)
		sealed := gcm.Seal(nil, iv, pt, full)
		e := encrypted{ct: sealed[:len(pt)], tag: sealed[len(pt):], iv: iv, meta: md}
		r := f.call(t, apiBase+"/keys/known/decrypt", decryptBody(e, aad))
		if r.status != http.StatusOK || !bytes.Equal(r.bytes(t, "plaintext"), pt) {
			t.Fatalf("%d-byte IV: %d %s", n, r.status, r.raw)
		}
		e.tag = bytes.Clone(e.tag)
		e.tag[0] ^= 1
		wantError(t, f.call(t, apiBase+"/keys/known/decrypt", decryptBody(e, aad)), http.StatusBadRequest, "InvalidCiphertextException")
	}
	e := f.encrypt(t, "known", pt, aad)
	gcm, _ := cipher.NewGCM(block)
	full = binary.BigEndian.AppendUint16(nil, uint16(len(aad)))
	full = append(append(append(full, aad...), byte(len(e.meta))), e.meta...)
	got, err := gcm.Open(nil, e.iv, append(bytes.Clone(e.ct), e.tag...), full)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("keyflow's ciphertext does not open in Go: %v", err)
	}
}

// TestEveryXKSEventValidates makes every io.keyflow.xks.* event happen for
// real, successes and refusals, and checks each stored CloudEvent against
// its schema.
func TestEveryXKSEventValidates(t *testing.T) {
	f := newFixture(t, func(c *xks.Config) {
		c.KeyStores[0].Keys["guarded"] = xks.Key{KeyRef: "alias/xks-demo", XKSPolicy: kms.XKSPolicy{AllowedPrincipals: []string{"arn:aws:iam::999999999999:root"}}}
	})
	e := f.encrypt(t, extKey, []byte("x"), []byte("aad"))
	f.call(t, apiBase+"/keys/"+extKey+"/decrypt", decryptBody(e, []byte("aad")))
	f.call(t, apiBase+"/keys/"+extKey+"/decrypt", decryptBody(e, nil))
	f.call(t, apiBase+"/keys/"+extKey+"/metadata", map[string]any{"requestMetadata": meta("DescribeKey", "r")})
	f.call(t, apiBase+"/keys/guarded/metadata", map[string]any{"requestMetadata": meta("DescribeKey", "r")})
	f.call(t, apiBase+"/health", map[string]any{"requestMetadata": meta("KmsHealthCheck", "r")})
	f.call(t, apiBase+"/keys/"+extKey+"/encrypt", "not json")
	f.call(t, "/nope/kms/xks/v1/health", map[string]any{})
	f.do(t, f.signed(t, newCred(t), apiBase+"/health", []byte("{}"), "kms-xks-proxy", "us-east-1", f.clock()))
	seen := map[string]int{}
	for _, tenant := range []string{"alpha", "-"} {
		for _, ev := range f.bed.Events(tenant) {
			if err := schemas.ValidateEvent(ev.Raw); err != nil {
				t.Errorf("%v\n%s", err, ev.Raw)
			}
			seen[ev.Type]++
		}
	}
	for _, typ := range events.Types {
		if strings.HasPrefix(typ, "io.keyflow.xks.") && seen[typ] == 0 {
			t.Errorf("no %s event", typ)
		}
	}
	if seen[events.TypeXKSRejected] != 3 {
		t.Errorf("%d rejected events, want 3", seen[events.TypeXKSRejected])
	}
}
