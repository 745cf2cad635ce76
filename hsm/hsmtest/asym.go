package hsmtest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/keyflow/keyflow/hsm"
)

// The optional abilities (hsm.KeyPairs, hsm.Signer, hsm.RSAEncrypter,
// hsm.MACs) are checked only on backends that have them; the tests of an
// ability a backend lacks are skipped. Beyond the doc comments of package
// hsm, the suite holds those backends to these rules:
//   - GenerateWrappedKeyPair returns a SubjectPublicKeyInfo that
//     crypto/x509 parses, of the requested algorithm and size, and
//     signatures made with the unwrapped private key verify in Go's
//     crypto packages;
//   - a digest whose length is not the hash's is refused with
//     hsm.ErrInvalidInput, by Sign and Verify alike;
//   - a wrong, tampered, truncated or empty signature makes Verify return
//     hsm.ErrAuthFailed;
//   - a wrapped private key or secret with a flipped bit returns
//     hsm.ErrAuthFailed, and one holding another kind of key than the
//     spec says returns hsm.ErrInvalidInput;
//   - every failed OAEP decryption returns one error, with the same text;
//   - an operation waiting for a busy backend gives up with its context's
//     error, and the backend serves again afterwards.

// SessionBorrower is an optional test hook for backends that run
// operations on a bounded pool of device sessions. BorrowSessionForTest
// takes one session out of the pool, waiting if none is free and giving
// up when ctx is done, until release is called. With it the suite can
// make the pool run dry on purpose.
type SessionBorrower interface {
	BorrowSessionForTest(ctx context.Context) (release func(), err error)
}

// asymRunner is one test that needs some optional abilities.
type asymRunner struct {
	name string
	fn   func(t *testing.T, b hsm.Backend)
}

var asymTests = []asymRunner{
	{"SignRoundTrip", testSignRoundTrip},
	{"SignInputChecks", testSignInputChecks},
	{"UnwrapPrivateKeyChecks", testUnwrapPrivateKeyChecks},
	{"OAEPRoundTrip", testOAEPRoundTrip},
	{"OAEPFailures", testOAEPFailures},
	{"HMACRoundTrip", testHMACRoundTrip},
	{"AsymCanceledContext", testAsymCanceledContext},
	{"AsymUseAfterClose", testAsymUseAfterClose},
	{"SignPoolExhaustion", testSignPoolExhaustion},
}

type asymBackend interface {
	hsm.Backend
	hsm.KeyPairs
	hsm.Signer
}

func needAsym(t *testing.T, b hsm.Backend) asymBackend {
	t.Helper()
	a, ok := b.(asymBackend)
	if !ok {
		t.Skipf("%T does not implement hsm.KeyPairs and hsm.Signer", b)
	}
	return a
}

// keyPair is a generated key pair, loaded.
type keyPair struct {
	spec    hsm.KeyPairSpec
	wrapped *hsm.WrappedKeyPair
	pub     crypto.PublicKey // parsed from the SPKI
	priv    hsm.KeyHandle    // unwrapped private key
	pubKey  hsm.KeyHandle    // imported public key
}

func specName(s hsm.KeyPairSpec) string {
	switch s.Algorithm {
	case "RSA":
		return fmt.Sprintf("RSA-%d", s.RSABits)
	case "EC":
		return "EC-" + s.Curve
	default:
		return s.Algorithm
	}
}

// newKeyPair generates a key pair under wrap, checks its public key, and
// loads both halves, destroying them when the test ends.
func newKeyPair(t *testing.T, b asymBackend, wrap hsm.KeyHandle, spec hsm.KeyPairSpec) *keyPair {
	t.Helper()
	ctx := t.Context()
	w, err := b.GenerateWrappedKeyPair(ctx, wrap, spec)
	if err != nil {
		t.Fatalf("GenerateWrappedKeyPair(%s): %v", specName(spec), err)
	}
	pub, err := x509.ParsePKIXPublicKey(w.PublicKeyDER)
	if err != nil {
		t.Fatalf("GenerateWrappedKeyPair(%s): x509.ParsePKIXPublicKey: %v", specName(spec), err)
	}
	switch spec.Algorithm {
	case "RSA":
		k, ok := pub.(*rsa.PublicKey)
		if !ok || k.N.BitLen() != spec.RSABits || k.E != 65537 {
			t.Fatalf("GenerateWrappedKeyPair(%s) returned public key %T (want %d bits, e=65537)", specName(spec), pub, spec.RSABits)
		}
	case "EC":
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok || k.Curve.Params().Name != spec.Curve {
			t.Fatalf("GenerateWrappedKeyPair(%s) returned public key %T", specName(spec), pub)
		}
	case "ED25519":
		if _, ok := pub.(ed25519.PublicKey); !ok {
			t.Fatalf("GenerateWrappedKeyPair(%s) returned public key %T", specName(spec), pub)
		}
	}
	priv, err := b.UnwrapPrivateKey(ctx, wrap, w.WrappedPrivate, spec)
	if err != nil {
		t.Fatalf("UnwrapPrivateKey(%s): %v", specName(spec), err)
	}
	t.Cleanup(func() { _ = b.DestroyKey(context.Background(), priv) })
	pk, err := b.ImportPublicKey(ctx, w.PublicKeyDER)
	if err != nil {
		t.Fatalf("ImportPublicKey(%s): %v", specName(spec), err)
	}
	t.Cleanup(func() { _ = b.DestroyKey(context.Background(), pk) })
	return &keyPair{spec: spec, wrapped: w, pub: pub, priv: priv, pubKey: pk}
}

