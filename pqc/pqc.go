package pqc

import (
	"errors"
	"fmt"
	"io"
)

// Algorithm names, as keyflow spells them in key metadata and APIs.
const (
	MLKEM512  = "ML_KEM_512"
	MLKEM768  = "ML_KEM_768"
	MLKEM1024 = "ML_KEM_1024"
	XWing     = "X_WING"

	MLDSA44        = "ML_DSA_44"
	MLDSA65        = "ML_DSA_65"
	MLDSA87        = "ML_DSA_87"
	SLHDSASHA2128s = "SLH_DSA_SHA2_128S"
	SLHDSASHA2128f = "SLH_DSA_SHA2_128F"
)

// Sentinel errors, to test for with [errors.Is]. Every error from this
// package wraps one of them, except a failure to read randomness (from the
// caller's rand or crypto/rand), which is wrapped as it came.
var (
	// ErrUnknownAlgorithm means the name is not in the registry.
	ErrUnknownAlgorithm = errors.New("unknown algorithm")
	// ErrInvalidInput means a key, ciphertext, seed, signature or option has
	// the wrong length or does not decode.
	ErrInvalidInput = errors.New("invalid input")
	// ErrVerification means a signature did not verify.
	ErrVerification = errors.New("signature verification failed")
	// ErrUnsupported means the algorithm cannot do what the options ask.
	ErrUnsupported = errors.New("unsupported operation")
)

// maxContextLen is the FIPS 204 and FIPS 205 limit: the context length is
// encoded in one byte.
const maxContextLen = 255

// KEM is a key-encapsulation mechanism.
//
// Keys and ciphertexts are byte slices in their standard encodings. The
// private key is the key-generation seed, see the package documentation.
//
// Methods do pure CPU work and finish in microseconds, so they take no
// context.Context. A KEM is stateless and safe for concurrent use.
type KEM interface {
	// Name is the keyflow algorithm name, for example "ML_KEM_768".
	Name() string

	PublicKeySize() int
	// PrivateKeySize equals SeedSize: the private key is the seed.
	PrivateKeySize() int
	CiphertextSize() int
	SharedSecretSize() int
	// SeedSize is the length of the DeriveKey seed.
	SeedSize() int
	// EncapsulationSeedSize is the length of the EncapsulateDeterministic
	// seed.
	EncapsulationSeedSize() int

	// GenerateKey reads SeedSize bytes from rand (crypto/rand if nil) and
	// derives a key pair from them.
	GenerateKey(rand io.Reader) (pub, priv []byte, err error)
	// DeriveKey derives a key pair deterministically from seed.
	DeriveKey(seed []byte) (pub, priv []byte, err error)
	// Encapsulate reads EncapsulationSeedSize bytes from rand (crypto/rand
	// if nil) and returns a ciphertext and the shared secret it carries.
	Encapsulate(rand io.Reader, pub []byte) (ct, ss []byte, err error)
	// EncapsulateDeterministic is Encapsulate with the randomness given. It
	// exists for known-answer tests; anything else should call Encapsulate.
	EncapsulateDeterministic(pub, seed []byte) (ct, ss []byte, err error)
	// Decapsulate returns the shared secret in ct. A ciphertext of the right
	// length that was tampered with yields an unrelated pseudo-random secret
	// and no error (implicit rejection), so a caller learns nothing about
	// why; a ciphertext or key of the wrong length yields ErrInvalidInput.
	Decapsulate(priv, ct []byte) (ss []byte, err error)
}

