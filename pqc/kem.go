package pqc

import (
	"bytes"
	cryptorand "crypto/rand"
	"encoding/asn1"
	"fmt"
	"io"

	"github.com/cloudflare/circl/kem"
	"github.com/cloudflare/circl/kem/mlkem/mlkem1024"
	"github.com/cloudflare/circl/kem/mlkem/mlkem512"
	"github.com/cloudflare/circl/kem/mlkem/mlkem768"
	"github.com/cloudflare/circl/kem/xwing"
)

var (
	kemMLKEM512  = &circlKEM{name: MLKEM512, scheme: mlkem512.Scheme(), oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 4, 1}}
	kemMLKEM768  = &circlKEM{name: MLKEM768, scheme: mlkem768.Scheme(), oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 4, 2}}
	kemMLKEM1024 = &circlKEM{name: MLKEM1024, scheme: mlkem1024.Scheme(), oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 4, 3}}
	// X-Wing's OID is from draft-connolly-cfrg-xwing-kem, used by the LAMPS
	// and HPKE drafts.
	kemXWing = &circlKEM{name: XWing, scheme: xwing.Scheme(), oid: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62253, 25722}}
)

// circlKEM adapts a circl kem.Scheme whose DeriveKeyPair seed is the
// standard private-key form: d‖z for ML-KEM (FIPS 203 ML-KEM.KeyGen_internal)
// and the 32-byte decapsulation seed for X-Wing. Storing the seed instead of
// circl's expanded key keeps stored keys small and always well formed, at the
// price of a key expansion on every Decapsulate.
type circlKEM struct {
	name   string
	scheme kem.Scheme
	oid    asn1.ObjectIdentifier
}

func (k *circlKEM) Name() string               { return k.name }
func (k *circlKEM) PublicKeySize() int         { return k.scheme.PublicKeySize() }
func (k *circlKEM) PrivateKeySize() int        { return k.scheme.SeedSize() }
func (k *circlKEM) CiphertextSize() int        { return k.scheme.CiphertextSize() }
func (k *circlKEM) SharedSecretSize() int      { return k.scheme.SharedKeySize() }
func (k *circlKEM) SeedSize() int              { return k.scheme.SeedSize() }
func (k *circlKEM) EncapsulationSeedSize() int { return k.scheme.EncapsulationSeedSize() }

func (k *circlKEM) objectIdentifier() asn1.ObjectIdentifier { return k.oid }

func (k *circlKEM) GenerateKey(rand io.Reader) (pub, priv []byte, err error) {
	if rand == nil {
		rand = cryptorand.Reader
	}
	seed := make([]byte, k.SeedSize())
	if _, err := io.ReadFull(rand, seed); err != nil {
		return nil, nil, fmt.Errorf("pqc: failed to generate %s key: %w", k.name, err)
	}
	// The seed is the private key, so it is handed over rather than wiped.
	pub, err = k.publicKey(seed)
	if err != nil {
		clear(seed)
		return nil, nil, err
	}
	return pub, seed, nil
}

func (k *circlKEM) DeriveKey(seed []byte) (pub, priv []byte, err error) {
	if len(seed) != k.SeedSize() {
		return nil, nil, fmt.Errorf("pqc: failed to derive %s key: seed is %d bytes, want %d: %w",
			k.name, len(seed), k.SeedSize(), ErrInvalidInput)
	}
	pub, err = k.publicKey(seed)
	if err != nil {
		return nil, nil, err
	}
	// A copy, so that wiping either the seed or the key leaves the other.
	return pub, bytes.Clone(seed), nil
}

func (k *circlKEM) publicKey(seed []byte) ([]byte, error) {
	pk, _ := k.scheme.DeriveKeyPair(seed)
	pub, err := pk.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("pqc: failed to encode %s public key: %w", k.name, err)
	}
	return pub, nil
}

func (k *circlKEM) Encapsulate(rand io.Reader, pub []byte) (ct, ss []byte, err error) {
	if rand == nil {
		rand = cryptorand.Reader
	}
	seed := make([]byte, k.EncapsulationSeedSize())
	defer clear(seed)
	if _, err := io.ReadFull(rand, seed); err != nil {
		return nil, nil, fmt.Errorf("pqc: failed to encapsulate with %s: %w", k.name, err)
	}
	return k.EncapsulateDeterministic(pub, seed)
}

func (k *circlKEM) EncapsulateDeterministic(pub, seed []byte) (ct, ss []byte, err error) {
	if len(seed) != k.EncapsulationSeedSize() {
		return nil, nil, fmt.Errorf("pqc: failed to encapsulate with %s: seed is %d bytes, want %d: %w",
			k.name, len(seed), k.EncapsulationSeedSize(), ErrInvalidInput)
	}
	pk, err := k.parsePublicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	ct, ss, err = k.scheme.EncapsulateDeterministically(pk, seed)
	if err != nil {
		return nil, nil, fmt.Errorf("pqc: failed to encapsulate with %s: %w", k.name, err)
	}
	return ct, ss, nil
}

func (k *circlKEM) Decapsulate(priv, ct []byte) (ss []byte, err error) {
	if len(priv) != k.PrivateKeySize() {
		return nil, fmt.Errorf("pqc: failed to decapsulate with %s: private key is %d bytes, want %d: %w",
			k.name, len(priv), k.PrivateKeySize(), ErrInvalidInput)
	}
	// Check the ciphertext before paying for the key expansion.
	if err := k.checkCiphertext(ct); err != nil {
		return nil, err
	}
	_, sk := k.scheme.DeriveKeyPair(priv)
	return k.decapsulate(sk, ct)
}

// decapsulate is Decapsulate on an already parsed key, which is also how the
// tests run vectors that come with expanded private keys.
func (k *circlKEM) decapsulate(sk kem.PrivateKey, ct []byte) ([]byte, error) {
	if err := k.checkCiphertext(ct); err != nil {
		return nil, err
	}
	ss, err := k.scheme.Decapsulate(sk, ct)
	if err != nil {
		return nil, fmt.Errorf("pqc: failed to decapsulate with %s: %w", k.name, err)
	}
	return ss, nil
}

func (k *circlKEM) checkCiphertext(ct []byte) error {
	if len(ct) != k.CiphertextSize() {
		return fmt.Errorf("pqc: failed to decapsulate with %s: ciphertext is %d bytes, want %d: %w",
			k.name, len(ct), k.CiphertextSize(), ErrInvalidInput)
	}
	return nil
}

// parsePublicKey also runs the FIPS 203 §7.2 encapsulation key check (every
// coefficient reduced mod q) that circl applies when decoding.
func (k *circlKEM) parsePublicKey(pub []byte) (kem.PublicKey, error) {
	if len(pub) != k.PublicKeySize() {
		return nil, fmt.Errorf("pqc: failed to parse %s public key: it is %d bytes, want %d: %w",
			k.name, len(pub), k.PublicKeySize(), ErrInvalidInput)
	}
	pk, err := k.scheme.UnmarshalBinaryPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("pqc: failed to parse %s public key: %w: %w", k.name, ErrInvalidInput, err)
	}
	return pk, nil
}

func (k *circlKEM) checkPublicKey(pub []byte) error {
	_, err := k.parsePublicKey(pub)
	return err
}
