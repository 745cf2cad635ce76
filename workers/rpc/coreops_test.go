package rpc_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strings"
	"testing"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/schemas"
)

// The crypto-core operations over real NATS and SoftHSM: key specs,
// signatures, MACs, public keys, RSA-OAEP, random bytes, re-encryption,
// data key pairs and batches. Every result that can be checked outside
// keyflow (signatures, public keys, data key pairs, OAEP) is checked with Go's
// own crypto.

// coreWant asserts that err is a keyflow refusal with code; it reports (and
// does not stop) on a mismatch and returns the error, or nil.
func coreWant(t *testing.T, what string, err error, code kms.Code) *client.Error {
	t.Helper()
	var ce *client.Error
	if !errors.As(err, &ce) {
		t.Errorf("%s: got %v (%T), want a refusal with code %s", what, err, err, code)
		return nil
	}
	if ce.Code != string(code) {
		t.Errorf("%s: got code %s (%q), want %s", what, ce.Code, ce.Message, code)
	}
	if ce.Message == "" {
		t.Errorf("%s: %s has an empty message", what, ce.Code)
	}
	return ce
}

// coreKey creates a key with spec and usage ("" for the defaults) and stops
// the test if it cannot.
func coreKey(t *testing.T, c *client.Client, alias, spec, usage string) *api.KeyMetadata {
	t.Helper()
	k, err := c.CreateKey(t.Context(), api.CreateKeyRequest{Alias: alias, KeySpec: spec, KeyUsage: usage})
	if err != nil {
		t.Fatalf("CreateKey(%s, %s, %s): %v", alias, spec, usage, err)
	}
	return k
}

