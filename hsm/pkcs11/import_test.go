//go:build cgo

package pkcs11_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"hash"
	"testing"

	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/hsm/pkcs11"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
)

// importFixture is a token with a root key and a loaded RSA import key.
func importFixture(t *testing.T, bits int) (*pkcs11.Token, hsm.KeyHandle, hsm.KeyHandle, *rsa.PublicKey) {
	t.Helper()
	ctx := context.Background()
	tok := pkcs11test.NewToken(t)
	root, err := tok.EnsureRootKey(ctx, "root")
	if err != nil {
		t.Fatal(err)
	}
	spec := hsm.KeyPairSpec{Algorithm: "RSA", RSABits: bits}
	kp, err := tok.GenerateWrappedKeyPair(ctx, root, spec)
	if err != nil {
		t.Fatal(err)
	}
	ik, err := tok.LoadImportKey(ctx, root, kp.WrappedPrivate, spec)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(kp.PublicKeyDER)
	if err != nil {
		t.Fatal(err)
	}
	return tok, root, ik, pub.(*rsa.PublicKey)
}

func TestImportRoundTrip(t *testing.T) {
	ctx := context.Background()
	tok, root, ik, pub := importFixture(t, 3072)
	aesTarget := hsm.ImportTarget{Kind: hsm.ImportAES, Size: 32}
	type wrapper func(material []byte) []byte
	oaep := func(h func() hash.Hash) wrapper {
		return func(m []byte) []byte {
			ct, err := rsa.EncryptOAEP(h(), rand.Reader, pub, m, nil)
			if err != nil {
				t.Fatal(err)
			}
			return ct
		}
	}
	rsaAES := func(h func() hash.Hash) wrapper {
		return func(m []byte) []byte {
			eph := make([]byte, 32)
			rand.Read(eph)
			return append(oaep(h)(eph), kwpWrap(t, eph, m)...)
		}
	}
	cases := []struct {
		name string
		hash crypto.Hash
		wrap wrapper
	}{
		{"OAEP-SHA1", crypto.SHA1, oaep(sha1.New)},
		{"OAEP-SHA256", crypto.SHA256, oaep(sha256.New)},
		{"RSA-AES-SHA1", crypto.SHA1, rsaAES(sha1.New)},
		{"RSA-AES-SHA256", crypto.SHA256, rsaAES(sha256.New)},
	}
	for i, c := range cases {
		kw := i >= 2
		imp := func(ct []byte, target hsm.ImportTarget) ([]byte, error) {
			if kw {
				return tok.ImportRSAAESKeyWrap(ctx, ik, c.hash, ct, target, root)
			}
			return tok.ImportRSAOAEP(ctx, ik, c.hash, ct, target, root)
		}
		t.Run(c.name, func(t *testing.T) {
			material := make([]byte, 32)
			rand.Read(material)
			blob, err := imp(c.wrap(material), aesTarget)
			if err != nil {
				t.Fatal(err)
			}
			// The blob loads as any generated key does, and the HSM's
			// AES-GCM under it is Go's AES-GCM under the material.
			h, err := tok.UnwrapAESKey(ctx, root, blob)
			if err != nil {
				t.Fatal(err)
			}
			iv := make([]byte, 12)
			rand.Read(iv)
			got, err := tok.EncryptGCM(ctx, h, iv, []byte("hello"), []byte("aad"))
			if err != nil {
				t.Fatal(err)
			}
			blk, _ := aes.NewCipher(material)
			g, _ := cipher.NewGCM(blk)
			if want := g.Seal(nil, iv, []byte("hello"), []byte("aad")); !bytes.Equal(got, want) {
				t.Fatal("the imported key is not the customer's material")
			}
			// KWP is deterministic: the same material re-imports to the
			// same blob (what the same-material check relies on).
			again, err := imp(c.wrap(material), aesTarget)
			if err != nil || !bytes.Equal(again, blob) {
				t.Fatalf("re-import: %v, same blob %v", err, bytes.Equal(again, blob))
			}
			// Wrong length: 16 bytes where 32 are expected.
			if _, err := imp(c.wrap(material[:16]), aesTarget); !errors.Is(err, hsm.ErrInvalidInput) {
				t.Fatalf("16-byte material: %v, want ErrInvalidInput", err)
			}
			// A tampered ciphertext: one generic error.
			bad := c.wrap(material)
			bad[len(bad)-1] ^= 1
			if _, err := imp(bad, aesTarget); !errors.Is(err, hsm.ErrAuthFailed) {
				t.Fatalf("tampered: %v, want ErrAuthFailed", err)
			}
			if _, err := imp(bad[:len(bad)-8], aesTarget); !errors.Is(err, hsm.ErrAuthFailed) {
				t.Fatalf("truncated: %v, want ErrAuthFailed", err)
			}
		})
	}
	// HMAC material, through the HSM's own OAEP.
	secret := make([]byte, 32)
	rand.Read(secret)
	ct, _ := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, secret, nil)
	blob, err := tok.ImportRSAOAEP(ctx, ik, crypto.SHA1, ct, hsm.ImportTarget{Kind: hsm.ImportHMAC, Size: 32}, root)
	if err != nil {
		t.Fatal(err)
	}
	mk, err := tok.UnwrapHMACKey(ctx, root, blob)
	if err != nil {
		t.Fatal(err)
	}
	mac, err := tok.HMACSHA256(ctx, mk, []byte("msg"))
	if err != nil {
		t.Fatal(err)
	}
	hm := hmacSHA256(secret, []byte("msg"))
	if !bytes.Equal(mac, hm) {
		t.Fatal("the imported HMAC key is not the customer's")
	}
}

