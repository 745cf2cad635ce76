package kms_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/hpke"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash"
	"log/slog"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// The customer's side of BYOK, written with Go's crypto only: nothing here
// calls keyflow to wrap material or to decrypt.

// customerWrap wraps material to the import parameters' public key the
// way the customer would.
func customerWrap(t testing.TB, p *kms.ImportParameters, material []byte) []byte {
	t.Helper()
	if p.Algorithm == kms.WrapXWingHPKE {
		pk, err := hpke.MLKEM768X25519().NewPublicKey(p.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		enc, sender, err := hpke.NewSender(pk, hpke.HKDFSHA256(), hpke.AES256GCM(), []byte("keyflow/import/v1"))
		if err != nil {
			t.Fatal(err)
		}
		ct, err := sender.Seal(nil, material)
		if err != nil {
			t.Fatal(err)
		}
		return append(enc, ct...)
	}
	pub, err := x509.ParsePKIXPublicKey(p.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	var h func() hash.Hash = sha256.New
	if p.Algorithm == kms.WrapRSAOAEPSHA1 || p.Algorithm == kms.WrapRSAAESSHA1 {
		h = sha1.New
	}
	oaep := func(m []byte) []byte {
		ct, err := rsa.EncryptOAEP(h(), rand.Reader, pub.(*rsa.PublicKey), m, nil)
		if err != nil {
			t.Fatal(err)
		}
		return ct
	}
	switch p.Algorithm {
	case kms.WrapRSAOAEPSHA1, kms.WrapRSAOAEPSHA256:
		return oaep(material)
	default:
		eph := make([]byte, 32)
		rand.Read(eph)
		return append(oaep(eph), kwp(t, eph, material)...)
	}
}

// kwp is AES key wrap with padding (RFC 5649).
func kwp(t testing.TB, kek, pt []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(kek)
	if err != nil {
		t.Fatal(err)
	}
	n := (len(pt) + 7) / 8
	r := make([]byte, 8*n)
	copy(r, pt)
	a := make([]byte, 8)
	binary.BigEndian.PutUint32(a, 0xA65959A6)
	binary.BigEndian.PutUint32(a[4:], uint32(len(pt)))
	buf := make([]byte, 16)
	if n == 1 {
		copy(buf, a)
		copy(buf[8:], r)
		block.Encrypt(buf, buf)
		return buf
	}
	for j := range 6 {
		for i := range n {
			copy(buf, a)
			copy(buf[8:], r[8*i:8*i+8])
			block.Encrypt(buf, buf)
			binary.BigEndian.PutUint64(a, binary.BigEndian.Uint64(buf[:8])^uint64(n*j+i+1))
			copy(r[8*i:], buf[8:])
		}
	}
	return append(a, r...)
}

// customerAAD is keyflow's AAD (kms/envelope.go), rebuilt from the
// documented format: length-prefixed label, header and tenant, then the
// encryption context sorted by key.
func customerAAD(header []byte, tenant string, ec map[string]string) []byte {
	lp := func(dst, b []byte) []byte {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
		return append(dst, b...)
	}
	out := lp(nil, []byte("keyflow/aad/v1"))
	out = lp(out, header)
	out = lp(out, []byte(tenant))
	keys := make([]string, 0, len(ec))
	for k := range ec {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out = binary.BigEndian.AppendUint32(out, uint32(len(keys)))
	for _, k := range keys {
		out = lp(out, []byte(k))
		out = lp(out, []byte(ec[k]))
	}
	return out
}

// customerSplit cuts a keyflow ciphertext (format version 1, AES-GCM)
// into header, IV and ciphertext||tag.
func customerSplit(t *testing.T, ct []byte) (header, iv, body []byte) {
	t.Helper()
	if len(ct) < 3 || ct[0] != 1 || ct[1] != 1 {
		t.Fatalf("not an AES-GCM envelope: %x", ct[:min(len(ct), 3)])
	}
	h := 3 + int(ct[2]) + 4
	return ct[:h], ct[h : h+12], ct[h+12:]
}

// customerDecrypt opens a keyflow ciphertext with the imported material
// and Go's crypto/aes and crypto/cipher, without keyflow.
func customerDecrypt(t *testing.T, material, ct []byte, tenant string, ec map[string]string) []byte {
	t.Helper()
	header, iv, body := customerSplit(t, ct)
	blk, err := aes.NewCipher(material)
	if err != nil {
		t.Fatal(err)
	}
	g, _ := cipher.NewGCM(blk)
	pt, err := g.Open(nil, iv, body, customerAAD(header, tenant, ec))
	if err != nil {
		t.Fatalf("the customer cannot decrypt keyflow's ciphertext with the material: %v", err)
	}
	return pt
}

// clock is a settable time source for kms.Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func kmsWithClock(t *testing.T, b *testbed.Bed, c *clock) *kms.Service {
	t.Helper()
	s, err := kms.New(context.Background(), kms.Config{
		HSM: b.HSM, Store: b.Store, Audit: b.Audit, Source: "/keyflow/test", Now: c.Now,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func newMaterial(n int) []byte {
	m := make([]byte, n)
	rand.Read(m)
	return m
}

func createExternal(t *testing.T, s *kms.Service, spec kms.KeySpec) *kms.Key {
	t.Helper()
	k, err := s.CreateKey(context.Background(), alice, kms.CreateKeyParams{Spec: spec, Origin: kms.OriginExternal})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestImportCustomerDecryptsOutsideKeyflow is the BYOK proof: for every
// wrapping algorithm, the customer wraps material with Go's crypto,
// imports it, and decrypts keyflow's ciphertexts with the same material
// outside keyflow (and keyflow decrypts the customer's).
func TestImportCustomerDecryptsOutsideKeyflow(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	for _, alg := range kms.WrappingAlgorithms() {
		t.Run(string(alg), func(t *testing.T) {
			k := createExternal(t, b.KMS, kms.SpecSymmetricDefault)
			if k.State != kms.StatePendingImport || k.KeyOrigin() != kms.OriginExternal || k.Versions[0].State != kms.StatePendingImport {
				t.Fatalf("new EXTERNAL key: %+v", k)
			}
			_, err := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")})
			wantCode(t, "encrypt before import", err, kms.CodeInvalidState)

			params, err := b.KMS.GetParametersForImport(ctx, alice, kms.GetImportParamsParams{KeyRef: k.ID, Algorithm: alg})
			if err != nil {
				t.Fatal(err)
			}
			material := newMaterial(32)
			res, err := b.KMS.ImportKeyMaterial(ctx, alice, kms.ImportParams{
				KeyRef: k.ID, WrappedMaterial: customerWrap(t, params, material), ImportToken: params.ImportToken,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Key.State != kms.StateActive || res.Key.Import.ExpirationModel != kms.MaterialDoesNotExpire || res.Reimport {
				t.Fatalf("after import: %+v %+v", res.Key, res.Key.Import)
			}
			ec := kms.EncryptionContext{"app": "billing"}
			enc, err := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("attack at dawn"), Context: ec})
			if err != nil {
				t.Fatal(err)
			}
			if got := customerDecrypt(t, material, enc.Ciphertext, alice.Tenant, ec); string(got) != "attack at dawn" {
				t.Fatalf("customer decrypted %q", got)
			}
			// And the other way: the customer encrypts in keyflow's
			// format with the material, keyflow decrypts.
			header, _, _ := customerSplit(t, enc.Ciphertext)
			iv := newMaterial(12)
			blk, _ := aes.NewCipher(material)
			g, _ := cipher.NewGCM(blk)
			mine := append(append(bytes.Clone(header), iv...), g.Seal(nil, iv, []byte("from the customer"), customerAAD(header, alice.Tenant, ec))...)
			dec, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: mine, Context: ec})
			if err != nil || string(dec.Plaintext) != "from the customer" {
				t.Fatalf("keyflow decrypting the customer's ciphertext: %v", err)
			}
		})
	}
}

func TestImportRefusals(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	clk := &clock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	s := kmsWithClock(t, b, clk)
	k := createExternal(t, s, kms.SpecSymmetricDefault)
	other := createExternal(t, s, kms.SpecSymmetricDefault)
	params, err := s.GetParametersForImport(ctx, alice, kms.GetImportParamsParams{KeyRef: k.ID, Algorithm: kms.WrapRSAOAEPSHA256, Spec: kms.WrappingRSA4096})
	if err != nil {
		t.Fatal(err)
	}
	if !params.ValidTo.Equal(clk.Now().Add(24 * time.Hour)) {
		t.Fatalf("token valid to %s", params.ValidTo)
	}
	material := newMaterial(32)
	wrapped := customerWrap(t, params, material)
	imp := func(p kms.ImportParams) error {
		if p.KeyRef == "" {
			p.KeyRef = k.ID
		}
		if p.WrappedMaterial == nil {
			p.WrappedMaterial = wrapped
		}
		if p.ImportToken == nil {
			p.ImportToken = params.ImportToken
		}
		_, err := s.ImportKeyMaterial(ctx, alice, p)
		return err
	}
	forged := bytes.Clone(params.ImportToken)
	forged[len(forged)/2] ^= 1
	wantCode(t, "forged token", imp(kms.ImportParams{ImportToken: forged}), kms.CodeInvalidImportToken)
	wantCode(t, "garbage token", imp(kms.ImportParams{ImportToken: []byte("KFIT\x01{}")}), kms.CodeInvalidImportToken)
	wantCode(t, "token of another key", imp(kms.ImportParams{KeyRef: other.ID}), kms.CodeInvalidImportToken)
	wantCode(t, "another tenant", func() error {
		_, err := s.ImportKeyMaterial(ctx, kms.Caller{Tenant: "beta", Principal: "bob"}, kms.ImportParams{KeyRef: k.ID, WrappedMaterial: wrapped, ImportToken: params.ImportToken})
		return err
	}(), kms.CodeNotFound)
	wantCode(t, "algorithm other than the token's", imp(kms.ImportParams{Algorithm: kms.WrapRSAOAEPSHA1}), kms.CodeValidation)
	// Wrapped with SHA-1 where the token says SHA-256: it does not open.
	sha1Params := *params
	sha1Params.Algorithm = kms.WrapRSAOAEPSHA1
	wantCode(t, "material wrapped with another algorithm", imp(kms.ImportParams{WrappedMaterial: customerWrap(t, &sha1Params, material)}), kms.CodeInvalidCiphertext)
	wantCode(t, "16-byte material", imp(kms.ImportParams{WrappedMaterial: customerWrap(t, params, material[:16])}), kms.CodeIncorrectKeyMaterial)
	wantCode(t, "valid-to in the past", imp(kms.ImportParams{ValidTo: clk.Now().Add(-time.Minute)}), kms.CodeValidation)

	// Expiry, with the clock moved past 24 hours.
	clk.Add(24*time.Hour + time.Second)
	wantCode(t, "expired token", imp(kms.ImportParams{}), kms.CodeExpiredImportToken)
	clk.Add(-time.Hour)
	if err := imp(kms.ImportParams{}); err != nil {
		t.Fatalf("import: %v", err)
	}

	// Re-import: the same material is fine, different material is not.
	if _, err := s.ImportKeyMaterial(ctx, alice, kms.ImportParams{KeyRef: k.ID, WrappedMaterial: customerWrap(t, params, material), ImportToken: params.ImportToken}); err != nil {
		t.Fatalf("re-import of the same material: %v", err)
	}
	wantCode(t, "different material", imp(kms.ImportParams{WrappedMaterial: customerWrap(t, params, newMaterial(32))}), kms.CodeIncorrectKeyMaterial)

	// Keys that do not take imports.
	gen := mustCreate(t, s, alice, "")
	_, err = s.GetParametersForImport(ctx, alice, kms.GetImportParamsParams{KeyRef: gen.ID, Algorithm: kms.WrapRSAOAEPSHA256})
	wantCode(t, "parameters for an AWS_KMS key", err, kms.CodeUnsupportedOperation)
	_, err = s.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: kms.SpecECCP256, Usage: kms.UsageSignVerify, Origin: kms.OriginExternal})
	wantCode(t, "EXTERNAL EC key", err, kms.CodeUnsupportedOperation)
	_, err = s.CreateKey(ctx, alice, kms.CreateKeyParams{Origin: "CLOUDHSM"})
	wantCode(t, "unknown origin", err, kms.CodeValidation)
	_, err = s.GetParametersForImport(ctx, alice, kms.GetImportParamsParams{KeyRef: k.ID, Algorithm: "RSAES_PKCS1_V1_5"})
	wantCode(t, "unknown wrapping algorithm", err, kms.CodeValidation)
	_, err = s.GetParametersForImport(ctx, alice, kms.GetImportParamsParams{KeyRef: k.ID, Algorithm: kms.WrapRSAOAEPSHA256, Spec: "RSA_2048"})
	wantCode(t, "RSA_2048 wrapping key", err, kms.CodeValidation)
	_, err = s.RequestRotation(ctx, alice, k.ID)
	wantCode(t, "rotating an imported key", err, kms.CodeUnsupportedOperation)

	// Every refusal is on the record, with its code.
	var codes []string
	for _, e := range b.EventsOfType("alpha", events.TypeKeyImported) {
		codes = append(codes, e.ErrorCode)
	}
	want := []string{"InvalidImportTokenException", "InvalidImportTokenException", "InvalidImportTokenException", "ValidationException",
		"InvalidCiphertextException", "IncorrectKeyMaterialException", "ValidationException", "ExpiredImportTokenException", "", "", "IncorrectKeyMaterialException"}
	if len(codes) != len(want) {
		t.Fatalf("import events: %q, want %q", codes, want)
	}
	for i := range want {
		if codes[i] != want[i] {
			t.Fatalf("import events: %q, want %q", codes, want)
		}
	}
}

func TestImportTokenServesAnyWorker(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k := createExternal(t, b.KMS, kms.SpecSymmetricDefault)
	params, err := b.KMS.GetParametersForImport(ctx, alice, kms.GetImportParamsParams{KeyRef: k.ID, Algorithm: kms.WrapRSAAESSHA256})
	if err != nil {
		t.Fatal(err)
	}
	// A second worker (a restart, or another replica) finishes the import.
	second := b.NewKMS(b.Audit)
	if _, err := second.ImportKeyMaterial(ctx, alice, kms.ImportParams{KeyRef: k.ID, WrappedMaterial: customerWrap(t, params, newMaterial(32)), ImportToken: params.ImportToken}); err != nil {
		t.Fatal(err)
	}
}

func TestDeleteAndReimport(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k := createExternal(t, b.KMS, kms.SpecSymmetricDefault)
	params, err := b.KMS.GetParametersForImport(ctx, alice, kms.GetImportParamsParams{KeyRef: k.ID, Algorithm: kms.WrapRSAOAEPSHA1})
	if err != nil {
		t.Fatal(err)
	}
	material := newMaterial(32)
	res, err := b.KMS.ImportKeyMaterial(ctx, alice, kms.ImportParams{KeyRef: k.ID, WrappedMaterial: customerWrap(t, params, material), ImportToken: params.ImportToken})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("kept")})
	if err != nil {
		t.Fatal(err)
	}

	// The expiry of another import does nothing.
	deleted, err := b.KMS.ExpireImportedKeyMaterial(ctx, alice, kms.ExpireImportParams{KeyID: k.ID, ImportID: "11111111-2222-4333-8444-555555555555"})
	if err != nil || deleted {
		t.Fatalf("expiring another import: %v, deleted %v", err, deleted)
	}
	if _, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: enc.Ciphertext}); err != nil {
		t.Fatalf("decrypt after a stale expiry: %v", err)
	}

	// Expiry of this import: material gone, key PENDING_IMPORT; twice is
	// the same as once.
	for i := range 2 {
		deleted, err := b.KMS.ExpireImportedKeyMaterial(ctx, alice, kms.ExpireImportParams{KeyID: k.ID, ImportID: res.ImportID})
		if err != nil || deleted != (i == 0) {
			t.Fatalf("expiry %d: %v, deleted %v", i, err, deleted)
		}
	}
	got, err := b.KMS.DescribeKey(ctx, alice, k.ID)
	if err != nil || got.State != kms.StatePendingImport || got.Import.ImportID != "" {
		t.Fatalf("after expiry: %v %+v", err, got)
	}
	if _, err := b.Store.GetMaterial(ctx, alice.Tenant, k.ID, 1); !errors.Is(err, kms.ErrStoreNotFound) {
		t.Fatalf("material after expiry: %v", err)
	}
	_, err = b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: enc.Ciphertext})
	wantCode(t, "decrypt without material", err, kms.CodeInvalidState)

	// Different material is refused even now; the same comes back and
	// the old ciphertext decrypts again.
	wantCode(t, "different material after deletion", func() error {
		_, err := b.KMS.ImportKeyMaterial(ctx, alice, kms.ImportParams{KeyRef: k.ID, WrappedMaterial: customerWrap(t, params, newMaterial(32)), ImportToken: params.ImportToken})
		return err
	}(), kms.CodeIncorrectKeyMaterial)
	validTo := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	res, err = b.KMS.ImportKeyMaterial(ctx, alice, kms.ImportParams{KeyRef: k.ID, WrappedMaterial: customerWrap(t, params, material), ImportToken: params.ImportToken, ValidTo: validTo})
	if err != nil || !res.Reimport || res.Key.Import.ExpirationModel != kms.MaterialExpires || !res.Key.Import.ValidTo.Equal(validTo) {
		t.Fatalf("re-import: %v %+v", err, res)
	}
	if dec, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: enc.Ciphertext}); err != nil || string(dec.Plaintext) != "kept" {
		t.Fatalf("decrypt after re-import: %v", err)
	}

	// Deleting on request.
	if _, err := b.KMS.DeleteImportedKeyMaterial(ctx, alice, k.ID); err != nil {
		t.Fatal(err)
	}
	_, err = b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")})
	wantCode(t, "encrypt after deletion", err, kms.CodeInvalidState)
	if _, err := b.KMS.DeleteImportedKeyMaterial(ctx, alice, k.ID); err != nil {
		t.Fatalf("deleting again: %v", err)
	}
	gen := mustCreate(t, b.KMS, alice, "")
	_, err = b.KMS.DeleteImportedKeyMaterial(ctx, alice, gen.ID)
	wantCode(t, "deleting an AWS_KMS key's material", err, kms.CodeUnsupportedOperation)
	_, err = b.KMS.ExpireImportedKeyMaterial(ctx, alice, kms.ExpireImportParams{KeyID: gen.ID, ImportID: res.ImportID})
	wantCode(t, "expiring an AWS_KMS key's material", err, kms.CodeUnsupportedOperation)
	if _, err := b.Store.GetMaterial(ctx, alice.Tenant, gen.ID, 1); err != nil {
		t.Fatalf("an AWS_KMS key lost its material: %v", err)
	}

	// The trail: one record per fact, and never the material.
	for typ, n := range map[string]int{
		events.TypeKeyImportParameters: 1, events.TypeKeyImported: 3,
		events.TypeKeyImportExpired: 4, events.TypeKeyImportDeleted: 3,
	} {
		if got := len(b.EventsOfType("alpha", typ)); got != n {
			t.Errorf("%s: %d events, want %d", typ, got, n)
		}
	}
	for _, e := range b.Events("alpha") {
		for _, enc := range []string{hex.EncodeToString(material), base64.StdEncoding.EncodeToString(material)} {
			if bytes.Contains(e.Raw, []byte(enc)) {
				t.Fatalf("event %s holds the material", e.Type)
			}
		}
	}
}

