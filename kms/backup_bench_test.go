package kms_test

import (
	"context"
	"testing"

	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

func benchBed(b *testing.B, keys int) *testbed.Bed {
	bed := testbed.New(b)
	for range keys {
		if _, err := bed.KMS.CreateKey(context.Background(), alice, kms.CreateKeyParams{}); err != nil {
			b.Fatal(err)
		}
	}
	return bed
}

// BenchmarkBackupReadStore100Keys is the baseline of backup creation: the
// store reads a backup cannot avoid (list the keys, read each version's
// material), without encrypting anything.
func BenchmarkBackupReadStore100Keys(b *testing.B) {
	ctx := context.Background()
	bed := benchBed(b, 100)
	for b.Loop() {
		keys, err := bed.Store.ListKeys(ctx, "alpha")
		if err != nil {
			b.Fatal(err)
		}
		for _, k := range keys {
			if _, err := bed.Store.GetMaterial(ctx, "alpha", k.ID, 1); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkBackupCreate100Keys is a whole backup: the reads above, a backup
// key generated in the HSM, the payload sealed in chunks, the registry.
func BenchmarkBackupCreate100Keys(b *testing.B) {
	ctx := context.Background()
	bed := benchBed(b, 100)
	for b.Loop() {
		if _, err := bed.KMS.CreateBackup(ctx, alice); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBackupRestore100Keys restores a 100-key backup over itself
// (--overwrite): open, check, write back.
func BenchmarkBackupRestore100Keys(b *testing.B) {
	ctx := context.Background()
	bed := benchBed(b, 100)
	bk, err := bed.KMS.CreateBackup(ctx, alice)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := bed.KMS.RestoreBackup(ctx, alice, kms.RestoreBackupParams{File: bk.File, Overwrite: true}); err != nil {
			b.Fatal(err)
		}
	}
}