func hmacSHA256(key, msg []byte) []byte {
	// Spelled out so the test does not lean on the code under test.
	const bs = 64
	k := make([]byte, bs)
	copy(k, key)
	ipad, opad := make([]byte, bs), make([]byte, bs)
	for i := range k {
		ipad[i], opad[i] = k[i]^0x36, k[i]^0x5c
	}
	in := sha256.Sum256(append(ipad, msg...))
	out := sha256.Sum256(append(opad, in[:]...))
	return out[:]
}

func TestImportKeyCannotSign(t *testing.T) {
	ctx := context.Background()
	tok, _, ik, _ := importFixture(t, 3072)
	digest := sha256.Sum256([]byte("x"))
	if _, err := tok.Sign(ctx, ik, hsm.SignParams{Scheme: hsm.SchemeRSAPSS, Hash: crypto.SHA256}, digest[:]); err == nil {
		t.Fatal("an import key signed")
	}
}

func TestImportRSAPrivateKey(t *testing.T) {
	ctx := context.Background()
	tok, root, ik, pub := importFixture(t, 3072)
	spec := hsm.KeyPairSpec{Algorithm: "RSA", RSABits: 3072}
	wrap := func(t *testing.T, h func() hash.Hash, der []byte) []byte {
		eph := make([]byte, 32)
		rand.Read(eph)
		ct, err := rsa.EncryptOAEP(h(), rand.Reader, pub, eph, nil)
		if err != nil {
			t.Fatal(err)
		}
		return append(ct, kwpWrap(t, eph, der)...)
	}
	key, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	for name, c := range map[string]struct {
		h    func() hash.Hash
		hash crypto.Hash
	}{"SHA1": {sha1.New, crypto.SHA1}, "SHA256": {sha256.New, crypto.SHA256}} {
		t.Run(name, func(t *testing.T) {
			kp, err := tok.ImportPrivateKeyRSAAESKeyWrap(ctx, ik, c.hash, wrap(t, c.h, der), spec, root)
			if err != nil {
				t.Fatal(err)
			}
			wantPub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
			if !bytes.Equal(kp.PublicKeyDER, wantPub) {
				t.Fatal("the public key is not the customer's")
			}
			// The blob loads as a generated key pair's does, and signs
			// as the customer's key.
			h, err := tok.UnwrapPrivateKey(ctx, root, kp.WrappedPrivate, spec)
			if err != nil {
				t.Fatal(err)
			}
			digest := sha256.Sum256([]byte("signed in the HSM"))
			sig, err := tok.Sign(ctx, h, hsm.SignParams{Scheme: hsm.SchemeRSAPSS, Hash: crypto.SHA256}, digest[:])
			if err != nil {
				t.Fatal(err)
			}
			if err := rsa.VerifyPSS(&key.PublicKey, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}); err != nil {
				t.Fatalf("signature does not verify under the customer's key: %v", err)
			}
		})
	}
	small, _ := rsa.GenerateKey(rand.Reader, 2048)
	smallDER, _ := x509.MarshalPKCS8PrivateKey(small)
	if _, err := tok.ImportPrivateKeyRSAAESKeyWrap(ctx, ik, crypto.SHA256, wrap(t, sha256.New, smallDER), spec, root); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Fatalf("a 2048-bit key for a 3072-bit spec: %v, want ErrInvalidInput", err)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	if _, err := tok.ImportPrivateKeyRSAAESKeyWrap(ctx, ik, crypto.SHA256, wrap(t, sha256.New, ecDER), spec, root); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Fatalf("an EC key for an RSA spec: %v, want ErrInvalidInput", err)
	}
	bad := wrap(t, sha256.New, der)
	bad[len(bad)-1] ^= 1
	if _, err := tok.ImportPrivateKeyRSAAESKeyWrap(ctx, ik, crypto.SHA256, bad, spec, root); !errors.Is(err, hsm.ErrAuthFailed) {
		t.Fatalf("tampered: %v, want ErrAuthFailed", err)
	}
}
