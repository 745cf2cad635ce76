package hsm

import "context"

// SecretWrapper protects software key material — keys of algorithms the HSM
// cannot hold natively, such as ML-KEM and ML-DSA on SoftHSM — by wrapping
// it under an HSM key (AES-KWP, inside the HSM). The plaintext exists in
// process memory only when the caller wraps it (right after generation) and
// when it unwraps it for one operation; the caller zeroes it afterwards.
//
// A backend whose HSM supports an algorithm natively should expose it
// through the ordinary interfaces instead; this is the fallback.
type SecretWrapper interface {
	// WrapSecret wraps 1 to 4096 bytes under wrappingKey.
	WrapSecret(ctx context.Context, wrappingKey KeyHandle, secret []byte) ([]byte, error)
	// UnwrapSecret returns the secret wrapped in blob. A blob that fails
	// the KWP integrity check returns ErrAuthFailed (wrapped).
	UnwrapSecret(ctx context.Context, wrappingKey KeyHandle, blob []byte) ([]byte, error)
}
