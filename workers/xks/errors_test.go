package xks_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/xks"
)

// TestSpecErrorTable drives every row of the spec's error table (name and
// HTTP code) through the proxy, and checks each refusal is on the audit
// trail with the same name.
func TestSpecErrorTable(t *testing.T) {
	f := newFixture(t, func(c *xks.Config) {
		ks := &c.KeyStores[0]
		ks.Keys["signing"] = xks.Key{KeyRef: "alias/signing"}
		ks.Keys["missing"] = xks.Key{KeyRef: "alias/does-not-exist"}
		ks.Keys["guarded"] = xks.Key{KeyRef: "alias/xks-demo", XKSPolicy: kms.XKSPolicy{AllowedPrincipals: []string{"arn:aws:iam::111122223333:role/other-*"}}}
		ks.Keys["bound"] = xks.Key{KeyRef: "alias/xks-demo", XKSPolicy: kms.XKSPolicy{AllowedKMSKeyARNs: []string{"arn:aws:kms:us-east-1:999999999999:key/*"}}}
	})
	if _, err := f.bed.KMS.CreateKey(t.Context(), kms.Caller{Tenant: "alpha", Principal: "admin"}, kms.CreateKeyParams{Alias: "signing", Spec: kms.SpecECCP256}); err != nil {
		t.Fatal(err)
	}
	pt, aad := []byte("plaintext"), []byte("aad")
	good := f.encrypt(t, extKey, pt, aad)
	keyPath := func(key, op string) string { return apiBase + "/keys/" + key + "/" + op }
	tamper := func(mut func(e *encrypted)) map[string]any {
		e := encrypted{ct: clone(good.ct), meta: clone(good.meta), iv: clone(good.iv), tag: clone(good.tag)}
		mut(&e)
		return decryptBody(e, aad)
	}
	withMeta := func(body map[string]any, m map[string]any) map[string]any { body["requestMetadata"] = m; return body }

	type row struct {
		name   string
		path   string
		body   any
		status int
		error  string
	}
	rows := []row{
		{"malformed JSON", keyPath(extKey, "encrypt"), "not an object", 400, "ValidationException"},
		{"no requestMetadata", keyPath(extKey, "encrypt"), map[string]any{"plaintext": b64(pt), "encryptionAlgorithm": "AES_GCM"}, 400, "ValidationException"},
		{"no kmsRequestId", keyPath(extKey, "encrypt"), withMeta(encryptBody(pt, nil, false), map[string]any{"awsPrincipalArn": principal, "kmsOperation": "Encrypt"}), 400, "ValidationException"},
		{"no awsPrincipalArn", keyPath(extKey, "metadata"), map[string]any{"requestMetadata": map[string]any{"kmsOperation": "CreateKey", "kmsRequestId": "r"}}, 400, "ValidationException"},
		{"wrong encryptionAlgorithm", keyPath(extKey, "encrypt"), func() any { b := encryptBody(pt, nil, false); b["encryptionAlgorithm"] = "AES_CBC"; return b }(), 400, "ValidationException"},
		{"wrong CDIV algorithm", keyPath(extKey, "encrypt"), func() any {
			b := encryptBody(pt, nil, false)
			b["ciphertextDataIntegrityValueAlgorithm"] = "MD5"
			return b
		}(), 400, "ValidationException"},
		{"no plaintext", keyPath(extKey, "encrypt"), func() any { b := encryptBody(pt, nil, false); delete(b, "plaintext"); return b }(), 400, "ValidationException"},
		{"plaintext not Base64", keyPath(extKey, "encrypt"), func() any { b := encryptBody(pt, nil, false); b["plaintext"] = "!!"; return b }(), 400, "ValidationException"},
		{"URL-safe Base64", keyPath(extKey, "decrypt"), func() any {
			b := decryptBody(good, aad)
			b["authenticationTag"] = "_-__" + b["authenticationTag"].(string)[4:]
			return b
		}(), 400, "ValidationException"},
		{"ciphertextMetadata over 20 bytes", keyPath(extKey, "decrypt"), tamper(func(e *encrypted) { e.meta = make([]byte, 21) }), 400, "ValidationException"},
		{"unknown kmsOperation is not refused", keyPath(extKey, "decrypt"), withMeta(decryptBody(good, aad), meta("BulkDecrypt", "r")), 200, ""},

		{"tampered ciphertext", keyPath(extKey, "decrypt"), tamper(func(e *encrypted) { e.ct[0] ^= 1 }), 400, "InvalidCiphertextException"},
		{"tampered tag", keyPath(extKey, "decrypt"), tamper(func(e *encrypted) { e.tag[15] ^= 1 }), 400, "InvalidCiphertextException"},
		{"tampered IV", keyPath(extKey, "decrypt"), tamper(func(e *encrypted) { e.iv[0] ^= 1 }), 400, "InvalidCiphertextException"},
		{"other AAD", keyPath(extKey, "decrypt"), func() any {
			b := tamper(func(*encrypted) {})
			b["additionalAuthenticatedData"] = b64([]byte("aae"))
			return b
		}(), 400, "InvalidCiphertextException"},
		{"AAD left out", keyPath(extKey, "decrypt"), func() any { b := tamper(func(*encrypted) {}); delete(b, "additionalAuthenticatedData"); return b }(), 400, "InvalidCiphertextException"},
		{"ciphertextMetadata left out", keyPath(extKey, "decrypt"), tamper(func(e *encrypted) { e.meta = nil }), 400, "InvalidCiphertextException"},
		{"ciphertextMetadata changed", keyPath(extKey, "decrypt"), tamper(func(e *encrypted) { e.meta[4] = 7 }), 400, "InvalidCiphertextException"},
		{"ciphertextMetadata passed as AAD", keyPath(extKey, "decrypt"), func() any {
			b := tamper(func(e *encrypted) {})
			b["additionalAuthenticatedData"] = b64(append(clone(aad), good.meta...))
			delete(b, "ciphertextMetadata")
			return b
		}(), 400, "InvalidCiphertextException"},
		{"13-byte IV", keyPath(extKey, "decrypt"), tamper(func(e *encrypted) { e.iv = append(e.iv, 0) }), 400, "InvalidCiphertextException"},
		{"16-byte IV, wrong", keyPath(extKey, "decrypt"), tamper(func(e *encrypted) { e.iv = append(e.iv, 0, 0, 0, 0) }), 400, "InvalidCiphertextException"},
		{"short tag", keyPath(extKey, "decrypt"), tamper(func(e *encrypted) { e.tag = e.tag[:12] }), 400, "InvalidCiphertextException"},
		{"no IV", keyPath(extKey, "decrypt"), func() any { b := tamper(func(*encrypted) {}); delete(b, "initializationVector"); return b }(), 400, "InvalidCiphertextException"},

		{"key that cannot encrypt", keyPath("signing", "encrypt"), encryptBody(pt, nil, false), 400, "InvalidKeyUsageException"},
		{"key that cannot decrypt", keyPath("signing", "decrypt"), decryptBody(good, aad), 400, "InvalidKeyUsageException"},

		{"principal not allowed", keyPath("guarded", "encrypt"), encryptBody(pt, nil, false), 403, "AccessDeniedException"},
		{"principal not allowed (metadata)", keyPath("guarded", "metadata"), map[string]any{"requestMetadata": meta("DescribeKey", "r")}, 403, "AccessDeniedException"},
		{"KMS key not allowed", keyPath("bound", "decrypt"), decryptBody(good, aad), 403, "AccessDeniedException"},
		{"KMS key not yet known (CreateKey)", keyPath("bound", "metadata"), map[string]any{"requestMetadata": map[string]any{"awsPrincipalArn": principal, "kmsOperation": "CreateKey", "kmsRequestId": "r"}}, 200, ""},

		{"external key not configured", keyPath("nope", "encrypt"), encryptBody(pt, nil, false), 404, "KeyNotFoundException"},
		{"keyflow key does not exist", keyPath("missing", "metadata"), map[string]any{"requestMetadata": meta("DescribeKey", "r")}, 404, "KeyNotFoundException"},
		{"unknown operation", apiBase + "/keys/" + extKey + "/sign", encryptBody(pt, nil, false), 404, "InvalidUriPathException"},
		{"unknown key store", "/keystores/nope/kms/xks/v1/health", map[string]any{}, 404, "InvalidUriPathException"},
		{"not an XKS path", "/kms/xks/v2/health", map[string]any{}, 404, "InvalidUriPathException"},

		{"plaintext of 4300 bytes", keyPath(extKey, "encrypt"), encryptBody(make([]byte, 4300), nil, true), 200, ""},
		{"plaintext of 4301 bytes", keyPath(extKey, "encrypt"), encryptBody(make([]byte, 4301), nil, false), 501, "UnsupportedOperationException"},
		{"AAD of 8192 bytes", keyPath(extKey, "encrypt"), encryptBody(pt, make([]byte, 8192), false), 200, ""},
		{"AAD of 8193 bytes", keyPath(extKey, "encrypt"), encryptBody(pt, make([]byte, 8193), false), 501, "UnsupportedOperationException"},
		{"ciphertext of 4301 bytes", keyPath(extKey, "decrypt"), tamper(func(e *encrypted) { e.ct = make([]byte, 4301) }), 501, "UnsupportedOperationException"},
		{"body over 64 KiB", keyPath(extKey, "encrypt"), map[string]any{"padding": strings.Repeat("x", 65<<10)}, 501, "UnsupportedOperationException"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			res := f.call(t, r.path, r.body)
			if r.status == 200 {
				if res.status != 200 {
					t.Fatalf("got %d %s, want 200", res.status, res.raw)
				}
				return
			}
			wantError(t, res, r.status, r.error)
		})
	}
	// Every refusal is on the trail under its spec name, exactly once.
	got := map[string]int{}
	for _, ev := range f.bed.Events("alpha") {
		if ev.Outcome != events.OutcomeSuccess {
			got[ev.ErrorCode]++
		}
	}
	for _, ev := range f.bed.Events("-") {
		got[ev.ErrorCode]++
	}
	want := map[string]int{}
	for _, r := range rows {
		if r.status != 200 {
			want[r.error]++
		}
	}
	// kms names the generic not-found code NotFoundException.
	want["NotFoundException"], want["KeyNotFoundException"] = want["KeyNotFoundException"], 0
	for name, n := range want {
		if got[name] != n {
			t.Errorf("%d audit records with %s, want %d (all: %v)", got[name], name, n, got)
		}
	}
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// TestDisabledKeyStoreIsInvalidState: the spec's InvalidStateException,
// which applies to every API including health.
func TestDisabledKeyStoreIsInvalidState(t *testing.T) {
	f := newFixture(t, func(c *xks.Config) { c.KeyStores[0].Disabled = true })
	wantError(t, f.call(t, apiBase+"/health", map[string]any{"requestMetadata": meta("KmsHealthCheck", "r")}), 400, "InvalidStateException")
	wantError(t, f.call(t, apiBase+"/keys/"+extKey+"/encrypt", encryptBody([]byte("x"), nil, false)), 400, "InvalidStateException")
}