// Signer is a signature scheme.
//
// Methods do pure CPU work and take no context.Context; they can still take a
// while (SLH-DSA-SHA2-128s signs in hundreds of milliseconds), so callers on a
// request path should bound them with their own deadline logic. A Signer is
// stateless and safe for concurrent use.
type Signer interface {
	// Name is the keyflow algorithm name, for example "ML_DSA_65".
	Name() string

	PublicKeySize() int
	PrivateKeySize() int
	// SignatureSize is the maximum signature length. For the schemes
	// registered today every signature has exactly this length.
	SignatureSize() int
	// SeedSize is the length of the DeriveKey seed.
	SeedSize() int

	// GenerateKey reads SeedSize bytes from rand (crypto/rand if nil) and
	// derives a key pair from them.
	GenerateKey(rand io.Reader) (pub, priv []byte, err error)
	// DeriveKey derives a key pair deterministically from seed.
	DeriveKey(seed []byte) (pub, priv []byte, err error)
	// Sign signs message (pure mode, with opts.Context as the FIPS 204/205
	// context string).
	Sign(priv, message []byte, opts SignOptions) ([]byte, error)
	// Verify returns nil if sig is a valid signature of message under pub,
	// and an error wrapping ErrVerification if it is not (also wrapping
	// ErrInvalidInput if sig has the wrong length). A malformed public key
	// or context gives ErrInvalidInput alone: that is the caller's mistake,
	// not a bad signature.
	Verify(pub, message, sig []byte, opts SignOptions) error
}

// SignOptions are the per-call signing and verification options.
// The zero value is a deterministic signature with an empty context.
type SignOptions struct {
	// Context is the FIPS 204/205 context string, at most 255 bytes. Sign
	// and Verify must be given the same one.
	Context []byte
	// Randomized selects hedged signing (fresh randomness from crypto/rand
	// mixed into the signature) instead of deterministic signing. Hedged
	// signatures resist fault and side-channel attacks better; deterministic
	// ones are reproducible. Verify ignores it.
	Randomized bool
	// ExternalMu says message is the 64-byte ML-DSA μ computed by the
	// caller rather than the message itself. No registered scheme supports
	// it yet; they return ErrUnsupported.
	ExternalMu bool
}

func checkSignOptions(name, op string, opts SignOptions) error {
	if len(opts.Context) > maxContextLen {
		return fmt.Errorf("pqc: failed to %s with %s: context is %d bytes, max %d: %w",
			op, name, len(opts.Context), maxContextLen, ErrInvalidInput)
	}
	if opts.ExternalMu {
		return fmt.Errorf("pqc: failed to %s with %s: external mu: %w", op, name, ErrUnsupported)
	}
	return nil
}

// The registries are closed: the entries are fixed at compile time, in the
// order KEMs and Signers return them.
var (
	kems    = []KEM{kemMLKEM512, kemMLKEM768, kemMLKEM1024, kemXWing}
	signers = []Signer{sigMLDSA44, sigMLDSA65, sigMLDSA87, sigSLHDSASHA2128s, sigSLHDSASHA2128f}
)

// KEMs returns every registered KEM, in a fixed order.
func KEMs() []KEM { return append([]KEM(nil), kems...) }

// Signers returns every registered signature scheme, in a fixed order.
func Signers() []Signer { return append([]Signer(nil), signers...) }

// KEMByName returns the KEM registered under name. Names are matched exactly.
func KEMByName(name string) (KEM, error) {
	for _, k := range kems {
		if k.Name() == name {
			return k, nil
		}
	}
	if _, err := SignerByName(name); err == nil {
		return nil, fmt.Errorf("pqc: failed to find KEM %q: it is a signature algorithm: %w", name, ErrUnknownAlgorithm)
	}
	return nil, fmt.Errorf("pqc: failed to find KEM %q: %w", name, ErrUnknownAlgorithm)
}

// SignerByName returns the signature scheme registered under name. Names are
// matched exactly.
func SignerByName(name string) (Signer, error) {
	for _, s := range signers {
		if s.Name() == name {
			return s, nil
		}
	}
	for _, k := range kems {
		if k.Name() == name {
			return nil, fmt.Errorf("pqc: failed to find signature algorithm %q: it is a KEM: %w", name, ErrUnknownAlgorithm)
		}
	}
	return nil, fmt.Errorf("pqc: failed to find signature algorithm %q: %w", name, ErrUnknownAlgorithm)
}

// Zero overwrites b with zeros. Callers own the private keys and shared
// secrets this package returns and wipe them with Zero (usually deferred) as
// soon as they are done, so plaintext key material lives no longer in memory
// than it must.
func Zero(b []byte) { clear(b) }
