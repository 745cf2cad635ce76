//go:build cgo

package pkcs11_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
)

func TestWrapSecretRoundTrip(t *testing.T) {
	ctx := context.Background()
	tok := pkcs11test.NewToken(t)
	root, err := tok.EnsureRootKey(ctx, "root")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := tok.EnsureRootKey(ctx, "other")
	for _, n := range []int{1, 32, 64, 1000, 4096} {
		secret := bytes.Repeat([]byte{byte(n)}, n)
		blob, err := tok.WrapSecret(ctx, root, secret)
		if err != nil {
			t.Fatalf("wrap %d bytes: %v", n, err)
		}
		if bytes.Contains(blob, secret[:min(n, 16)]) && n >= 8 {
			t.Fatalf("blob holds the secret in clear")
		}
		got, err := tok.UnwrapSecret(ctx, root, blob)
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("unwrap %d bytes: %v (got %d bytes %x)", n, err, len(got), got[:min(len(got), 16)])
		}
		if _, err := tok.UnwrapSecret(ctx, other, blob); !errors.Is(err, hsm.ErrAuthFailed) {
			t.Fatalf("unwrap under another key: %v, want ErrAuthFailed", err)
		}
		bad := bytes.Clone(blob)
		bad[len(bad)-1] ^= 1
		if _, err := tok.UnwrapSecret(ctx, root, bad); !errors.Is(err, hsm.ErrAuthFailed) {
			t.Fatalf("tampered blob: %v, want ErrAuthFailed", err)
		}
	}
	for _, n := range []int{0, 4097} {
		if _, err := tok.WrapSecret(ctx, root, make([]byte, n)); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Fatalf("wrap %d bytes: %v, want ErrInvalidInput", n, err)
		}
	}
	for _, b := range [][]byte{nil, make([]byte, 12), make([]byte, 17)} {
		if _, err := tok.UnwrapSecret(ctx, root, b); !errors.Is(err, hsm.ErrAuthFailed) {
			t.Fatalf("malformed blob of %d bytes: %v", len(b), err)
		}
	}
}
