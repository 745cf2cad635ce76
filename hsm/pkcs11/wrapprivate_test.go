//go:build cgo

package pkcs11_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
)

// WrapPrivateKey turns a Go private key into the blob of a generated
// pair: UnwrapPrivateKey loads it and it signs as the Go key does; a key
// that is not of the spec, or not PKCS#8, is refused.
func TestWrapPrivateKey(t *testing.T) {
	tok := pkcs11test.NewToken(t)
	ctx := t.Context()
	root, err := tok.EnsureRootKey(ctx, "keyflow-root")
	if err != nil {
		t.Fatal(err)
	}
	rk, _ := rsa.GenerateKey(rand.Reader, 3072)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rder, _ := x509.MarshalPKCS8PrivateKey(rk)
	eder, _ := x509.MarshalPKCS8PrivateKey(ek)
	rspec := hsm.KeyPairSpec{Algorithm: "RSA", RSABits: 3072}
	espec := hsm.KeyPairSpec{Algorithm: "EC", Curve: "P-256"}
	d := sha256.Sum256([]byte("wrapped from Go"))
	for _, tc := range []struct {
		der  []byte
		spec hsm.KeyPairSpec
		pub  crypto.PublicKey
		p    hsm.SignParams
	}{
		{rder, rspec, &rk.PublicKey, hsm.SignParams{Scheme: hsm.SchemeRSAPKCS1, Hash: crypto.SHA256}},
		{eder, espec, &ek.PublicKey, hsm.SignParams{Scheme: hsm.SchemeECDSA, Hash: crypto.SHA256}},
	} {
		kp, err := tok.WrapPrivateKey(ctx, root, tc.der, tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := x509.MarshalPKIXPublicKey(tc.pub)
		if !bytes.Equal(kp.PublicKeyDER, want) {
			t.Fatalf("%v: the public key is not the Go key's", tc.spec)
		}
		h, err := tok.UnwrapPrivateKey(ctx, root, kp.WrappedPrivate, tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := tok.Sign(ctx, h, tc.p, d[:])
		if err != nil {
			t.Fatal(err)
		}
		ok := false
		switch pub := tc.pub.(type) {
		case *rsa.PublicKey:
			ok = rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], sig) == nil
		case *ecdsa.PublicKey:
			der, _ := hsm.ECDSASigToDER(sig)
			ok = ecdsa.VerifyASN1(pub, d[:], der)
		}
		if !ok {
			t.Fatalf("%v: the loaded key does not sign as the Go key", tc.spec)
		}
	}
	for name, tc := range map[string]struct {
		der  []byte
		spec hsm.KeyPairSpec
	}{
		"RSA as EC":        {rder, espec},
		"RSA-3072 as 4096": {rder, hsm.KeyPairSpec{Algorithm: "RSA", RSABits: 4096}},
		"P-256 as P-384":   {eder, hsm.KeyPairSpec{Algorithm: "EC", Curve: "P-384"}},
		"Ed25519 spec":     {eder, hsm.KeyPairSpec{Algorithm: "ED25519"}},
		"not PKCS#8":       {[]byte("not a key"), rspec},
	} {
		if _, err := tok.WrapPrivateKey(ctx, root, tc.der, tc.spec); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("%s: %v, want ErrInvalidInput", name, err)
		}
	}
}