// coreRotate makes version next of a key and makes it primary, as the
// rotation workflow's activities do.
func coreRotate(t *testing.T, b *testbed.Bed, keyID string) uint32 {
	t.Helper()
	ctx := t.Context()
	caller := kms.Caller{Tenant: "alpha", Principal: "alice"}
	next, err := b.KMS.NextVersion(ctx, caller, keyID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.CreateVersion(ctx, caller, kms.CreateVersionParams{KeyID: keyID, Version: next}); err != nil {
		t.Fatalf("CreateVersion %d: %v", next, err)
	}
	if _, err := b.KMS.SetPrimaryVersion(ctx, caller, kms.SetPrimaryParams{KeyID: keyID, Version: next}); err != nil {
		t.Fatalf("SetPrimaryVersion %d: %v", next, err)
	}
	return next
}

// corePublicKey reads a version's public key and parses it.
func corePublicKey(t *testing.T, c *client.Client, keyID string, version uint32) (any, *api.PublicKeyReply) {
	t.Helper()
	r, err := c.GetPublicKey(t.Context(), api.PublicKeyRequest{KeyID: keyID, KeyVersion: version})
	if err != nil {
		t.Fatalf("GetPublicKey(%s, %d): %v", keyID, version, err)
	}
	pub, err := x509.ParsePKIXPublicKey(r.PublicKey)
	if err != nil {
		t.Fatalf("GetPublicKey(%s): not DER SubjectPublicKeyInfo: %v", keyID, err)
	}
	return pub, r
}

func coreDigest(h crypto.Hash, msg []byte) []byte {
	var d hash.Hash
	switch h {
	case crypto.SHA1:
		d = sha1.New()
	case crypto.SHA256:
		d = sha256.New()
	case crypto.SHA384:
		d = sha512.New384()
	default:
		d = sha512.New()
	}
	d.Write(msg)
	return d.Sum(nil)
}

// ---------------------------------------------------------------------------
// key specs

func TestCoreKeySpecs(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	c := b.Client("alpha", "alice")
	ctx := t.Context()

	valid := []struct {
		spec, usage         string
		wantSpec, wantUsage string
		alg                 string
	}{
		{"", "", "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "AES_256_GCM"},
		{"SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "AES_256_GCM"},
		{"AES_256", "", "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "AES_256_GCM"},
		{"HMAC_256", "", "HMAC_256", "GENERATE_VERIFY_MAC", "HMAC_SHA_256"},
		{"HMAC_256", "GENERATE_VERIFY_MAC", "HMAC_256", "GENERATE_VERIFY_MAC", "HMAC_SHA_256"},
		{"RSA_3072", "", "RSA_3072", "ENCRYPT_DECRYPT", "RSA_3072"},
		{"RSA_3072", "SIGN_VERIFY", "RSA_3072", "SIGN_VERIFY", "RSA_3072"},
		{"RSA_4096", "ENCRYPT_DECRYPT", "RSA_4096", "ENCRYPT_DECRYPT", "RSA_4096"},
		{"RSA_4096", "SIGN_VERIFY", "RSA_4096", "SIGN_VERIFY", "RSA_4096"},
		{"ECC_NIST_P256", "", "ECC_NIST_P256", "SIGN_VERIFY", "ECC_NIST_P256"},
		{"ECC_NIST_P384", "SIGN_VERIFY", "ECC_NIST_P384", "SIGN_VERIFY", "ECC_NIST_P384"},
		{"ECC_NIST_EDWARDS25519", "", "ECC_NIST_EDWARDS25519", "SIGN_VERIFY", "ECC_NIST_EDWARDS25519"},
	}
	for _, v := range valid {
		t.Run(fmt.Sprintf("valid %s+%s", v.spec, v.usage), func(t *testing.T) {
			k, err := c.CreateKey(ctx, api.CreateKeyRequest{KeySpec: v.spec, KeyUsage: v.usage})
			if err != nil {
				t.Fatalf("CreateKey: %v", err)
			}
			if k.KeySpec != v.wantSpec || k.KeyUsage != v.wantUsage || len(k.Versions) != 1 || k.Versions[0].Algorithm != v.alg {
				t.Errorf("got spec %s usage %s versions %+v, want %s %s with algorithm %s", k.KeySpec, k.KeyUsage, k.Versions, v.wantSpec, v.wantUsage, v.alg)
			}
			d, err := c.DescribeKey(ctx, k.KeyID)
			if err != nil || d.KeySpec != v.wantSpec || d.KeyUsage != v.wantUsage {
				t.Errorf("DescribeKey: %v %+v", err, d)
			}
			// Only key pairs have a public key, and it says what the key does.
			r, err := c.GetPublicKey(ctx, api.PublicKeyRequest{KeyID: k.KeyID})
			if !strings.HasPrefix(v.wantSpec, "RSA_") && !strings.HasPrefix(v.wantSpec, "ECC_") {
				coreWant(t, "GetPublicKey of "+v.wantSpec, err, kms.CodeInvalidKeyUsage)
				return
			}
			if err != nil {
				t.Fatalf("GetPublicKey: %v", err)
			}
			pub, err := x509.ParsePKIXPublicKey(r.PublicKey)
			if err != nil {
				t.Fatalf("public key: %v", err)
			}
			if r.KeyID != k.KeyID || r.KeyVersion != 1 || r.KeySpec != v.wantSpec || r.KeyUsage != v.wantUsage {
				t.Errorf("GetPublicKey reply %+v", r)
			}
			switch p := pub.(type) {
			case *rsa.PublicKey:
				if bits := map[string]int{"RSA_3072": 3072, "RSA_4096": 4096}[v.wantSpec]; p.N.BitLen() != bits {
					t.Errorf("RSA modulus of %d bits, want %d", p.N.BitLen(), bits)
				}
			case *ecdsa.PublicKey:
				if curve := map[string]elliptic.Curve{"ECC_NIST_P256": elliptic.P256(), "ECC_NIST_P384": elliptic.P384()}[v.wantSpec]; p.Curve != curve {
					t.Errorf("curve %s for %s", p.Curve.Params().Name, v.wantSpec)
				}
			case ed25519.PublicKey:
				if v.wantSpec != "ECC_NIST_EDWARDS25519" {
					t.Errorf("an Ed25519 public key for %s", v.wantSpec)
				}
			default:
				t.Errorf("public key of type %T", pub)
			}
			if v.wantUsage == "SIGN_VERIFY" {
				if len(r.SigningAlgorithms) == 0 || r.EncryptionAlgorithms != nil {
					t.Errorf("SIGN_VERIFY key lists signing %v encryption %v", r.SigningAlgorithms, r.EncryptionAlgorithms)
				}
			} else if !slices.Equal(r.EncryptionAlgorithms, []string{"RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1"}) || r.SigningAlgorithms != nil {
				t.Errorf("ENCRYPT_DECRYPT key lists signing %v encryption %v", r.SigningAlgorithms, r.EncryptionAlgorithms)
			}
			if _, err := c.GetPublicKey(ctx, api.PublicKeyRequest{KeyID: k.KeyID, KeyVersion: 2}); err == nil {
				t.Errorf("GetPublicKey of version 2 of a key with one version succeeded")
			} else {
				coreWant(t, "GetPublicKey of a missing version", err, kms.CodeNotFound)
			}
		})
	}

	before, err := c.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	invalid := []struct{ spec, usage string }{
		{"ECC_NIST_P256", "ENCRYPT_DECRYPT"},
		{"ECC_NIST_P384", "ENCRYPT_DECRYPT"},
		{"ECC_NIST_EDWARDS25519", "ENCRYPT_DECRYPT"},
		{"ECC_NIST_P256", "GENERATE_VERIFY_MAC"},
		{"ECC_NIST_P256", "KEY_AGREEMENT"},
		{"HMAC_256", "SIGN_VERIFY"},
		{"HMAC_256", "ENCRYPT_DECRYPT"},
		{"SYMMETRIC_DEFAULT", "SIGN_VERIFY"},
		{"SYMMETRIC_DEFAULT", "GENERATE_VERIFY_MAC"},
		{"RSA_3072", "GENERATE_VERIFY_MAC"},
		{"RSA_2048", ""},
		{"HMAC_512", ""},
		{"ECC_SECG_P256K1", ""},
		{"ECC_NIST_P521", ""},
		{"ML_DSA_65", "ENCRYPT_DECRYPT"},
		{"ML_KEM_768", "SIGN_VERIFY"},
		{"X_WING", "ENCRYPT_DECRYPT"},
		{"ML_KEM_512", ""},
		{"rsa_3072", ""},
		{"", "SIGN_VERIFY"},
	}
	for _, v := range invalid {
		_, err := c.CreateKey(ctx, api.CreateKeyRequest{KeySpec: v.spec, KeyUsage: v.usage})
		coreWant(t, fmt.Sprintf("CreateKey(%q, %q)", v.spec, v.usage), err, kms.CodeValidation)
	}
	after, err := c.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Keys) != len(before.Keys) {
		t.Errorf("refused creations changed the number of keys from %d to %d", len(before.Keys), len(after.Keys))
	}
	// Every refusal was recorded.
	refused := 0
	for _, e := range b.EventsOfType("alpha", events.TypeKeyCreated) {
		if e.Outcome == events.OutcomeFailure && e.ErrorCode == string(kms.CodeValidation) {
			refused++
		}
	}
	if refused != len(invalid) {
		t.Errorf("%d refused creations recorded, want %d", refused, len(invalid))
	}
}

// ---------------------------------------------------------------------------
// signatures

func TestCoreSignVerify(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	c := b.Client("alpha", "alice")
	ctx := t.Context()

	cases := []struct {
		spec  string
		algs  []string
		other string // an algorithm this key refuses
	}{
		{"ECC_NIST_P256", []string{"ECDSA_SHA_256"}, "ECDSA_SHA_384"},
		{"ECC_NIST_P384", []string{"ECDSA_SHA_384"}, "ECDSA_SHA_256"},
		{"ECC_NIST_EDWARDS25519", []string{"ED25519_SHA_512"}, "ECDSA_SHA_512"},
		{"RSA_3072", []string{"RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512",
			"RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512"}, "ECDSA_SHA_256"},
	}
	hashOf := map[string]crypto.Hash{
		"ECDSA_SHA_256": crypto.SHA256, "ECDSA_SHA_384": crypto.SHA384,
		"RSASSA_PSS_SHA_256": crypto.SHA256, "RSASSA_PSS_SHA_384": crypto.SHA384, "RSASSA_PSS_SHA_512": crypto.SHA512,
		"RSASSA_PKCS1_V1_5_SHA_256": crypto.SHA256, "RSASSA_PKCS1_V1_5_SHA_384": crypto.SHA384, "RSASSA_PKCS1_V1_5_SHA_512": crypto.SHA512,
	}
	// goVerify checks a signature outside keyflow, over the digest (or the
	// message, for Ed25519).
	goVerify := func(pub any, alg string, msg, sig []byte) error {
		h := hashOf[alg]
		switch p := pub.(type) {
		case *ecdsa.PublicKey:
			if !ecdsa.VerifyASN1(p, coreDigest(h, msg), sig) {
				return errors.New("ecdsa.VerifyASN1 failed")
			}
			return nil
		case ed25519.PublicKey:
			if !ed25519.Verify(p, msg, sig) {
				return errors.New("ed25519.Verify failed")
			}
			return nil
		case *rsa.PublicKey:
			if strings.HasPrefix(alg, "RSASSA_PSS_") {
				return rsa.VerifyPSS(p, h, coreDigest(h, msg), sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h})
			}
			return rsa.VerifyPKCS1v15(p, h, coreDigest(h, msg), sig)
		}
		return fmt.Errorf("public key of type %T", pub)
	}

	msg := []byte("the message keyflow signs, 2026")
	for _, tc := range cases {
		t.Run(tc.spec, func(t *testing.T) {
			k := coreKey(t, c, "", tc.spec, "SIGN_VERIFY")
			pub, pr := corePublicKey(t, c, k.KeyID, 0)
			if !slices.Equal(pr.SigningAlgorithms, tc.algs) {
				t.Errorf("signing algorithms %v, want %v", pr.SigningAlgorithms, tc.algs)
			}
			for _, alg := range tc.algs {
				t.Run(alg, func(t *testing.T) {
					s, err := c.Sign(ctx, api.SignRequest{KeyID: k.KeyID, Message: msg, SigningAlgorithm: alg})
					if err != nil {
						t.Fatalf("Sign RAW: %v", err)
					}
					if s.KeyID != k.KeyID || s.KeyVersion != 1 || s.SigningAlgorithm != alg {
						t.Errorf("Sign reply %+v", s)
					}
					if err := goVerify(pub, alg, msg, s.Signature); err != nil {
						t.Errorf("Go does not verify keyflow's RAW signature: %v", err)
					}
					v, err := c.Verify(ctx, api.VerifyRequest{KeyID: k.KeyID, Message: msg, MessageType: "RAW", SigningAlgorithm: alg, Signature: s.Signature})
					if err != nil {
						t.Fatalf("Verify RAW: %v", err)
					}
					if !v.SignatureValid || v.KeyID != k.KeyID || v.KeyVersion != 1 || v.SigningAlgorithm != alg {
						t.Errorf("Verify reply %+v", v)
					}
					// Tampered signature, tampered message, wrong version.
					bad := bytes.Clone(s.Signature)
					bad[len(bad)/2] ^= 0x01
					_, err = c.Verify(ctx, api.VerifyRequest{KeyID: k.KeyID, Message: msg, SigningAlgorithm: alg, Signature: bad})
					coreWant(t, "Verify a tampered signature", err, kms.CodeInvalidSignature)
					_, err = c.Verify(ctx, api.VerifyRequest{KeyID: k.KeyID, Message: append(bytes.Clone(msg), '!'), SigningAlgorithm: alg, Signature: s.Signature})
					coreWant(t, "Verify another message", err, kms.CodeInvalidSignature)
					_, err = c.Verify(ctx, api.VerifyRequest{KeyID: k.KeyID, Message: msg, SigningAlgorithm: alg, Signature: s.Signature[:len(s.Signature)-1]})
					coreWant(t, "Verify a truncated signature", err, kms.CodeInvalidSignature)
					_, err = c.Verify(ctx, api.VerifyRequest{KeyID: k.KeyID, KeyVersion: 2, Message: msg, SigningAlgorithm: alg, Signature: s.Signature})
					if err == nil {
						t.Errorf("Verify with version 2 of a key with one version succeeded")
					}

					if tc.spec == "ECC_NIST_EDWARDS25519" {
						_, err := c.Sign(ctx, api.SignRequest{KeyID: k.KeyID, Message: coreDigest(crypto.SHA512, msg), MessageType: "DIGEST", SigningAlgorithm: alg})
						coreWant(t, "Sign an Ed25519 DIGEST", err, kms.CodeValidation)
						_, err = c.Verify(ctx, api.VerifyRequest{KeyID: k.KeyID, Message: coreDigest(crypto.SHA512, msg), MessageType: "DIGEST", SigningAlgorithm: alg, Signature: s.Signature})
						coreWant(t, "Verify an Ed25519 DIGEST", err, kms.CodeValidation)
						return
					}
					// DIGEST: the caller hashes; the signature is the same
					// kind and verifies as RAW over the message.
					digest := coreDigest(hashOf[alg], msg)
					sd, err := c.Sign(ctx, api.SignRequest{KeyID: k.KeyID, Message: digest, MessageType: "DIGEST", SigningAlgorithm: alg})
					if err != nil {
						t.Fatalf("Sign DIGEST: %v", err)
					}
					if err := goVerify(pub, alg, msg, sd.Signature); err != nil {
						t.Errorf("Go does not verify keyflow's DIGEST signature: %v", err)
					}
					if _, err := c.Verify(ctx, api.VerifyRequest{KeyID: k.KeyID, Message: msg, SigningAlgorithm: alg, Signature: sd.Signature}); err != nil {
						t.Errorf("Verify RAW of a DIGEST signature: %v", err)
					}
					if _, err := c.Verify(ctx, api.VerifyRequest{KeyID: k.KeyID, Message: digest, MessageType: "DIGEST", SigningAlgorithm: alg, Signature: s.Signature}); err != nil {
						t.Errorf("Verify DIGEST of a RAW signature: %v", err)
					}
					if strings.HasPrefix(alg, "RSASSA_PKCS1_") && !bytes.Equal(s.Signature, sd.Signature) {
						t.Errorf("PKCS#1 v1.5 is deterministic, but RAW and DIGEST signatures differ")
					}
					for _, n := range []int{len(digest) - 1, len(digest) + 1, 20, 64 + 1} {
						if n == len(digest) {
							continue
						}
						_, err := c.Sign(ctx, api.SignRequest{KeyID: k.KeyID, Message: make([]byte, n), MessageType: "DIGEST", SigningAlgorithm: alg})
						coreWant(t, fmt.Sprintf("Sign a DIGEST of %d bytes", n), err, kms.CodeValidation)
					}
					_, err = c.Verify(ctx, api.VerifyRequest{KeyID: k.KeyID, Message: digest[1:], MessageType: "DIGEST", SigningAlgorithm: alg, Signature: sd.Signature})
					coreWant(t, "Verify a short DIGEST", err, kms.CodeValidation)
				})
			}
			_, err := c.Sign(ctx, api.SignRequest{KeyID: k.KeyID, Message: msg, SigningAlgorithm: tc.other})
			coreWant(t, "Sign with "+tc.other, err, kms.CodeInvalidKeyUsage)
			_, err = c.Verify(ctx, api.VerifyRequest{KeyID: k.KeyID, Message: msg, SigningAlgorithm: tc.other, Signature: []byte{1, 2, 3}})
			coreWant(t, "Verify with "+tc.other, err, kms.CodeInvalidKeyUsage)
			_, err = c.Sign(ctx, api.SignRequest{KeyID: k.KeyID, Message: msg})
			coreWant(t, "Sign without an algorithm", err, kms.CodeInvalidKeyUsage)
			_, err = c.Sign(ctx, api.SignRequest{KeyID: k.KeyID, Message: msg, MessageType: "HASH", SigningAlgorithm: tc.algs[0]})
			coreWant(t, "Sign with message type HASH", err, kms.CodeValidation)
			_, err = c.Sign(ctx, api.SignRequest{KeyID: k.KeyID, SigningAlgorithm: tc.algs[0]})
			coreWant(t, "Sign an empty message", err, kms.CodeValidation)
			_, err = c.Sign(ctx, api.SignRequest{KeyID: k.KeyID, Message: make([]byte, kms.MaxSignMessage+1), SigningAlgorithm: tc.algs[0]})
			coreWant(t, "Sign an oversized message", err, kms.CodeValidation)
			_, err = c.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: msg})
			coreWant(t, "Encrypt with a SIGN_VERIFY key", err, kms.CodeInvalidKeyUsage)
			_, err = c.GenerateMac(ctx, api.MacRequest{KeyID: k.KeyID, Message: msg, MacAlgorithm: "HMAC_SHA_256"})
			coreWant(t, "GenerateMac with a SIGN_VERIFY key", err, kms.CodeInvalidKeyUsage)
		})
	}

	t.Run("wrong usage", func(t *testing.T) {
		sym := coreKey(t, c, "", "", "")
		rsaEnc := coreKey(t, c, "", "RSA_3072", "ENCRYPT_DECRYPT")
		mac := coreKey(t, c, "", "HMAC_256", "")
		for _, k := range []*api.KeyMetadata{sym, rsaEnc, mac} {
			for _, alg := range []string{"ECDSA_SHA_256", "RSASSA_PSS_SHA_256"} {
				_, err := c.Sign(ctx, api.SignRequest{KeyID: k.KeyID, Message: msg, SigningAlgorithm: alg})
				coreWant(t, "Sign with a "+k.KeySpec+" "+k.KeyUsage+" key", err, kms.CodeInvalidKeyUsage)
				_, err = c.Verify(ctx, api.VerifyRequest{KeyID: k.KeyID, Message: msg, SigningAlgorithm: alg, Signature: []byte{1}})
				coreWant(t, "Verify with a "+k.KeySpec+" "+k.KeyUsage+" key", err, kms.CodeInvalidKeyUsage)
			}
		}
		_, err := c.Sign(ctx, api.SignRequest{KeyID: "alias/core-nope", Message: msg, SigningAlgorithm: "ECDSA_SHA_256"})
		coreWant(t, "Sign with an unknown key", err, kms.CodeNotFound)
		_, err = b.Client("beta", "bob").Sign(ctx, api.SignRequest{KeyID: sym.KeyID, Message: msg, SigningAlgorithm: "ECDSA_SHA_256"})
		coreWant(t, "Sign with another tenant's key", err, kms.CodeNotFound)
	})

	t.Run("rotation", func(t *testing.T) {
		k := coreKey(t, c, "core-signer", "ECC_NIST_P256", "")
		pub1, _ := corePublicKey(t, c, "alias/core-signer", 0)
		s1, err := c.Sign(ctx, api.SignRequest{KeyID: "alias/core-signer", Message: msg, SigningAlgorithm: "ECDSA_SHA_256"})
		if err != nil {
			t.Fatal(err)
		}
		if v := coreRotate(t, b, k.KeyID); v != 2 {
			t.Fatalf("rotated to version %d", v)
		}
		pub2, pr2 := corePublicKey(t, c, k.KeyID, 0)
		if pr2.KeyVersion != 2 || pub2.(*ecdsa.PublicKey).Equal(pub1) {
			t.Errorf("after rotation the primary public key is version %d, equal to version 1's: %v", pr2.KeyVersion, pub2.(*ecdsa.PublicKey).Equal(pub1))
		}
		if again, _ := corePublicKey(t, c, k.KeyID, 1); !again.(*ecdsa.PublicKey).Equal(pub1) {
			t.Errorf("version 1's public key changed")
		}
		s2, err := c.Sign(ctx, api.SignRequest{KeyID: k.KeyID, Message: msg, SigningAlgorithm: "ECDSA_SHA_256"})
		if err != nil {
			t.Fatal(err)
		}
		if s2.KeyVersion != 2 || goVerify(pub2, "ECDSA_SHA_256", msg, s2.Signature) != nil {
			t.Errorf("the new signature is of version %d and does not verify with version 2's key", s2.KeyVersion)
		}
		for _, s := range []*api.SignReply{s1, s2} {
			v, err := c.Verify(ctx, api.VerifyRequest{KeyID: k.KeyID, Message: msg, SigningAlgorithm: "ECDSA_SHA_256", Signature: s.Signature})
			if err != nil || v.KeyVersion != s.KeyVersion {
				t.Errorf("Verify a version %d signature after rotation: %v %+v", s.KeyVersion, err, v)
			}
		}
		_, err = c.Verify(ctx, api.VerifyRequest{KeyID: k.KeyID, KeyVersion: 2, Message: msg, SigningAlgorithm: "ECDSA_SHA_256", Signature: s1.Signature})
		coreWant(t, "Verify a version 1 signature as version 2", err, kms.CodeInvalidSignature)
	})
}