func TestImportApprovalHook(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	denied := &kms.Error{Code: kms.CodeAccessDenied, Message: "import needs a second approver"}
	b.KMS.SetImportApprover(func(ctx context.Context, c kms.Caller, k *kms.Key) error { return denied })
	k := createExternal(t, b.KMS, kms.SpecSymmetricDefault)
	params, err := b.KMS.GetParametersForImport(ctx, alice, kms.GetImportParamsParams{KeyRef: k.ID, Algorithm: kms.WrapRSAOAEPSHA256})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.KMS.ImportKeyMaterial(ctx, alice, kms.ImportParams{KeyRef: k.ID, WrappedMaterial: customerWrap(t, params, newMaterial(32)), ImportToken: params.ImportToken})
	wantCode(t, "import without approval", err, kms.CodeAccessDenied)
	if got, _ := b.KMS.DescribeKey(ctx, alice, k.ID); got.State != kms.StatePendingImport {
		t.Fatalf("state after a refused import: %s", got.State)
	}
	evs := b.EventsOfType("alpha", events.TypeKeyImported)
	if len(evs) != 1 || evs[0].Outcome != events.OutcomeDenied {
		t.Fatalf("import events: %+v", evs)
	}
}

func TestImportHMAC(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k := createExternal(t, b.KMS, kms.SpecHMAC256)
	_, err := b.KMS.GenerateMac(ctx, alice, kms.MACParams{KeyRef: k.ID, Message: []byte("msg"), Algorithm: kms.MACHMACSHA256})
	wantCode(t, "MAC before import", err, kms.CodeInvalidState)
	params, err := b.KMS.GetParametersForImport(ctx, alice, kms.GetImportParamsParams{KeyRef: k.ID, Algorithm: kms.WrapRSAOAEPSHA256})
	if err != nil {
		t.Fatal(err)
	}
	secret := newMaterial(32)
	if _, err := b.KMS.ImportKeyMaterial(ctx, alice, kms.ImportParams{KeyRef: k.ID, WrappedMaterial: customerWrap(t, params, secret), ImportToken: params.ImportToken}); err != nil {
		t.Fatal(err)
	}
	res, err := b.KMS.GenerateMac(ctx, alice, kms.MACParams{KeyRef: k.ID, Message: []byte("msg"), Algorithm: kms.MACHMACSHA256})
	if err != nil {
		t.Fatal(err)
	}
	h := hmac.New(sha256.New, secret)
	h.Write([]byte("msg"))
	if !bytes.Equal(res.MAC, h.Sum(nil)) {
		t.Fatal("keyflow's HMAC is not the customer's")
	}
}

