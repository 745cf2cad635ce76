// Package hsm is keyflow's crypto boundary: the small set of operations that
// keyflow asks of a hardware security module, and nothing else.
//
// The rest of keyflow never sees key material for HSM-backed keys. It sees
// opaque [KeyHandle] values, and wrapped blobs that only the HSM can open.
// The root key lives in the HSM as a sensitive token object that leaves it
// only wrapped under a key the security officer trusts (see
// [RootKeyCeremony]); every
// customer key version is stored outside the HSM wrapped under it (AES-KWP)
// and is unwrapped back into the HSM as a session object, non-extractable and
// sensitive, when a worker needs it.
//
// A backend implements [Backend]. The PKCS#11 backend (package hsm/pkcs11,
// cgo, tested against SoftHSM2) is the reference. Any other backend must
// pass the conformance suite in hsm/hsmtest.
//
// This package imports nothing from the rest of keyflow, and must not.
package hsm

import (
	"context"
	"errors"
)

// KeyHandle identifies a key object inside one backend instance. It is only
// meaningful to the backend that returned it, and only for as long as that
// backend is open. It is never key material.
//
// A handle of a loaded key (anything an Unwrap* or Import* method
// returned) may also stop working while the backend is open, if the
// device drops the object: a session lost, a token removed or reset.
// Operations then return ErrKeyHandleInvalid, and the caller loads the
// key again from its wrapped blob. Whether a root key handle survives a
// device reset is the backend's to document (the PKCS#11 backend's do);
// calling EnsureRootKey again always returns one that works.
type KeyHandle uint64

// GCMIVSize is the only AES-GCM IV length keyflow uses. Callers generate the
// IV (SoftHSM accepts an empty IV and then repeats its output, so the
// backend must refuse any other length rather than trust the caller).
const GCMIVSize = 12

// GCMTagSize is the AES-GCM tag length, in bytes, appended to ciphertexts.
const GCMTagSize = 16

// Sentinel errors. Backends wrap them with %w so callers can branch with
// errors.Is without parsing backend-specific messages.
var (
	// ErrAuthFailed is returned when an authenticated decryption or an
	// unwrap fails its integrity check. It never says why.
	ErrAuthFailed = errors.New("hsm: authentication failed")
	// ErrNotFound is returned when a labelled object does not exist.
	ErrNotFound = errors.New("hsm: object not found")
	// ErrInvalidInput is returned for bad lengths, bad IVs and the like,
	// before anything reaches the device.
	ErrInvalidInput = errors.New("hsm: invalid input")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("hsm: backend closed")
	// ErrKeyHandleInvalid is returned when a KeyHandle no longer names a
	// live key: it was destroyed, or it was a session object (an
	// unwrapped or imported key) that the device dropped because the
	// session holding it was lost or the token was removed or reset.
	// The key itself is safe in its wrapped blob. The caller must forget
	// the handle (evict it from any cache, never retry with it) and load
	// the key again from its blob with the Unwrap* method that made it.
	// Backends do not retry it themselves. Errors that wrap it also wrap
	// ErrNotFound.
	ErrKeyHandleInvalid = errors.New("hsm: key handle invalid")
	// ErrDevice is returned when the device, or the session to it,
	// failed (a device error, no memory on the device, the token
	// removed, a session lost) and the backend's own recovery did not
	// help. The operation did not complete; it may succeed later, and
	// retrying it is safe. It never means that an input was wrong or
	// failed to authenticate.
	ErrDevice = errors.New("hsm: device error")
)

// AEAD is authenticated encryption with AES-256-GCM under an HSM key.
// Encrypt returns ciphertext||tag. Decrypt returns ErrAuthFailed (wrapped)
// on any tag mismatch.
type AEAD interface {
	EncryptGCM(ctx context.Context, key KeyHandle, iv, plaintext, aad []byte) ([]byte, error)
	DecryptGCM(ctx context.Context, key KeyHandle, iv, ciphertext, aad []byte) ([]byte, error)
}

// KeyWrapper creates, wraps and unwraps AES keys under a wrapping key
// (normally the root key) with AES-KWP (RFC 5649).
type KeyWrapper interface {
	// GenerateWrappedAESKey generates a fresh AES key of the given size in
	// bytes (16, 24 or 32) inside the HSM, wraps it under wrappingKey and
	// destroys the temporary object. Only the wrapped blob leaves.
	GenerateWrappedAESKey(ctx context.Context, wrappingKey KeyHandle, size int) ([]byte, error)
	// UnwrapAESKey unwraps blob under wrappingKey into a session object
	// that is sensitive and non-extractable. The caller owns the handle
	// and must DestroyKey it. A blob that fails the KWP integrity check
	// returns ErrAuthFailed (wrapped).
	UnwrapAESKey(ctx context.Context, wrappingKey KeyHandle, blob []byte) (KeyHandle, error)
	// DestroyKey destroys a session object. Destroying an unknown handle
	// is not an error (idempotent).
	DestroyKey(ctx context.Context, key KeyHandle) error
}

// RootKeys finds or creates the deployment's root key: an AES-256 token
// object that can only wrap and unwrap, sensitive, and extractable (if at
// all) only wrapped under a trusted key, for the root key ceremony.
type RootKeys interface {
	// EnsureRootKey returns the root key with this label, creating it on
	// first use. Calling it again returns the same key.
	EnsureRootKey(ctx context.Context, label string) (KeyHandle, error)
}

// Random draws random bytes from the HSM's generator.
type Random interface {
	GenerateRandom(ctx context.Context, n int) ([]byte, error)
}

// Backend is everything keyflow needs from an HSM. Optional abilities that
// only some backends have are separate interfaces, found by type assertion.
type Backend interface {
	AEAD
	KeyWrapper
	RootKeys
	Random
	Close() error
}
