package kms_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"testing"

	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// BenchmarkCreateExportablePair measures creating an exportable key pair
// (generated in Go, wrapped into the HSM twice) against the same spec
// generated inside the HSM, in the same run:
//
//	go test -run '^$' -bench 'ExportablePair|WrapForCloudPair' -benchtime 20x -count 3 ./kms/
func BenchmarkCreateExportablePair(b *testing.B) {
	ctx := context.Background()
	bed := testbed.New(b)
	for _, spec := range []kms.KeySpec{kms.SpecECCP256, kms.SpecRSA3072} {
		for _, exportable := range []bool{false, true} {
			name := string(spec) + "/hsm"
			if exportable {
				name = string(spec) + "/exportable"
			}
			b.Run(name, func(b *testing.B) {
				for range b.N {
					if _, err := bed.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: spec, Usage: kms.UsageSignVerify, Exportable: exportable}); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/create")
			})
		}
	}
}

// BenchmarkWrapForCloudPair measures WrapForCloud of an exportable pair
// (HSM unwrap of the PKCS#8, RSA-OAEP-SHA256 of an AES key, AES-KWP, the
// record) against the AES-256 key of the same run.
func BenchmarkWrapForCloudPair(b *testing.B) {
	ctx := context.Background()
	bed := testbed.New(b)
	priv, _ := rsa.GenerateKey(rand.Reader, 3072)
	der, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	for _, spec := range []kms.KeySpec{kms.SpecSymmetricDefault, kms.SpecECCP256, kms.SpecRSA3072} {
		usage := kms.UsageSignVerify
		if spec == kms.SpecSymmetricDefault {
			usage = kms.UsageEncryptDecrypt
		}
		k, err := bed.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: spec, Usage: usage, Exportable: true})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(string(spec), func(b *testing.B) {
			for range b.N {
				if _, err := bed.KMS.WrapForCloud(ctx, alice, kms.WrapForCloudParams{KeyID: k.ID, Version: 1, Destination: "d", Scheme: kms.WrapRSAAESSHA256, PublicKey: der}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/wrap")
		})
	}
}
