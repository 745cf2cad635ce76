package hsm

import (
	"context"
	"crypto"
)

// ImportKind says what imported key material is, so the backend can refuse
// material of the wrong type or length before it is stored.
type ImportKind string

// Kinds of imported material.
const (
	// ImportAES is an AES key of ImportTarget.Size bytes (16, 24 or 32).
	ImportAES ImportKind = "AES"
	// ImportHMAC is a generic secret of exactly ImportTarget.Size bytes
	// for HMAC-SHA256 (at least 32).
	ImportHMAC ImportKind = "HMAC"
)

// ImportTarget is the material an import expects.
type ImportTarget struct {
	Kind ImportKind
	Size int
}

// KeyImporter takes key material that an outside party encrypted to a
// wrapping key pair generated in this HSM (Bring Your Own Key), and
// re-wraps it under wrappingKey with AES-KWP, in exactly the blob format
// that KeyWrapper.UnwrapAESKey and MACs.UnwrapHMACKey load. The caller
// stores that blob like the blob of a generated key.
//
// What runs where is the backend's to document: the ideal is that the
// material is decrypted into an HSM object and never reaches process
// memory. A backend that lacks a mechanism (SoftHSM 2.6.1 has RSA-OAEP
// with SHA-1 only) may decode in process memory as RSAEncrypter allows,
// and must say so.
//
// Every failure to decrypt or unwrap the caller's ciphertext returns
// ErrAuthFailed (wrapped), one error whatever failed, so an import is no
// padding oracle on the wrapping key. Material that decrypts but is not
// of the target's kind and size returns ErrInvalidInput (wrapped).
type KeyImporter interface {
	// LoadImportKey loads the private half of an RSA key pair made by
	// KeyPairs.GenerateWrappedKeyPair as a sensitive, non-extractable
	// session object that may unwrap and decrypt key material for
	// the Import* methods, and do nothing else (in particular, never
	// sign). Errors are as for KeyPairs.UnwrapPrivateKey.
	LoadImportKey(ctx context.Context, wrappingKey KeyHandle, blob []byte, spec KeyPairSpec) (KeyHandle, error)
	// ImportRSAOAEP imports material encrypted with RSA-OAEP (hash for
	// both the label hash and MGF1, empty label) to importKey.
	ImportRSAOAEP(ctx context.Context, importKey KeyHandle, hash crypto.Hash, ciphertext []byte, target ImportTarget, wrappingKey KeyHandle) ([]byte, error)
	// ImportRSAAESKeyWrap imports material wrapped as PKCS#11's
	// CKM_RSA_AES_KEY_WRAP does: the RSA-OAEP encryption (hash as
	// above) of a fresh AES key, as long as the modulus, followed by the
	// AES-KWP (RFC 5649) wrapping of the material under that AES key.
	ImportRSAAESKeyWrap(ctx context.Context, importKey KeyHandle, hash crypto.Hash, ciphertext []byte, target ImportTarget, wrappingKey KeyHandle) ([]byte, error)
	// ImportPrivateKeyRSAAESKeyWrap imports a private key, its PKCS#8
	// DER wrapped as for ImportRSAAESKeyWrap, checks that it is a key of
	// spec, and returns it as GenerateWrappedKeyPair returns a generated
	// one: the public key and the private key wrapped under wrappingKey.
	// A key of another kind or size returns ErrInvalidInput.
	ImportPrivateKeyRSAAESKeyWrap(ctx context.Context, importKey KeyHandle, hash crypto.Hash, ciphertext []byte, spec KeyPairSpec, wrappingKey KeyHandle) (*WrappedKeyPair, error)
	// ImportPlaintext wraps material that the caller already holds in
	// process memory (opened by a scheme the HSM lacks, such as a
	// post-quantum KEM). The caller zeroes material afterwards.
	ImportPlaintext(ctx context.Context, material []byte, target ImportTarget, wrappingKey KeyHandle) ([]byte, error)
}
