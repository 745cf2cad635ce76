//go:build cgo

package pkcs11_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/hsm/pkcs11"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
)

// The sign round trip of every key spec, with verification by Go's crypto
// packages against the SPKI that GenerateWrappedKeyPair returns, is
// hsmtest's SignRoundTrip, run here by TestConformance. The tests below
// are about this backend in particular.

func rootKey(t *testing.T, tok *pkcs11.Token) hsm.KeyHandle {
	t.Helper()
	r, err := tok.EnsureRootKey(t.Context(), "root")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestKeyPairObjects checks what GenerateWrappedKeyPair leaves behind
// (nothing) and what UnwrapPrivateKey loads (a session key that is
// sensitive, non-extractable, and can sign, and decrypt for RSA, only).
func TestKeyPairObjects(t *testing.T) {
	tok := pkcs11test.NewToken(t)
	ctx := t.Context()
	root := rootKey(t, tok)
	for _, spec := range []hsm.KeyPairSpec{
		{Algorithm: "RSA", RSABits: 2048},
		{Algorithm: "EC", Curve: "P-256"},
		{Algorithm: "EC", Curve: "P-384"},
		{Algorithm: "ED25519"},
	} {
		before, err := tok.CountObjectsForTest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		w, err := tok.GenerateWrappedKeyPair(ctx, root, spec)
		if err != nil {
			t.Fatal(err)
		}
		// A failed generation leaves nothing behind either.
		if _, err := tok.GenerateWrappedKeyPair(ctx, hsm.KeyHandle(1<<40), spec); err == nil {
			t.Errorf("%+v: GenerateWrappedKeyPair under a missing wrapping key succeeded", spec)
		}
		if after, err := tok.CountObjectsForTest(ctx); err != nil || after != before {
			t.Errorf("%+v: %d objects before GenerateWrappedKeyPair, %d after (%v): temporary objects were left", spec, before, after, err)
		}
		if spec.Algorithm == "ED25519" && len(w.WrappedPrivate) != 56 {
			t.Errorf("a wrapped Ed25519 key is %d bytes, want 56 (KWP over the 48-byte PKCS#8)", len(w.WrappedPrivate))
		}

		k, err := tok.UnwrapPrivateKey(ctx, root, w.WrappedPrivate, spec)
		if err != nil {
			t.Fatal(err)
		}
		attrs, err := tok.BoolAttributesForTest(ctx, k, p11.CKA_TOKEN, p11.CKA_PRIVATE, p11.CKA_SENSITIVE, p11.CKA_EXTRACTABLE,
			p11.CKA_SIGN, p11.CKA_DECRYPT, p11.CKA_UNWRAP, p11.CKA_DERIVE, p11.CKA_SIGN_RECOVER)
		if err != nil {
			t.Fatal(err)
		}
		want := map[uint]bool{
			p11.CKA_TOKEN: false, p11.CKA_PRIVATE: true, p11.CKA_SENSITIVE: true, p11.CKA_EXTRACTABLE: false,
			p11.CKA_SIGN: true, p11.CKA_DECRYPT: spec.Algorithm == "RSA", p11.CKA_UNWRAP: false, p11.CKA_DERIVE: false, p11.CKA_SIGN_RECOVER: false,
		}
		for typ, v := range want {
			if attrs[typ] != v {
				t.Errorf("%+v: attribute 0x%x of the unwrapped key is %v, want %v", spec, typ, attrs[typ], v)
			}
		}
		// It cannot leave the HSM again.
		if _, err := tok.WrapKey(ctx, root, k); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("%+v: WrapKey of an unwrapped private key = %v, want ErrInvalidInput", spec, err)
		}
		// Nor be used with a mechanism this package does not use on it.
		d := sha256.Sum256([]byte("x"))
		if spec.Algorithm == "RSA" {
			if _, err := tok.Sign(ctx, k, hsm.SignParams{Scheme: hsm.SchemeECDSA, Hash: crypto.SHA256}, d[:]); !errors.Is(err, hsm.ErrInvalidInput) {
				t.Errorf("ECDSA with an RSA key = %v, want ErrInvalidInput", err)
			}
		}
		if err := tok.DestroyKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		if after, err := tok.CountObjectsForTest(ctx); err != nil || after != before {
			t.Errorf("%+v: %d objects before, %d after unwrapping and destroying (%v)", spec, before, after, err)
		}
	}
}