// ---------------------------------------------------------------------------
// MACs

func TestCoreMac(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	c := b.Client("alpha", "alice")
	ctx := t.Context()
	k := coreKey(t, c, "core-mac", "HMAC_256", "")
	if k.KeyUsage != "GENERATE_VERIFY_MAC" {
		t.Fatalf("HMAC_256 key has usage %s", k.KeyUsage)
	}
	msg := []byte("authenticate me")

	m1, err := c.GenerateMac(ctx, api.MacRequest{KeyID: "alias/core-mac", Message: msg, MacAlgorithm: "HMAC_SHA_256"})
	if err != nil {
		t.Fatalf("GenerateMac: %v", err)
	}
	if m1.KeyID != k.KeyID || m1.KeyVersion != 1 || m1.MacAlgorithm != "HMAC_SHA_256" || len(m1.Mac) != 32 || m1.MacValid {
		t.Errorf("GenerateMac reply %+v", m1)
	}
	again, err := c.GenerateMac(ctx, api.MacRequest{KeyID: k.KeyID, Message: msg, MacAlgorithm: "HMAC_SHA_256"})
	if err != nil || !bytes.Equal(again.Mac, m1.Mac) {
		t.Errorf("HMAC is not deterministic: %v", err)
	}
	other, err := c.GenerateMac(ctx, api.MacRequest{KeyID: k.KeyID, Message: append(bytes.Clone(msg), '.'), MacAlgorithm: "HMAC_SHA_256"})
	if err != nil || bytes.Equal(other.Mac, m1.Mac) {
		t.Errorf("two messages got the same MAC: %v", err)
	}
	k2 := coreKey(t, c, "", "HMAC_256", "GENERATE_VERIFY_MAC")
	if m, err := c.GenerateMac(ctx, api.MacRequest{KeyID: k2.KeyID, Message: msg, MacAlgorithm: "HMAC_SHA_256"}); err != nil || bytes.Equal(m.Mac, m1.Mac) {
		t.Errorf("two keys gave the same MAC: %v", err)
	}

	v, err := c.VerifyMac(ctx, api.MacRequest{KeyID: k.KeyID, Message: msg, MacAlgorithm: "HMAC_SHA_256", Mac: m1.Mac})
	if err != nil {
		t.Fatalf("VerifyMac: %v", err)
	}
	if !v.MacValid || v.KeyID != k.KeyID || v.KeyVersion != 1 || v.Mac != nil {
		t.Errorf("VerifyMac reply %+v", v)
	}
	bad := bytes.Clone(m1.Mac)
	bad[0] ^= 0x80
	_, err = c.VerifyMac(ctx, api.MacRequest{KeyID: k.KeyID, Message: msg, MacAlgorithm: "HMAC_SHA_256", Mac: bad})
	coreWant(t, "VerifyMac a tampered MAC", err, kms.CodeInvalidMAC)
	_, err = c.VerifyMac(ctx, api.MacRequest{KeyID: k.KeyID, Message: msg, MacAlgorithm: "HMAC_SHA_256", Mac: m1.Mac[:16]})
	coreWant(t, "VerifyMac a truncated MAC", err, kms.CodeInvalidMAC)
	_, err = c.VerifyMac(ctx, api.MacRequest{KeyID: k.KeyID, Message: msg, MacAlgorithm: "HMAC_SHA_256"})
	coreWant(t, "VerifyMac without a MAC", err, kms.CodeInvalidMAC)
	_, err = c.VerifyMac(ctx, api.MacRequest{KeyID: k.KeyID, Message: []byte("authenticate mE"), MacAlgorithm: "HMAC_SHA_256", Mac: m1.Mac})
	coreWant(t, "VerifyMac another message", err, kms.CodeInvalidMAC)
	_, err = c.VerifyMac(ctx, api.MacRequest{KeyID: k2.KeyID, Message: msg, MacAlgorithm: "HMAC_SHA_256", Mac: m1.Mac})
	coreWant(t, "VerifyMac with another key", err, kms.CodeInvalidMAC)

	for _, alg := range []string{"HMAC_SHA_512", "HMAC_SHA_384", "", "hmac_sha_256"} {
		_, err := c.GenerateMac(ctx, api.MacRequest{KeyID: k.KeyID, Message: msg, MacAlgorithm: alg})
		coreWant(t, "GenerateMac with "+alg, err, kms.CodeInvalidKeyUsage)
	}
	_, err = c.GenerateMac(ctx, api.MacRequest{KeyID: k.KeyID, MacAlgorithm: "HMAC_SHA_256"})
	coreWant(t, "GenerateMac of an empty message", err, kms.CodeValidation)
	_, err = c.GenerateMac(ctx, api.MacRequest{KeyID: k.KeyID, Message: make([]byte, kms.MaxSignMessage+1), MacAlgorithm: "HMAC_SHA_256"})
	coreWant(t, "GenerateMac of an oversized message", err, kms.CodeValidation)
	sym := coreKey(t, c, "", "", "")
	_, err = c.GenerateMac(ctx, api.MacRequest{KeyID: sym.KeyID, Message: msg, MacAlgorithm: "HMAC_SHA_256"})
	coreWant(t, "GenerateMac with an ENCRYPT_DECRYPT key", err, kms.CodeInvalidKeyUsage)
	_, err = c.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: msg})
	coreWant(t, "Encrypt with an HMAC key", err, kms.CodeInvalidKeyUsage)
	_, err = c.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: k.KeyID})
	coreWant(t, "GenerateDataKey with an HMAC key", err, kms.CodeInvalidKeyUsage)
	_, err = c.Sign(ctx, api.SignRequest{KeyID: k.KeyID, Message: msg, SigningAlgorithm: "ECDSA_SHA_256"})
	coreWant(t, "Sign with an HMAC key", err, kms.CodeInvalidKeyUsage)
	_, err = b.Client("beta", "bob").VerifyMac(ctx, api.MacRequest{KeyID: k.KeyID, Message: msg, MacAlgorithm: "HMAC_SHA_256", Mac: m1.Mac})
	coreWant(t, "VerifyMac with another tenant's key", err, kms.CodeNotFound)

	// Rotation: new MACs use version 2; old MACs still verify, with version 1.
	if v := coreRotate(t, b, k.KeyID); v != 2 {
		t.Fatalf("rotated to version %d", v)
	}
	m2, err := c.GenerateMac(ctx, api.MacRequest{KeyID: k.KeyID, Message: msg, MacAlgorithm: "HMAC_SHA_256"})
	if err != nil {
		t.Fatal(err)
	}
	if m2.KeyVersion != 2 || bytes.Equal(m2.Mac, m1.Mac) {
		t.Errorf("after rotation: version %d, same MAC as version 1: %v", m2.KeyVersion, bytes.Equal(m2.Mac, m1.Mac))
	}
	for _, m := range []*api.MacReply{m1, m2} {
		v, err := c.VerifyMac(ctx, api.MacRequest{KeyID: k.KeyID, Message: msg, MacAlgorithm: "HMAC_SHA_256", Mac: m.Mac})
		if err != nil || v.KeyVersion != m.KeyVersion {
			t.Errorf("VerifyMac a version %d MAC after rotation: %v %+v", m.KeyVersion, err, v)
		}
	}
}

