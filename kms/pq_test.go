package kms_test

import (
	"bytes"
	"context"
	"crypto/hpke"
	"crypto/mlkem"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/pqc"
)

// Post-quantum keys through keyflow's own key path: every key here is
// created by CreateKey (or, for known-answer tests, imported from a seed by
// UnsafeImportSoftwareKeyForTesting), its private key wrapped under the
// SoftHSM root key and unwrapped for each operation, exactly as in
// production. The vectors (Wycheproof, the X-Wing draft) and the
// interoperability checks (Go's crypto/hpke and crypto/mlkem) therefore test
// the whole path, not just package pqc.

var bob = kms.Caller{Tenant: "beta", Principal: "bob", RequestID: "req-b"}

// pqSpecs is every post-quantum spec with what a test needs to know about
// it, written down independently of package pqc.
var pqSpecs = []struct {
	spec   kms.KeySpec
	usage  kms.KeyUsage
	sigAlg kms.SigningAlgorithm // SIGN_VERIFY keys
	oid    asn1.ObjectIdentifier
	pubLen int
}{
	{kms.SpecMLKEM768, kms.UsageKeyEncapsulation, "", asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 4, 2}, 1184},
	{kms.SpecMLKEM1024, kms.UsageKeyEncapsulation, "", asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 4, 3}, 1568},
	{kms.SpecXWing, kms.UsageKeyEncapsulation, "", asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62253, 25722}, 1216},
	{kms.SpecMLDSA44, kms.UsageSignVerify, kms.SignMLDSA, asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 17}, 1312},
	{kms.SpecMLDSA65, kms.UsageSignVerify, kms.SignMLDSA, asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 18}, 1952},
	{kms.SpecMLDSA87, kms.UsageSignVerify, kms.SignMLDSA, asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 19}, 2592},
	{kms.SpecSLHDSA128S, kms.UsageSignVerify, kms.SignSLHDSA128S, asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 20}, 32},
	{kms.SpecSLHDSA128F, kms.UsageSignVerify, kms.SignSLHDSA128F, asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 21}, 32},
}

// wantCode asserts that err is a keyflow error with code.
func wantCode(t *testing.T, what string, err error, code kms.Code) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: succeeded, want %s", what, code)
		return
	}
	if got := kms.CodeOf(err); got != code {
		t.Errorf("%s: got %v, want %s", what, err, code)
	}
}

func pqCreate(t *testing.T, s *kms.Service, c kms.Caller, spec kms.KeySpec) *kms.Key {
	t.Helper()
	k, err := s.CreateKey(context.Background(), c, kms.CreateKeyParams{Spec: spec})
	if err != nil {
		t.Fatalf("CreateKey(%s): %v", spec, err)
	}
	return k
}

// unwrapPrivate reads a version's stored material and unwraps its private
// key with the root key, as the service does for each operation. Tests use
// it to check interoperability and to look for leaks.
func unwrapPrivate(t *testing.T, b *testbed.Bed, k *kms.Key, version uint32) (priv, wrapped []byte) {
	t.Helper()
	ctx := context.Background()
	root, err := b.HSM.EnsureRootKey(ctx, "keyflow-root")
	if err != nil {
		t.Fatal(err)
	}
	m, err := b.Store.GetMaterial(ctx, k.Tenant, k.ID, version)
	if err != nil {
		t.Fatal(err)
	}
	priv, err = b.HSM.UnwrapSecret(ctx, root, m.Wrapped)
	if err != nil {
		t.Fatal(err)
	}
	return priv, m.Wrapped
}

// parseSPKI parses a DER SubjectPublicKeyInfo and insists on absent
// algorithm parameters, as the LAMPS and X-Wing specifications require.
func parseSPKI(t *testing.T, der []byte) (asn1.ObjectIdentifier, []byte) {
	t.Helper()
	var spki struct {
		Algorithm struct {
			Algorithm  asn1.ObjectIdentifier
			Parameters asn1.RawValue `asn1:"optional"`
		}
		PublicKey asn1.BitString
	}
	rest, err := asn1.Unmarshal(der, &spki)
	if err != nil || len(rest) != 0 {
		t.Fatalf("public key is not a DER SubjectPublicKeyInfo: %v (%d trailing bytes)", err, len(rest))
	}
	if len(spki.Algorithm.Parameters.FullBytes) != 0 {
		t.Errorf("AlgorithmIdentifier has parameters %x, want none", spki.Algorithm.Parameters.FullBytes)
	}
	if spki.PublicKey.BitLength != 8*len(spki.PublicKey.Bytes) {
		t.Errorf("BIT STRING has %d bits for %d bytes", spki.PublicKey.BitLength, len(spki.PublicKey.Bytes))
	}
	return spki.Algorithm.Algorithm, spki.PublicKey.Bytes
}

// ---------------------------------------------------------------------------
// Round trips for every spec.

func TestPQSignRoundTrips(t *testing.T) {
	b := testbed.New(t)
	for _, sp := range pqSpecs {
		if sp.usage != kms.UsageSignVerify {
			continue
		}
		t.Run(string(sp.spec), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			k := pqCreate(t, b.KMS, alice, sp.spec)
			if k.Usage != kms.UsageSignVerify || k.Versions[0].Algorithm != kms.Algorithm(sp.spec) {
				t.Fatalf("created %+v", k)
			}
			msg := []byte("post-quantum message")
			sigCtx := []byte("keyflow/test/context")
			sign := func(m, c []byte) *kms.SignResult {
				t.Helper()
				r, err := b.KMS.Sign(ctx, alice, kms.SignParams{KeyRef: k.ID, Message: m, Algorithm: sp.sigAlg, Context: c})
				if err != nil {
					t.Fatalf("Sign: %v", err)
				}
				return r
			}
			verify := func(m, sig, c []byte) error {
				_, err := b.KMS.Verify(ctx, alice, kms.VerifyParams{KeyRef: k.ID, Message: m, Algorithm: sp.sigAlg, Signature: sig, Context: c})
				return err
			}
			plain := sign(msg, nil)
			if plain.KeyVersion != 1 || plain.Algorithm != sp.sigAlg {
				t.Errorf("Sign result %+v", plain)
			}
			withCtx := sign(msg, sigCtx)
			if err := verify(msg, plain.Signature, nil); err != nil {
				t.Errorf("Verify without context: %v", err)
			}
			if err := verify(msg, withCtx.Signature, sigCtx); err != nil {
				t.Errorf("Verify with context: %v", err)
			}
			wantCode(t, "Verify with a wrong context", verify(msg, withCtx.Signature, []byte("keyflow/test/other")), kms.CodeInvalidSignature)
			wantCode(t, "Verify without the context", verify(msg, withCtx.Signature, nil), kms.CodeInvalidSignature)
			wantCode(t, "Verify with a context it was not signed with", verify(msg, plain.Signature, sigCtx), kms.CodeInvalidSignature)
			wantCode(t, "Verify of another message", verify([]byte("post-quantum messagf"), plain.Signature, nil), kms.CodeInvalidSignature)
			for _, i := range []int{0, len(plain.Signature) / 2, len(plain.Signature) - 1} {
				bad := bytes.Clone(plain.Signature)
				bad[i] ^= 0x01
				wantCode(t, fmt.Sprintf("Verify of a signature flipped at %d", i), verify(msg, bad, nil), kms.CodeInvalidSignature)
			}
			wantCode(t, "Verify of a truncated signature", verify(msg, plain.Signature[:len(plain.Signature)-1], nil), kms.CodeInvalidSignature)

			// The signature is what a third party checks with the public
			// key and package pqc.
			pub, err := b.KMS.GetPublicKey(ctx, alice, k.ID, 0)
			if err != nil {
				t.Fatal(err)
			}
			signer, err := pqc.SignerByName(string(sp.spec))
			if err != nil {
				t.Fatal(err)
			}
			if err := signer.Verify(pub.RawPublicKey, msg, withCtx.Signature, pqc.SignOptions{Context: sigCtx}); err != nil {
				t.Errorf("pqc.Verify of keyflow's signature: %v", err)
			}

			// Refusals.
			_, err = b.KMS.Sign(ctx, alice, kms.SignParams{KeyRef: k.ID, Message: msg, Algorithm: sp.sigAlg, Context: make([]byte, 256)})
			wantCode(t, "Sign with a 256-byte context", err, kms.CodeValidation)
			_, err = b.KMS.Sign(ctx, alice, kms.SignParams{KeyRef: k.ID, Message: make([]byte, 64), MessageType: kms.MessageDigest, Algorithm: sp.sigAlg})
			wantCode(t, "Sign of a digest (external mu)", err, kms.CodeValidation)
			_, err = b.KMS.Sign(ctx, alice, kms.SignParams{KeyRef: k.ID, Message: msg, Algorithm: kms.SignECDSASHA256})
			wantCode(t, "Sign with ECDSA", err, kms.CodeInvalidKeyUsage)
			_, err = b.KMS.Encapsulate(ctx, alice, k.ID)
			wantCode(t, "Encapsulate with a signing key", err, kms.CodeInvalidKeyUsage)
			_, err = b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: msg})
			wantCode(t, "Encrypt with a signing key", err, kms.CodeInvalidKeyUsage)
			_, err = b.KMS.Verify(ctx, bob, kms.VerifyParams{KeyRef: k.ID, Message: msg, Algorithm: sp.sigAlg, Signature: plain.Signature})
			wantCode(t, "Verify from another tenant", err, kms.CodeNotFound)
		})
	}
	// A classical key refuses a signature context.
	ec, err := b.KMS.CreateKey(context.Background(), alice, kms.CreateKeyParams{Spec: kms.SpecECCP256, Usage: kms.UsageSignVerify})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.KMS.Sign(context.Background(), alice, kms.SignParams{KeyRef: ec.ID, Message: []byte("m"), Algorithm: kms.SignECDSASHA256, Context: []byte("c")})
	wantCode(t, "ECDSA Sign with a context", err, kms.CodeValidation)
}

