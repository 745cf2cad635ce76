package hsm

import (
	"context"
	"crypto"
)

// Optional abilities beyond the symmetric core. A backend that has them
// implements these interfaces; callers find them by type assertion, so a
// backend without (say) RSA still serves AES keys.

// KeyPairSpec names an asymmetric key pair.
type KeyPairSpec struct {
	// Algorithm is one of "RSA", "EC", "ED25519".
	Algorithm string
	// RSABits is 2048, 3072 or 4096 for RSA.
	RSABits int
	// Curve is "P-256" or "P-384" for EC.
	Curve string
}

// WrappedKeyPair is a key pair generated inside the HSM: the public key as
// DER SubjectPublicKeyInfo, and the private key wrapped (AES-KWP over
// PKCS#8) under the wrapping key. The private key never leaves otherwise.
//
// One exception, on HSMs that cannot wrap Ed25519 keys (SoftHSM 2.6.1
// among them): there the backend may build the PKCS#8 of an Ed25519 key
// in process memory to wrap it, and read it back to load it. The blob
// format is the same. Backends say so in their documentation.
type WrappedKeyPair struct {
	PublicKeyDER   []byte
	WrappedPrivate []byte
}

// KeyPairs generates and loads asymmetric keys.
type KeyPairs interface {
	// GenerateWrappedKeyPair generates a key pair inside the HSM, wraps the
	// private key under wrappingKey, destroys the temporary objects and
	// returns the public key and the wrapped private key.
	GenerateWrappedKeyPair(ctx context.Context, wrappingKey KeyHandle, spec KeyPairSpec) (*WrappedKeyPair, error)
	// UnwrapPrivateKey loads a wrapped private key as a session object
	// that is sensitive, non-extractable and may only sign or decrypt.
	// A blob that fails the KWP check returns ErrAuthFailed (wrapped); one
	// that opens but holds another kind of key than spec (algorithm, RSA
	// size, curve) returns ErrInvalidInput. Which of signing and
	// decryption an RSA key pair is for is the caller's rule: the loaded
	// object may allow both.
	UnwrapPrivateKey(ctx context.Context, wrappingKey KeyHandle, blob []byte, spec KeyPairSpec) (KeyHandle, error)
	// ImportPublicKey creates a session public-key object from DER
	// SubjectPublicKeyInfo, for Verify and RSA encryption. A key of a
	// kind the backend does not take returns ErrInvalidInput.
	ImportPublicKey(ctx context.Context, spkiDER []byte) (KeyHandle, error)
}

// SignScheme is a signature scheme.
type SignScheme string

// Signature schemes.
const (
	SchemeECDSA    SignScheme = "ECDSA"     // input: digest; signature: r||s (IEEE P1363), fixed length
	SchemeRSAPKCS1 SignScheme = "RSA_PKCS1" // input: digest; DigestInfo is added for Hash
	SchemeRSAPSS   SignScheme = "RSA_PSS"   // input: digest; MGF1 with Hash, salt length = hash length
	SchemeEd25519  SignScheme = "ED25519"   // input: the message itself (pure Ed25519); Hash is 0
)

// SignParams select how to sign or verify.
type SignParams struct {
	Scheme SignScheme
	Hash   crypto.Hash // SHA256, SHA384 or SHA512; 0 for Ed25519
}

// Signer signs and verifies inside the HSM.
//
// For the schemes that take a digest, input must be exactly Hash.Size()
// bytes; any other length, an unknown scheme or hash, and a key that
// cannot sign with the scheme return ErrInvalidInput (wrapped), before
// the device is asked. ECDSA signatures are r||s; ECDSASigToDER and
// ECDSASigFromDER convert to and from the DER that X.509 and AWS use.
type Signer interface {
	Sign(ctx context.Context, key KeyHandle, p SignParams, input []byte) ([]byte, error)
	// Verify returns nil for a valid signature and ErrAuthFailed (wrapped)
	// for an invalid one, including malformed signatures.
	Verify(ctx context.Context, publicKey KeyHandle, p SignParams, input, signature []byte) error
}

// RSAEncrypter does RSA-OAEP. Hash is used for both the label hash and MGF1;
// every backend does SHA-1 and SHA-256. SoftHSM 2.6.1 has OAEP with SHA-1
// only, and ignores the label there, so a backend may implement the rest
// as a raw RSA operation in the HSM (CKM_RSA_X_509, the private key stays
// inside) plus OAEP encoding and constant-time decoding in Go. Ciphertexts
// are exactly as long as the modulus.
type RSAEncrypter interface {
	EncryptOAEP(ctx context.Context, publicKey KeyHandle, hash crypto.Hash, plaintext, label []byte) ([]byte, error)
	// DecryptOAEP returns ErrAuthFailed (wrapped) for any decoding failure,
	// the same error whatever failed.
	DecryptOAEP(ctx context.Context, privateKey KeyHandle, hash crypto.Hash, ciphertext, label []byte) ([]byte, error)
}

// MACs does HMAC-SHA256 with generic secret keys of 32 bytes or more.
type MACs interface {
	// GenerateWrappedSecret generates a generic secret of size bytes (>= 32;
	// a backend may also have a maximum, 512 for SoftHSM) inside the HSM
	// and returns it wrapped under wrappingKey. Other sizes return
	// ErrInvalidInput.
	GenerateWrappedSecret(ctx context.Context, wrappingKey KeyHandle, size int) ([]byte, error)
	// UnwrapHMACKey loads a wrapped generic secret as a sensitive,
	// non-extractable session object that may only sign/verify MACs.
	UnwrapHMACKey(ctx context.Context, wrappingKey KeyHandle, blob []byte) (KeyHandle, error)
	HMACSHA256(ctx context.Context, key KeyHandle, data []byte) ([]byte, error)
}