// TestDeleteFinishesAfterACrash: a deletion that stopped between taking the
// key back to PENDING_IMPORT and deleting the material (a crash) is
// finished by the next delete or expiry, which is idempotent.
func TestDeleteFinishesAfterACrash(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k := createExternal(t, b.KMS, kms.SpecSymmetricDefault)
	params, err := b.KMS.GetParametersForImport(ctx, alice, kms.GetImportParamsParams{KeyRef: k.ID, Algorithm: kms.WrapRSAOAEPSHA1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.ImportKeyMaterial(ctx, alice, kms.ImportParams{KeyRef: k.ID, WrappedMaterial: customerWrap(t, params, newMaterial(32)), ImportToken: params.ImportToken}); err != nil {
		t.Fatal(err)
	}
	m, err := b.Store.GetMaterial(ctx, alice.Tenant, k.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.DeleteImportedKeyMaterial(ctx, alice, k.ID); err != nil {
		t.Fatal(err)
	}
	// The crash: the key says PENDING_IMPORT, the material is still there.
	if err := b.Store.PutMaterial(ctx, m); err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.DeleteImportedKeyMaterial(ctx, alice, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Store.GetMaterial(ctx, alice.Tenant, k.ID, 1); !errors.Is(err, kms.ErrStoreNotFound) {
		t.Fatalf("material after the second delete: %v", err)
	}
}

// TestImportRSAPrivateKey: the customer's own RSA key pair (PKCS#8,
// wrapped with RSA + AES key wrap) signs and decrypts in keyflow, and
// what keyflow does checks out with the customer's key outside keyflow.
func TestImportRSAPrivateKey(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	customer, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(customer)
	wantPub, _ := x509.MarshalPKIXPublicKey(&customer.PublicKey)

	signer, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: kms.SpecRSA3072, Usage: kms.UsageSignVerify, Origin: kms.OriginExternal})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.KMS.GetParametersForImport(ctx, alice, kms.GetImportParamsParams{KeyRef: signer.ID, Algorithm: kms.WrapRSAOAEPSHA256})
	wantCode(t, "OAEP for a private key", err, kms.CodeValidation)
	params, err := b.KMS.GetParametersForImport(ctx, alice, kms.GetImportParamsParams{KeyRef: signer.ID, Algorithm: kms.WrapRSAAESSHA256})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherDER, _ := x509.MarshalPKCS8PrivateKey(other)
	_, err = b.KMS.ImportKeyMaterial(ctx, alice, kms.ImportParams{KeyRef: signer.ID, WrappedMaterial: customerWrap(t, params, otherDER), ImportToken: params.ImportToken})
	wantCode(t, "a 2048-bit key into RSA_3072", err, kms.CodeIncorrectKeyMaterial)
	if _, err := b.KMS.ImportKeyMaterial(ctx, alice, kms.ImportParams{KeyRef: signer.ID, WrappedMaterial: customerWrap(t, params, der), ImportToken: params.ImportToken}); err != nil {
		t.Fatal(err)
	}
	pk, err := b.KMS.GetPublicKey(ctx, alice, signer.ID, 0)
	if err != nil || !bytes.Equal(pk.PublicKeyDER, wantPub) {
		t.Fatalf("public key: %v, the customer's: %v", err, pk != nil && bytes.Equal(pk.PublicKeyDER, wantPub))
	}
	msg := []byte("release v2")
	sig, err := b.KMS.Sign(ctx, alice, kms.SignParams{KeyRef: signer.ID, Message: msg, Algorithm: kms.SignRSAPSSSHA256})
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(msg)
	if err := rsa.VerifyPSS(&customer.PublicKey, crypto.SHA256, digest[:], sig.Signature, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}); err != nil {
		t.Fatalf("keyflow's signature does not verify with the customer's key: %v", err)
	}
	// The same key again is a re-import; another RSA-3072 key is not.
	res, err := b.KMS.ImportKeyMaterial(ctx, alice, kms.ImportParams{KeyRef: signer.ID, WrappedMaterial: customerWrap(t, params, der), ImportToken: params.ImportToken})
	if err != nil || !res.Reimport {
		t.Fatalf("re-import of the same private key: %v", err)
	}
	third, _ := rsa.GenerateKey(rand.Reader, 3072)
	thirdDER, _ := x509.MarshalPKCS8PrivateKey(third)
	_, err = b.KMS.ImportKeyMaterial(ctx, alice, kms.ImportParams{KeyRef: signer.ID, WrappedMaterial: customerWrap(t, params, thirdDER), ImportToken: params.ImportToken})
	wantCode(t, "another private key", err, kms.CodeIncorrectKeyMaterial)

	// An encryption key: the customer encrypts with its public key, keyflow
	// decrypts.
	dec, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: kms.SpecRSA3072, Usage: kms.UsageEncryptDecrypt, Origin: kms.OriginExternal})
	if err != nil {
		t.Fatal(err)
	}
	params, err = b.KMS.GetParametersForImport(ctx, alice, kms.GetImportParamsParams{KeyRef: dec.ID, Algorithm: kms.WrapRSAAESSHA1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.ImportKeyMaterial(ctx, alice, kms.ImportParams{KeyRef: dec.ID, WrappedMaterial: customerWrap(t, params, der), ImportToken: params.ImportToken}); err != nil {
		t.Fatal(err)
	}
	ct, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, &customer.PublicKey, []byte("for keyflow"), nil)
	out, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{KeyRef: dec.ID, Ciphertext: ct, Algorithm: kms.EncRSAOAEPSHA256})
	if err != nil || string(out.Plaintext) != "for keyflow" {
		t.Fatalf("keyflow decrypting with the imported key: %v", err)
	}
}