// schemes returns the ways keyflow signs with a key of this spec.
func schemes(spec hsm.KeyPairSpec) []hsm.SignParams {
	hashes := []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512}
	var out []hsm.SignParams
	switch spec.Algorithm {
	case "RSA":
		for _, h := range hashes {
			out = append(out, hsm.SignParams{Scheme: hsm.SchemeRSAPKCS1, Hash: h}, hsm.SignParams{Scheme: hsm.SchemeRSAPSS, Hash: h})
		}
	case "EC":
		for _, h := range hashes {
			out = append(out, hsm.SignParams{Scheme: hsm.SchemeECDSA, Hash: h})
		}
	case "ED25519":
		out = append(out, hsm.SignParams{Scheme: hsm.SchemeEd25519})
	}
	return out
}

// signInput returns what Sign takes for msg: its digest, or msg itself
// for Ed25519.
func signInput(p hsm.SignParams, msg []byte) []byte {
	if p.Scheme == hsm.SchemeEd25519 {
		return msg
	}
	h := p.Hash.New()
	h.Write(msg)
	return h.Sum(nil)
}

// goVerify checks a signature with Go's crypto packages.
func goVerify(pub crypto.PublicKey, p hsm.SignParams, input, sig []byte) error {
	switch p.Scheme {
	case hsm.SchemeECDSA:
		der, err := hsm.ECDSASigToDER(sig)
		if err != nil {
			return err
		}
		if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), input, der) {
			return errors.New("crypto/ecdsa: verification failed")
		}
		// Fixed length: both halves padded to the order's size.
		if size := (pub.(*ecdsa.PublicKey).Curve.Params().N.BitLen() + 7) / 8; len(sig) != 2*size {
			return fmt.Errorf("r||s is %d bytes, want %d", len(sig), 2*size)
		}
		return nil
	case hsm.SchemeRSAPKCS1:
		return rsa.VerifyPKCS1v15(pub.(*rsa.PublicKey), p.Hash, input, sig)
	case hsm.SchemeRSAPSS:
		return rsa.VerifyPSS(pub.(*rsa.PublicKey), p.Hash, input, sig, &rsa.PSSOptions{SaltLength: p.Hash.Size(), Hash: p.Hash})
	case hsm.SchemeEd25519:
		if !ed25519.Verify(pub.(ed25519.PublicKey), input, sig) {
			return errors.New("crypto/ed25519: verification failed")
		}
		return nil
	}
	return fmt.Errorf("unknown scheme %q", p.Scheme)
}

var allSpecs = []hsm.KeyPairSpec{
	{Algorithm: "RSA", RSABits: 2048},
	{Algorithm: "RSA", RSABits: 3072},
	{Algorithm: "RSA", RSABits: 4096},
	{Algorithm: "EC", Curve: "P-256"},
	{Algorithm: "EC", Curve: "P-384"},
	{Algorithm: "ED25519"},
}

// cheapSpecs are one spec per algorithm, for tests that need keys but do
// not test sizes.
var cheapSpecs = []hsm.KeyPairSpec{
	{Algorithm: "RSA", RSABits: 2048},
	{Algorithm: "EC", Curve: "P-256"},
	{Algorithm: "ED25519"},
}