func TestPQKEMRoundTrips(t *testing.T) {
	b := testbed.New(t)
	for _, sp := range pqSpecs {
		if sp.usage != kms.UsageKeyEncapsulation {
			continue
		}
		t.Run(string(sp.spec), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			k := pqCreate(t, b.KMS, alice, sp.spec)
			if k.Usage != kms.UsageKeyEncapsulation {
				t.Fatalf("created %+v", k)
			}
			enc, err := b.KMS.Encapsulate(ctx, alice, k.ID)
			if err != nil {
				t.Fatal(err)
			}
			kem, err := pqc.KEMByName(string(sp.spec))
			if err != nil {
				t.Fatal(err)
			}
			if enc.KeyVersion != 1 || len(enc.Ciphertext) != kem.CiphertextSize() || len(enc.SharedSecret) != 32 {
				t.Fatalf("Encapsulate: version %d, %d-byte ciphertext, %d-byte secret", enc.KeyVersion, len(enc.Ciphertext), len(enc.SharedSecret))
			}
			dec, err := b.KMS.Decapsulate(ctx, alice, kms.DecapsulateParams{KeyRef: k.ID, Ciphertext: enc.Ciphertext})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(dec.SharedSecret, enc.SharedSecret) || dec.KeyVersion != 1 {
				t.Fatalf("Decapsulate gives another secret (version %d)", dec.KeyVersion)
			}
			if dec, err := b.KMS.Decapsulate(ctx, alice, kms.DecapsulateParams{KeyRef: k.ID, KeyVersion: 1, Ciphertext: enc.Ciphertext}); err != nil || !bytes.Equal(dec.SharedSecret, enc.SharedSecret) {
				t.Errorf("Decapsulate of version 1: %v", err)
			}
			// Implicit rejection: a modified ciphertext of the right
			// length gives another secret, and no error.
			for _, i := range []int{0, len(enc.Ciphertext) / 2, len(enc.Ciphertext) - 1} {
				bad := bytes.Clone(enc.Ciphertext)
				bad[i] ^= 0x80
				rej, err := b.KMS.Decapsulate(ctx, alice, kms.DecapsulateParams{KeyRef: k.ID, Ciphertext: bad})
				if err != nil {
					t.Errorf("Decapsulate of a ciphertext flipped at %d: %v, want implicit rejection", i, err)
					continue
				}
				if len(rej.SharedSecret) != 32 || bytes.Equal(rej.SharedSecret, enc.SharedSecret) {
					t.Errorf("Decapsulate of a ciphertext flipped at %d gave the real secret", i)
				}
			}
			for _, n := range []int{0, 1, len(enc.Ciphertext) - 1, len(enc.Ciphertext) + 1} {
				_, err := b.KMS.Decapsulate(ctx, alice, kms.DecapsulateParams{KeyRef: k.ID, Ciphertext: make([]byte, n)})
				wantCode(t, fmt.Sprintf("Decapsulate of %d bytes", n), err, kms.CodeValidation)
			}
			_, err = b.KMS.Decapsulate(ctx, alice, kms.DecapsulateParams{KeyRef: k.ID, KeyVersion: 2, Ciphertext: enc.Ciphertext})
			wantCode(t, "Decapsulate with a missing version", err, kms.CodeNotFound)
			_, err = b.KMS.Decapsulate(ctx, bob, kms.DecapsulateParams{KeyRef: k.ID, Ciphertext: enc.Ciphertext})
			wantCode(t, "Decapsulate from another tenant", err, kms.CodeNotFound)
			_, err = b.KMS.Sign(ctx, alice, kms.SignParams{KeyRef: k.ID, Message: []byte("m"), Algorithm: kms.SignMLDSA})
			wantCode(t, "Sign with a KEM key", err, kms.CodeInvalidKeyUsage)
			_, err = b.KMS.GenerateMac(ctx, alice, kms.MACParams{KeyRef: k.ID, Message: []byte("m"), Algorithm: kms.MACHMACSHA256})
			wantCode(t, "MAC with a KEM key", err, kms.CodeInvalidKeyUsage)

			// Seal and Open: plain HPKE, with and without info.
			for _, info := range [][]byte{nil, []byte("app/v1")} {
				s, err := b.KMS.Seal(ctx, alice, kms.SealParams{KeyRef: k.ID, Plaintext: []byte("sealed secret"), Info: info})
				if err != nil {
					t.Fatal(err)
				}
				if len(s.Sealed) != kem.CiphertextSize()+len("sealed secret")+16 || bytes.Contains(s.Sealed, []byte("sealed secret")) {
					t.Errorf("sealed payload of %d bytes", len(s.Sealed))
				}
				o, err := b.KMS.Open(ctx, alice, kms.OpenParams{KeyRef: k.ID, Sealed: s.Sealed, Info: info})
				if err != nil || string(o.Plaintext) != "sealed secret" || o.KeyVersion != 1 {
					t.Errorf("Open: %v", err)
				}
				bad := bytes.Clone(s.Sealed)
				bad[len(bad)-1] ^= 1
				for name, p := range map[string]kms.OpenParams{
					"wrong info":     {KeyRef: k.ID, Sealed: s.Sealed, Info: []byte("app/v2")},
					"flipped tag":    {KeyRef: k.ID, Sealed: bad},
					"truncated":      {KeyRef: k.ID, Sealed: s.Sealed[:kem.CiphertextSize()+3], Info: info},
					"empty":          {KeyRef: k.ID, Info: info},
					"enc only":       {KeyRef: k.ID, Sealed: s.Sealed[:kem.CiphertextSize()], Info: info},
					"another's enc":  {KeyRef: k.ID, Sealed: append(bytes.Clone(enc.Ciphertext), s.Sealed[kem.CiphertextSize():]...), Info: info},
					"not a KEM ct":   {KeyRef: k.ID, Sealed: []byte("garbage, not a sealed payload"), Info: info},
					"other tenant":   {KeyRef: k.ID, Sealed: s.Sealed, Info: info},
					"missing keyRef": {Sealed: s.Sealed, Info: info},
				} {
					if name == "wrong info" && info == nil {
						p.Info = []byte("x")
					}
					c := alice
					if name == "other tenant" {
						c = bob
					}
					_, err := b.KMS.Open(ctx, c, p)
					switch name {
					case "other tenant":
						wantCode(t, "Open "+name, err, kms.CodeNotFound)
					case "missing keyRef":
						wantCode(t, "Open "+name, err, kms.CodeValidation)
					default:
						wantCode(t, "Open "+name, err, kms.CodeInvalidCiphertext)
					}
				}
			}
			_, err = b.KMS.Seal(ctx, alice, kms.SealParams{KeyRef: k.ID})
			wantCode(t, "Seal of nothing", err, kms.CodeValidation)
			_, err = b.KMS.Seal(ctx, alice, kms.SealParams{KeyRef: k.ID, Plaintext: make([]byte, kms.MaxPlaintext+1)})
			wantCode(t, "Seal of too much", err, kms.CodeValidation)
		})
	}
	// A symmetric key cannot seal or decapsulate.
	sym := mustCreate(t, b.KMS, alice, "")
	_, err := b.KMS.Seal(context.Background(), alice, kms.SealParams{KeyRef: sym.ID, Plaintext: []byte("x")})
	wantCode(t, "Seal with a symmetric key", err, kms.CodeInvalidKeyUsage)
	_, err = b.KMS.Decapsulate(context.Background(), alice, kms.DecapsulateParams{KeyRef: sym.ID, Ciphertext: make([]byte, 1088)})
	wantCode(t, "Decapsulate with a symmetric key", err, kms.CodeInvalidKeyUsage)
}

