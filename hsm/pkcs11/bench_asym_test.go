//go:build cgo

package pkcs11_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"testing"

	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/hsm/pkcs11"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
)

// benchPair returns a token and a private key reached the way keyflow
// reaches one: generated, wrapped under the root key, unwrapped.
func benchPair(b *testing.B, spec hsm.KeyPairSpec) (*pkcs11.Token, hsm.KeyHandle, *hsm.WrappedKeyPair) {
	b.Helper()
	tok := pkcs11test.NewToken(b)
	ctx := b.Context()
	root, err := tok.EnsureRootKey(ctx, "bench-root")
	if err != nil {
		b.Fatal(err)
	}
	w, err := tok.GenerateWrappedKeyPair(ctx, root, spec)
	if err != nil {
		b.Fatal(err)
	}
	k, err := tok.UnwrapPrivateKey(ctx, root, w.WrappedPrivate, spec)
	if err != nil {
		b.Fatal(err)
	}
	return tok, k, w
}

func reportOps(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func BenchmarkSignECDSAP256(b *testing.B) {
	tok, k, _ := benchPair(b, hsm.KeyPairSpec{Algorithm: "EC", Curve: "P-256"})
	ctx := b.Context()
	p := hsm.SignParams{Scheme: hsm.SchemeECDSA, Hash: crypto.SHA256}
	d := sha256.Sum256([]byte("benchmark"))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := tok.Sign(ctx, k, p, d[:]); err != nil {
			b.Fatal(err)
		}
	}
	reportOps(b)
}

func BenchmarkSignEd25519(b *testing.B) {
	tok, k, _ := benchPair(b, hsm.KeyPairSpec{Algorithm: "ED25519"})
	ctx := b.Context()
	p := hsm.SignParams{Scheme: hsm.SchemeEd25519}
	msg := make([]byte, 32)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := tok.Sign(ctx, k, p, msg); err != nil {
			b.Fatal(err)
		}
	}
	reportOps(b)
}

func BenchmarkDecryptRSA3072OAEP256(b *testing.B) {
	tok, k, w := benchPair(b, hsm.KeyPairSpec{Algorithm: "RSA", RSABits: 3072})
	ctx := b.Context()
	pub, err := x509.ParsePKIXPublicKey(w.PublicKeyDER)
	if err != nil {
		b.Fatal(err)
	}
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub.(*rsa.PublicKey), make([]byte, 32), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := tok.DecryptOAEP(ctx, k, crypto.SHA256, ct, nil); err != nil {
			b.Fatal(err)
		}
	}
	reportOps(b)
}

func BenchmarkHMACSHA256(b *testing.B) {
	tok := pkcs11test.NewToken(b)
	ctx := b.Context()
	root, err := tok.EnsureRootKey(ctx, "bench-root")
	if err != nil {
		b.Fatal(err)
	}
	blob, err := tok.GenerateWrappedSecret(ctx, root, 32)
	if err != nil {
		b.Fatal(err)
	}
	k, err := tok.UnwrapHMACKey(ctx, root, blob)
	if err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, 32)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := tok.HMACSHA256(ctx, k, msg); err != nil {
			b.Fatal(err)
		}
	}
	reportOps(b)
}