func testSignRoundTrip(t *testing.T, b hsm.Backend) {
	a := needAsym(t, b)
	r := root(t, b, rootLabel)
	for _, spec := range allSpecs {
		t.Run(specName(spec), func(t *testing.T) {
			kp := newKeyPair(t, a, r, spec)
			// A second key of the same spec, for wrong-key checks.
			other := newKeyPair(t, a, r, spec)
			if bytes.Equal(kp.wrapped.PublicKeyDER, other.wrapped.PublicKeyDER) || bytes.Equal(kp.wrapped.WrappedPrivate, other.wrapped.WrappedPrivate) {
				t.Fatal("two generated key pairs are the same")
			}
			if bytes.Contains(kp.wrapped.WrappedPrivate, kp.wrapped.PublicKeyDER[len(kp.wrapped.PublicKeyDER)-16:]) {
				t.Error("the wrapped private key contains public key bytes in the clear")
			}
			msg := []byte("keyflow signs this message")
			for _, p := range schemes(spec) {
				name := string(p.Scheme)
				if p.Hash != 0 {
					name += "/" + p.Hash.String()
				}
				t.Run(name, func(t *testing.T) {
					ctx := t.Context()
					in := signInput(p, msg)
					sig, err := a.Sign(ctx, kp.priv, p, in)
					if err != nil {
						t.Fatalf("Sign: %v", err)
					}
					if err := goVerify(kp.pub, p, in, sig); err != nil {
						t.Fatalf("Go does not verify the signature: %v", err)
					}
					if err := a.Verify(ctx, kp.pubKey, p, in, sig); err != nil {
						t.Fatalf("Verify of a good signature: %v", err)
					}
					wantErr(t, "Verify with another key", a.Verify(ctx, other.pubKey, p, in, sig), hsm.ErrAuthFailed)
					other := signInput(p, []byte("another message"))
					wantErr(t, "Verify of another message", a.Verify(ctx, kp.pubKey, p, other, sig), hsm.ErrAuthFailed)
					for _, i := range []int{0, len(sig) / 2, len(sig) - 1} {
						bad := bytes.Clone(sig)
						bad[i] ^= 0x10
						wantErr(t, fmt.Sprintf("Verify with signature byte %d flipped", i), a.Verify(ctx, kp.pubKey, p, in, bad), hsm.ErrAuthFailed)
					}
					wantErr(t, "Verify of a truncated signature", a.Verify(ctx, kp.pubKey, p, in, sig[:len(sig)-1]), hsm.ErrAuthFailed)
					wantErr(t, "Verify of an extended signature", a.Verify(ctx, kp.pubKey, p, in, append(bytes.Clone(sig), 0)), hsm.ErrAuthFailed)
					wantErr(t, "Verify of an empty signature", a.Verify(ctx, kp.pubKey, p, in, nil), hsm.ErrAuthFailed)
				})
			}
			// The same blob loads again as the same key.
			again, err := a.UnwrapPrivateKey(t.Context(), r, kp.wrapped.WrappedPrivate, spec)
			if err != nil {
				t.Fatalf("UnwrapPrivateKey a second time: %v", err)
			}
			defer a.DestroyKey(context.Background(), again)
			p := schemes(spec)[0]
			in := signInput(p, msg)
			sig, err := a.Sign(t.Context(), again, p, in)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Verify(t.Context(), kp.pubKey, p, in, sig); err != nil {
				t.Errorf("a signature by the key unwrapped again does not verify: %v", err)
			}
		})
	}
}

