package hsm

import (
	"context"
	"errors"
)

// RootKeyCeremony is the optional ability to move the root key to another
// HSM without its plaintext ever leaving one: the root key is exported
// wrapped (AES-KWP) under a one-time ceremony key-encryption key, and
// imported into another token by unwrapping it under the same KEK. The
// caller splits the KEK among custodians (keyflow uses Shamir M-of-N
// shares) and zeroes it; the wrapped blob alone is useless.
//
// A backend that supports it creates root keys that are sensitive and
// extractable only under a trusted wrapping key (PKCS#11:
// CKA_EXTRACTABLE, CKA_SENSITIVE and CKA_WRAP_WITH_TRUSTED), so that no
// ordinary key, and no caller with only the user PIN, can wrap the root
// key; only the security officer can mark a KEK as trusted. Root keys
// created non-extractable cannot be exported at all (ErrNotExportable).
type RootKeyCeremony interface {
	// ExportRootKey wraps the root key labelled label under kek (32
	// bytes), which it imports as a temporary trusted key with the
	// security officer's PIN soPIN, and destroys again. Only the blob
	// leaves. The caller zeroes kek. The backend must have no other user
	// of the token open while it runs (the security officer's login
	// replaces the user's).
	ExportRootKey(ctx context.Context, label string, kek []byte, soPIN string) ([]byte, error)
	// ImportRootKey unwraps blob under kek into a new root key labelled
	// label, with the same protection as a root key EnsureRootKey
	// creates. A kek that does not open blob returns ErrAuthFailed
	// (wrapped); an existing key with that label returns ErrExists
	// (wrapped) and changes nothing.
	ImportRootKey(ctx context.Context, label string, kek, blob []byte) error
}

// CeremonyKEKSize is the size of a ceremony key-encryption key: AES-256.
const CeremonyKEKSize = 32

var (
	// ErrNotExportable is returned when a key cannot be exported, not even
	// wrapped: a root key created non-extractable.
	ErrNotExportable = errors.New("hsm: key is not exportable")
	// ErrExists is returned when an object to be created already exists.
	ErrExists = errors.New("hsm: object already exists")
)