// ---------------------------------------------------------------------------
// RSA-OAEP

func TestCoreRSAEncrypt(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	c := b.Client("alpha", "alice")
	ctx := t.Context()
	k := coreKey(t, c, "core-rsa", "RSA_3072", "ENCRYPT_DECRYPT")
	pubAny, _ := corePublicKey(t, c, k.KeyID, 0)
	pub := pubAny.(*rsa.PublicKey)
	pt := []byte("a short secret for RSA-OAEP")

	for _, tc := range []struct {
		alg  string
		hash crypto.Hash
		max  int
	}{
		{"RSAES_OAEP_SHA_256", crypto.SHA256, 384 - 2*32 - 2},
		{"RSAES_OAEP_SHA_1", crypto.SHA1, 384 - 2*20 - 2},
	} {
		t.Run(tc.alg, func(t *testing.T) {
			enc, err := c.Encrypt(ctx, api.EncryptRequest{KeyID: "alias/core-rsa", Plaintext: pt, EncryptionAlgorithm: tc.alg})
			if err != nil {
				t.Fatalf("Encrypt: %v", err)
			}
			if enc.KeyID != k.KeyID || enc.KeyVersion != 1 || len(enc.CiphertextBlob) != 384 {
				t.Errorf("Encrypt reply: key %s version %d, %d bytes", enc.KeyID, enc.KeyVersion, len(enc.CiphertextBlob))
			}
			dec, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob, KeyID: k.KeyID, EncryptionAlgorithm: tc.alg})
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if !bytes.Equal(dec.Plaintext, pt) || dec.KeyID != k.KeyID || dec.KeyVersion != 1 {
				t.Errorf("Decrypt reply %+v", dec)
			}
			// OAEP is randomised.
			if enc2, err := c.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: pt, EncryptionAlgorithm: tc.alg}); err != nil || bytes.Equal(enc2.CiphertextBlob, enc.CiphertextBlob) {
				t.Errorf("two encryptions gave the same ciphertext (or failed: %v)", err)
			}
			// Encrypted outside keyflow with the public key.
			h := map[crypto.Hash]hash.Hash{crypto.SHA256: sha256.New(), crypto.SHA1: sha1.New()}[tc.hash]
			goCT, err := rsa.EncryptOAEP(h, rand.Reader, pub, pt, nil)
			if err != nil {
				t.Fatal(err)
			}
			dec, err = c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: goCT, KeyID: "core-rsa", EncryptionAlgorithm: tc.alg})
			if err != nil || !bytes.Equal(dec.Plaintext, pt) {
				t.Errorf("Decrypt of Go's OAEP ciphertext: %v", err)
			}
			// The largest plaintext fits, one byte more does not.
			full := bytes.Repeat([]byte{0xA5}, tc.max)
			if enc, err := c.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: full, EncryptionAlgorithm: tc.alg}); err != nil {
				t.Errorf("Encrypt %d bytes: %v", tc.max, err)
			} else if dec, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob, KeyID: k.KeyID, EncryptionAlgorithm: tc.alg}); err != nil || !bytes.Equal(dec.Plaintext, full) {
				t.Errorf("Decrypt %d bytes: %v", tc.max, err)
			}
			_, err = c.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: append(full, 0), EncryptionAlgorithm: tc.alg})
			coreWant(t, fmt.Sprintf("Encrypt %d bytes", tc.max+1), err, kms.CodeValidation)

			bad := bytes.Clone(enc.CiphertextBlob)
			bad[100] ^= 0x01
			_, err = c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: bad, KeyID: k.KeyID, EncryptionAlgorithm: tc.alg})
			coreWant(t, "Decrypt a tampered ciphertext", err, kms.CodeInvalidCiphertext)
			_, err = c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob[1:], KeyID: k.KeyID, EncryptionAlgorithm: tc.alg})
			coreWant(t, "Decrypt a truncated ciphertext", err, kms.CodeInvalidCiphertext)
			_, err = c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob, EncryptionAlgorithm: tc.alg})
			coreWant(t, "Decrypt without keyId", err, kms.CodeValidation)
			_, err = c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob, KeyID: k.KeyID})
			coreWant(t, "Decrypt an RSA ciphertext as SYMMETRIC_DEFAULT", err, kms.CodeInvalidCiphertext)
			otherAlg := map[string]string{"RSAES_OAEP_SHA_256": "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_1": "RSAES_OAEP_SHA_256"}[tc.alg]
			_, err = c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob, KeyID: k.KeyID, EncryptionAlgorithm: otherAlg})
			coreWant(t, "Decrypt with the other OAEP hash", err, kms.CodeInvalidCiphertext)
		})
	}

	other := coreKey(t, c, "", "RSA_3072", "")
	enc, err := c.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: pt, EncryptionAlgorithm: "RSAES_OAEP_SHA_256"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob, KeyID: other.KeyID, EncryptionAlgorithm: "RSAES_OAEP_SHA_256"})
	coreWant(t, "Decrypt under another RSA key", err, kms.CodeInvalidCiphertext)
	_, err = b.Client("beta", "bob").Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob, KeyID: k.KeyID, EncryptionAlgorithm: "RSAES_OAEP_SHA_256"})
	coreWant(t, "Decrypt with another tenant's key", err, kms.CodeNotFound)

	// Algorithm and key must agree.
	sym := coreKey(t, c, "", "", "")
	signer := coreKey(t, c, "", "RSA_3072", "SIGN_VERIFY")
	for _, tc := range []struct {
		what, keyID, alg string
	}{
		{"an RSA key without an algorithm", k.KeyID, ""},
		{"an RSA key with SYMMETRIC_DEFAULT", k.KeyID, "SYMMETRIC_DEFAULT"},
		{"an RSA key with an unknown algorithm", k.KeyID, "RSAES_PKCS1_V1_5"},
		{"a symmetric key with OAEP", sym.KeyID, "RSAES_OAEP_SHA_256"},
		{"a SIGN_VERIFY RSA key with OAEP", signer.KeyID, "RSAES_OAEP_SHA_256"},
	} {
		_, err := c.Encrypt(ctx, api.EncryptRequest{KeyID: tc.keyID, Plaintext: pt, EncryptionAlgorithm: tc.alg})
		coreWant(t, "Encrypt with "+tc.what, err, kms.CodeInvalidKeyUsage)
	}
	_, err = c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob, KeyID: signer.KeyID, EncryptionAlgorithm: "RSAES_OAEP_SHA_256"})
	coreWant(t, "Decrypt with a SIGN_VERIFY RSA key", err, kms.CodeInvalidKeyUsage)
	_, err = c.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: k.KeyID})
	coreWant(t, "GenerateDataKey with an RSA key", err, kms.CodeInvalidKeyUsage)

	// After a rotation, old ciphertexts still decrypt (with the version
	// that made them) and new ones use the new key pair.
	if v := coreRotate(t, b, k.KeyID); v != 2 {
		t.Fatalf("rotated to version %d", v)
	}
	dec, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob, KeyID: k.KeyID, EncryptionAlgorithm: "RSAES_OAEP_SHA_256"})
	if err != nil || dec.KeyVersion != 1 || !bytes.Equal(dec.Plaintext, pt) {
		t.Errorf("Decrypt a version 1 ciphertext after rotation: %v %+v", err, dec)
	}
	enc2, err := c.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: pt, EncryptionAlgorithm: "RSAES_OAEP_SHA_256"})
	if err != nil || enc2.KeyVersion != 2 {
		t.Fatalf("Encrypt after rotation: %v %+v", err, enc2)
	}
	if dec, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc2.CiphertextBlob, KeyID: k.KeyID, EncryptionAlgorithm: "RSAES_OAEP_SHA_256"}); err != nil || dec.KeyVersion != 2 {
		t.Errorf("Decrypt a version 2 ciphertext: %v %+v", err, dec)
	}
}