// TestTrustedIsForTheSO pins the SoftHSM behaviour that rules out
// CKA_WRAP_WITH_TRUSTED: the user cannot mark the root key trusted.
func TestTrustedIsForTheSO(t *testing.T) {
	tok := pkcs11test.NewToken(t)
	err := tok.MarkTrustedForTest(t.Context(), rootKey(t, tok))
	if !isCKR(err, p11.CKR_ATTRIBUTE_READ_ONLY) {
		t.Errorf("setting CKA_TRUSTED as the user = %v, want CKR_ATTRIBUTE_READ_ONLY", err)
	}
}

// TestImportPrivateKeyForTesting loads Go keys and checks that the HSM
// signs (and decrypts) as Go does.
func TestImportPrivateKeyForTesting(t *testing.T) {
	tok := pkcs11test.NewToken(t)
	ctx := t.Context()
	d := sha256.Sum256([]byte("imported"))

	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	h, err := tok.ImportPrivateKeyForTesting(ctx, rk)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := tok.Sign(ctx, h, hsm.SignParams{Scheme: hsm.SchemeRSAPKCS1, Hash: crypto.SHA256}, d[:])
	if err != nil {
		t.Fatal(err)
	}
	// PKCS#1 v1.5 is deterministic.
	if want, _ := rsa.SignPKCS1v15(nil, rk, crypto.SHA256, d[:]); !bytes.Equal(sig, want) {
		t.Error("the HSM's PKCS#1 v1.5 signature differs from Go's")
	}
	sig, err = tok.Sign(ctx, h, hsm.SignParams{Scheme: hsm.SchemeRSAPSS, Hash: crypto.SHA256}, d[:])
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPSS(&rk.PublicKey, crypto.SHA256, d[:], sig, &rsa.PSSOptions{SaltLength: 32}); err != nil {
		t.Errorf("Go does not verify the HSM's PSS signature: %v", err)
	}
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &rk.PublicKey, []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := tok.DecryptOAEP(ctx, h, crypto.SHA256, ct, nil); err != nil || string(pt) != "secret" {
		t.Errorf("DecryptOAEP = %q, %v", pt, err)
	}

	ek, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h, err = tok.ImportPrivateKeyForTesting(ctx, ek)
	if err != nil {
		t.Fatal(err)
	}
	d384 := crypto.SHA384.New()
	d384.Write([]byte("imported"))
	dig := d384.Sum(nil)
	sig, err = tok.Sign(ctx, h, hsm.SignParams{Scheme: hsm.SchemeECDSA, Hash: crypto.SHA384}, dig)
	if err != nil {
		t.Fatal(err)
	}
	der, err := hsm.ECDSASigToDER(sig)
	if err != nil || !ecdsa.VerifyASN1(&ek.PublicKey, dig, der) {
		t.Errorf("Go does not verify the HSM's ECDSA signature (%v)", err)
	}

	_, edk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h, err = tok.ImportPrivateKeyForTesting(ctx, edk)
	if err != nil {
		t.Fatal(err)
	}
	sig, err = tok.Sign(ctx, h, hsm.SignParams{Scheme: hsm.SchemeEd25519}, []byte("imported"))
	if err != nil || !bytes.Equal(sig, ed25519.Sign(edk, []byte("imported"))) {
		t.Errorf("the HSM's Ed25519 signature differs from Go's (%v)", err)
	}

	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	x25519, _ := ecdh.X25519().GenerateKey(rand.Reader)
	three, err := rsa.GenerateMultiPrimeKey(rand.Reader, 3, 2048) //nolint:staticcheck // a key that must be refused
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 512)
	if err == nil {
		if _, err := tok.ImportPrivateKeyForTesting(ctx, small); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("ImportPrivateKeyForTesting of a 512-bit RSA key = %v, want ErrInvalidInput", err)
		}
	}
	for what, key := range map[string]crypto.PrivateKey{
		"a P-521 key":           p521,
		"an X25519 key":         x25519,
		"a three-prime RSA key": three,
		"a short Ed25519 key":   edk[:32],
		"nil":                   nil,
	} {
		if _, err := tok.ImportPrivateKeyForTesting(ctx, key); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("ImportPrivateKeyForTesting of %s = %v, want ErrInvalidInput", what, err)
		}
	}
}