// TestConcurrentFirstImports: two workers import different material into
// the same fresh key at once. One wins; the other is refused; the key's
// material is the winner's.
func TestConcurrentFirstImports(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	second := b.NewKMS(b.Audit)
	for round := range 3 {
		k := createExternal(t, b.KMS, kms.SpecSymmetricDefault)
		params, err := b.KMS.GetParametersForImport(ctx, alice, kms.GetImportParamsParams{KeyRef: k.ID, Algorithm: kms.WrapRSAOAEPSHA1})
		if err != nil {
			t.Fatal(err)
		}
		materials := [][]byte{newMaterial(32), newMaterial(32)}
		wrapped := [][]byte{customerWrap(t, params, materials[0]), customerWrap(t, params, materials[1])}
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, s := range []*kms.Service{b.KMS, second} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = s.ImportKeyMaterial(ctx, alice, kms.ImportParams{KeyRef: k.ID, WrappedMaterial: wrapped[i], ImportToken: params.ImportToken})
			}()
		}
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if winner >= 0 {
					t.Fatalf("round %d: both imports of different material succeeded", round)
				}
				winner = i
			case kms.CodeOf(err) != kms.CodeIncorrectKeyMaterial && kms.CodeOf(err) != kms.CodeConflict:
				t.Fatalf("round %d: import %d: %v", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: neither import succeeded: %v", round, errs)
		}
		enc, err := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("whose?")})
		if err != nil {
			t.Fatal(err)
		}
		if got := customerDecrypt(t, materials[winner], enc.Ciphertext, alice.Tenant, nil); string(got) != "whose?" {
			t.Fatalf("round %d: decrypted %q", round, got)
		}
	}
}