// ---------------------------------------------------------------------------
// random bytes

func TestCoreRandom(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	c := b.Client("alpha", "alice")
	ctx := t.Context()
	seen := map[string]bool{}
	for _, n := range []int{1, 32, 32, 1024} {
		r, err := c.GenerateRandom(ctx, n)
		if err != nil {
			t.Fatalf("GenerateRandom(%d): %v", n, err)
		}
		if len(r.Plaintext) != n {
			t.Errorf("GenerateRandom(%d) returned %d bytes", n, len(r.Plaintext))
		}
		if n > 1 {
			if seen[string(r.Plaintext)] {
				t.Errorf("GenerateRandom(%d) repeated itself", n)
			}
			seen[string(r.Plaintext)] = true
		}
		if n == 1024 && bytes.Count(r.Plaintext, []byte{0}) > 32 {
			t.Errorf("1024 random bytes hold %d zeros", bytes.Count(r.Plaintext, []byte{0}))
		}
	}
	for _, n := range []int{0, -1, 1025, 1 << 20} {
		_, err := c.GenerateRandom(ctx, n)
		coreWant(t, fmt.Sprintf("GenerateRandom(%d)", n), err, kms.CodeValidation)
	}
	evs := b.EventsOfType("alpha", events.TypeGenerateRandom)
	if len(evs) != 8 {
		t.Fatalf("%d random events, want 8", len(evs))
	}
	for _, e := range evs {
		if e.Subject != "" {
			t.Errorf("random event with subject %q", e.Subject)
		}
		if err := schemas.ValidateEvent(e.Raw); err != nil {
			t.Error(err)
		}
	}
}