// TestThrottling: a key store over its rate limit answers 429
// ThrottlingException until its bucket refills (on the test's clock).
func TestThrottling(t *testing.T) {
	f := newFixture(t, func(c *xks.Config) { c.KeyStores[0].RateLimit = &xks.RateLimit{RequestsPerSecond: 1, Burst: 2} })
	body := map[string]any{"requestMetadata": meta("KmsHealthCheck", "r")}
	for i := range 2 {
		if r := f.call(t, apiBase+"/health", body); r.status != 200 {
			t.Fatalf("request %d: %d %s", i, r.status, r.raw)
		}
	}
	wantError(t, f.call(t, apiBase+"/health", body), 429, "ThrottlingException")
	f.advance(time.Second)
	if r := f.call(t, apiBase+"/health", body); r.status != 200 {
		t.Fatalf("after a second: %d %s", r.status, r.raw)
	}
	if n := len(f.bed.EventsOfType("alpha", events.TypeXKSRejected)); n != 1 {
		t.Fatalf("%d rejected events, want 1", n)
	}
}

// TestDependencyTimeout: work that outlives the request timeout answers
// 503 DependencyTimeoutException, and the attempt is still recorded.
func TestDependencyTimeout(t *testing.T) {
	f := newFixture(t, func(c *xks.Config) { c.RequestTimeout = xks.Duration(time.Nanosecond) })
	wantError(t, f.call(t, apiBase+"/keys/"+extKey+"/encrypt", encryptBody([]byte("x"), nil, false)), 503, "DependencyTimeoutException")
	wantError(t, f.call(t, apiBase+"/health", map[string]any{"requestMetadata": meta("KmsHealthCheck", "r")}), 503, "DependencyTimeoutException")
	if n := len(f.bed.EventsOfType("alpha", events.TypeXKSEncrypt)); n != 1 {
		t.Fatalf("%d encrypt events, want 1", n)
	}
}