// TestExpiryOfASuspendedKey: material expires whatever the key's state;
// a suspended key is PENDING_IMPORT afterwards, as in AWS.
func TestExpiryOfASuspendedKey(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k := createExternal(t, b.KMS, kms.SpecSymmetricDefault)
	params, err := b.KMS.GetParametersForImport(ctx, alice, kms.GetImportParamsParams{KeyRef: k.ID, Algorithm: kms.WrapRSAOAEPSHA1})
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.KMS.ImportKeyMaterial(ctx, alice, kms.ImportParams{KeyRef: k.ID, WrappedMaterial: customerWrap(t, params, newMaterial(32)), ImportToken: params.ImportToken, ValidTo: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	// Suspend it the way the lifecycle work will: in the stored metadata.
	cur, rev, err := b.Store.GetKey(ctx, alice.Tenant, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	cur.State = kms.StateSuspended
	if _, err := b.Store.UpdateKey(ctx, cur, rev); err != nil {
		t.Fatal(err)
	}
	deleted, err := b.KMS.ExpireImportedKeyMaterial(ctx, alice, kms.ExpireImportParams{KeyID: k.ID, ImportID: res.ImportID})
	if err != nil || !deleted {
		t.Fatalf("expiry of a suspended key: %v, deleted %v", err, deleted)
	}
	got, _ := b.KMS.DescribeKey(ctx, alice, k.ID)
	if got.State != kms.StatePendingImport {
		t.Fatalf("state after expiry: %s", got.State)
	}
	if _, err := b.Store.GetMaterial(ctx, alice.Tenant, k.ID, 1); !errors.Is(err, kms.ErrStoreNotFound) {
		t.Fatalf("material after expiry: %v", err)
	}
}