func testSignInputChecks(t *testing.T, b hsm.Backend) {
	a := needAsym(t, b)
	r := root(t, b, rootLabel)
	ctx := t.Context()
	keys := map[string]*keyPair{}
	for _, spec := range cheapSpecs {
		keys[spec.Algorithm] = newKeyPair(t, a, r, spec)
	}
	for alg, kp := range keys {
		for _, p := range schemes(kp.spec) {
			if p.Scheme == hsm.SchemeEd25519 {
				continue
			}
			for _, n := range []int{0, 1, p.Hash.Size() - 1, p.Hash.Size() + 1, 20, 100} {
				if n == p.Hash.Size() {
					continue
				}
				what := fmt.Sprintf("%s %s/%v with a %d-byte digest", alg, p.Scheme, p.Hash, n)
				sig, err := a.Sign(ctx, kp.priv, p, make([]byte, n))
				if sig != nil {
					t.Errorf("Sign %s returned a signature", what)
				}
				wantErr(t, "Sign "+what, err, hsm.ErrInvalidInput)
				wantErr(t, "Verify "+what, a.Verify(ctx, kp.pubKey, p, make([]byte, n), make([]byte, 64)), hsm.ErrInvalidInput)
			}
		}
	}
	d := sha256.Sum256([]byte("x"))
	for what, c := range map[string]struct {
		key *keyPair
		p   hsm.SignParams
		in  []byte
	}{
		"ECDSA with SHA-1":          {keys["EC"], hsm.SignParams{Scheme: hsm.SchemeECDSA, Hash: crypto.SHA1}, d[:20]},
		"ECDSA with no hash":        {keys["EC"], hsm.SignParams{Scheme: hsm.SchemeECDSA}, d[:]},
		"Ed25519 with a hash":       {keys["ED25519"], hsm.SignParams{Scheme: hsm.SchemeEd25519, Hash: crypto.SHA256}, d[:]},
		"an unknown scheme":         {keys["EC"], hsm.SignParams{Scheme: "DSA", Hash: crypto.SHA256}, d[:]},
		"ECDSA with an RSA key":     {keys["RSA"], hsm.SignParams{Scheme: hsm.SchemeECDSA, Hash: crypto.SHA256}, d[:]},
		"RSA-PSS with an EC key":    {keys["EC"], hsm.SignParams{Scheme: hsm.SchemeRSAPSS, Hash: crypto.SHA256}, d[:]},
		"Ed25519 with an EC key":    {keys["EC"], hsm.SignParams{Scheme: hsm.SchemeEd25519}, d[:]},
		"ECDSA with an Ed25519 key": {keys["ED25519"], hsm.SignParams{Scheme: hsm.SchemeECDSA, Hash: crypto.SHA256}, d[:]},
	} {
		sig, err := a.Sign(ctx, c.key.priv, c.p, c.in)
		if sig != nil {
			t.Errorf("Sign %s returned a signature", what)
		}
		wantErr(t, "Sign "+what, err, hsm.ErrInvalidInput)
	}
	// A public key does not sign.
	p := hsm.SignParams{Scheme: hsm.SchemeECDSA, Hash: crypto.SHA256}
	if sig, err := a.Sign(ctx, keys["EC"].pubKey, p, d[:]); err == nil || sig != nil {
		t.Errorf("Sign with a public key = %x, %v; want an error", sig, err)
	}
	// A destroyed key is not found.
	w := keys["EC"].wrapped
	k, err := a.UnwrapPrivateKey(ctx, r, w.WrappedPrivate, keys["EC"].spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.DestroyKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	_, err = a.Sign(ctx, k, p, d[:])
	wantErr(t, "Sign with a destroyed key", err, hsm.ErrNotFound)

	// Public keys of other kinds are refused.
	for what, der := range map[string][]byte{
		"garbage":      []byte("not a key"),
		"empty":        nil,
		"RSA-1024 key": mustRSA1024SPKI(t),
	} {
		if k, err := a.ImportPublicKey(ctx, der); err == nil {
			_ = a.DestroyKey(ctx, k)
			t.Errorf("ImportPublicKey of %s succeeded", what)
		} else {
			wantErr(t, "ImportPublicKey of "+what, err, hsm.ErrInvalidInput)
		}
	}
	// Specs that name no key are refused.
	for _, spec := range []hsm.KeyPairSpec{
		{}, {Algorithm: "RSA"}, {Algorithm: "RSA", RSABits: 1024}, {Algorithm: "RSA", RSABits: 2047},
		{Algorithm: "EC"}, {Algorithm: "EC", Curve: "P-521"}, {Algorithm: "EC", Curve: "secp256k1"},
		{Algorithm: "ED25519", Curve: "P-256"}, {Algorithm: "DSA"}, {Algorithm: "rsa", RSABits: 2048},
	} {
		w, err := a.GenerateWrappedKeyPair(ctx, r, spec)
		if w != nil {
			t.Errorf("GenerateWrappedKeyPair(%+v) returned a key pair", spec)
		}
		wantErr(t, fmt.Sprintf("GenerateWrappedKeyPair(%+v)", spec), err, hsm.ErrInvalidInput)
	}
}

func mustRSA1024SPKI(t *testing.T) []byte {
	t.Helper()
	// A 1024-bit modulus needs no private key: any odd number does.
	n := new(big.Int).Lsh(big.NewInt(1), 1023)
	n.Or(n, big.NewInt(0xffff))
	der, err := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: n, E: 65537})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func testUnwrapPrivateKeyChecks(t *testing.T, b hsm.Backend) {
	a := needAsym(t, b)
	r := root(t, b, rootLabel)
	ctx := t.Context()
	blobs := map[string]*hsm.WrappedKeyPair{}
	specs := map[string]hsm.KeyPairSpec{}
	for _, spec := range []hsm.KeyPairSpec{
		{Algorithm: "RSA", RSABits: 2048},
		{Algorithm: "EC", Curve: "P-256"},
		{Algorithm: "EC", Curve: "P-384"},
		{Algorithm: "ED25519"},
	} {
		w, err := a.GenerateWrappedKeyPair(ctx, r, spec)
		if err != nil {
			t.Fatal(err)
		}
		blobs[specName(spec)], specs[specName(spec)] = w, spec
	}
	for name, w := range blobs {
		spec := specs[name]
		// Every bit matters.
		for _, i := range []int{0, 7, len(w.WrappedPrivate) / 2, len(w.WrappedPrivate) - 1} {
			bad := bytes.Clone(w.WrappedPrivate)
			bad[i] ^= 0x04
			k, err := a.UnwrapPrivateKey(ctx, r, bad, spec)
			if err == nil {
				_ = a.DestroyKey(ctx, k)
			}
			wantErr(t, fmt.Sprintf("%s: blob byte %d flipped", name, i), err, hsm.ErrAuthFailed)
		}
		for _, n := range []int{0, 8, 16, len(w.WrappedPrivate) - 8, len(w.WrappedPrivate) - 1} {
			k, err := a.UnwrapPrivateKey(ctx, r, w.WrappedPrivate[:n], spec)
			if err == nil {
				_ = a.DestroyKey(ctx, k)
			}
			wantErr(t, fmt.Sprintf("%s: blob truncated to %d bytes", name, n), err, hsm.ErrAuthFailed, hsm.ErrInvalidInput)
		}
		// Under another wrapping key it does not open.
		k, err := a.UnwrapPrivateKey(ctx, root(t, b, rootLabel+"-other"), w.WrappedPrivate, spec)
		if err == nil {
			_ = a.DestroyKey(ctx, k)
		}
		wantErr(t, name+": blob under another root key", err, hsm.ErrAuthFailed)
		// As another kind of key it is refused.
		for other, otherSpec := range specs {
			if other == name {
				continue
			}
			k, err := a.UnwrapPrivateKey(ctx, r, w.WrappedPrivate, otherSpec)
			if err == nil {
				_ = a.DestroyKey(ctx, k)
			}
			wantErr(t, fmt.Sprintf("a %s blob unwrapped as %s", name, other), err, hsm.ErrInvalidInput)
		}
		k, err = a.UnwrapPrivateKey(ctx, r, w.WrappedPrivate, hsm.KeyPairSpec{Algorithm: "RSA", RSABits: 3072})
		if err == nil {
			_ = a.DestroyKey(ctx, k)
		}
		wantErr(t, fmt.Sprintf("a %s blob unwrapped as RSA-3072", name), err, hsm.ErrInvalidInput)
	}
	// A wrapped AES key is not a private key.
	aes, err := b.GenerateWrappedAESKey(ctx, r, 32)
	if err != nil {
		t.Fatal(err)
	}
	for name, spec := range specs {
		k, err := a.UnwrapPrivateKey(ctx, r, aes, spec)
		if err == nil {
			_ = a.DestroyKey(ctx, k)
		}
		wantErr(t, "a wrapped AES key unwrapped as "+name, err, hsm.ErrInvalidInput)
	}
}