// TestOAEPLabelIsChecked pins the reason SHA-1 with a label does not go
// to CKM_RSA_PKCS_OAEP: SoftHSM 2.6.1 ignores the label there.
func TestOAEPLabelIsChecked(t *testing.T) {
	tok := pkcs11test.NewToken(t)
	ctx := t.Context()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	h, err := tok.ImportPrivateKeyForTesting(ctx, rk)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		enc, dec []byte
		ok       bool
	}{
		{nil, nil, true},
		{[]byte("a"), []byte("a"), true},
		{nil, []byte("a"), false},
		{[]byte("a"), nil, false},
		{[]byte("a"), []byte("b"), false},
	} {
		ct, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, &rk.PublicKey, []byte("msg"), c.enc)
		if err != nil {
			t.Fatal(err)
		}
		pt, err := tok.DecryptOAEP(ctx, h, crypto.SHA1, ct, c.dec)
		if c.ok && (err != nil || string(pt) != "msg") {
			t.Errorf("SHA-1, label %q then %q: DecryptOAEP = %q, %v; want the message", c.enc, c.dec, pt, err)
		}
		if !c.ok && !errors.Is(err, hsm.ErrAuthFailed) {
			t.Errorf("SHA-1, label %q then %q: DecryptOAEP = %q, %v; want ErrAuthFailed", c.enc, c.dec, pt, err)
		}
	}
}

// TestStaleSignOperationIsCleared leaves signatures and verifications
// started on every session, as a crash between C_SignInit and C_Sign
// would, and checks that every kind of operation still runs.
func TestStaleSignOperationIsCleared(t *testing.T) {
	tok := pkcs11test.NewToken(t)
	ctx := t.Context()
	root := rootKey(t, tok)
	spec := hsm.KeyPairSpec{Algorithm: "EC", Curve: "P-256"}
	w, err := tok.GenerateWrappedKeyPair(ctx, root, spec)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := tok.UnwrapPrivateKey(ctx, root, w.WrappedPrivate, spec)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := tok.ImportPublicKey(ctx, w.PublicKeyDER)
	if err != nil {
		t.Fatal(err)
	}
	aesBlob, err := tok.GenerateWrappedAESKey(ctx, root, 32)
	if err != nil {
		t.Fatal(err)
	}
	dk, err := tok.UnwrapAESKey(ctx, root, aesBlob)
	if err != nil {
		t.Fatal(err)
	}
	p := hsm.SignParams{Scheme: hsm.SchemeECDSA, Hash: crypto.SHA256}
	d := sha256.Sum256([]byte("stale"))
	for _, verify := range []bool{false, true} {
		key := priv
		if verify {
			key = pub
		}
		if err := tok.LeaveSignActiveForTest(ctx, key, p11.CKM_ECDSA, verify); err != nil {
			t.Fatal(err)
		}
		// Four sessions, each stuck: several calls in a row reach them all.
		for i := range 6 {
			if _, err := tok.EncryptGCM(ctx, dk, make([]byte, hsm.GCMIVSize), []byte("x"), nil); err != nil {
				t.Fatalf("verify=%v: EncryptGCM #%d: %v", verify, i, err)
			}
		}
		if err := tok.LeaveSignActiveForTest(ctx, key, p11.CKM_ECDSA, verify); err != nil {
			t.Fatal(err)
		}
		for i := range 6 {
			sig, err := tok.Sign(ctx, priv, p, d[:])
			if err != nil {
				t.Fatalf("verify=%v: Sign #%d: %v", verify, i, err)
			}
			if err := tok.Verify(ctx, pub, p, d[:], sig); err != nil {
				t.Fatalf("verify=%v: Verify #%d: %v", verify, i, err)
			}
		}
	}
}