// ---------------------------------------------------------------------------
// re-encryption

func TestCoreReEncrypt(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	c := b.Client("alpha", "alice")
	ctx := t.Context()
	a := coreKey(t, c, "core-a", "", "")
	bk := coreKey(t, c, "core-b", "", "")
	ctxA := map[string]string{"tenant-app": "a", "purpose": "re"}
	ctxB := map[string]string{"owner": "b"}
	pt := []byte("moved without being revealed")
	enc, err := c.Encrypt(ctx, api.EncryptRequest{KeyID: a.KeyID, Plaintext: pt, EncryptionContext: ctxA})
	if err != nil {
		t.Fatal(err)
	}

	re, err := c.ReEncrypt(ctx, api.ReEncryptRequest{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ctxA,
		DestinationKeyID: "alias/core-b", DestinationEncryptionContext: ctxB})
	if err != nil {
		t.Fatalf("ReEncrypt: %v", err)
	}
	if re.SourceKeyID != a.KeyID || re.SourceKeyVersion != 1 || re.KeyID != bk.KeyID || re.KeyVersion != 1 || bytes.Equal(re.CiphertextBlob, enc.CiphertextBlob) {
		t.Errorf("ReEncrypt reply %+v", re)
	}
	dec, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: re.CiphertextBlob, EncryptionContext: ctxB})
	if err != nil || !bytes.Equal(dec.Plaintext, pt) || dec.KeyID != bk.KeyID {
		t.Errorf("Decrypt the re-encrypted ciphertext: %v %+v", err, dec)
	}
	_, err = c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: re.CiphertextBlob, EncryptionContext: ctxA})
	coreWant(t, "Decrypt the new ciphertext with the source context", err, kms.CodeInvalidCiphertext)
	_, err = c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: re.CiphertextBlob, EncryptionContext: ctxB, KeyID: a.KeyID})
	coreWant(t, "Decrypt the new ciphertext as the source key's", err, kms.CodeInvalidCiphertext)

	// The source must open exactly as Decrypt would.
	_, err = c.ReEncrypt(ctx, api.ReEncryptRequest{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: map[string]string{"purpose": "re"}, DestinationKeyID: bk.KeyID})
	coreWant(t, "ReEncrypt with the wrong source context", err, kms.CodeInvalidCiphertext)
	_, err = c.ReEncrypt(ctx, api.ReEncryptRequest{CiphertextBlob: enc.CiphertextBlob, DestinationKeyID: bk.KeyID})
	coreWant(t, "ReEncrypt without the source context", err, kms.CodeInvalidCiphertext)
	_, err = c.ReEncrypt(ctx, api.ReEncryptRequest{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ctxA, SourceKeyID: bk.KeyID, DestinationKeyID: bk.KeyID})
	coreWant(t, "ReEncrypt naming the wrong source key", err, kms.CodeInvalidCiphertext)
	if r, err := c.ReEncrypt(ctx, api.ReEncryptRequest{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ctxA, SourceKeyID: "core-a", DestinationKeyID: bk.KeyID}); err != nil || r.KeyID != bk.KeyID {
		t.Errorf("ReEncrypt naming the right source key: %v", err)
	}
	bad := bytes.Clone(enc.CiphertextBlob)
	bad[len(bad)-1] ^= 0x01
	_, err = c.ReEncrypt(ctx, api.ReEncryptRequest{CiphertextBlob: bad, SourceEncryptionContext: ctxA, DestinationKeyID: bk.KeyID})
	coreWant(t, "ReEncrypt a tampered ciphertext", err, kms.CodeInvalidCiphertext)
	_, err = c.ReEncrypt(ctx, api.ReEncryptRequest{CiphertextBlob: []byte("not a ciphertext"), DestinationKeyID: bk.KeyID})
	coreWant(t, "ReEncrypt garbage", err, kms.CodeInvalidCiphertext)
	_, err = c.ReEncrypt(ctx, api.ReEncryptRequest{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ctxA, DestinationKeyID: "alias/core-nope"})
	coreWant(t, "ReEncrypt to an unknown key", err, kms.CodeNotFound)
	mac := coreKey(t, c, "", "HMAC_256", "")
	_, err = c.ReEncrypt(ctx, api.ReEncryptRequest{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ctxA, DestinationKeyID: mac.KeyID})
	coreWant(t, "ReEncrypt to an HMAC key", err, kms.CodeInvalidKeyUsage)
	_, err = b.Client("beta", "bob").ReEncrypt(ctx, api.ReEncryptRequest{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ctxA})
	coreWant(t, "ReEncrypt another tenant's ciphertext", err, kms.CodeInvalidCiphertext)

	// No destination: the source key's current primary version.
	if v := coreRotate(t, b, a.KeyID); v != 2 {
		t.Fatalf("rotated to version %d", v)
	}
	re2, err := c.ReEncrypt(ctx, api.ReEncryptRequest{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ctxA, DestinationEncryptionContext: ctxA})
	if err != nil {
		t.Fatalf("ReEncrypt to the same key: %v", err)
	}
	if re2.SourceKeyID != a.KeyID || re2.SourceKeyVersion != 1 || re2.KeyID != a.KeyID || re2.KeyVersion != 2 {
		t.Errorf("ReEncrypt after rotation %+v, want version 1 -> 2 of %s", re2, a.KeyID)
	}
	dec, err = c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: re2.CiphertextBlob, EncryptionContext: ctxA})
	if err != nil || dec.KeyVersion != 2 || !bytes.Equal(dec.Plaintext, pt) {
		t.Errorf("Decrypt after re-encryption to version 2: %v %+v", err, dec)
	}

	// Audit: one event per call, naming both keys, never the plaintext.
	evs := b.EventsOfType("alpha", events.TypeReEncrypt)
	if len(evs) != 10 {
		t.Errorf("%d reencrypt events of tenant alpha, want 10", len(evs))
	}
	if be := b.EventsOfType("beta", events.TypeReEncrypt); len(be) != 1 || be[0].Outcome != events.OutcomeFailure || be[0].Subject != "" || be[0].Data["sourceKey"] != nil {
		t.Errorf("beta's reencrypt events name alpha's key or are missing: %v", be)
	}
	for _, e := range evs {
		if err := schemas.ValidateEvent(e.Raw); err != nil {
			t.Error(err)
		}
		if bytes.Contains(e.Raw, pt) {
			t.Errorf("SECRET LEAK: plaintext in %s", e.Raw)
		}
	}
	last := evs[len(evs)-1]
	if last.Outcome != events.OutcomeSuccess || last.Subject != kms.ResourceName("alpha", a.KeyID) ||
		last.Data["sourceKey"] != kms.ResourceName("alpha", a.KeyID) || last.Data["sourceKeyVersion"] != 1.0 || last.Data["keyVersion"] != 2.0 {
		t.Errorf("last reencrypt event: %s", last.Raw)
	}
}

// ---------------------------------------------------------------------------
// data key pairs and data keys without plaintext

