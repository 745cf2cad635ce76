package pqc

import (
	"bytes"
	cryptorand "crypto/rand"
	"encoding/asn1"
	"fmt"
	"io"

	"github.com/cloudflare/circl/sign"
	"github.com/cloudflare/circl/sign/mldsa/mldsa44"
	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"github.com/cloudflare/circl/sign/mldsa/mldsa87"
	"github.com/cloudflare/circl/sign/slhdsa"
)

var (
	sigMLDSA44 = newMLDSA(MLDSA44, asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 17},
		mldsa44.Scheme(), mldsa44.SignTo, mldsa44.Verify)
	sigMLDSA65 = newMLDSA(MLDSA65, asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 18},
		mldsa65.Scheme(), mldsa65.SignTo, mldsa65.Verify)
	sigMLDSA87 = newMLDSA(MLDSA87, asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 19},
		mldsa87.Scheme(), mldsa87.SignTo, mldsa87.Verify)

	sigSLHDSASHA2128s = &slhdsaSigner{name: SLHDSASHA2128s, id: slhdsa.SHA2_128s,
		oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 20}}
	sigSLHDSASHA2128f = &slhdsaSigner{name: SLHDSASHA2128f, id: slhdsa.SHA2_128f,
		oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 21}}
)

// mldsaSigner is ML-DSA (FIPS 204) in pure mode. The private key is the
// 32-byte seed ξ, the form FIPS 204 KeyGen_internal takes and the one the
// LAMPS ML-DSA private key format and Wycheproof recommend: a seed is always a
// valid key, while an expanded key can carry out-of-range values. The cost is
// a key expansion on every Sign.
//
// The generic sign.Scheme cannot choose hedged signing, so each parameter
// set's package-level SignTo and Verify are kept alongside it.
type mldsaSigner struct {
	name   string
	oid    asn1.ObjectIdentifier
	scheme sign.Scheme
	signTo func(sk sign.PrivateKey, msg, ctx []byte, randomized bool, sig []byte) error
	verify func(pk sign.PublicKey, msg, ctx, sig []byte) bool
}

func newMLDSA[SK, PK any](
	name string, oid asn1.ObjectIdentifier, scheme sign.Scheme,
	signTo func(sk *SK, msg, ctx []byte, randomized bool, sig []byte) error,
	verify func(pk *PK, msg, ctx, sig []byte) bool,
) *mldsaSigner {
	return &mldsaSigner{
		name:   name,
		oid:    oid,
		scheme: scheme,
		signTo: func(sk sign.PrivateKey, msg, ctx []byte, randomized bool, sig []byte) error {
			return signTo(any(sk).(*SK), msg, ctx, randomized, sig)
		},
		verify: func(pk sign.PublicKey, msg, ctx, sig []byte) bool {
			return verify(any(pk).(*PK), msg, ctx, sig)
		},
	}
}

func (s *mldsaSigner) Name() string        { return s.name }
func (s *mldsaSigner) PublicKeySize() int  { return s.scheme.PublicKeySize() }
func (s *mldsaSigner) PrivateKeySize() int { return s.scheme.SeedSize() }
func (s *mldsaSigner) SignatureSize() int  { return s.scheme.SignatureSize() }
func (s *mldsaSigner) SeedSize() int       { return s.scheme.SeedSize() }

func (s *mldsaSigner) objectIdentifier() asn1.ObjectIdentifier { return s.oid }

func (s *mldsaSigner) GenerateKey(rand io.Reader) (pub, priv []byte, err error) {
	seed, err := readSeed(rand, s.name, s.SeedSize())
	if err != nil {
		return nil, nil, err
	}
	pk, _ := s.scheme.DeriveKey(seed)
	pub, err = pk.MarshalBinary()
	if err != nil {
		clear(seed)
		return nil, nil, fmt.Errorf("pqc: failed to encode %s public key: %w", s.name, err)
	}
	// The seed is the private key, so it is handed over rather than wiped.
	return pub, seed, nil
}

func (s *mldsaSigner) DeriveKey(seed []byte) (pub, priv []byte, err error) {
	if err := checkSeed(seed, s.name, s.SeedSize()); err != nil {
		return nil, nil, err
	}
	pk, _ := s.scheme.DeriveKey(seed)
	pub, err = pk.MarshalBinary()
	if err != nil {
		return nil, nil, fmt.Errorf("pqc: failed to encode %s public key: %w", s.name, err)
	}
	return pub, bytes.Clone(seed), nil
}