// TestSignPoolOfTwo runs many signers on a Token of two sessions, and
// checks that a signer waiting while both are taken gives up with its
// context's error and that the pool is whole afterwards.
func TestSignPoolOfTwo(t *testing.T) {
	cfg := pkcs11test.NewTokenConfig(t)
	cfg.Sessions = 2
	tok := open(t, cfg)
	ctx := t.Context()
	root := rootKey(t, tok)
	spec := hsm.KeyPairSpec{Algorithm: "EC", Curve: "P-256"}
	w, err := tok.GenerateWrappedKeyPair(ctx, root, spec)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := tok.UnwrapPrivateKey(ctx, root, w.WrappedPrivate, spec)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := tok.ImportPublicKey(ctx, w.PublicKeyDER)
	if err != nil {
		t.Fatal(err)
	}
	p := hsm.SignParams{Scheme: hsm.SchemeECDSA, Hash: crypto.SHA256}
	d := sha256.Sum256([]byte("two"))

	r1, err := tok.BorrowSessionForTest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := tok.BorrowSessionForTest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	start := time.Now()
	_, err = tok.Sign(waitCtx, priv, p, d[:])
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Sign with both sessions taken = %v, want context.DeadlineExceeded", err)
	}
	if waited := time.Since(start); waited < 40*time.Millisecond {
		t.Errorf("Sign gave up after %v, before its deadline", waited)
	}
	r1()
	r2()

	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	for w := range 24 {
		wg.Go(func() {
			for i := range 10 {
				dig := sha256.Sum256([]byte{byte(w), byte(i)})
				sig, err := tok.Sign(ctx, priv, p, dig[:])
				if err != nil {
					t.Errorf("Sign: %v", err)
					return
				}
				if err := tok.Verify(ctx, pub, p, dig[:], sig); err != nil {
					t.Errorf("Verify: %v", err)
					return
				}
				// And failures in between.
				if err := tok.Verify(ctx, pub, p, dig[:], sig[:10]); !errors.Is(err, hsm.ErrAuthFailed) {
					t.Errorf("Verify of a short signature = %v", err)
					return
				}
				mu.Lock()
				done++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if done != 240 {
		t.Fatalf("%d of 240 signatures made", done)
	}
	// Both sessions are back: two can be borrowed at once.
	for range 2 {
		bctx, cancel := context.WithTimeout(ctx, time.Second)
		release, err := tok.BorrowSessionForTest(bctx)
		cancel()
		if err != nil {
			t.Fatalf("borrowing after the run: %v", err)
		}
		defer release()
	}
}

// kwpWrap is AES key wrap with padding (RFC 5649), for making blobs the
// HSM never would.
func kwpWrap(t *testing.T, kek, pt []byte) []byte {
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
			tt := uint64(n*j + i + 1)
			binary.BigEndian.PutUint64(a, binary.BigEndian.Uint64(buf[:8])^tt)
			copy(r[8*i:], buf[8:])
		}
	}
	return append(a, r...)
}

// TestUnwrapHMACKeySizes checks UnwrapHMACKey against secrets wrapped
// outside the HSM: a 32-byte one MACs as Go's crypto/hmac does, and a
// 25-to-31-byte one, which wraps to the same 40 bytes, is refused when it
// is loaded rather than at first use.
func TestUnwrapHMACKeySizes(t *testing.T) {
	tok := pkcs11test.NewToken(t)
	ctx := t.Context()
	kekBytes := bytes.Repeat([]byte{0x17}, 32)
	kek, err := tok.ImportAESKeyForTesting(ctx, kekBytes, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{32, 33, 64, 512} {
		secret := bytes.Repeat([]byte{byte(n)}, n)
		k, err := tok.UnwrapHMACKey(ctx, kek, kwpWrap(t, kekBytes, secret))
		if err != nil {
			t.Fatalf("UnwrapHMACKey of a %d-byte secret: %v", n, err)
		}
		got, err := tok.HMACSHA256(ctx, k, []byte("data"))
		if err != nil {
			t.Fatal(err)
		}
		m := hmac.New(sha256.New, secret)
		m.Write([]byte("data"))
		if want := m.Sum(nil); !bytes.Equal(got, want) {
			t.Errorf("%d-byte secret: the HSM's HMAC is %x, Go's %x", n, got, want)
		}
		attrs, err := tok.BoolAttributesForTest(ctx, k, p11.CKA_SENSITIVE, p11.CKA_EXTRACTABLE, p11.CKA_ENCRYPT, p11.CKA_WRAP, p11.CKA_TOKEN)
		if err != nil {
			t.Fatal(err)
		}
		if !attrs[p11.CKA_SENSITIVE] || attrs[p11.CKA_EXTRACTABLE] || attrs[p11.CKA_ENCRYPT] || attrs[p11.CKA_WRAP] || attrs[p11.CKA_TOKEN] {
			t.Errorf("%d-byte secret: unwrapped with attributes %v", n, attrs)
		}
	}
	for _, n := range []int{1, 16, 25, 31, 513} {
		k, err := tok.UnwrapHMACKey(ctx, kek, kwpWrap(t, kekBytes, make([]byte, n)))
		if err == nil {
			_ = tok.DestroyKey(ctx, k)
		}
		if !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("UnwrapHMACKey of a %d-byte secret = %v, want ErrInvalidInput", n, err)
		}
	}
	for _, n := range []int{0, 16, 31, 513} {
		if _, err := tok.ImportHMACKeyForTesting(ctx, make([]byte, n)); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("ImportHMACKeyForTesting of %d bytes = %v, want ErrInvalidInput", n, err)
		}
	}
	// The Go KWP above is right: the HSM opens what it makes.
	raw := bytes.Repeat([]byte{0x42}, 32)
	dk, err := tok.UnwrapAESKey(ctx, kek, kwpWrap(t, kekBytes, raw))
	if err != nil {
		t.Fatalf("UnwrapAESKey of a Go-wrapped key: %v", err)
	}
	_ = dk
}
