//go:build cgo

package pkcs11

import (
	"context"
	"fmt"

	"github.com/keyflow/keyflow/hsm"
)

var _ hsm.GCMLongIVDecrypter = (*Token)(nil)

// DecryptGCMLongIV opens ciphertext||tag made under a 16-byte IV, as an
// AWS KMS external key manager may have made it (see hsm.GCMLongIVSize).
// SoftHSM 2.6 takes the IV length from CK_GCM_PARAMS, so the same
// mechanism serves. Every integrity failure returns hsm.ErrAuthFailed.
func (t *Token) DecryptGCMLongIV(ctx context.Context, key hsm.KeyHandle, iv, ciphertext, aad []byte) ([]byte, error) {
	const op = "decrypt"
	if len(iv) != hsm.GCMLongIVSize {
		return nil, fmt.Errorf("pkcs11: failed to %s: IV must be %d bytes, not %d: %w", op, hsm.GCMLongIVSize, len(iv), hsm.ErrInvalidInput)
	}
	return t.openGCM(ctx, op, key, iv, ciphertext, aad)
}
