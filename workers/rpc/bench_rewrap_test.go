package rpc_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// BenchmarkRewrapRegistered is the migration's rewrap rate: registered
// data keys (32-byte AES data keys under a SYMMETRIC_DEFAULT key) moved to
// a new primary version in pages of 100, as the rewrap activity moves
// them: registry read, HSM decrypt and encrypt, registry update with its
// index, one audit record per move. ops/s counts data keys. Compare with
// BenchmarkRawHSMGCM of the same run (each move is two GCM operations).
func BenchmarkRewrapRegistered(b *testing.B) {
	bed := testbed.New(b)
	ctx := context.Background()
	alice := kms.Caller{Tenant: "alpha", Principal: "bench", IdempotencyKey: "bench-rewrap"}
	k, err := bed.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	if err != nil {
		b.Fatal(err)
	}
	version := uint32(1)
	b.ResetTimer()
	b.StopTimer()
	register := func(n int) {
		for range n {
			dk, err := bed.KMS.GenerateDataKey(ctx, alice, kms.GenerateDataKeyParams{KeyRef: k.ID})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := bed.KMS.RegisterDataKey(ctx, alice, kms.RegisterDataKeyParams{Ciphertext: dk.CiphertextBlob}); err != nil {
				b.Fatal(err)
			}
		}
	}
	register(b.N)
	version++
	if _, err := bed.KMS.CreateVersion(ctx, alice, kms.CreateVersionParams{KeyID: k.ID, Version: version}); err != nil {
		b.Fatal(err)
	}
	if _, err := bed.KMS.SetPrimaryVersion(ctx, alice, kms.SetPrimaryParams{KeyID: k.ID, Version: version}); err != nil {
		b.Fatal(err)
	}
	b.StartTimer()
	start := time.Now()
	moved, cursor := 0, ""
	for {
		page, err := bed.KMS.RewrapRegistered(ctx, alice, kms.RewrapRegisteredParams{KeyID: k.ID, After: cursor, Limit: 100})
		if err != nil {
			b.Fatal(err)
		}
		moved += page.Rewrapped
		if page.Done {
			break
		}
		cursor = page.NextCursor
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if moved != b.N {
		b.Fatalf("moved %d of %d", moved, b.N)
	}
	b.ReportMetric(float64(moved)/elapsed.Seconds(), "ops/s")
}

// BenchmarkRewrapNATS rewraps batches of 100 ciphertexts over the NATS
// API (crypto.rewrap) from 8 requesters; ops/s counts ciphertexts.
func BenchmarkRewrapNATS(b *testing.B) {
	bed := testbed.New(b)
	bed.StartRPC(nil)
	ctx := context.Background()
	c := bed.Client("alpha", "bench")
	k, err := c.CreateKey(ctx, api.CreateKeyRequest{})
	if err != nil {
		b.Fatal(err)
	}
	const items = 100
	req := api.RewrapRequest{Items: make([]api.RewrapItem, items)}
	for i := range req.Items {
		dk, err := c.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: k.KeyID, WithoutPlaintext: true})
		if err != nil {
			b.Fatal(err)
		}
		req.Items[i] = api.RewrapItem{CiphertextBlob: dk.CiphertextBlob}
	}
	b.Run("items=100/requesters=8", func(b *testing.B) {
		runRequesters(b, 8, items, func() error {
			r, err := c.Rewrap(ctx, req)
			if err == nil && r.Results[0].Error != nil {
				err = fmt.Errorf("%s", r.Results[0].Error.Message)
			}
			return err
		})
	})
}