func TestCoreDataKeyPair(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	c := b.Client("alpha", "alice")
	ctx := t.Context()
	k := coreKey(t, c, "core-dkp", "", "")
	ec := map[string]string{"use": "client-signing"}

	check := func(t *testing.T, spec string, withoutPlaintext bool) {
		r, err := c.GenerateDataKeyPair(ctx, api.DataKeyPairRequest{KeyID: "alias/core-dkp", KeyPairSpec: spec, EncryptionContext: ec, WithoutPlaintext: withoutPlaintext})
		if err != nil {
			t.Fatalf("GenerateDataKeyPair: %v", err)
		}
		if r.KeyID != k.KeyID || r.KeyVersion != 1 || r.KeyPairSpec != spec {
			t.Errorf("reply: key %s version %d spec %s", r.KeyID, r.KeyVersion, r.KeyPairSpec)
		}
		pub, err := x509.ParsePKIXPublicKey(r.PublicKey)
		if err != nil {
			t.Fatalf("public key: %v", err)
		}
		dec, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: r.PrivateKeyCiphertextBlob, EncryptionContext: ec, KeyID: k.KeyID})
		if err != nil {
			t.Fatalf("Decrypt the private key: %v", err)
		}
		if withoutPlaintext {
			if r.PrivateKeyPlaintext != nil {
				t.Errorf("withoutPlaintext, but the reply holds %d bytes of private key", len(r.PrivateKeyPlaintext))
			}
		} else if !bytes.Equal(dec.Plaintext, r.PrivateKeyPlaintext) {
			t.Errorf("the encrypted private key is not the plaintext one")
		}
		priv, err := x509.ParsePKCS8PrivateKey(dec.Plaintext)
		if err != nil {
			t.Fatalf("private key is not PKCS#8: %v", err)
		}
		signer := priv.(crypto.Signer)
		if !signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
			t.Errorf("the private key does not match the public key")
		}
		digest := coreDigest(crypto.SHA256, []byte("data key pair"))
		switch p := priv.(type) {
		case *ecdsa.PrivateKey:
			if spec != "ECC_NIST_P256" || p.Curve != elliptic.P256() {
				t.Errorf("an ECDSA key on %s for %s", p.Curve.Params().Name, spec)
			}
			sig, err := ecdsa.SignASN1(rand.Reader, p, digest)
			if err != nil || !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest, sig) {
				t.Errorf("the pair does not sign and verify: %v", err)
			}
		case *rsa.PrivateKey:
			if spec != "RSA_3072" || p.N.BitLen() != 3072 {
				t.Errorf("an RSA key of %d bits for %s", p.N.BitLen(), spec)
			}
			if err := p.Validate(); err != nil {
				t.Errorf("RSA private key: %v", err)
			}
			sig, err := rsa.SignPSS(rand.Reader, p, crypto.SHA256, digest, nil)
			if err != nil || rsa.VerifyPSS(pub.(*rsa.PublicKey), crypto.SHA256, digest, sig, nil) != nil {
				t.Errorf("the pair does not sign and verify: %v", err)
			}
		default:
			t.Errorf("private key of type %T", priv)
		}
		_, err = c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: r.PrivateKeyCiphertextBlob})
		coreWant(t, "Decrypt the private key without its context", err, kms.CodeInvalidCiphertext)
	}
	for _, spec := range []string{"ECC_NIST_P256", "RSA_3072"} {
		t.Run(spec, func(t *testing.T) { check(t, spec, false) })
		t.Run(spec+" without plaintext", func(t *testing.T) { check(t, spec, true) })
	}
	// Two pairs differ.
	p1, err1 := c.GenerateDataKeyPair(ctx, api.DataKeyPairRequest{KeyID: k.KeyID, KeyPairSpec: "ECC_NIST_P256"})
	p2, err2 := c.GenerateDataKeyPair(ctx, api.DataKeyPairRequest{KeyID: k.KeyID, KeyPairSpec: "ECC_NIST_P256"})
	if err1 != nil || err2 != nil || bytes.Equal(p1.PublicKey, p2.PublicKey) {
		t.Errorf("two data key pairs: %v %v, same public key", err1, err2)
	}

	for _, spec := range []string{"", "RSA_4096", "RSA_2048", "ECC_NIST_P384", "ECC_NIST_EDWARDS25519", "SYMMETRIC_DEFAULT", "HMAC_256", "ecc_nist_p256"} {
		_, err := c.GenerateDataKeyPair(ctx, api.DataKeyPairRequest{KeyID: k.KeyID, KeyPairSpec: spec})
		coreWant(t, "GenerateDataKeyPair "+spec, err, kms.CodeValidation)
	}
	_, err := c.GenerateDataKeyPair(ctx, api.DataKeyPairRequest{KeyID: "alias/core-nope", KeyPairSpec: "ECC_NIST_P256"})
	coreWant(t, "GenerateDataKeyPair under an unknown key", err, kms.CodeNotFound)
	mac := coreKey(t, c, "", "HMAC_256", "")
	_, err = c.GenerateDataKeyPair(ctx, api.DataKeyPairRequest{KeyID: mac.KeyID, KeyPairSpec: "ECC_NIST_P256"})
	coreWant(t, "GenerateDataKeyPair under an HMAC key", err, kms.CodeInvalidKeyUsage)
	_, err = c.GenerateDataKeyPair(ctx, api.DataKeyPairRequest{KeyID: k.KeyID, KeyPairSpec: "ECC_NIST_P256", EncryptionContext: map[string]string{"": "x"}})
	coreWant(t, "GenerateDataKeyPair with an invalid context", err, kms.CodeValidation)

	// The trail agrees with what the callers got: 6 pairs made (4 checked
	// above and 2 compared), every other call refused.
	successes := 0
	for _, e := range b.EventsOfType("alpha", events.TypeGenerateDataKeyPair) {
		if err := schemas.ValidateEvent(e.Raw); err != nil {
			t.Error(err)
		}
		if e.Outcome == events.OutcomeSuccess {
			successes++
			if e.Data["keyVersion"] == nil {
				t.Errorf("a successful datakeypair event names no key version: %s", e.Raw)
			}
		}
	}
	if successes != 6 {
		t.Errorf("%d successful datakeypair events, want 6", successes)
	}
}

func TestCoreDataKeyWithoutPlaintext(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	c := b.Client("alpha", "alice")
	ctx := t.Context()
	k := coreKey(t, c, "core-dk", "", "")
	ec := map[string]string{"file": "x"}
	for _, n := range []int{0, 16, 64} {
		r, err := c.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: k.KeyID, NumberOfBytes: n, EncryptionContext: ec, WithoutPlaintext: true})
		if err != nil {
			t.Fatalf("GenerateDataKey(%d) without plaintext: %v", n, err)
		}
		if r.Plaintext != nil || r.KeyID != k.KeyID || r.KeyVersion != 1 {
			t.Errorf("reply: %d bytes of plaintext, key %s version %d", len(r.Plaintext), r.KeyID, r.KeyVersion)
		}
		dec, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: r.CiphertextBlob, EncryptionContext: ec})
		if err != nil {
			t.Fatalf("Decrypt the data key: %v", err)
		}
		want := n
		if n == 0 {
			want = 32
		}
		if len(dec.Plaintext) != want {
			t.Errorf("the data key is %d bytes, want %d", len(dec.Plaintext), want)
		}
	}
	// With plaintext, as before.
	r, err := c.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: k.KeyID})
	if err != nil || len(r.Plaintext) != 32 {
		t.Fatalf("GenerateDataKey: %v", err)
	}
	_, err = c.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: k.KeyID, NumberOfBytes: 1025, WithoutPlaintext: true})
	coreWant(t, "GenerateDataKey(1025) without plaintext", err, kms.CodeValidation)
}

// ---------------------------------------------------------------------------
// batches