// TestPQPublicKeys: GetPublicKey returns a DER SubjectPublicKeyInfo with
// the algorithm's standard OID and absent parameters, and RawPublicKey is
// the key inside it.
func TestPQPublicKeys(t *testing.T) {
	b := testbed.New(t)
	ctx := context.Background()
	for _, sp := range pqSpecs {
		k := pqCreate(t, b.KMS, alice, sp.spec)
		r, err := b.KMS.GetPublicKey(ctx, alice, k.ID, 0)
		if err != nil {
			t.Fatalf("%s: %v", sp.spec, err)
		}
		oid, raw := parseSPKI(t, r.PublicKeyDER)
		if !oid.Equal(sp.oid) {
			t.Errorf("%s: OID %v, want %v", sp.spec, oid, sp.oid)
		}
		if !bytes.Equal(raw, r.RawPublicKey) || len(raw) != sp.pubLen {
			t.Errorf("%s: SPKI holds %d bytes, RawPublicKey %d, want %d and equal", sp.spec, len(raw), len(r.RawPublicKey), sp.pubLen)
		}
		if r.KeySpec != sp.spec || r.KeyUsage != sp.usage || r.KeyVersion != 1 {
			t.Errorf("%s: %+v", sp.spec, r)
		}
		if sp.usage == kms.UsageSignVerify {
			if !slices.Equal(r.SigningAlgorithms, []kms.SigningAlgorithm{sp.sigAlg}) || r.EncryptionAlgorithms != nil {
				t.Errorf("%s: signing %v encryption %v", sp.spec, r.SigningAlgorithms, r.EncryptionAlgorithms)
			}
		} else if !slices.Equal(r.EncryptionAlgorithms, []kms.EncryptionAlgorithm{kms.EncHPKE}) || r.SigningAlgorithms != nil {
			t.Errorf("%s: signing %v encryption %v", sp.spec, r.SigningAlgorithms, r.EncryptionAlgorithms)
		}
		// The raw key is the one the private key derives.
		priv, _ := unwrapPrivate(t, b, k, 1)
		if kem, err := pqc.KEMByName(string(sp.spec)); err == nil {
			if pub, _, err := kem.DeriveKey(priv); err != nil || !bytes.Equal(pub, raw) {
				t.Errorf("%s: the stored private key derives another public key (%v)", sp.spec, err)
			}
		}
		if _, err := b.KMS.GetPublicKey(ctx, alice, k.ID, 2); kms.CodeOf(err) != kms.CodeNotFound {
			t.Errorf("%s: GetPublicKey of version 2: %v", sp.spec, err)
		}
		pqc.Zero(priv)
	}
}

// ---------------------------------------------------------------------------
// Envelopes: Encrypt, Decrypt and GenerateDataKey under KEM keys.

func TestPQEnvelopes(t *testing.T) {
	b := testbed.New(t)
	for _, spec := range []kms.KeySpec{kms.SpecXWing, kms.SpecMLKEM1024, kms.SpecMLKEM768} {
		t.Run(string(spec), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			k := pqCreate(t, b.KMS, alice, spec)
			other := pqCreate(t, b.KMS, alice, spec)
			ec := kms.EncryptionContext{"app": "billing", "env": "prod"}
			pt := []byte("envelope plaintext under a post-quantum key")
			enc, err := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: pt, Context: ec})
			if err != nil {
				t.Fatal(err)
			}
			if id, v, err := kms.EnvelopeKeyID(enc.Ciphertext); err != nil || id != k.ID || v != 1 || enc.KeyVersion != 1 {
				t.Fatalf("header names %s v%d (%v)", id, v, err)
			}
			if bytes.Contains(enc.Ciphertext, pt) {
				t.Fatal("the ciphertext holds the plaintext")
			}
			dec, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: enc.Ciphertext, Context: ec})
			if err != nil || !bytes.Equal(dec.Plaintext, pt) || dec.KeyID != k.ID || dec.KeyVersion != 1 {
				t.Fatalf("Decrypt: %v", err)
			}
			if _, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{KeyRef: k.ID, Ciphertext: enc.Ciphertext, Context: ec}); err != nil {
				t.Errorf("Decrypt naming the key: %v", err)
			}
			_, err = b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: pt, Algorithm: kms.EncRSAOAEPSHA256})
			if err == nil {
				t.Errorf("Encrypt with RSA-OAEP under a %s key succeeded", spec)
			}

			dk, err := b.KMS.GenerateDataKey(ctx, alice, kms.GenerateDataKeyParams{KeyRef: k.ID, Context: ec})
			if err != nil {
				t.Fatal(err)
			}
			if len(dk.Plaintext) != 32 || dk.KeyVersion != 1 {
				t.Fatalf("GenerateDataKey: %d bytes, version %d", len(dk.Plaintext), dk.KeyVersion)
			}
			ddk, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: dk.CiphertextBlob, Context: ec})
			if err != nil || !bytes.Equal(ddk.Plaintext, dk.Plaintext) {
				t.Fatalf("Decrypt of the data key: %v", err)
			}

			flip := func(ct []byte, i int) []byte { c := bytes.Clone(ct); c[i] ^= 1; return c }
			relabel := bytes.Clone(enc.Ciphertext)
			copy(relabel[3:3+36], other.ID)
			for name, c := range map[string]struct {
				ct     []byte
				ec     kms.EncryptionContext
				keyRef string
				caller kms.Caller
			}{
				"wrong context":          {enc.Ciphertext, kms.EncryptionContext{"app": "billing", "env": "dev"}, "", alice},
				"missing context":        {enc.Ciphertext, nil, "", alice},
				"data key, no context":   {dk.CiphertextBlob, nil, "", alice},
				"other tenant":           {enc.Ciphertext, ec, "", bob},
				"data key, other tenant": {dk.CiphertextBlob, ec, "", bob},
				"other key named":        {enc.Ciphertext, ec, other.ID, alice},
				"relabelled to another":  {relabel, ec, "", alice},
				"flipped enc":            {flip(enc.Ciphertext, 3+36+4), ec, "", alice},
				"flipped body":           {flip(enc.Ciphertext, len(enc.Ciphertext)-20), ec, "", alice},
				"flipped tag":            {flip(enc.Ciphertext, len(enc.Ciphertext)-1), ec, "", alice},
				"flipped version":        {flip(enc.Ciphertext, 3+36+3), ec, "", alice},
				"AES algorithm byte":     {append([]byte{enc.Ciphertext[0], 0x01}, enc.Ciphertext[2:]...), ec, "", alice},
				"truncated":              {enc.Ciphertext[:3+36+4+10], ec, "", alice},
			} {
				_, err := b.KMS.Decrypt(ctx, c.caller, kms.DecryptParams{KeyRef: c.keyRef, Ciphertext: c.ct, Context: c.ec})
				wantCode(t, "Decrypt "+name, err, kms.CodeInvalidCiphertext)
			}

			// ReEncrypt moves a ciphertext between a KEM key and a
			// symmetric key, both ways, and a data key pair's private key
			// can be wrapped under a KEM key.
			sym := mustCreate(t, b.KMS, alice, "")
			re, err := b.KMS.ReEncrypt(ctx, alice, kms.ReEncryptParams{Ciphertext: enc.Ciphertext, SourceContext: ec, DestinationKeyRef: sym.ID})
			if err != nil {
				t.Fatalf("ReEncrypt to a symmetric key: %v", err)
			}
			back, err := b.KMS.ReEncrypt(ctx, alice, kms.ReEncryptParams{Ciphertext: re.Ciphertext, DestinationKeyRef: k.ID, DestinationContext: ec})
			if err != nil || back.KeyID != k.ID {
				t.Fatalf("ReEncrypt back to the %s key: %v", spec, err)
			}
			if d, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: back.Ciphertext, Context: ec}); err != nil || !bytes.Equal(d.Plaintext, pt) {
				t.Errorf("Decrypt after two ReEncrypts: %v", err)
			}
			pair, err := b.KMS.GenerateDataKeyPair(ctx, alice, kms.DataKeyPairParams{KeyRef: k.ID, KeyPairSpec: kms.SpecECCP256, Context: ec})
			if err != nil {
				t.Fatalf("GenerateDataKeyPair under a %s key: %v", spec, err)
			}
			if d, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: pair.PrivateKeyCiphertextBlob, Context: ec}); err != nil || !bytes.Equal(d.Plaintext, pair.PrivateKeyPlaintext) {
				t.Errorf("Decrypt of the data key pair's private key: %v", err)
			}

			// After a rotation the new version encrypts and the old
			// envelopes still open.
			if _, err := b.KMS.CreateVersion(ctx, alice, kms.CreateVersionParams{KeyID: k.ID, Version: 2}); err != nil {
				t.Fatal(err)
			}
			if _, err := b.KMS.SetPrimaryVersion(ctx, alice, kms.SetPrimaryParams{KeyID: k.ID, Version: 2}); err != nil {
				t.Fatal(err)
			}
			enc2, err := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: pt, Context: ec})
			if err != nil || enc2.KeyVersion != 2 {
				t.Fatalf("Encrypt after rotation: version %v, %v", enc2, err)
			}
			for _, ct := range [][]byte{enc.Ciphertext, enc2.Ciphertext, dk.CiphertextBlob} {
				if _, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: ct, Context: ec}); err != nil {
					t.Errorf("Decrypt after rotation: %v", err)
				}
			}
		})
	}
}