// oaepBackend is a backend that does RSA-OAEP.
type oaepBackend interface {
	asymBackend
	hsm.RSAEncrypter
}

func needOAEP(t *testing.T, b hsm.Backend) oaepBackend {
	t.Helper()
	a, ok := b.(oaepBackend)
	if !ok {
		t.Skipf("%T does not implement hsm.KeyPairs, hsm.Signer and hsm.RSAEncrypter", b)
	}
	return a
}

// oaepHashes are the hashes every RSAEncrypter must do.
var oaepHashes = []crypto.Hash{crypto.SHA1, crypto.SHA256}

func testOAEPRoundTrip(t *testing.T, b hsm.Backend) {
	a := needOAEP(t, b)
	r := root(t, b, rootLabel)
	for _, bits := range []int{2048, 3072} {
		kp := newKeyPair(t, a, r, hsm.KeyPairSpec{Algorithm: "RSA", RSABits: bits})
		pub := kp.pub.(*rsa.PublicKey)
		for _, h := range oaepHashes {
			for _, label := range [][]byte{nil, []byte("tenant=a;key=k1")} {
				t.Run(fmt.Sprintf("%d/%v/label=%d", bits, h, len(label)), func(t *testing.T) {
					ctx := t.Context()
					maxLen := pub.Size() - 2*h.Size() - 2
					for _, n := range []int{0, 1, 32, maxLen} {
						pt := randomBytes(t, n)
						ct, err := a.EncryptOAEP(ctx, kp.pubKey, h, pt, label)
						if err != nil {
							t.Fatalf("EncryptOAEP of %d bytes: %v", n, err)
						}
						if len(ct) != pub.Size() {
							t.Fatalf("EncryptOAEP: ciphertext is %d bytes, modulus %d", len(ct), pub.Size())
						}
						got, err := a.DecryptOAEP(ctx, kp.priv, h, ct, label)
						if err != nil || !bytes.Equal(got, pt) {
							t.Fatalf("DecryptOAEP of EncryptOAEP = %x, %v; want %x", got, err, pt)
						}
						// Interoperable with crypto/rsa both ways.
						goCT, err := rsa.EncryptOAEP(h.New(), rand.Reader, pub, pt, label)
						if err != nil {
							t.Fatal(err)
						}
						got, err = a.DecryptOAEP(ctx, kp.priv, h, goCT, label)
						if err != nil || !bytes.Equal(got, pt) {
							t.Fatalf("DecryptOAEP of a crypto/rsa ciphertext = %x, %v; want %x", got, err, pt)
						}
					}
					// Randomised: two encryptions differ.
					c1, _ := a.EncryptOAEP(ctx, kp.pubKey, h, []byte("x"), label)
					c2, _ := a.EncryptOAEP(ctx, kp.pubKey, h, []byte("x"), label)
					if bytes.Equal(c1, c2) {
						t.Error("two OAEP encryptions of one message are equal")
					}
					// Too long for the key.
					_, err := a.EncryptOAEP(ctx, kp.pubKey, h, make([]byte, maxLen+1), label)
					wantErr(t, "EncryptOAEP of a message one byte too long", err, hsm.ErrInvalidInput)
				})
			}
		}
	}
}

