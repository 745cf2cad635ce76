//go:build cgo

package pkcs11_test

import (
	"testing"

	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/hsm/pkcs11"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
)

// benchKey returns a token and an AES-256 session key reached the way
// keyflow reaches one: generated, wrapped under the root key, unwrapped.
func benchKey(b *testing.B) (*pkcs11.Token, hsm.KeyHandle) {
	b.Helper()
	tok := pkcs11test.NewToken(b)
	ctx := b.Context()
	root, err := tok.EnsureRootKey(ctx, "bench-root")
	if err != nil {
		b.Fatal(err)
	}
	blob, err := tok.GenerateWrappedAESKey(ctx, root, 32)
	if err != nil {
		b.Fatal(err)
	}
	k, err := tok.UnwrapAESKey(ctx, root, blob)
	if err != nil {
		b.Fatal(err)
	}
	return tok, k
}

// The IV is fixed: the benchmark measures the HSM path, and nothing it
// encrypts is kept.
var (
	benchIV  = make([]byte, hsm.GCMIVSize)
	benchMsg = make([]byte, 32)
)

func BenchmarkEncryptGCM32(b *testing.B) {
	tok, k := benchKey(b)
	ctx := b.Context()
	b.SetBytes(int64(len(benchMsg)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := tok.EncryptGCM(ctx, k, benchIV, benchMsg, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func BenchmarkEncryptGCM32Parallel(b *testing.B) {
	tok, k := benchKey(b)
	ctx := b.Context()
	b.SetBytes(int64(len(benchMsg)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := tok.EncryptGCM(ctx, k, benchIV, benchMsg, nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