// TestPQSealAcrossRotation: a payload sealed to version 1 still opens once
// version 2 is primary (Open tries every version, newest first), and
// Decapsulate needs the version the ciphertext was made for.
func TestPQSealAcrossRotation(t *testing.T) {
	b := testbed.New(t)
	ctx := context.Background()
	k := pqCreate(t, b.KMS, alice, kms.SpecXWing)
	s1, err := b.KMS.Seal(ctx, alice, kms.SealParams{KeyRef: k.ID, Plaintext: []byte("v1")})
	if err != nil {
		t.Fatal(err)
	}
	e1, err := b.KMS.Encapsulate(ctx, alice, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.CreateVersion(ctx, alice, kms.CreateVersionParams{KeyID: k.ID, Version: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.SetPrimaryVersion(ctx, alice, kms.SetPrimaryParams{KeyID: k.ID, Version: 2}); err != nil {
		t.Fatal(err)
	}
	s2, err := b.KMS.Seal(ctx, alice, kms.SealParams{KeyRef: k.ID, Plaintext: []byte("v2")})
	if err != nil || s2.KeyVersion != 2 {
		t.Fatalf("Seal after rotation: %+v %v", s2, err)
	}
	for _, c := range []struct {
		sealed  []byte
		want    string
		version uint32
	}{{s1.Sealed, "v1", 1}, {s2.Sealed, "v2", 2}} {
		o, err := b.KMS.Open(ctx, alice, kms.OpenParams{KeyRef: k.ID, Sealed: c.sealed})
		if err != nil || string(o.Plaintext) != c.want || o.KeyVersion != c.version {
			t.Errorf("Open of the version %d payload: %+v %v", c.version, o, err)
		}
	}
	d, err := b.KMS.Decapsulate(ctx, alice, kms.DecapsulateParams{KeyRef: k.ID, KeyVersion: 1, Ciphertext: e1.Ciphertext})
	if err != nil || !bytes.Equal(d.SharedSecret, e1.SharedSecret) {
		t.Errorf("Decapsulate with version 1: %v", err)
	}
	d, err = b.KMS.Decapsulate(ctx, alice, kms.DecapsulateParams{KeyRef: k.ID, Ciphertext: e1.Ciphertext})
	if err != nil || bytes.Equal(d.SharedSecret, e1.SharedSecret) || d.KeyVersion != 2 {
		t.Errorf("Decapsulate of a version 1 ciphertext with version 2: %v (must be implicitly rejected)", err)
	}
}

// TestPQSignatureRotation rotates an ML-DSA key: the new version signs, and
// the old signatures still verify.
func TestPQSignatureRotation(t *testing.T) {
	b := testbed.New(t)
	ctx := context.Background()
	k := pqCreate(t, b.KMS, alice, kms.SpecMLDSA65)
	msg, sigCtx := []byte("signed before and after"), []byte("rotation")
	s1, err := b.KMS.Sign(ctx, alice, kms.SignParams{KeyRef: k.ID, Message: msg, Algorithm: kms.SignMLDSA, Context: sigCtx})
	if err != nil {
		t.Fatal(err)
	}
	pub1, err := b.KMS.GetPublicKey(ctx, alice, k.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.CreateVersion(ctx, alice, kms.CreateVersionParams{KeyID: k.ID, Version: 2}); err != nil {
		t.Fatal(err)
	}
	// Created but not primary: version 1 still signs.
	if s, err := b.KMS.Sign(ctx, alice, kms.SignParams{KeyRef: k.ID, Message: msg, Algorithm: kms.SignMLDSA}); err != nil || s.KeyVersion != 1 {
		t.Fatalf("Sign before SetPrimaryVersion: %+v %v", s, err)
	}
	if _, err := b.KMS.SetPrimaryVersion(ctx, alice, kms.SetPrimaryParams{KeyID: k.ID, Version: 2}); err != nil {
		t.Fatal(err)
	}
	s2, err := b.KMS.Sign(ctx, alice, kms.SignParams{KeyRef: k.ID, Message: msg, Algorithm: kms.SignMLDSA, Context: sigCtx})
	if err != nil || s2.KeyVersion != 2 {
		t.Fatalf("Sign after rotation: %+v %v", s2, err)
	}
	pub2, err := b.KMS.GetPublicKey(ctx, alice, k.ID, 0)
	if err != nil || pub2.KeyVersion != 2 || bytes.Equal(pub2.RawPublicKey, pub1.RawPublicKey) {
		t.Fatalf("GetPublicKey after rotation: version %d, same key %v, %v", pub2.KeyVersion, bytes.Equal(pub2.RawPublicKey, pub1.RawPublicKey), err)
	}
	for _, c := range []struct {
		sig     []byte
		version uint32
	}{{s1.Signature, 1}, {s2.Signature, 2}} {
		r, err := b.KMS.Verify(ctx, alice, kms.VerifyParams{KeyRef: k.ID, Message: msg, Algorithm: kms.SignMLDSA, Signature: c.sig, Context: sigCtx})
		if err != nil || r.KeyVersion != c.version {
			t.Errorf("Verify of the version %d signature: %+v %v", c.version, r, err)
		}
		if _, err := b.KMS.Verify(ctx, alice, kms.VerifyParams{KeyRef: k.ID, KeyVersion: c.version, Message: msg, Algorithm: kms.SignMLDSA, Signature: c.sig, Context: sigCtx}); err != nil {
			t.Errorf("Verify of the version %d signature naming its version: %v", c.version, err)
		}
		_, err = b.KMS.Verify(ctx, alice, kms.VerifyParams{KeyRef: k.ID, KeyVersion: 3 - c.version, Message: msg, Algorithm: kms.SignMLDSA, Signature: c.sig, Context: sigCtx})
		wantCode(t, fmt.Sprintf("Verify of the version %d signature with the other version", c.version), err, kms.CodeInvalidSignature)
	}
}

// ---------------------------------------------------------------------------
// No secret in the audit trail.

// TestPQSecretsNeverInAuditEvents runs every post-quantum operation and
// then looks for each private key (unwrapped from the store), each wrapped
// blob, each shared secret, data key and plaintext in every stored event,
// raw and in the encodings a careless log line would use.
func TestPQSecretsNeverInAuditEvents(t *testing.T) {
	b := testbed.New(t)
	ctx := context.Background()
	var secrets [][]byte
	pt := []byte("audit-scan-plaintext-7f3a9c")
	secrets = append(secrets, pt)
	var keys []*kms.Key
	for _, sp := range pqSpecs {
		k := pqCreate(t, b.KMS, alice, sp.spec)
		keys = append(keys, k)
		if sp.usage == kms.UsageSignVerify {
			if _, err := b.KMS.Sign(ctx, alice, kms.SignParams{KeyRef: k.ID, Message: pt, Algorithm: sp.sigAlg, Context: []byte("ctx")}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		e, err := b.KMS.Encapsulate(ctx, alice, k.ID)
		if err != nil {
			t.Fatal(err)
		}
		d, err := b.KMS.Decapsulate(ctx, alice, kms.DecapsulateParams{KeyRef: k.ID, Ciphertext: e.Ciphertext})
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, e.SharedSecret, d.SharedSecret)
		s, err := b.KMS.Seal(ctx, alice, kms.SealParams{KeyRef: k.ID, Plaintext: pt})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.KMS.Open(ctx, alice, kms.OpenParams{KeyRef: k.ID, Sealed: s.Sealed}); err != nil {
			t.Fatal(err)
		}
		dk, err := b.KMS.GenerateDataKey(ctx, alice, kms.GenerateDataKeyParams{KeyRef: k.ID})
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, dk.Plaintext)
		if _, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: dk.CiphertextBlob}); err != nil {
			t.Fatal(err)
		}
	}
	// A test import records its origin, and its seed must not leak either.
	seed := bytes.Repeat([]byte{0x5c}, 64)
	imported, err := b.KMS.UnsafeImportSoftwareKeyForTesting(ctx, alice, kms.SpecMLKEM768, seed)
	if err != nil {
		t.Fatal(err)
	}
	keys = append(keys, imported)
	secrets = append(secrets, seed)
	for _, k := range keys {
		priv, wrapped := unwrapPrivate(t, b, k, 1)
		secrets = append(secrets, priv, wrapped)
	}
	evs := b.Events("alpha")
	if len(evs) < 3*len(pqSpecs) {
		t.Fatalf("only %d events", len(evs))
	}
	origin := false
	for _, e := range evs {
		for _, s := range secrets {
			for _, enc := range []string{string(s), base64.StdEncoding.EncodeToString(s), base64.RawStdEncoding.EncodeToString(s),
				base64.RawURLEncoding.EncodeToString(s), hex.EncodeToString(s), strings.ToUpper(hex.EncodeToString(s))} {
				// Short secrets are compared in full; long ones also by a
				// 16-byte window, in case an event holds a fragment.
				if bytes.Contains(e.Raw, []byte(enc)) {
					t.Fatalf("event %d (%s) holds a secret (%d bytes)", e.Seq, e.Type, len(s))
				}
			}
			if len(s) >= 32 && bytes.Contains(e.Raw, []byte(hex.EncodeToString(s[8:24]))) {
				t.Fatalf("event %d (%s) holds part of a secret", e.Seq, e.Type)
			}
		}
		if e.Type == events.TypeKeyCreated && e.Data["keyId"] == imported.ID {
			origin = e.Data["origin"] == kms.OriginUnsafeTestImport
		}
	}
	if !origin {
		t.Error("the test import's key.created event does not record origin UNSAFE_TEST_IMPORT")
	}
	t.Logf("scanned %d events for %d secrets", len(evs), len(secrets))
}

// TestPQAuditFailsClosed: with the audit trail down, no post-quantum
// operation hands out its result.
func TestPQAuditFailsClosed(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	kem := pqCreate(t, b.KMS, alice, kms.SpecXWing)
	dsa := pqCreate(t, b.KMS, alice, kms.SpecMLDSA44)
	e, err := b.KMS.Encapsulate(ctx, alice, kem.ID)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := b.KMS.Seal(ctx, alice, kms.SealParams{KeyRef: kem.ID, Plaintext: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	s := b.NewKMS(events.SinkFunc(func(context.Context, events.Record) error { return errors.New("stream unavailable") }))
	if r, err := s.Encapsulate(ctx, alice, kem.ID); !errors.Is(err, kms.ErrAuditUnavailable) || r != nil {
		t.Errorf("Encapsulate: %v %v", r, err)
	}
	if r, err := s.Decapsulate(ctx, alice, kms.DecapsulateParams{KeyRef: kem.ID, Ciphertext: e.Ciphertext}); !errors.Is(err, kms.ErrAuditUnavailable) || r != nil {
		t.Errorf("Decapsulate: %v %v", r, err)
	}
	if r, err := s.Seal(ctx, alice, kms.SealParams{KeyRef: kem.ID, Plaintext: []byte("x")}); !errors.Is(err, kms.ErrAuditUnavailable) || r != nil {
		t.Errorf("Seal: %v %v", r, err)
	}
	if r, err := s.Open(ctx, alice, kms.OpenParams{KeyRef: kem.ID, Sealed: sealed.Sealed}); !errors.Is(err, kms.ErrAuditUnavailable) || r != nil {
		t.Errorf("Open: %v %v", r, err)
	}
	if r, err := s.Sign(ctx, alice, kms.SignParams{KeyRef: dsa.ID, Message: []byte("m"), Algorithm: kms.SignMLDSA}); !errors.Is(err, kms.ErrAuditUnavailable) || r != nil {
		t.Errorf("Sign: %v %v", r, err)
	}
	if r, err := s.UnsafeImportSoftwareKeyForTesting(ctx, alice, kms.SpecMLDSA44, make([]byte, 32)); !errors.Is(err, kms.ErrAuditUnavailable) || r != nil {
		t.Errorf("UnsafeImportSoftwareKeyForTesting: %v %v", r, err)
	}
	// A refused operation keeps its own error.
	if _, err := s.Decapsulate(ctx, alice, kms.DecapsulateParams{KeyRef: kem.ID, Ciphertext: e.Ciphertext[1:]}); !errors.Is(err, kms.ErrValidation) {
		t.Errorf("Decapsulate of a short ciphertext: %v", err)
	}
}

// TestUnsafeImportSoftwareKeyForTesting: the import derives the key the
// seed gives, stores it like any other, and refuses what it should.
func TestUnsafeImportSoftwareKeyForTesting(t *testing.T) {
	b := testbed.New(t)
	ctx := context.Background()
	seed := make([]byte, 64)
	for i := range seed {
		seed[i] = byte(i)
	}
	k, err := b.KMS.UnsafeImportSoftwareKeyForTesting(ctx, alice, kms.SpecMLKEM768, seed)
	if err != nil {
		t.Fatal(err)
	}
	if k.Spec != kms.SpecMLKEM768 || k.Usage != kms.UsageKeyEncapsulation || k.State != kms.StateActive || k.PrimaryVersion != 1 || !strings.Contains(k.Description, "UNSAFE") {
		t.Errorf("imported %+v", k)
	}
	want, err := mlkem.NewDecapsulationKey768(seed)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := b.KMS.GetPublicKey(ctx, alice, k.ID, 0)
	if err != nil || !bytes.Equal(pub.RawPublicKey, want.EncapsulationKey().Bytes()) {
		t.Fatalf("imported public key differs from crypto/mlkem's (%v)", err)
	}
	priv, wrapped := unwrapPrivate(t, b, k, 1)
	if !bytes.Equal(priv, seed) || bytes.Contains(wrapped, seed) {
		t.Errorf("stored private key is not the wrapped seed")
	}
	if got, err := b.KMS.DescribeKey(ctx, alice, k.ID); err != nil || got.ID != k.ID {
		t.Errorf("DescribeKey of the imported key: %v", err)
	}
	// It rotates like any key: the next version is generated.
	if _, err := b.KMS.CreateVersion(ctx, alice, kms.CreateVersionParams{KeyID: k.ID, Version: 2}); err != nil {
		t.Errorf("CreateVersion of the imported key: %v", err)
	}
	for name, c := range map[string]struct {
		caller kms.Caller
		spec   kms.KeySpec
		seed   []byte
		code   kms.Code
	}{
		"short seed":          {alice, kms.SpecMLKEM768, seed[:63], kms.CodeValidation},
		"long seed":           {alice, kms.SpecMLKEM768, append(bytes.Clone(seed), 0), kms.CodeValidation},
		"no seed":             {alice, kms.SpecMLDSA65, nil, kms.CodeValidation},
		"symmetric spec":      {alice, kms.SpecSymmetricDefault, seed[:32], kms.CodeValidation},
		"unknown spec":        {alice, "ML_KEM_512", seed, kms.CodeValidation},
		"no tenant":           {kms.Caller{}, kms.SpecMLKEM768, seed, kms.CodeAccessDenied},
		"X-Wing seed for SLH": {alice, kms.SpecSLHDSA128F, seed[:32], kms.CodeValidation},
	} {
		_, err := b.KMS.UnsafeImportSoftwareKeyForTesting(ctx, c.caller, c.spec, c.seed)
		wantCode(t, name, err, c.code)
	}
}

// ---------------------------------------------------------------------------
// Interoperability with Go's crypto/hpke and crypto/mlkem.

// TestPQInteropHPKE: a payload sealed with Go's crypto/hpke to the raw
// public key keyflow hands out opens in keyflow, and a payload keyflow
// seals opens with crypto/hpke and the private key (unwrapped here from
// the store, which only a test may do).
func TestPQInteropHPKE(t *testing.T) {
	b := testbed.New(t)
	ctx := context.Background()
	for _, c := range []struct {
		spec kms.KeySpec
		kem  hpke.KEM
	}{
		{kms.SpecXWing, hpke.MLKEM768X25519()},
		{kms.SpecMLKEM768, hpke.MLKEM768()},
		{kms.SpecMLKEM1024, hpke.MLKEM1024()},
	} {
		t.Run(string(c.spec), func(t *testing.T) {
			k := pqCreate(t, b.KMS, alice, c.spec)
			pub, err := b.KMS.GetPublicKey(ctx, alice, k.ID, 0)
			if err != nil {
				t.Fatal(err)
			}
			pk, err := c.kem.NewPublicKey(pub.RawPublicKey)
			if err != nil {
				t.Fatalf("crypto/hpke refuses keyflow's public key: %v", err)
			}
			info := []byte("interop/" + string(c.spec))
			msg := []byte("sealed by Go's crypto/hpke")
			sealed, err := hpke.Seal(pk, hpke.HKDFSHA256(), hpke.AES256GCM(), info, msg)
			if err != nil {
				t.Fatal(err)
			}
			o, err := b.KMS.Open(ctx, alice, kms.OpenParams{KeyRef: k.ID, Sealed: sealed, Info: info})
			if err != nil || !bytes.Equal(o.Plaintext, msg) {
				t.Fatalf("keyflow cannot open what crypto/hpke sealed: %v", err)
			}
			_, err = b.KMS.Open(ctx, alice, kms.OpenParams{KeyRef: k.ID, Sealed: sealed})
			wantCode(t, "Open without the info", err, kms.CodeInvalidCiphertext)

			msg = []byte("sealed by keyflow")
			s, err := b.KMS.Seal(ctx, alice, kms.SealParams{KeyRef: k.ID, Plaintext: msg, Info: info})
			if err != nil {
				t.Fatal(err)
			}
			priv, _ := unwrapPrivate(t, b, k, 1)
			defer pqc.Zero(priv)
			sk, err := c.kem.NewPrivateKey(priv)
			if err != nil {
				t.Fatalf("crypto/hpke refuses keyflow's private key: %v", err)
			}
			got, err := hpke.Open(sk, hpke.HKDFSHA256(), hpke.AES256GCM(), info, s.Sealed)
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("crypto/hpke cannot open what keyflow sealed: %v", err)
			}
			// A payload for another key does not open.
			other := pqCreate(t, b.KMS, alice, c.spec)
			_, err = b.KMS.Open(ctx, alice, kms.OpenParams{KeyRef: other.ID, Sealed: sealed, Info: info})
			wantCode(t, "Open with another key", err, kms.CodeInvalidCiphertext)
		})
	}
}

// TestPQInteropMLKEM: keyflow's Encapsulate and Decapsulate against
// crypto/mlkem, both ways.
func TestPQInteropMLKEM(t *testing.T) {
	b := testbed.New(t)
	ctx := context.Background()
	type decapsulator interface {
		Decapsulate(ct []byte) ([]byte, error)
	}
	for _, c := range []struct {
		spec kms.KeySpec
		dk   func(seed []byte) (decapsulator, error)
		enc  func(pub []byte) (ss, ct []byte, err error)
	}{
		{kms.SpecMLKEM768,
			func(seed []byte) (decapsulator, error) { return mlkem.NewDecapsulationKey768(seed) },
			func(pub []byte) ([]byte, []byte, error) {
				ek, err := mlkem.NewEncapsulationKey768(pub)
				if err != nil {
					return nil, nil, err
				}
				ss, ct := ek.Encapsulate()
				return ss, ct, nil
			}},
		{kms.SpecMLKEM1024,
			func(seed []byte) (decapsulator, error) { return mlkem.NewDecapsulationKey1024(seed) },
			func(pub []byte) ([]byte, []byte, error) {
				ek, err := mlkem.NewEncapsulationKey1024(pub)
				if err != nil {
					return nil, nil, err
				}
				ss, ct := ek.Encapsulate()
				return ss, ct, nil
			}},
	} {
		t.Run(string(c.spec), func(t *testing.T) {
			k := pqCreate(t, b.KMS, alice, c.spec)
			pub, err := b.KMS.GetPublicKey(ctx, alice, k.ID, 0)
			if err != nil {
				t.Fatal(err)
			}
			ss, ct, err := c.enc(pub.RawPublicKey)
			if err != nil {
				t.Fatalf("crypto/mlkem refuses keyflow's public key: %v", err)
			}
			d, err := b.KMS.Decapsulate(ctx, alice, kms.DecapsulateParams{KeyRef: k.ID, Ciphertext: ct})
			if err != nil || !bytes.Equal(d.SharedSecret, ss) {
				t.Errorf("keyflow decapsulates a crypto/mlkem ciphertext to another secret (%v)", err)
			}
			e, err := b.KMS.Encapsulate(ctx, alice, k.ID)
			if err != nil {
				t.Fatal(err)
			}
			priv, _ := unwrapPrivate(t, b, k, 1)
			defer pqc.Zero(priv)
			dk, err := c.dk(priv)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := dk.Decapsulate(e.Ciphertext); err != nil || !bytes.Equal(got, e.SharedSecret) {
				t.Errorf("crypto/mlkem decapsulates keyflow's ciphertext to another secret (%v)", err)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Known-answer tests through the key path.

// TestPQXWingDraftVectors imports each X-Wing draft vector's seed, checks
// the public key keyflow derives and hands out, and decapsulates the
// vector's ciphertext through Decapsulate.
func TestPQXWingDraftVectors(t *testing.T) {
	b := testbed.New(t)
	ctx := context.Background()
	var vectors []struct {
		Seed hexBytes `json:"seed"`
		PK   hexBytes `json:"pk"`
		CT   hexBytes `json:"ct"`
		SS   hexBytes `json:"ss"`
	}
	readJSON(t, filepath.Join("..", "pqc", "testdata", "xwing", "test-vectors.json"), &vectors)
	for i, v := range vectors {
		k, err := b.KMS.UnsafeImportSoftwareKeyForTesting(ctx, alice, kms.SpecXWing, v.Seed)
		if err != nil {
			t.Fatalf("vector %d: import: %v", i, err)
		}
		pub, err := b.KMS.GetPublicKey(ctx, alice, k.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pub.RawPublicKey, v.PK) {
			t.Errorf("vector %d: public key mismatch", i)
		}
		if _, raw := parseSPKI(t, pub.PublicKeyDER); !bytes.Equal(raw, v.PK) {
			t.Errorf("vector %d: SubjectPublicKeyInfo holds another key", i)
		}
		d, err := b.KMS.Decapsulate(ctx, alice, kms.DecapsulateParams{KeyRef: k.ID, Ciphertext: v.CT})
		if err != nil {
			t.Fatalf("vector %d: Decapsulate: %v", i, err)
		}
		if !bytes.Equal(d.SharedSecret, v.SS) {
			t.Errorf("vector %d: shared secret mismatch", i)
		}
	}
	t.Logf("pqc/testdata/xwing/test-vectors.json: ran %d vectors through the key path", len(vectors))
	if len(vectors) != 3 {
		t.Errorf("got %d vectors, want the draft's 3", len(vectors))
	}
}

// The Wycheproof module, located as Go's own crypto tests locate theirs.
const wycheproofModule = "github.com/c2sp/wycheproof@v0.0.0-20260902155932-3fa63dd0344a"

var (
	wycheproofOnce sync.Once
	wycheproofDir  string
	wycheproofSkip string
)

func wycheproofPath(t *testing.T, file string) string {
	t.Helper()
	wycheproofOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			wycheproofSkip = "cannot locate " + wycheproofModule + ": no go tool in PATH: " + err.Error()
			return
		}
		cmd := exec.Command(goTool, "mod", "download", "-json", wycheproofModule)
		cmd.Dir = os.TempDir() // outside this module: never touches go.mod or go.sum
		out, err := cmd.Output()
		var info struct{ Dir, Error string }
		_ = json.Unmarshal(out, &info)
		if err != nil || info.Dir == "" {
			why := info.Error
			if why == "" && err != nil {
				why = err.Error()
			}
			wycheproofSkip = "cannot locate " + wycheproofModule + " with `go mod download -json` (offline or no module proxy?): " + why
			return
		}
		wycheproofDir = info.Dir
	})
	if wycheproofSkip != "" {
		t.Skip(wycheproofSkip)
	}
	return filepath.Join(wycheproofDir, "testvectors_v1", file)
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			t.Skipf("vector file %s not found", filepath.Base(path))
		}
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("failed to decode %s: %v", filepath.Base(path), err)
	}
}

type hexBytes []byte

func (h *hexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	d, err := hex.DecodeString(s)
	*h = d
	return err
}

// vectorCount tallies one vector file: what ran through keyflow, and what
// was skipped and why.
type vectorCount struct {
	run     int
	skipped map[string]int
}

func (c *vectorCount) skip(reason string) {
	if c.skipped == nil {
		c.skipped = map[string]int{}
	}
	c.skipped[reason]++
}

func (c *vectorCount) report(t *testing.T, file string) {
	t.Helper()
	msg := fmt.Sprintf("%s: ran %d vectors through the key path", file, c.run)
	for _, reason := range slices.Sorted(maps.Keys(c.skipped)) {
		msg += fmt.Sprintf("; skipped %d (%s)", c.skipped[reason], reason)
	}
	t.Log(msg)
	if c.run == 0 {
		t.Errorf("%s: no vectors run", file)
	}
}

type wycheproofFile[V any] struct {
	TestGroups []struct {
		ParameterSet string   `json:"parameterSet"`
		PrivateSeed  hexBytes `json:"privateSeed"`
		PublicKey    hexBytes `json:"publicKey"`
		Tests        []V      `json:"tests"`
	} `json:"testGroups"`
}

type mlkemVector struct {
	TcID    int      `json:"tcId"`
	Comment string   `json:"comment"`
	Flags   []string `json:"flags"`
	Result  string   `json:"result"`
	Seed    hexBytes `json:"seed"`
	EK      hexBytes `json:"ek"`
	C       hexBytes `json:"c"`
	K       hexBytes `json:"K"`
}

func (v mlkemVector) String() string { return fmt.Sprintf("tcId %d (%s)", v.TcID, v.Comment) }

type mldsaVector struct {
	TcID    int       `json:"tcId"`
	Comment string    `json:"comment"`
	Flags   []string  `json:"flags"`
	Result  string    `json:"result"`
	Msg     *hexBytes `json:"msg"` // absent when only μ is given
	Ctx     hexBytes  `json:"ctx"`
	Rnd     *hexBytes `json:"rnd"`
	Sig     hexBytes  `json:"sig"`
}

func (v mldsaVector) String() string { return fmt.Sprintf("tcId %d (%s)", v.TcID, v.Comment) }

var wycheproofMLKEMSpecs = []struct {
	file string
	spec kms.KeySpec
}{
	{"768", kms.SpecMLKEM768},
	{"1024", kms.SpecMLKEM1024},
}

// importSeed imports a seed, reporting whether the import refused it (with
// ValidationException, the only acceptable refusal).
func importSeed(t *testing.T, b *testbed.Bed, spec kms.KeySpec, seed []byte) (*kms.Key, bool) {
	t.Helper()
	k, err := b.KMS.UnsafeImportSoftwareKeyForTesting(context.Background(), alice, spec, seed)
	if err != nil {
		if kms.CodeOf(err) != kms.CodeValidation {
			t.Fatalf("import of a %d-byte %s seed: %v", len(seed), spec, err)
		}
		return nil, false
	}
	return k, true
}

func rawPublicKey(t *testing.T, b *testbed.Bed, k *kms.Key) []byte {
	t.Helper()
	r, err := b.KMS.GetPublicKey(context.Background(), alice, k.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	return r.RawPublicKey
}

// TestPQWycheproofMLKEMKeyGen: each seed, imported, gives the vector's
// encapsulation key through GetPublicKey. (ML-KEM-512 has no keyflow spec.)
func TestPQWycheproofMLKEMKeyGen(t *testing.T) {
	b := testbed.New(t)
	for _, p := range wycheproofMLKEMSpecs {
		file := "mlkem_" + p.file + "_keygen_seed_test.json"
		t.Run(file, func(t *testing.T) {
			var f wycheproofFile[mlkemVector]
			readJSON(t, wycheproofPath(t, file), &f)
			var n vectorCount
			for _, g := range f.TestGroups {
				for _, v := range g.Tests {
					n.run++
					k, ok := importSeed(t, b, p.spec, v.Seed)
					if v.Result == "invalid" {
						if ok {
							t.Errorf("%v: import accepted an invalid seed", v)
						}
						continue
					}
					if !ok {
						t.Errorf("%v: import refused a valid seed", v)
						continue
					}
					if !bytes.Equal(rawPublicKey(t, b, k), v.EK) {
						t.Errorf("%v: public key mismatch", v)
					}
				}
			}
			n.report(t, file)
		})
	}
}

// TestPQWycheproofMLKEMDecaps: Decapsulate through the key path, including
// the implicit-rejection vectors (modified ciphertexts must give the
// rejection secret, not an error), wrong ciphertext lengths
// (ValidationException) and wrong seed lengths (refused at import).
func TestPQWycheproofMLKEMDecaps(t *testing.T) {
	b := testbed.New(t)
	ctx := context.Background()
	for _, p := range wycheproofMLKEMSpecs {
		file := "mlkem_" + p.file + "_test.json"
		t.Run(file, func(t *testing.T) {
			var f wycheproofFile[mlkemVector]
			readJSON(t, wycheproofPath(t, file), &f)
			var n vectorCount
			rejections := 0
			for _, g := range f.TestGroups {
				for _, v := range g.Tests {
					n.run++
					k, ok := importSeed(t, b, p.spec, v.Seed)
					if !ok {
						if v.Result != "invalid" {
							t.Errorf("%v: import refused a valid seed", v)
						}
						continue
					}
					if len(v.EK) > 0 && !bytes.Equal(rawPublicKey(t, b, k), v.EK) {
						t.Errorf("%v: public key mismatch", v)
					}
					d, err := b.KMS.Decapsulate(ctx, alice, kms.DecapsulateParams{KeyRef: k.ID, Ciphertext: v.C})
					if v.Result == "invalid" {
						if kms.CodeOf(err) != kms.CodeValidation {
							t.Errorf("%v: got %v, want ValidationException", v, err)
						}
						continue
					}
					if err != nil {
						t.Errorf("%v: %v", v, err)
						continue
					}
					if !bytes.Equal(d.SharedSecret, v.K) {
						t.Errorf("%v: shared secret mismatch", v)
					}
					if slices.Contains(v.Flags, "MalleableCiphertext") || strings.Contains(v.Comment, "reject") {
						rejections++
					}
				}
			}
			n.report(t, file)
			t.Logf("%s: %d implicit-rejection vectors among them", file, rejections)
		})
	}
	for _, file := range []string{"mlkem_512_keygen_seed_test.json", "mlkem_512_test.json"} {
		t.Logf("%s: not applicable (keyflow has no ML_KEM_512 spec)", file)
	}
	for _, p := range wycheproofMLKEMSpecs {
		t.Logf("mlkem_%s_encaps_test.json, mlkem_%s_semi_expanded_decaps_test.json: not applicable through the key path "+
			"(they give an encapsulation key or an expanded decapsulation key, not a seed; keyflow encapsulates with fresh randomness); package pqc runs them", p.file, p.file)
	}
}

var wycheproofMLDSASpecs = []struct {
	file string
	spec kms.KeySpec
}{
	{"44", kms.SpecMLDSA44},
	{"65", kms.SpecMLDSA65},
	{"87", kms.SpecMLDSA87},
}

// TestPQWycheproofMLDSASignSeed imports each group's seed and signs every
// message through Sign, with the vector's context. keyflow signs hedged
// (fresh randomness), so its signature cannot equal the vector's
// deterministic one: instead keyflow's signature is checked with the
// vector's public key in package pqc, and the vector's signature is checked
// through Verify with the same context.
func TestPQWycheproofMLDSASignSeed(t *testing.T) {
	b := testbed.New(t)
	ctx := context.Background()
	for _, p := range wycheproofMLDSASpecs {
		file := "mldsa_" + p.file + "_sign_seed_test.json"
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			var f wycheproofFile[mldsaVector]
			readJSON(t, wycheproofPath(t, file), &f)
			signer, err := pqc.SignerByName(string(p.spec))
			if err != nil {
				t.Fatal(err)
			}
			var n vectorCount
			for _, g := range f.TestGroups {
				k, ok := importSeed(t, b, p.spec, g.PrivateSeed)
				if !ok {
					for _, v := range g.Tests {
						n.run++
						if v.Result != "invalid" {
							t.Errorf("%v: import refused a valid %d-byte seed", v, len(g.PrivateSeed))
						}
					}
					continue
				}
				if !bytes.Equal(rawPublicKey(t, b, k), g.PublicKey) {
					t.Errorf("group of %v: public key mismatch", g.Tests[0])
				}
				for _, v := range g.Tests {
					if v.Msg == nil {
						// Only μ: external-μ signing, which circl lacks;
						// keyflow refuses a DIGEST for ML-DSA.
						_, err := b.KMS.Sign(ctx, alice, kms.SignParams{KeyRef: k.ID, Message: make([]byte, 64), MessageType: kms.MessageDigest, Algorithm: kms.SignMLDSA})
						if kms.CodeOf(err) != kms.CodeValidation {
							t.Errorf("%v: external mu: got %v, want ValidationException", v, err)
						}
						n.skip("external mu only, refused")
						continue
					}
					msg := []byte(*v.Msg)
					if len(msg) == 0 || len(msg) > kms.MaxSignMessage {
						n.skip("empty or over-long message, which keyflow refuses")
						continue
					}
					n.run++
					res, err := b.KMS.Sign(ctx, alice, kms.SignParams{KeyRef: k.ID, Message: msg, Algorithm: kms.SignMLDSA, Context: v.Ctx})
					if v.Result == "invalid" {
						if kms.CodeOf(err) != kms.CodeValidation {
							t.Errorf("%v: got %v, want ValidationException", v, err)
						}
						continue
					}
					if err != nil {
						t.Errorf("%v: Sign: %v", v, err)
						continue
					}
					if err := signer.Verify(g.PublicKey, msg, res.Signature, pqc.SignOptions{Context: v.Ctx}); err != nil {
						t.Errorf("%v: keyflow's signature does not verify with the vector's public key: %v", v, err)
					}
					if _, err := b.KMS.Verify(ctx, alice, kms.VerifyParams{KeyRef: k.ID, Message: msg, Algorithm: kms.SignMLDSA, Signature: v.Sig, Context: v.Ctx}); err != nil {
						t.Errorf("%v: Verify of the vector's signature: %v", v, err)
					}
				}
			}
			n.report(t, file)
		})
	}
}

// TestPQWycheproofMLDSAVerify runs the verify vectors through Verify. keyflow
// imports seeds only (BYOK of public keys comes later), so a group runs when
// the sign_seed file of the same parameter set has the seed of its public
// key; the other groups are skipped and counted.
func TestPQWycheproofMLDSAVerify(t *testing.T) {
	b := testbed.New(t)
	ctx := context.Background()
	for _, p := range wycheproofMLDSASpecs {
		file := "mldsa_" + p.file + "_verify_test.json"
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			var seeds wycheproofFile[mldsaVector]
			readJSON(t, wycheproofPath(t, "mldsa_"+p.file+"_sign_seed_test.json"), &seeds)
			seedOf := map[string][]byte{}
			for _, g := range seeds.TestGroups {
				seedOf[string(g.PublicKey)] = g.PrivateSeed
			}
			var f wycheproofFile[mldsaVector]
			readJSON(t, wycheproofPath(t, file), &f)
			var n vectorCount
			codes := map[kms.Code]int{}
			for _, g := range f.TestGroups {
				seed, ok := seedOf[string(g.PublicKey)]
				if !ok {
					for range g.Tests {
						n.skip("public key without a known seed")
					}
					continue
				}
				k, ok := importSeed(t, b, p.spec, seed)
				if !ok || !bytes.Equal(rawPublicKey(t, b, k), g.PublicKey) {
					t.Fatalf("group of %v: cannot import the seed of its public key", g.Tests[0])
				}
				for _, v := range g.Tests {
					if v.Msg == nil {
						n.skip("external mu only")
						continue
					}
					msg := []byte(*v.Msg)
					if len(msg) == 0 {
						_, err := b.KMS.Verify(ctx, alice, kms.VerifyParams{KeyRef: k.ID, Message: msg, Algorithm: kms.SignMLDSA, Signature: v.Sig, Context: v.Ctx})
						if kms.CodeOf(err) != kms.CodeValidation {
							t.Errorf("%v: empty message: got %v, want ValidationException", v, err)
						}
						n.skip("empty message, which keyflow refuses")
						continue
					}
					n.run++
					_, err := b.KMS.Verify(ctx, alice, kms.VerifyParams{KeyRef: k.ID, Message: msg, Algorithm: kms.SignMLDSA, Signature: v.Sig, Context: v.Ctx})
					if v.Result != "invalid" {
						if err != nil {
							t.Errorf("%v: %v", v, err)
						}
						continue
					}
					code := kms.CodeOf(err)
					codes[code]++
					if err == nil || (code != kms.CodeInvalidSignature && code != kms.CodeValidation) {
						t.Errorf("%v: got %v, want KMSInvalidSignatureException or ValidationException", v, err)
					}
				}
			}
			n.report(t, file)
			t.Logf("%s: invalid vectors refused with %v", file, codes)
		})
	}
}