func testOAEPFailures(t *testing.T, b hsm.Backend) {
	a := needOAEP(t, b)
	r := root(t, b, rootLabel)
	ctx := t.Context()
	kp := newKeyPair(t, a, r, hsm.KeyPairSpec{Algorithm: "RSA", RSABits: 2048})
	other := newKeyPair(t, a, r, hsm.KeyPairSpec{Algorithm: "RSA", RSABits: 2048})
	for _, h := range oaepHashes {
		for _, label := range [][]byte{nil, []byte("label")} {
			pt := []byte("thirty-two bytes of secret data!")
			ct, err := a.EncryptOAEP(ctx, kp.pubKey, h, pt, label)
			if err != nil {
				t.Fatal(err)
			}
			var first error
			fail := func(what string, key hsm.KeyHandle, ct, label []byte) {
				t.Helper()
				out, err := a.DecryptOAEP(ctx, key, h, ct, label)
				what = fmt.Sprintf("%v, label %q: %s", h, label, what)
				if out != nil {
					t.Errorf("%s: returned plaintext %x", what, out)
				}
				wantErr(t, what, err, hsm.ErrAuthFailed)
				if err == nil {
					return
				}
				if first == nil {
					first = err
				} else if err.Error() != first.Error() {
					t.Errorf("%s: error %q differs from an earlier failure's %q", what, err, first)
				}
			}
			for i := 0; i < len(ct); i += 17 {
				bad := bytes.Clone(ct)
				bad[i] ^= 0x01 << (i % 8)
				fail(fmt.Sprintf("ciphertext byte %d flipped", i), kp.priv, bad, label)
			}
			fail("another label", kp.priv, ct, append(bytes.Clone(label), 'x'))
			if len(label) > 0 {
				fail("no label", kp.priv, ct, nil)
			} else {
				fail("a label", kp.priv, ct, []byte("label"))
			}
			fail("another key", other.priv, ct, label)
			fail("truncated", kp.priv, ct[:len(ct)-1], label)
			fail("extended", kp.priv, append(bytes.Clone(ct), 0), label)
			fail("empty", kp.priv, nil, label)
			fail("all ones (not below the modulus)", kp.priv, bytes.Repeat([]byte{0xff}, len(ct)), label)
			fail("zero", kp.priv, make([]byte, len(ct)), label)
			// The original still opens.
			if got, err := a.DecryptOAEP(ctx, kp.priv, h, ct, label); err != nil || !bytes.Equal(got, pt) {
				t.Errorf("%v: the intact ciphertext = %x, %v", h, got, err)
			}
		}
	}
	_, err := a.EncryptOAEP(ctx, kp.pubKey, crypto.MD5, []byte("x"), nil)
	wantErr(t, "EncryptOAEP with MD5", err, hsm.ErrInvalidInput)
	_, err = a.DecryptOAEP(ctx, kp.priv, crypto.MD5, make([]byte, 256), nil)
	wantErr(t, "DecryptOAEP with MD5", err, hsm.ErrInvalidInput)
	ec := newKeyPair(t, a, r, hsm.KeyPairSpec{Algorithm: "EC", Curve: "P-256"})
	_, err = a.EncryptOAEP(ctx, ec.pubKey, crypto.SHA256, []byte("x"), nil)
	wantErr(t, "EncryptOAEP to an EC key", err, hsm.ErrInvalidInput)
	_, err = a.DecryptOAEP(ctx, ec.priv, crypto.SHA256, make([]byte, 256), nil)
	wantErr(t, "DecryptOAEP with an EC key", err, hsm.ErrInvalidInput)
}

type macBackend interface {
	hsm.Backend
	hsm.MACs
}

