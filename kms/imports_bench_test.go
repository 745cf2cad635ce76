package kms_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"testing"

	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// BenchmarkImportKeyMaterial measures one ImportKeyMaterial (a re-import
// of the same 32-byte material, so every iteration runs the whole path:
// token MAC check in the HSM, loading the wrapping key, unwrapping,
// checking and re-wrapping the material, the fingerprint, the KV update
// and the audit record). Compare with BenchmarkImportRawHSMOAEPDecrypt,
// the one RSA-3072 private-key operation at its core, in the same run:
//
//	go test -run '^$' -bench 'Import' -benchtime 2s -count 3 ./kms/
func BenchmarkImportKeyMaterial(b *testing.B) {
	ctx := context.Background()
	bed := testbed.New(b)
	for _, alg := range kms.WrappingAlgorithms() {
		b.Run(string(alg), func(b *testing.B) {
			k, err := bed.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Origin: kms.OriginExternal})
			if err != nil {
				b.Fatal(err)
			}
			p, err := bed.KMS.GetParametersForImport(ctx, alice, kms.GetImportParamsParams{KeyRef: k.ID, Algorithm: alg})
			if err != nil {
				b.Fatal(err)
			}
			wrapped := customerWrap(b, p, newMaterial(32))
			b.ResetTimer()
			for range b.N {
				if _, err := bed.KMS.ImportKeyMaterial(ctx, alice, kms.ImportParams{KeyRef: k.ID, WrappedMaterial: wrapped, ImportToken: p.ImportToken}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/import")
		})
	}
}

// BenchmarkImportRawHSMOAEPDecrypt is the baseline: RSA-3072 OAEP (SHA-1,
// entirely in SoftHSM) decryption of 32 bytes with a loaded key.
func BenchmarkImportRawHSMOAEPDecrypt(b *testing.B) {
	ctx := context.Background()
	bed := testbed.New(b)
	root, err := bed.HSM.EnsureRootKey(ctx, "keyflow-root")
	if err != nil {
		b.Fatal(err)
	}
	spec := hsm.KeyPairSpec{Algorithm: "RSA", RSABits: 3072}
	kp, err := bed.HSM.GenerateWrappedKeyPair(ctx, root, spec)
	if err != nil {
		b.Fatal(err)
	}
	ik, err := bed.HSM.LoadImportKey(ctx, root, kp.WrappedPrivate, spec)
	if err != nil {
		b.Fatal(err)
	}
	pub, _ := x509.ParsePKIXPublicKey(kp.PublicKeyDER)
	ct, _ := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub.(*rsa.PublicKey), newMaterial(32), nil)
	b.ResetTimer()
	for range b.N {
		if _, err := bed.HSM.DecryptOAEP(ctx, ik, crypto.SHA1, ct, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/decrypt")
}