// TestKeyStoresAreIsolated: each URI prefix is its own key store, with its
// own credentials and tenant.
func TestKeyStoresAreIsolated(t *testing.T) {
	var other xks.Credential
	f := newFixture(t, func(c *xks.Config) {
		other = newCred(t)
		c.KeyStores = append(c.KeyStores, xks.KeyStore{URIPrefix: "ks-beta", Tenant: "beta", Credentials: []xks.Credential{other},
			Keys: map[string]xks.Key{extKey: {KeyRef: "alias/xks-demo"}}})
	})
	body := mustJSON(t, encryptBody([]byte("x"), nil, false))
	betaPath := "/ks-beta/kms/xks/v1/keys/" + extKey + "/encrypt"
	wantError(t, f.do(t, f.signed(t, f.cred, betaPath, body, "kms-xks-proxy", "us-east-1", f.clock())), 401, "AuthenticationFailedException")
	wantError(t, f.do(t, f.signed(t, other, apiBase+"/keys/"+extKey+"/encrypt", body, "kms-xks-proxy", "us-east-1", f.clock())), 401, "AuthenticationFailedException")
	// beta has no key xks-demo: alpha's alias is not visible there.
	wantError(t, f.do(t, f.signed(t, other, betaPath, body, "kms-xks-proxy", "us-east-1", f.clock())), 404, "KeyNotFoundException")
}

// TestErrorMapping covers the rows that a healthy stack cannot be made to
// produce on demand (InternalException): the mapping itself.
func TestErrorMapping(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
		name   string
	}{
		{kms.ErrInternal, http.StatusInternalServerError, "InternalException"},
		{kms.ErrAuditUnavailable, 500, "InternalException"},
		{errors.New("anything else"), 500, "InternalException"},
		{fmt.Errorf("wrapped: %w", context.DeadlineExceeded), 503, "DependencyTimeoutException"},
		{kms.ErrDisabled, 400, "InvalidStateException"},
		{kms.ErrInvalidState, 400, "InvalidStateException"},
		{kms.ErrNotFound, 404, "KeyNotFoundException"},
		{kms.ErrAccessDenied, 403, "AccessDeniedException"},
		{&kms.Error{Code: kms.CodeThrottling}, 429, "ThrottlingException"},
		{&kms.Error{Code: kms.CodeXKSInvalidURIPath}, 404, "InvalidUriPathException"},
	} {
		status, name := xks.ErrorFor(c.err)
		if status != c.status || name != c.name {
			t.Errorf("%v: %d %s, want %d %s", c.err, status, name, c.status, c.name)
		}
	}
}