func testHMACRoundTrip(t *testing.T, b hsm.Backend) {
	m, ok := b.(macBackend)
	if !ok {
		t.Skipf("%T does not implement hsm.MACs", b)
	}
	r := root(t, b, rootLabel)
	ctx := t.Context()
	for _, size := range []int{-1, 0, 1, 16, 31} {
		blob, err := m.GenerateWrappedSecret(ctx, r, size)
		if blob != nil {
			t.Errorf("GenerateWrappedSecret(%d) returned a blob", size)
		}
		wantErr(t, fmt.Sprintf("GenerateWrappedSecret(%d)", size), err, hsm.ErrInvalidInput)
	}
	load := func(blob []byte) hsm.KeyHandle {
		t.Helper()
		k, err := m.UnwrapHMACKey(ctx, r, blob)
		if err != nil {
			t.Fatalf("UnwrapHMACKey: %v", err)
		}
		t.Cleanup(func() { _ = m.DestroyKey(context.Background(), k) })
		return k
	}
	mac := func(k hsm.KeyHandle, data []byte) []byte {
		t.Helper()
		out, err := m.HMACSHA256(ctx, k, data)
		if err != nil {
			t.Fatalf("HMACSHA256: %v", err)
		}
		if len(out) != 32 {
			t.Fatalf("HMACSHA256 returned %d bytes", len(out))
		}
		return out
	}
	for _, size := range []int{32, 48, 64} {
		blob, err := m.GenerateWrappedSecret(ctx, r, size)
		if err != nil {
			t.Fatalf("GenerateWrappedSecret(%d): %v", size, err)
		}
		k1, k2 := load(blob), load(blob)
		blob2, err := m.GenerateWrappedSecret(ctx, r, size)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(blob, blob2) {
			t.Fatal("two GenerateWrappedSecret calls returned the same blob")
		}
		k3 := load(blob2)
		for _, n := range []int{0, 1, 64, 1000} {
			data := randomBytes(t, n)
			a, b := mac(k1, data), mac(k2, data)
			if !bytes.Equal(a, b) {
				t.Errorf("one secret unwrapped twice gives two MACs")
			}
			if bytes.Equal(a, mac(k3, data)) {
				t.Errorf("two secrets give the same MAC")
			}
			if bytes.Equal(a, mac(k1, append(bytes.Clone(data), 0))) {
				t.Errorf("two messages give the same MAC")
			}
		}
		for _, i := range []int{0, len(blob) / 2, len(blob) - 1} {
			bad := bytes.Clone(blob)
			bad[i] ^= 0x02
			k, err := m.UnwrapHMACKey(ctx, r, bad)
			if err == nil {
				_ = m.DestroyKey(ctx, k)
			}
			wantErr(t, fmt.Sprintf("secret blob byte %d flipped", i), err, hsm.ErrAuthFailed)
		}
	}
	// An HMAC key does not encrypt, and a data key does not MAC.
	blob, err := m.GenerateWrappedSecret(ctx, r, 32)
	if err != nil {
		t.Fatal(err)
	}
	hk := load(blob)
	if ct, err := m.EncryptGCM(ctx, hk, iv(t), []byte("x"), nil); err == nil || ct != nil {
		t.Errorf("EncryptGCM under an HMAC key = %x, %v; want an error", ct, err)
	}
	dk, _ := dataKey(t, b, r)
	if out, err := m.HMACSHA256(ctx, dk, []byte("x")); err == nil || out != nil {
		t.Errorf("HMACSHA256 under an AES data key = %x, %v; want an error", out, err)
	}
}

func testAsymCanceledContext(t *testing.T, b hsm.Backend) {
	a := needOAEP(t, b)
	r := root(t, b, rootLabel)
	kp := newKeyPair(t, a, r, hsm.KeyPairSpec{Algorithm: "RSA", RSABits: 2048})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	check := func(what string, err error) {
		t.Helper()
		wantErr(t, what+" with a canceled context", err, context.Canceled)
	}
	p := hsm.SignParams{Scheme: hsm.SchemeRSAPSS, Hash: crypto.SHA256}
	d := sha256.Sum256([]byte("x"))
	_, err := a.GenerateWrappedKeyPair(ctx, r, kp.spec)
	check("GenerateWrappedKeyPair", err)
	_, err = a.UnwrapPrivateKey(ctx, r, kp.wrapped.WrappedPrivate, kp.spec)
	check("UnwrapPrivateKey", err)
	_, err = a.ImportPublicKey(ctx, kp.wrapped.PublicKeyDER)
	check("ImportPublicKey", err)
	_, err = a.Sign(ctx, kp.priv, p, d[:])
	check("Sign", err)
	check("Verify", a.Verify(ctx, kp.pubKey, p, d[:], make([]byte, 256)))
	_, err = a.EncryptOAEP(ctx, kp.pubKey, crypto.SHA256, []byte("x"), nil)
	check("EncryptOAEP", err)
	_, err = a.DecryptOAEP(ctx, kp.priv, crypto.SHA256, make([]byte, 256), nil)
	check("DecryptOAEP", err)
	if m, ok := b.(macBackend); ok {
		_, err = m.GenerateWrappedSecret(ctx, r, 32)
		check("GenerateWrappedSecret", err)
		blob, err := m.GenerateWrappedSecret(t.Context(), r, 32)
		if err != nil {
			t.Fatal(err)
		}
		_, err = m.UnwrapHMACKey(ctx, r, blob)
		check("UnwrapHMACKey", err)
		_, err = m.HMACSHA256(ctx, kp.priv, []byte("x"))
		check("HMACSHA256", err)
	}
	// Nothing was done: the key still signs.
	if _, err := a.Sign(t.Context(), kp.priv, p, d[:]); err != nil {
		t.Errorf("Sign after the canceled calls: %v", err)
	}
}

