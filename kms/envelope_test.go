package kms

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
)

const testKeyID = "0b6f3c2e-8d41-4a7e-9c55-2f1e0d9a7b13"

func TestEnvelopeRoundTrip(t *testing.T) {
	iv := bytes.Repeat([]byte{7}, envelopeIVSize)
	body := bytes.Repeat([]byte{9}, 40)
	e := &envelope{alg: AlgAES256GCM, keyID: testKeyID, version: 0x01020304, iv: iv, body: body}
	b := e.marshal()
	if b[0] != envelopeV1 || b[1] != 0x01 || int(b[2]) != len(testKeyID) {
		t.Fatalf("header prefix = % x", b[:3])
	}
	got, err := parseEnvelope(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.keyID != testKeyID || got.version != 0x01020304 || got.alg != AlgAES256GCM ||
		!bytes.Equal(got.iv, iv) || !bytes.Equal(got.body, body) || !bytes.Equal(got.header, e.headerBytes()) {
		t.Fatalf("parsed envelope differs: %+v", got)
	}
	id, v, err := EnvelopeKeyID(b)
	if err != nil || id != testKeyID || v != 0x01020304 {
		t.Fatalf("EnvelopeKeyID = %q %d %v", id, v, err)
	}
}

func TestEnvelopeRefusesMalformed(t *testing.T) {
	good := (&envelope{alg: AlgAES256GCM, keyID: testKeyID, version: 1, iv: make([]byte, 12), body: make([]byte, 17)}).marshal()
	cases := map[string][]byte{
		"empty":            nil,
		"two bytes":        good[:2],
		"bad version":      append([]byte{0x02}, good[1:]...),
		"unknown alg":      append([]byte{0x01, 0x7f}, good[2:]...),
		"length too big":   append([]byte{0x01, 0x01, 0xff}, good[3:]...),
		"no tag":           good[:3+36+4+12+15],
		"truncated header": good[:20],
		"non-uuid key id":  append(append([]byte{0x01, 0x01, 36}, bytes.Repeat([]byte{'z'}, 36)...), good[39:]...),
	}
	for name, b := range cases {
		if _, err := parseEnvelope(b); !errors.Is(err, errMalformedEnvelope) {
			t.Errorf("%s: err = %v, want malformed", name, err)
		}
	}
}

// The AAD encoding must be injective: contexts that concatenate the same
// must still differ, and the tenant and header must be bound.
func TestAADIsCanonicalAndInjective(t *testing.T) {
	h := []byte("header")
	a := aad(h, "t", EncryptionContext{"a": "bc"})
	b := aad(h, "t", EncryptionContext{"ab": "c"})
	if bytes.Equal(a, b) {
		t.Fatal("AAD of {a:bc} equals AAD of {ab:c}")
	}
	if bytes.Equal(aad(h, "t1", nil), aad(h, "t2", nil)) {
		t.Fatal("tenant is not bound")
	}
	if bytes.Equal(aad([]byte("h1"), "t", nil), aad([]byte("h2"), "t", nil)) {
		t.Fatal("header is not bound")
	}
	// Map order must not matter.
	x := aad(h, "t", EncryptionContext{"k1": "v1", "k2": "v2", "k3": "v3"})
	for range 20 {
		if !bytes.Equal(x, aad(h, "t", EncryptionContext{"k3": "v3", "k1": "v1", "k2": "v2"})) {
			t.Fatal("AAD depends on map order")
		}
	}
	if bytes.Equal(aad(h, "t", nil), aad(h, "t", EncryptionContext{"": ""})) {
		t.Fatal("empty context equals a context with one empty pair")
	}
}

func TestEncryptionContextLimits(t *testing.T) {
	big := EncryptionContext{}
	for i := range maxContextPairs + 1 {
		big[string(rune('a'+i%26))+string(rune('A'+i/26))] = "v"
	}
	if err := big.validate(); !errors.Is(err, ErrValidation) {
		t.Fatalf("too many pairs: %v", err)
	}
	if err := (EncryptionContext{"": "x"}).validate(); !errors.Is(err, ErrValidation) {
		t.Fatalf("empty key: %v", err)
	}
	if err := (EncryptionContext{"k": string(make([]byte, maxContextBytes))}).validate(); !errors.Is(err, ErrValidation) {
		t.Fatalf("too long: %v", err)
	}
	if err := (EncryptionContext{"k": "v"}).validate(); err != nil {
		t.Fatalf("valid context refused: %v", err)
	}
}

// The handle cache is bounded, destroys evicted session objects only when
// no one uses them, and drops a key's versions on invalidation.
func TestHandleCacheEvictionAndInvalidation(t *testing.T) {
	ctx := context.Background()
	tok := pkcs11test.NewToken(t)
	root, err := tok.EnsureRootKey(ctx, "root")
	if err != nil {
		t.Fatal(err)
	}
	blob, err := tok.GenerateWrappedAESKey(ctx, root, 32)
	if err != nil {
		t.Fatal(err)
	}
	loads := 0
	load := func(ctx context.Context) (hsm.KeyHandle, error) {
		loads++
		return tok.UnwrapAESKey(ctx, root, blob)
	}
	c := newHandleCache(tok, 2)
	iv := make([]byte, 12)
	usable := func(h hsm.KeyHandle) bool {
		_, err := tok.EncryptGCM(ctx, h, iv, []byte("x"), nil)
		return err == nil
	}
	r1 := versionRef{tenant: "t", keyID: "k1", version: 1}
	h1, rel1, err := c.acquire(ctx, r1, load)
	if err != nil {
		t.Fatal(err)
	}
	// Hit: no second load.
	h1b, rel1b, _ := c.acquire(ctx, r1, load)
	if h1b != h1 || loads != 1 {
		t.Fatalf("cache miss on a cached version (loads=%d)", loads)
	}
	rel1b()
	// Two more versions evict r1 (LRU) while it is still held.
	for _, r := range []versionRef{{tenant: "t", keyID: "k2", version: 1}, {tenant: "t", keyID: "k3", version: 1}} {
		_, rel, err := c.acquire(ctx, r, load)
		if err != nil {
			t.Fatal(err)
		}
		rel()
	}
	if c.len() != 2 {
		t.Fatalf("cache holds %d entries, want 2", c.len())
	}
	if !usable(h1) {
		t.Fatal("an evicted handle was destroyed while still in use")
	}
	rel1()
	rel1() // releasing twice is harmless
	if usable(h1) {
		t.Fatal("an evicted handle survived its last release")
	}
	h3, rel3, _ := c.acquire(ctx, versionRef{tenant: "t", keyID: "k3", version: 1}, load)
	rel3()
	c.invalidateKey("t", "k3")
	if usable(h3) {
		t.Fatal("invalidated handle is still usable")
	}
	if c.len() != 1 {
		t.Fatalf("cache holds %d entries after invalidation, want 1", c.len())
	}
	c.closeAll()
	if c.len() != 0 {
		t.Fatal("closeAll left entries")
	}
}