func (s *mldsaSigner) Sign(priv, message []byte, opts SignOptions) ([]byte, error) {
	if len(priv) != s.PrivateKeySize() {
		return nil, fmt.Errorf("pqc: failed to sign with %s: private key is %d bytes, want %d: %w",
			s.name, len(priv), s.PrivateKeySize(), ErrInvalidInput)
	}
	_, sk := s.scheme.DeriveKey(priv)
	return s.signKey(sk, message, opts)
}

// signKey is Sign on an already parsed key, which is also how the tests run
// vectors that come with expanded private keys.
func (s *mldsaSigner) signKey(sk sign.PrivateKey, message []byte, opts SignOptions) ([]byte, error) {
	if err := checkSignOptions(s.name, "sign", opts); err != nil {
		return nil, err
	}
	sig := make([]byte, s.SignatureSize())
	if err := s.signTo(sk, message, opts.Context, opts.Randomized, sig); err != nil {
		return nil, fmt.Errorf("pqc: failed to sign with %s: %w", s.name, err)
	}
	return sig, nil
}

func (s *mldsaSigner) Verify(pub, message, sig []byte, opts SignOptions) error {
	if err := checkSignOptions(s.name, "verify", opts); err != nil {
		return err
	}
	pk, err := s.parsePublicKey(pub)
	if err != nil {
		return err
	}
	if err := checkSignatureSize(sig, s.name, s.SignatureSize()); err != nil {
		return err
	}
	if !s.verify(pk, message, opts.Context, sig) {
		return fmt.Errorf("pqc: failed to verify %s signature: %w", s.name, ErrVerification)
	}
	return nil
}

func (s *mldsaSigner) parsePublicKey(pub []byte) (sign.PublicKey, error) {
	if len(pub) != s.PublicKeySize() {
		return nil, fmt.Errorf("pqc: failed to parse %s public key: it is %d bytes, want %d: %w",
			s.name, len(pub), s.PublicKeySize(), ErrInvalidInput)
	}
	pk, err := s.scheme.UnmarshalBinaryPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("pqc: failed to parse %s public key: %w: %w", s.name, ErrInvalidInput, err)
	}
	return pk, nil
}

func (s *mldsaSigner) checkPublicKey(pub []byte) error {
	_, err := s.parsePublicKey(pub)
	return err
}

// slhdsaSigner is SLH-DSA (FIPS 205) in pure mode. The private key is the
// standard SK.seed‖SK.prf‖PK.seed‖PK.root encoding rather than a seed:
// recomputing PK.root takes tens of milliseconds for the "s" sets, far too
// much to repeat on every Sign.
type slhdsaSigner struct {
	name string
	oid  asn1.ObjectIdentifier
	id   slhdsa.ID
}

func (s *slhdsaSigner) Name() string        { return s.name }
func (s *slhdsaSigner) PublicKeySize() int  { return s.id.Scheme().PublicKeySize() }
func (s *slhdsaSigner) PrivateKeySize() int { return s.id.Scheme().PrivateKeySize() }
func (s *slhdsaSigner) SignatureSize() int  { return s.id.Scheme().SignatureSize() }

// SeedSize is 3n: SK.seed‖SK.prf‖PK.seed, the inputs of FIPS 205
// slh_keygen_internal. (circl's own DeriveKey hashes a seed first, which no
// other implementation does, so it is not used.)
func (s *slhdsaSigner) SeedSize() int { return s.PublicKeySize() / 2 * 3 }

func (s *slhdsaSigner) objectIdentifier() asn1.ObjectIdentifier { return s.oid }

func (s *slhdsaSigner) GenerateKey(rand io.Reader) (pub, priv []byte, err error) {
	seed, err := readSeed(rand, s.name, s.SeedSize())
	if err != nil {
		return nil, nil, err
	}
	defer clear(seed)
	return s.DeriveKey(seed)
}