func testAsymUseAfterClose(t *testing.T, b hsm.Backend) {
	a := needOAEP(t, b)
	r := root(t, b, rootLabel)
	ctx := t.Context()
	spec := hsm.KeyPairSpec{Algorithm: "EC", Curve: "P-256"}
	w, err := a.GenerateWrappedKeyPair(ctx, r, spec)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := a.UnwrapPrivateKey(ctx, r, w.WrappedPrivate, spec)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := a.ImportPublicKey(ctx, w.PublicKeyDER)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	check := func(what string, err error) {
		t.Helper()
		wantErr(t, what+" after Close", err, hsm.ErrClosed)
	}
	p := hsm.SignParams{Scheme: hsm.SchemeECDSA, Hash: crypto.SHA256}
	d := sha256.Sum256([]byte("x"))
	_, err = a.GenerateWrappedKeyPair(ctx, r, spec)
	check("GenerateWrappedKeyPair", err)
	_, err = a.UnwrapPrivateKey(ctx, r, w.WrappedPrivate, spec)
	check("UnwrapPrivateKey", err)
	_, err = a.ImportPublicKey(ctx, w.PublicKeyDER)
	check("ImportPublicKey", err)
	_, err = a.Sign(ctx, priv, p, d[:])
	check("Sign", err)
	check("Verify", a.Verify(ctx, pub, p, d[:], make([]byte, 64)))
	_, err = a.EncryptOAEP(ctx, pub, crypto.SHA256, []byte("x"), nil)
	check("EncryptOAEP", err)
	_, err = a.DecryptOAEP(ctx, priv, crypto.SHA256, make([]byte, 256), nil)
	check("DecryptOAEP", err)
	if m, ok := b.(macBackend); ok {
		_, err = m.GenerateWrappedSecret(ctx, r, 32)
		check("GenerateWrappedSecret", err)
		_, err = m.UnwrapHMACKey(ctx, r, make([]byte, 40))
		check("UnwrapHMACKey", err)
		_, err = m.HMACSHA256(ctx, priv, []byte("x"))
		check("HMACSHA256", err)
	}
}

// testSignPoolExhaustion runs many signatures at once against a backend
// whose sessions are nearly all taken, and, where the backend lets the
// suite take them (SessionBorrower), checks that a signer waiting for a
// session gives up with its context's error and that the backend serves
// again afterwards.
func testSignPoolExhaustion(t *testing.T, b hsm.Backend) {
	a := needAsym(t, b)
	r := root(t, b, rootLabel)
	kp := newKeyPair(t, a, r, hsm.KeyPairSpec{Algorithm: "EC", Curve: "P-256"})
	p := hsm.SignParams{Scheme: hsm.SchemeECDSA, Hash: crypto.SHA256}
	d := sha256.Sum256([]byte("pool"))

	var held []func()
	releaseAll := func() {
		for _, release := range held {
			release()
		}
		held = nil
	}
	defer releaseAll()
	if borrower, ok := b.(SessionBorrower); ok {
		// Take sessions until none is left: a borrow that waits this
		// long with nothing else running means the pool is dry.
		for len(held) < 1024 {
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			release, err := borrower.BorrowSessionForTest(ctx)
			cancel()
			if err != nil {
				wantErr(t, "borrowing from a dry pool", err, context.DeadlineExceeded)
				break
			}
			held = append(held, release)
		}
		t.Logf("the backend has %d sessions", len(held))

		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() {
			_, err := a.Sign(ctx, kp.priv, p, d[:])
			errc <- err
		}()
		select {
		case err := <-errc:
			t.Fatalf("Sign returned (%v) while every session was taken", err)
		case <-time.After(100 * time.Millisecond):
		}
		cancel()
		select {
		case err := <-errc:
			wantErr(t, "Sign canceled while waiting for a session", err, context.Canceled)
		case <-time.After(5 * time.Second):
			t.Fatal("Sign did not give up when its context was canceled")
		}
		// Leave two sessions for everyone.
		for range min(2, len(held)) {
			held[len(held)-1]()
			held = held[:len(held)-1]
		}
	} else {
		t.Log("the backend does not implement hsmtest.SessionBorrower; testing concurrency only")
	}

	const workers, rounds = 32, 8
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				msg := fmt.Appendf(nil, "worker %d round %d", w, i)
				digest := sha256.Sum256(msg)
				sig, err := a.Sign(t.Context(), kp.priv, p, digest[:])
				if err != nil {
					t.Errorf("worker %d: Sign: %v", w, err)
					return
				}
				if err := goVerify(kp.pub, p, digest[:], sig); err != nil {
					t.Errorf("worker %d: %v", w, err)
					return
				}
				if i%2 == 0 {
					if err := a.Verify(t.Context(), kp.pubKey, p, digest[:], sig); err != nil {
						t.Errorf("worker %d: Verify: %v", w, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	releaseAll()
	sig, err := a.Sign(t.Context(), kp.priv, p, d[:])
	if err != nil {
		t.Fatalf("Sign after the pool recovered: %v", err)
	}
	if err := a.Verify(t.Context(), kp.pubKey, p, d[:], sig); err != nil {
		t.Fatalf("Verify after the pool recovered: %v", err)
	}
}