func TestCoreBatch(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	c := b.Client("alpha", "alice")
	ctx := t.Context()
	k := coreKey(t, c, "core-batch", "", "")
	ec := map[string]string{"batch": "yes"}

	const n = api.MaxBatchItems
	badCode := map[int]kms.Code{7: kms.CodeNotFound, 500: kms.CodeValidation, 999: kms.CodeValidation}
	items := make([]api.EncryptRequest, n)
	for i := range items {
		items[i] = api.EncryptRequest{KeyID: "alias/core-batch", Plaintext: fmt.Appendf(nil, "item-%04d", i)}
		if i%2 == 0 {
			items[i].EncryptionContext = ec
		}
	}
	items[7].KeyID = "alias/core-nope"                         // unknown key
	items[500].Plaintext = nil                                 // empty plaintext
	items[999].Plaintext = make([]byte, kms.MaxPlaintext+1)    // oversized
	before := len(b.EventsOfType("alpha", events.TypeEncrypt)) // none
	enc, err := c.BatchEncrypt(ctx, items)
	if err != nil {
		t.Fatalf("BatchEncrypt: %v", err)
	}
	if len(enc.Results) != n {
		t.Fatalf("%d results for %d items", len(enc.Results), n)
	}
	var dItems []api.DecryptRequest
	var dIndex []int
	for i, r := range enc.Results {
		if code, bad := badCode[i]; bad {
			if r.Result != nil || r.Error == nil || r.Error.Code != string(code) || r.Error.Message == "" {
				t.Errorf("item %d: result %v error %+v, want error %s", i, r.Result, r.Error, code)
			}
			continue
		}
		if r.Error != nil || r.Result == nil {
			t.Errorf("item %d: error %+v", i, r.Error)
			continue
		}
		if r.Result.KeyID != k.KeyID || r.Result.KeyVersion != 1 {
			t.Errorf("item %d: key %s version %d", i, r.Result.KeyID, r.Result.KeyVersion)
		}
		dItems = append(dItems, api.DecryptRequest{CiphertextBlob: r.Result.CiphertextBlob, EncryptionContext: items[i].EncryptionContext})
		dIndex = append(dIndex, i)
	}
	if len(dItems) != n-len(badCode) {
		t.Fatalf("%d good items, want %d", len(dItems), n-len(badCode))
	}

	// Every item is audited on its own, under the batch's request ID.
	evs := b.EventsOfType("alpha", events.TypeEncrypt)[before:]
	if len(evs) != n {
		t.Errorf("%d encrypt events for a batch of %d", len(evs), n)
	}
	outcomes := map[string]int{}
	reqIDs := map[string]bool{}
	for _, e := range evs {
		outcomes[e.Outcome+" "+e.ErrorCode]++
		reqIDs[e.RequestID] = true
		if err := schemas.ValidateEvent(e.Raw); err != nil {
			t.Errorf("event %d: %v", e.Seq, err)
		}
	}
	if want := map[string]int{"success ": n - 3, "failure NotFoundException": 1, "failure ValidationException": 2}; !mapsEqual(outcomes, want) {
		t.Errorf("event outcomes %v, want %v", outcomes, want)
	}
	if len(reqIDs) != 1 {
		t.Errorf("the batch's events carry %d request IDs, want 1", len(reqIDs))
	}

	// Decrypt them all back, in order, with one bad item among them.
	tampered := bytes.Clone(dItems[3].CiphertextBlob)
	tampered[len(tampered)-2] ^= 0x10
	dItems = append(dItems, api.DecryptRequest{CiphertextBlob: tampered, EncryptionContext: dItems[3].EncryptionContext})
	dec, err := c.BatchDecrypt(ctx, dItems)
	if err != nil {
		t.Fatalf("BatchDecrypt: %v", err)
	}
	if len(dec.Results) != len(dItems) {
		t.Fatalf("%d results for %d items", len(dec.Results), len(dItems))
	}
	for j, r := range dec.Results[:len(dIndex)] {
		i := dIndex[j]
		if r.Error != nil || r.Result == nil || !bytes.Equal(r.Result.Plaintext, items[i].Plaintext) || r.Result.KeyID != k.KeyID {
			t.Errorf("decrypt item %d (encrypt item %d): %+v %+v", j, i, r.Result, r.Error)
		}
	}
	if last := dec.Results[len(dItems)-1]; last.Result != nil || last.Error == nil || last.Error.Code != string(kms.CodeInvalidCiphertext) {
		t.Errorf("tampered item: %+v %+v", last.Result, last.Error)
	}

	// Data keys, some without plaintext.
	dk, err := c.BatchGenerateDataKey(ctx, []api.DataKeyRequest{
		{KeyID: k.KeyID}, {KeyID: k.KeyID, NumberOfBytes: 16, WithoutPlaintext: true}, {KeyID: k.KeyID, NumberOfBytes: 2000}, {KeyID: k.KeyID, EncryptionContext: ec},
	})
	if err != nil {
		t.Fatalf("BatchGenerateDataKey: %v", err)
	}
	if len(dk.Results) != 4 {
		t.Fatalf("%d results", len(dk.Results))
	}
	if r := dk.Results[0].Result; r == nil || len(r.Plaintext) != 32 {
		t.Errorf("data key 0: %+v", dk.Results[0])
	}
	if r := dk.Results[1].Result; r == nil || r.Plaintext != nil {
		t.Errorf("data key 1 (without plaintext): %+v", dk.Results[1])
	} else if d, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: r.CiphertextBlob}); err != nil || len(d.Plaintext) != 16 {
		t.Errorf("data key 1 decrypts: %v", err)
	}
	if e := dk.Results[2].Error; e == nil || e.Code != string(kms.CodeValidation) {
		t.Errorf("data key 2 (2000 bytes): %+v", dk.Results[2])
	}
	if r := dk.Results[3].Result; r == nil {
		t.Errorf("data key 3: %+v", dk.Results[3])
	} else if d, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: r.CiphertextBlob, EncryptionContext: ec}); err != nil || !bytes.Equal(d.Plaintext, r.Plaintext) {
		t.Errorf("data key 3 decrypts: %v", err)
	}

	// Too many items, or none: the whole request is refused, and recorded.
	rejectedBefore := len(b.EventsOfType("alpha", events.TypeRequestRejected))
	encryptsBefore := len(b.EventsOfType("alpha", events.TypeEncrypt))
	tooMany := make([]api.EncryptRequest, n+1)
	for i := range tooMany {
		tooMany[i] = api.EncryptRequest{KeyID: k.KeyID, Plaintext: []byte("x")}
	}
	_, err = c.BatchEncrypt(ctx, tooMany)
	coreWant(t, "BatchEncrypt of 1001 items", err, kms.CodeValidation)
	_, err = c.BatchEncrypt(ctx, nil)
	coreWant(t, "BatchEncrypt of no items", err, kms.CodeValidation)
	_, err = c.BatchDecrypt(ctx, make([]api.DecryptRequest, n+1))
	coreWant(t, "BatchDecrypt of 1001 items", err, kms.CodeValidation)
	_, err = c.BatchGenerateDataKey(ctx, []api.DataKeyRequest{})
	coreWant(t, "BatchGenerateDataKey of no items", err, kms.CodeValidation)
	if err := c.CallRaw(ctx, api.OpBatchEncrypt, []byte(`{"items":[{"keyId":"core-batch","plaintext":"eA==","extra":1}]}`), nil); err != nil {
		coreWant(t, "BatchEncrypt with an unknown item field", err, kms.CodeValidation)
	} else {
		t.Errorf("BatchEncrypt with an unknown item field succeeded")
	}
	if got := len(b.EventsOfType("alpha", events.TypeEncrypt)); got != encryptsBefore {
		t.Errorf("refused batches ran %d items", got-encryptsBefore)
	}
	if got := len(b.EventsOfType("alpha", events.TypeRequestRejected)) - rejectedBefore; got != 5 {
		t.Errorf("%d refused batches recorded, want 5", got)
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestCoreAuditBoundsCallerStrings checks that names the caller sends
// (algorithms, message types, key pair specs) reach the audit record cut
// to 64 bytes, as key references and key specs do: a record must not grow
// with whatever a caller puts in a field.
func TestCoreAuditBoundsCallerStrings(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	c := b.Client("alpha", "alice")
	ctx := t.Context()
	k := coreKey(t, c, "", "", "")
	long := strings.Repeat("X", 4096)
	_, err := c.Sign(ctx, api.SignRequest{KeyID: k.KeyID, Message: []byte("m"), MessageType: long, SigningAlgorithm: long})
	coreWant(t, "Sign with long names", err, kms.CodeValidation)
	_, err = c.Verify(ctx, api.VerifyRequest{KeyID: k.KeyID, Message: []byte("m"), SigningAlgorithm: long, Signature: []byte{1}})
	coreWant(t, "Verify with a long algorithm", err, kms.CodeInvalidKeyUsage)
	_, err = c.GenerateMac(ctx, api.MacRequest{KeyID: k.KeyID, Message: []byte("m"), MacAlgorithm: long})
	coreWant(t, "GenerateMac with a long algorithm", err, kms.CodeInvalidKeyUsage)
	_, err = c.GenerateDataKeyPair(ctx, api.DataKeyPairRequest{KeyID: k.KeyID, KeyPairSpec: long})
	coreWant(t, "GenerateDataKeyPair with a long spec", err, kms.CodeValidation)
	for _, e := range b.Events("alpha") {
		if err := schemas.ValidateEvent(e.Raw); err != nil {
			t.Errorf("%s event: %v", e.Type, err)
		}
		if len(e.Raw) > 2048 {
			t.Errorf("%s event of %d bytes: caller-sent names are recorded in full", e.Type, len(e.Raw))
		}
	}
}
