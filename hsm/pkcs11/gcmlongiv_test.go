//go:build cgo

package pkcs11_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"testing"

	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
)

// TestDecryptGCMLongIVInterop is a known-answer test: Go's own AES-GCM
// with a 16-byte nonce seals under a known key, and SoftHSM, holding the
// same key, opens it. A tampered tag, IV or AAD fails as ErrAuthFailed, and
// the ordinary 12-byte DecryptGCM still refuses a 16-byte IV.
func TestDecryptGCMLongIVInterop(t *testing.T) {
	tok := pkcs11test.NewToken(t)
	ctx := t.Context()
	raw := bytes.Repeat([]byte{0x5a}, 32)
	k, err := tok.ImportAESKeyForTesting(ctx, raw, false)
	if err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCMWithNonceSize(block, hsm.GCMLongIVSize)
	if err != nil {
		t.Fatal(err)
	}
	iv := []byte("sixteen byte iv!")
	pt, aad := []byte("opened by the HSM after Go sealed it"), []byte("aad")
	ct := gcm.Seal(nil, iv, pt, aad)

	got, err := tok.DecryptGCMLongIV(ctx, k, iv, ct, aad)
	if err != nil {
		t.Fatalf("DecryptGCMLongIV: %v", err)
	}
	if !bytes.Equal(got, pt) {
		t.Fatalf("DecryptGCMLongIV = %q, want %q", got, pt)
	}
	badIV := bytes.Clone(iv)
	badIV[15] ^= 1
	badTag := bytes.Clone(ct)
	badTag[len(badTag)-1] ^= 1
	for name, c := range map[string]struct{ iv, ct, aad []byte }{
		"tag": {iv, badTag, aad}, "iv": {badIV, ct, aad}, "aad": {iv, ct, []byte("aae")},
	} {
		if _, err := tok.DecryptGCMLongIV(ctx, k, c.iv, c.ct, c.aad); !errors.Is(err, hsm.ErrAuthFailed) {
			t.Errorf("tampered %s: err = %v, want ErrAuthFailed", name, err)
		}
	}
	for _, n := range []int{0, 12, 15, 17} {
		if _, err := tok.DecryptGCMLongIV(ctx, k, make([]byte, n), ct, aad); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("%d-byte IV: err = %v, want ErrInvalidInput", n, err)
		}
	}
	if _, err := tok.DecryptGCM(ctx, k, iv, ct, aad); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Errorf("DecryptGCM with a 16-byte IV: err = %v, want ErrInvalidInput", err)
	}
}