func (s *slhdsaSigner) DeriveKey(seed []byte) (pub, priv []byte, err error) {
	if err := checkSeed(seed, s.name, s.SeedSize()); err != nil {
		return nil, nil, err
	}
	// circl's GenerateKey reads SK.seed, SK.prf and PK.seed from its reader
	// in that order (FIPS 205 Algorithm 21), so a reader over the seed is
	// exactly slh_keygen_internal. The ACVP keyGen vectors hold this in place.
	pk, sk, err := slhdsa.GenerateKey(bytes.NewReader(seed), s.id)
	if err != nil {
		return nil, nil, fmt.Errorf("pqc: failed to derive %s key: %w", s.name, err)
	}
	if pub, err = pk.MarshalBinary(); err != nil {
		return nil, nil, fmt.Errorf("pqc: failed to encode %s public key: %w", s.name, err)
	}
	if priv, err = sk.MarshalBinary(); err != nil {
		return nil, nil, fmt.Errorf("pqc: failed to encode %s private key: %w", s.name, err)
	}
	return pub, priv, nil
}

func (s *slhdsaSigner) Sign(priv, message []byte, opts SignOptions) ([]byte, error) {
	if err := checkSignOptions(s.name, "sign", opts); err != nil {
		return nil, err
	}
	if len(priv) != s.PrivateKeySize() {
		return nil, fmt.Errorf("pqc: failed to sign with %s: private key is %d bytes, want %d: %w",
			s.name, len(priv), s.PrivateKeySize(), ErrInvalidInput)
	}
	sk := slhdsa.PrivateKey{ID: s.id}
	if err := sk.UnmarshalBinary(priv); err != nil {
		return nil, fmt.Errorf("pqc: failed to parse %s private key: %w: %w", s.name, ErrInvalidInput, err)
	}
	var (
		sig []byte
		err error
	)
	msg := slhdsa.NewMessage(message)
	if opts.Randomized {
		sig, err = slhdsa.SignRandomized(&sk, cryptorand.Reader, msg, opts.Context)
	} else {
		sig, err = slhdsa.SignDeterministic(&sk, msg, opts.Context)
	}
	if err != nil {
		return nil, fmt.Errorf("pqc: failed to sign with %s: %w", s.name, err)
	}
	return sig, nil
}

func (s *slhdsaSigner) Verify(pub, message, sig []byte, opts SignOptions) error {
	if err := checkSignOptions(s.name, "verify", opts); err != nil {
		return err
	}
	pk, err := s.parsePublicKey(pub)
	if err != nil {
		return err
	}
	if err := checkSignatureSize(sig, s.name, s.SignatureSize()); err != nil {
		return err
	}
	if !slhdsa.Verify(&pk, slhdsa.NewMessage(message), sig, opts.Context) {
		return fmt.Errorf("pqc: failed to verify %s signature: %w", s.name, ErrVerification)
	}
	return nil
}

func (s *slhdsaSigner) parsePublicKey(pub []byte) (slhdsa.PublicKey, error) {
	pk := slhdsa.PublicKey{ID: s.id}
	if len(pub) != s.PublicKeySize() {
		return pk, fmt.Errorf("pqc: failed to parse %s public key: it is %d bytes, want %d: %w",
			s.name, len(pub), s.PublicKeySize(), ErrInvalidInput)
	}
	if err := pk.UnmarshalBinary(pub); err != nil {
		return pk, fmt.Errorf("pqc: failed to parse %s public key: %w: %w", s.name, ErrInvalidInput, err)
	}
	return pk, nil
}

func (s *slhdsaSigner) checkPublicKey(pub []byte) error {
	_, err := s.parsePublicKey(pub)
	return err
}

func readSeed(rand io.Reader, name string, n int) ([]byte, error) {
	if rand == nil {
		rand = cryptorand.Reader
	}
	seed := make([]byte, n)
	if _, err := io.ReadFull(rand, seed); err != nil {
		return nil, fmt.Errorf("pqc: failed to generate %s key: %w", name, err)
	}
	return seed, nil
}

func checkSeed(seed []byte, name string, n int) error {
	if len(seed) != n {
		return fmt.Errorf("pqc: failed to derive %s key: seed is %d bytes, want %d: %w",
			name, len(seed), n, ErrInvalidInput)
	}
	return nil
}

// checkSignatureSize reports a signature of the wrong length as both a failed
// verification (it is one) and invalid input (that is why).
func checkSignatureSize(sig []byte, name string, n int) error {
	if len(sig) != n {
		return fmt.Errorf("pqc: failed to verify %s signature: it is %d bytes, want %d: %w: %w",
			name, len(sig), n, ErrVerification, ErrInvalidInput)
	}
	return nil
}
