package rpc_test

import (
	"context"
	"crypto"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/internal/loadbench"
	"github.com/keyflow/keyflow/internal/testbed"
)

// runRequesters runs op from n goroutines until b.N operations are done and
// reports ops/s (scaled by perOp, e.g. items per batch) and p50/p99 latency.
func runRequesters(b *testing.B, n int, perOp int, op func() error) {
	if err := op(); err != nil { // warm caches
		b.Fatal(err)
	}
	loadbench.Run(b, n, func(int) error { return op() }).Report(b, perOp, time.Microsecond, "µs")
}

// BenchmarkBatchEncryptNATS encrypts batches of 100 items of 32 bytes from 8
// requesters; ops/s counts items, each one audited.
func BenchmarkBatchEncryptNATS(b *testing.B) {
	bed := testbed.New(b)
	bed.StartRPC(nil)
	ctx := context.Background()
	c := bed.Client("alpha", "bench")
	k, err := c.CreateKey(ctx, api.CreateKeyRequest{})
	if err != nil {
		b.Fatal(err)
	}
	const items = 100
	batch := make([]api.EncryptRequest, items)
	for i := range batch {
		batch[i] = api.EncryptRequest{KeyID: k.KeyID, Plaintext: make([]byte, 32)}
	}
	b.Run("items=100/requesters=8", func(b *testing.B) {
		runRequesters(b, 8, items, func() error {
			r, err := c.BatchEncrypt(ctx, batch)
			if err == nil && r.Results[0].Error != nil {
				err = fmt.Errorf("%s", r.Results[0].Error.Message)
			}
			return err
		})
	})
}

// BenchmarkSignNATS signs a 32-byte digest with an ECC_NIST_P256 key end to
// end (audit on) at 1 and 8 requesters.
func BenchmarkSignNATS(b *testing.B) {
	bed := testbed.New(b)
	bed.StartRPC(nil)
	ctx := context.Background()
	c := bed.Client("alpha", "bench")
	k, err := c.CreateKey(ctx, api.CreateKeyRequest{KeySpec: "ECC_NIST_P256", KeyUsage: "SIGN_VERIFY"})
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("benchmark"))
	req := api.SignRequest{KeyID: k.KeyID, Message: digest[:], MessageType: "DIGEST", SigningAlgorithm: "ECDSA_SHA_256"}
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("requesters=%d", n), func(b *testing.B) {
			runRequesters(b, n, 1, func() error { _, err := c.Sign(ctx, req); return err })
		})
	}
}

// BenchmarkRawHSMSignP256 is the sign baseline: ECDSA P-256 over a digest,
// directly on the token, serially, with a key loaded as keyflow loads one.
func BenchmarkRawHSMSignP256(b *testing.B) {
	bed := testbed.New(b)
	ctx := context.Background()
	root, err := bed.HSM.EnsureRootKey(ctx, "keyflow-root")
	if err != nil {
		b.Fatal(err)
	}
	spec := hsm.KeyPairSpec{Algorithm: "EC", Curve: "P-256"}
	kp, err := bed.HSM.GenerateWrappedKeyPair(ctx, root, spec)
	if err != nil {
		b.Fatal(err)
	}
	h, err := bed.HSM.UnwrapPrivateKey(ctx, root, kp.WrappedPrivate, spec)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("benchmark"))
	p := hsm.SignParams{Scheme: hsm.SchemeECDSA, Hash: crypto.SHA256}
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := bed.HSM.Sign(ctx, h, p, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}
