//go:build cgo

package pkcs11_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/hsm/pkcs11"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
)

func openWithSO(t *testing.T) (*pkcs11.Token, string) {
	t.Helper()
	cfg, so := pkcs11test.NewTokenConfigWithSO(t)
	tok, err := pkcs11.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tok.Close() })
	return tok, so
}

// The root key moves to a fresh token under a ceremony KEK: a key wrapped
// under the old root opens under the new one, and encrypts the same.
func TestRootKeyCeremonyRoundTrip(t *testing.T) {
	ctx := context.Background()
	a, so := openWithSO(t)
	rootA, err := a.EnsureRootKey(ctx, "root")
	if err != nil {
		t.Fatal(err)
	}
	blob, err := a.GenerateWrappedAESKey(ctx, rootA, 32)
	if err != nil {
		t.Fatal(err)
	}
	kek := make([]byte, hsm.CeremonyKEKSize)
	rand.Read(kek)
	wrappedRoot, err := a.ExportRootKey(ctx, "root", kek, so)
	if err != nil {
		t.Fatal(err)
	}
	if len(wrappedRoot) != 40 {
		t.Fatalf("wrapped root is %d bytes", len(wrappedRoot))
	}
	// The token still works after the SO's login came and went.
	ka, err := a.UnwrapAESKey(ctx, rootA, blob)
	if err != nil {
		t.Fatalf("token A after the ceremony: %v", err)
	}
	iv := make([]byte, hsm.GCMIVSize)
	ct, err := a.EncryptGCM(ctx, ka, iv, []byte("hello"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// And nothing of the ceremony is left on it.
	n, _ := a.CountObjectsForTest(ctx)
	if n != 2 { // the root key and ka
		t.Errorf("token A holds %d objects after the ceremony, want 2 (root, one unwrapped key)", n)
	}

	b := pkcs11test.NewToken(t)
	wrong := bytes.Clone(kek)
	wrong[0] ^= 1
	if err := b.ImportRootKey(ctx, "root", wrong, wrappedRoot); !errors.Is(err, hsm.ErrAuthFailed) {
		t.Fatalf("import with a wrong KEK: %v, want ErrAuthFailed", err)
	}
	if err := b.ImportRootKey(ctx, "root", kek, wrappedRoot); err != nil {
		t.Fatal(err)
	}
	if err := b.ImportRootKey(ctx, "root", kek, wrappedRoot); !errors.Is(err, hsm.ErrExists) {
		t.Fatalf("second import: %v, want ErrExists", err)
	}
	rootB, err := b.EnsureRootKey(ctx, "root")
	if err != nil {
		t.Fatalf("EnsureRootKey on the imported root: %v", err)
	}
	kb, err := b.UnwrapAESKey(ctx, rootB, blob)
	if err != nil {
		t.Fatalf("a blob of token A under token B's imported root: %v", err)
	}
	pt, err := b.DecryptGCM(ctx, kb, iv, ct, nil)
	if err != nil || string(pt) != "hello" {
		t.Fatalf("decrypt on token B: %q, %v", pt, err)
	}
	// The imported root is protected as a created one: B's SO can run the
	// next ceremony, but no user-made key can wrap it.
	userKEK, err := b.ImportAESKeyForTesting(ctx, kek, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.WrapKey(ctx, userKEK, rootB); err == nil {
		t.Fatal("a user-made (untrusted) key wrapped the imported root key")
	}
}

// Without the SO, nobody can take the root key out: not under a key the
// user made, and not with a wrong SO PIN (after which the token works).
func TestRootKeyExportNeedsTheSO(t *testing.T) {
	ctx := context.Background()
	a, so := openWithSO(t)
	root, err := a.EnsureRootKey(ctx, "root")
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 32)
	userKEK, err := a.ImportAESKeyForTesting(ctx, raw, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.WrapKey(ctx, userKEK, root); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Fatalf("wrap of the root under a user-made key: %v, want refused (ErrInvalidInput)", err)
	}
	if _, err := a.ExportRootKey(ctx, "root", raw, so+"x"); err == nil {
		t.Fatal("export with a wrong SO PIN succeeded")
	}
	if _, err := a.GenerateWrappedAESKey(ctx, root, 32); err != nil {
		t.Fatalf("token after a failed ceremony: %v", err)
	}
	if _, err := a.ExportRootKey(ctx, "missing", raw, so); !errors.Is(err, hsm.ErrNotFound) {
		t.Fatalf("export of a missing root: %v, want ErrNotFound", err)
	}
}

// A root key created non-extractable (before the ceremony existed) is
// refused with ErrNotExportable, and still works as a root key.
func TestRootKeyExportRefusesNonExtractable(t *testing.T) {
	ctx := context.Background()
	a, so := openWithSO(t)
	if err := a.CreateNonExtractableRootForTest(ctx, "legacy"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.EnsureRootKey(ctx, "legacy"); err != nil {
		t.Fatalf("EnsureRootKey on a legacy root: %v", err)
	}
	kek := make([]byte, 32)
	if _, err := a.ExportRootKey(ctx, "legacy", kek, so); !errors.Is(err, hsm.ErrNotExportable) {
		t.Fatalf("export of a non-extractable root: %v, want ErrNotExportable", err)
	}
}
