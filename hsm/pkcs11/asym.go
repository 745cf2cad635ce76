//go:build cgo

package pkcs11

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"math/big"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyflow/keyflow/hsm"
)

var _ hsm.KeyPairs = (*Token)(nil)

// PKCS#11 3.0 values for Ed25519 that miekg/pkcs11 v1.1.2 does not name.
const (
	ckkECEdwards           = 0x40   // CKK_EC_EDWARDS
	ckmECEdwardsKeyPairGen = 0x1055 // CKM_EC_EDWARDS_KEY_PAIR_GEN
	ckmEdDSA               = 0x1057 // CKM_EDDSA
)

// DER encodings of the curve OIDs that go in CKA_EC_PARAMS. PKCS#11 also
// allows the printable string "edwards25519" for Ed25519; SoftHSM 2.6.1
// takes either, and the OID is what RFC 8410 and SPKI use.
var (
	oidP256    = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07} // 1.2.840.10045.3.1.7
	oidP384    = []byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22}                   // 1.3.132.0.34
	oidEd25519 = []byte{0x06, 0x03, 0x2b, 0x65, 0x70}                               // 1.3.101.112
)

// Bounds on what keyflow accepts as an RSA key. Generated keys are 2048,
// 3072 or 4096 bits; imported public keys (for verification and
// encryption) may be any size in between and up to what SoftHSM does.
const (
	minRSABits = 2048
	maxRSABits = 16384
	// minTestRSABits lets known-answer tests import the 1024-bit keys
	// of published vectors; nothing else takes keys that small.
	minTestRSABits = 1024
)

// maxWrappedPrivate bounds a wrapped private key: KWP over the PKCS#8 of
// a 16384-bit RSA key is under 10 KiB.
const maxWrappedPrivate = 16 << 10

// pairKind is a validated hsm.KeyPairSpec with what PKCS#11 needs.
type pairKind struct {
	spec     hsm.KeyPairSpec
	keyType  uint
	genMech  uint
	ecParams []byte         // EC and Ed25519
	curve    elliptic.Curve // EC
	// mechs are the only mechanisms a loaded private key may be used
	// with (CKA_ALLOWED_MECHANISMS): the ones this package uses.
	mechs []uint
}

func (k pairKind) isRSA() bool     { return k.keyType == p11.CKK_RSA }
func (k pairKind) isEd25519() bool { return k.keyType == ckkECEdwards }

var (
	rsaMechs     = []uint{p11.CKM_RSA_PKCS, p11.CKM_RSA_PKCS_PSS, p11.CKM_RSA_PKCS_OAEP, p11.CKM_RSA_X_509}
	ecdsaMechs   = []uint{p11.CKM_ECDSA}
	ed25519Mechs = []uint{ckmEdDSA}
)

func parseSpec(spec hsm.KeyPairSpec) (pairKind, error) {
	k := pairKind{spec: spec}
	switch spec.Algorithm {
	case "RSA":
		if spec.RSABits != 2048 && spec.RSABits != 3072 && spec.RSABits != 4096 || spec.Curve != "" {
			return k, fmt.Errorf("RSA keys are 2048, 3072 or 4096 bits, not %d", spec.RSABits)
		}
		k.keyType, k.genMech, k.mechs = p11.CKK_RSA, p11.CKM_RSA_PKCS_KEY_PAIR_GEN, rsaMechs
	case "EC":
		switch spec.Curve {
		case "P-256":
			k.ecParams, k.curve = oidP256, elliptic.P256()
		case "P-384":
			k.ecParams, k.curve = oidP384, elliptic.P384()
		default:
			return k, fmt.Errorf("EC keys are on P-256 or P-384, not %q", spec.Curve)
		}
		if spec.RSABits != 0 {
			return k, fmt.Errorf("an EC key spec has RSABits %d", spec.RSABits)
		}
		k.keyType, k.genMech, k.mechs = p11.CKK_EC, p11.CKM_EC_KEY_PAIR_GEN, ecdsaMechs
	case "ED25519":
		if spec.RSABits != 0 || spec.Curve != "" {
			return k, fmt.Errorf("an Ed25519 key spec names a size or curve")
		}
		k.keyType, k.genMech, k.ecParams, k.mechs = ckkECEdwards, ckmECEdwardsKeyPairGen, oidEd25519, ed25519Mechs
	default:
		return k, fmt.Errorf("unknown key pair algorithm %q", spec.Algorithm)
	}
	return k, nil
}

// mechanismList encodes CKA_ALLOWED_MECHANISMS: an array of
// CK_MECHANISM_TYPE in the platform's CK_ULONG layout.
func mechanismList(mechs []uint) []byte {
	var b []byte
	for _, m := range mechs {
		b = append(b, p11.NewAttribute(0, m).Value...)
	}
	return b
}

// privateKeyTemplate is every private key keyflow loads: a session
// object, sensitive, non-extractable, that can sign (and, for RSA,
// decrypt) with the mechanisms this package uses and nothing else.
//
// An RSA object may both sign and decrypt: which of the two a key pair is
// for is the domain's rule (one key, one usage), and is enforced there.
// Raw RSA (CKM_RSA_X_509) is allowed because RSA-OAEP with SHA-2 is a raw
// private-key operation in the HSM plus OAEP decoding here; the package
// never returns raw RSA output to a caller.
func privateKeyTemplate(k pairKind) []*p11.Attribute {
	a := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, k.keyType),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_SIGN, true),
		p11.NewAttribute(p11.CKA_SIGN_RECOVER, false),
		p11.NewAttribute(p11.CKA_DECRYPT, k.isRSA()),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
		p11.NewAttribute(p11.CKA_ALLOWED_MECHANISMS, mechanismList(k.mechs)),
	}
	return a
}

// GenerateWrappedKeyPair generates a key pair inside the HSM and returns
// its public key as DER SubjectPublicKeyInfo and its private key as
// AES-KWP over PKCS#8 under wrappingKey.
//
// # Why the temporary private key is extractable
//
// The private key is generated as a session object that is sensitive and
// extractable, and that can do nothing but be wrapped; it is wrapped once
// and destroyed before this returns (as in GenerateWrappedAESKey), and
// every copy loaded later by UnwrapPrivateKey is non-extractable. The
// stricter PKCS#11 pattern — CKA_WRAP_WITH_TRUSTED on the key, CKA_TRUSTED
// on the root key — cannot be had on SoftHSM 2.6.1 without keeping the SO
// PIN at run time, and does not even remove the need for extractability:
//   - only the SO may set CKA_TRUSTED (CKR_ATTRIBUTE_READ_ONLY for the
//     user);
//   - the SO cannot log in while the worker's user session is open
//     (login state is per application: CKR_USER_ANOTHER_ALREADY_LOGGED_IN);
//   - the SO cannot see, modify nor create private objects, so a trusted
//     root key would have to be CKA_PRIVATE=false, readable by attributes
//     without any login;
//   - SoftHSM's C_WrapKey checks CKA_EXTRACTABLE before
//     CKA_WRAP_WITH_TRUSTED, so the key must be extractable either way.
//
// # Ed25519 on SoftHSM 2.6.1
//
// SoftHSM 2.6.1 can generate, sign and verify with Ed25519 keys but can
// neither wrap (CKR_KEY_NOT_WRAPPABLE) nor unwrap (CKR_FUNCTION_FAILED)
// them. When the token refuses to wrap one, the Ed25519 seed is drawn
// from the HSM's generator into process memory, put in PKCS#8 (RFC 8410),
// and wrapped as a generic secret under wrappingKey; the blob has the
// same format a wrapping HSM would produce. The seed is in process memory
// for the length of this call and is zeroed (best effort: cgo copies are
// freed, not wiped). See UnwrapPrivateKey for the other half.
func (t *Token) GenerateWrappedKeyPair(ctx context.Context, wrappingKey hsm.KeyHandle, spec hsm.KeyPairSpec) (*hsm.WrappedKeyPair, error) {
	const op = "generate a wrapped key pair"
	k, err := parseSpec(spec)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: failed to %s: %v: %w", op, err, hsm.ErrInvalidInput)
	}
	pubT := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, k.keyType),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_VERIFY, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_WRAP, false),
	}
	if k.isRSA() {
		pubT = append(pubT,
			p11.NewAttribute(p11.CKA_MODULUS_BITS, k.spec.RSABits),
			p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, []byte{0x01, 0x00, 0x01}))
	} else {
		pubT = append(pubT, p11.NewAttribute(p11.CKA_EC_PARAMS, k.ecParams))
	}
	privT := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, k.keyType),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		// Extractable only so that it can be wrapped, once, below; the
		// object is destroyed before this returns. See the doc comment
		// for why CKA_WRAP_WITH_TRUSTED is not used.
		p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
		p11.NewAttribute(p11.CKA_SIGN, false),
		p11.NewAttribute(p11.CKA_SIGN_RECOVER, false),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
	}
	var res *hsm.WrappedKeyPair
	err = t.do(ctx, op, func(a *attempt) error {
		w, err := t.object(op, wrappingKey)
		if err != nil {
			return err
		}
		s := a.s
		pub, priv, err := t.ctx.GenerateKeyPair(s, []*p11.Mechanism{p11.NewMechanism(k.genMech, nil)}, pubT, privT)
		if err != nil {
			return fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
		}
		defer func() {
			_ = t.ctx.DestroyObject(s, priv)
			_ = t.ctx.DestroyObject(s, pub)
		}()

		blob, err := t.ctx.WrapKey(s, kwp, w, priv)
		if err != nil {
			if k.isEd25519() && isCKR(err, p11.CKR_KEY_NOT_WRAPPABLE) {
				res, err = t.generateEd25519InProcess(s, op, w)
				return err
			}
			return keyErr(op, err)
		}
		spki, err := t.publicKeyDER(s, pub, k)
		if err != nil {
			return fmt.Errorf("pkcs11: failed to %s: %w", op, err)
		}
		res = &hsm.WrappedKeyPair{PublicKeyDER: spki, WrappedPrivate: blob}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// ed25519PKCS8Prefix is the PKCS#8 (RFC 8410) encoding of an Ed25519
// private key up to the 32-byte seed: SEQUENCE { version 0,
// AlgorithmIdentifier { id-Ed25519 }, OCTET STRING { OCTET STRING seed } }.
var ed25519PKCS8Prefix = []byte{
	0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70,
	0x04, 0x22, 0x04, 0x20,
}

// generateEd25519InProcess is the Ed25519 path for tokens that cannot
// wrap Ed25519 keys; see GenerateWrappedKeyPair.
func (t *Token) generateEd25519InProcess(s p11.SessionHandle, op string, wrappingKey p11.ObjectHandle) (*hsm.WrappedKeyPair, error) {
	seed, err := t.ctx.GenerateRandom(s, ed25519.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: failed to %s: failed to draw an Ed25519 seed: %w", op, ckr(err))
	}
	defer clear(seed)
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("pkcs11: failed to %s: the token returned a %d-byte seed", op, len(seed))
	}
	priv := ed25519.NewKeyFromSeed(seed)
	defer clear(priv)
	spki, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return nil, fmt.Errorf("pkcs11: failed to %s: %w", op, err)
	}
	der := append(bytes.Clone(ed25519PKCS8Prefix), seed...)
	defer clear(der)

	tmp, err := t.ctx.CreateObject(s, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_GENERIC_SECRET),
		p11.NewAttribute(p11.CKA_VALUE, der),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
		p11.NewAttribute(p11.CKA_SIGN, false),
		p11.NewAttribute(p11.CKA_VERIFY, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
	})
	if err != nil {
		return nil, fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
	}
	defer func() { _ = t.ctx.DestroyObject(s, tmp) }()
	blob, err := t.ctx.WrapKey(s, kwp, wrappingKey, tmp)
	if err != nil {
		return nil, keyErr(op, err)
	}
	return &hsm.WrappedKeyPair{PublicKeyDER: spki, WrappedPrivate: blob}, nil
}

// publicKeyDER reads a public-key object and encodes it as DER SPKI.
func (t *Token) publicKeyDER(s p11.SessionHandle, pub p11.ObjectHandle, k pairKind) ([]byte, error) {
	var key crypto.PublicKey
	if k.isRSA() {
		attrs, err := t.ctx.GetAttributeValue(s, pub, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_MODULUS, nil),
			p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, nil),
		})
		if err != nil {
			return nil, fmt.Errorf("failed to read the public key: %w", ckr(err))
		}
		n := new(big.Int).SetBytes(attrs[0].Value)
		e := new(big.Int).SetBytes(attrs[1].Value)
		if n.BitLen() != k.spec.RSABits || !e.IsInt64() || e.Int64() != 65537 {
			return nil, fmt.Errorf("the token generated a %d-bit RSA key with exponent %v, not %d bits with 65537", n.BitLen(), e, k.spec.RSABits)
		}
		key = &rsa.PublicKey{N: n, E: int(e.Int64())}
	} else {
		attrs, err := t.ctx.GetAttributeValue(s, pub, []*p11.Attribute{p11.NewAttribute(p11.CKA_EC_POINT, nil)})
		if err != nil {
			return nil, fmt.Errorf("failed to read the public key: %w", ckr(err))
		}
		point := ecPointValue(attrs[0].Value)
		if k.isEd25519() {
			if len(point) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("the token returned a %d-byte Ed25519 public key", len(point))
			}
			key = ed25519.PublicKey(bytes.Clone(point))
		} else {
			pk, err := ecdsa.ParseUncompressedPublicKey(k.curve, point)
			if err != nil {
				return nil, fmt.Errorf("the token returned a bad %s point: %w", k.spec.Curve, err)
			}
			key = pk
		}
	}
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, fmt.Errorf("failed to encode the public key: %w", err)
	}
	return der, nil
}

// ecPointValue returns the point in a CKA_EC_POINT value. PKCS#11 says it
// is the DER OCTET STRING of the point, and SoftHSM does so for both
// ECDSA and Ed25519 keys; some modules return the bare point, which is
// returned as is.
func ecPointValue(v []byte) []byte {
	var point []byte
	if rest, err := asn1.Unmarshal(v, &point); err == nil && len(rest) == 0 {
		return point
	}
	return v
}

// ecPointAttr encodes a point for CKA_EC_POINT as a DER OCTET STRING.
// SoftHSM 2.6.1 also accepts a bare 32-byte Ed25519 point at
// C_CreateObject and then fails every verification with it, so the
// encoding is not optional.
func ecPointAttr(point []byte) []byte {
	der, _ := asn1.Marshal(point) // a []byte always marshals
	return der
}

// UnwrapPrivateKey unwraps blob (AES-KWP over PKCS#8) under wrappingKey
// into a session private key that is sensitive and non-extractable, and
// can sign (and decrypt, for RSA) with this package's mechanisms only.
//
// A blob that fails the KWP integrity check returns hsm.ErrAuthFailed. One
// that opens but holds something else than spec describes (another
// algorithm, RSA size or curve) returns hsm.ErrInvalidInput.
//
// Ed25519 keys: SoftHSM 2.6.1 cannot unwrap them (see
// GenerateWrappedKeyPair). When the token refuses, the blob is unwrapped
// as a short-lived, non-sensitive generic secret, its PKCS#8 is read into
// process memory, the seed is loaded with C_CreateObject into a sensitive,
// non-extractable Ed25519 key, and the copies in Go memory are zeroed.
// The seed thus passes through process memory each time such a key is
// loaded; keyflow caches loaded handles, so that is once per worker and
// key version.
func (t *Token) UnwrapPrivateKey(ctx context.Context, wrappingKey hsm.KeyHandle, blob []byte, spec hsm.KeyPairSpec) (hsm.KeyHandle, error) {
	const op = "unwrap a private key"
	k, err := parseSpec(spec)
	if err != nil {
		return 0, fmt.Errorf("pkcs11: failed to %s: %v: %w", op, err, hsm.ErrInvalidInput)
	}
	return t.unwrapPrivate(ctx, op, wrappingKey, blob, k, privateKeyTemplate(k))
}

// unwrapPrivate unwraps a KWP-wrapped PKCS#8 private key of kind k into a
// session object made from template, and checks that it is what k says:
// the shared body of UnwrapPrivateKey and LoadImportKey.
func (t *Token) unwrapPrivate(ctx context.Context, op string, wrappingKey hsm.KeyHandle, blob []byte, k pairKind, template []*p11.Attribute) (hsm.KeyHandle, error) {
	// KWP output is a whole number of 8-byte blocks, at least three for
	// anything as large as a private key. Lengths are public.
	if len(blob) < 24 || len(blob)%8 != 0 || len(blob) > maxWrappedPrivate {
		return 0, fmt.Errorf("pkcs11: failed to %s: a wrapped private key cannot be %d bytes: %w", op, len(blob), hsm.ErrInvalidInput)
	}
	var h hsm.KeyHandle
	err := t.doOwner(ctx, op, func(a *attempt) error {
		w, err := t.object(op, wrappingKey)
		if err != nil {
			return err
		}
		o, err := t.ctx.UnwrapKey(a.s, kwp, w, blob, template)
		if err != nil {
			switch {
			case isAuthFailure(err):
				return fmt.Errorf("pkcs11: failed to %s: %w", op, hsm.ErrAuthFailed)
			case k.isEd25519() && (isCKR(err, p11.CKR_FUNCTION_FAILED) || isCKR(err, p11.CKR_TEMPLATE_INCONSISTENT) || isCKR(err, p11.CKR_KEY_TYPE_INCONSISTENT)):
				h, err = t.unwrapEd25519InProcess(a, op, w, blob)
				return err
			case isCKR(err, p11.CKR_FUNCTION_FAILED):
				// SoftHSM: the blob opened, but its PKCS#8 is not a key
				// of this type.
				return fmt.Errorf("pkcs11: failed to %s: the blob does not hold a %s key: %w", op, k.spec.Algorithm, hsm.ErrInvalidInput)
			default:
				return keyErr(op, err)
			}
		}
		if err := t.checkPrivateKey(a.s, o, k); err != nil {
			_ = t.ctx.DestroyObject(a.s, o)
			if deviceSide(err) {
				return fmt.Errorf("pkcs11: failed to %s: %w", op, err)
			}
			return fmt.Errorf("pkcs11: failed to %s: %v: %w", op, err, hsm.ErrInvalidInput)
		}
		h, err = t.tagged(op, a, o)
		return err
	})
	if err != nil {
		return 0, err
	}
	return h, nil
}

// checkPrivateKey checks that an unwrapped key is the size or on the
// curve that its spec says: SoftHSM stores whatever RSA or EC key the
// PKCS#8 holds.
func (t *Token) checkPrivateKey(s p11.SessionHandle, h p11.ObjectHandle, k pairKind) error {
	switch {
	case k.isRSA():
		attrs, err := t.ctx.GetAttributeValue(s, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_MODULUS, nil)})
		if err != nil {
			return fmt.Errorf("failed to read the key's modulus: %w", ckr(err))
		}
		if n := new(big.Int).SetBytes(attrs[0].Value).BitLen(); n != k.spec.RSABits {
			return fmt.Errorf("the blob holds a %d-bit RSA key, not %d", n, k.spec.RSABits)
		}
	case !k.isEd25519():
		attrs, err := t.ctx.GetAttributeValue(s, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_EC_PARAMS, nil)})
		if err != nil {
			return fmt.Errorf("failed to read the key's curve: %w", ckr(err))
		}
		if !bytes.Equal(attrs[0].Value, k.ecParams) {
			return fmt.Errorf("the blob holds an EC key on another curve than %s", k.spec.Curve)
		}
	}
	return nil
}

// unwrapEd25519InProcess is the Ed25519 path for tokens that cannot
// unwrap Ed25519 keys; see UnwrapPrivateKey.
func (t *Token) unwrapEd25519InProcess(a *attempt, op string, wrappingKey p11.ObjectHandle, blob []byte) (hsm.KeyHandle, error) {
	s := a.s
	tmp, err := t.ctx.UnwrapKey(s, kwp, wrappingKey, blob, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_GENERIC_SECRET),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		// Readable, so that the seed can be loaded as an Ed25519 key;
		// the object can do nothing else and is destroyed at once.
		p11.NewAttribute(p11.CKA_SENSITIVE, false),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
		p11.NewAttribute(p11.CKA_SIGN, false),
		p11.NewAttribute(p11.CKA_VERIFY, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
	})
	if err != nil {
		if isAuthFailure(err) {
			return 0, fmt.Errorf("pkcs11: failed to %s: %w", op, hsm.ErrAuthFailed)
		}
		return 0, keyErr(op, err)
	}
	attrs, err := t.ctx.GetAttributeValue(s, tmp, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)})
	_ = t.ctx.DestroyObject(s, tmp)
	if err != nil {
		return 0, fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
	}
	der := attrs[0].Value
	defer clear(der)
	if len(der) != len(ed25519PKCS8Prefix)+ed25519.SeedSize || !bytes.Equal(der[:len(ed25519PKCS8Prefix)], ed25519PKCS8Prefix) {
		return 0, fmt.Errorf("pkcs11: failed to %s: the blob does not hold an Ed25519 key: %w", op, hsm.ErrInvalidInput)
	}
	o, err := t.ctx.CreateObject(s, ed25519PrivateTemplate(der[len(ed25519PKCS8Prefix):]))
	if err != nil {
		return 0, fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
	}
	return t.tagged(op, a, o)
}

// ed25519PrivateTemplate is the template of an Ed25519 private key loaded
// from its seed.
func ed25519PrivateTemplate(seed []byte) []*p11.Attribute {
	k, _ := parseSpec(hsm.KeyPairSpec{Algorithm: "ED25519"})
	return append(privateKeyTemplate(k),
		p11.NewAttribute(p11.CKA_EC_PARAMS, oidEd25519),
		p11.NewAttribute(p11.CKA_VALUE, seed))
}

// ImportPublicKey creates a session public-key object from DER
// SubjectPublicKeyInfo: RSA (2048 to 16384 bits, for verification and
// encryption), ECDSA on P-256 or P-384, or Ed25519 (for verification).
// Anything else returns hsm.ErrInvalidInput.
func (t *Token) ImportPublicKey(ctx context.Context, spkiDER []byte) (hsm.KeyHandle, error) {
	const op = "import a public key"
	key, err := x509.ParsePKIXPublicKey(spkiDER)
	if err != nil {
		return 0, fmt.Errorf("pkcs11: failed to %s: %v: %w", op, err, hsm.ErrInvalidInput)
	}
	tmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_PRIVATE, false),
		p11.NewAttribute(p11.CKA_VERIFY, true),
		p11.NewAttribute(p11.CKA_VERIFY_RECOVER, false),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
	}
	switch key := key.(type) {
	case *rsa.PublicKey:
		if n := key.N.BitLen(); n < minRSABits || n > maxRSABits {
			return 0, fmt.Errorf("pkcs11: failed to %s: RSA keys are %d to %d bits, not %d: %w", op, minRSABits, maxRSABits, n, hsm.ErrInvalidInput)
		}
		tmpl = append(tmpl,
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA),
			p11.NewAttribute(p11.CKA_ENCRYPT, true),
			p11.NewAttribute(p11.CKA_MODULUS, key.N.Bytes()),
			p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, big.NewInt(int64(key.E)).Bytes()),
			p11.NewAttribute(p11.CKA_ALLOWED_MECHANISMS, mechanismList(rsaMechs)))
	case *ecdsa.PublicKey:
		var params []byte
		switch key.Curve {
		case elliptic.P256():
			params = oidP256
		case elliptic.P384():
			params = oidP384
		default:
			return 0, fmt.Errorf("pkcs11: failed to %s: EC keys are on P-256 or P-384, not %s: %w", op, key.Curve.Params().Name, hsm.ErrInvalidInput)
		}
		point, err := key.Bytes()
		if err != nil {
			return 0, fmt.Errorf("pkcs11: failed to %s: %v: %w", op, err, hsm.ErrInvalidInput)
		}
		tmpl = append(tmpl,
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
			p11.NewAttribute(p11.CKA_ENCRYPT, false),
			p11.NewAttribute(p11.CKA_EC_PARAMS, params),
			p11.NewAttribute(p11.CKA_EC_POINT, ecPointAttr(point)),
			p11.NewAttribute(p11.CKA_ALLOWED_MECHANISMS, mechanismList(ecdsaMechs)))
	case ed25519.PublicKey:
		tmpl = append(tmpl,
			p11.NewAttribute(p11.CKA_KEY_TYPE, ckkECEdwards),
			p11.NewAttribute(p11.CKA_ENCRYPT, false),
			p11.NewAttribute(p11.CKA_EC_PARAMS, oidEd25519),
			p11.NewAttribute(p11.CKA_EC_POINT, ecPointAttr(key)),
			p11.NewAttribute(p11.CKA_ALLOWED_MECHANISMS, mechanismList(ed25519Mechs)))
	default:
		return 0, fmt.Errorf("pkcs11: failed to %s: unsupported key type %T: %w", op, key, hsm.ErrInvalidInput)
	}
	return t.createObject(ctx, op, tmpl)
}

// ImportPrivateKeyForTesting DANGEROUSLY loads a private key from process
// memory into the HSM, as a session object with the attributes of an
// unwrapped one (sensitive, non-extractable, sign, and decrypt for RSA).
// It takes *rsa.PrivateKey (two primes, 1024 to 16384 bits),
// *ecdsa.PrivateKey (P-256, P-384) and ed25519.PrivateKey. Key material
// that has been in process memory was never protected by the HSM: this
// exists for known-answer tests.
func (t *Token) ImportPrivateKeyForTesting(ctx context.Context, key crypto.PrivateKey) (hsm.KeyHandle, error) {
	const op = "import a private key"
	if key, ok := key.(ed25519.PrivateKey); ok {
		if len(key) != ed25519.PrivateKeySize {
			return 0, fmt.Errorf("pkcs11: failed to %s: an Ed25519 private key is %d bytes: %w", op, ed25519.PrivateKeySize, hsm.ErrInvalidInput)
		}
		seed := key.Seed()
		defer clear(seed)
		return t.createObject(ctx, op, ed25519PrivateTemplate(seed))
	}
	tmpl, err := privateObjectTemplate(op, key)
	if err != nil {
		return 0, err
	}
	defer clearTemplate(tmpl)
	return t.createObject(ctx, op, tmpl)
}

// clearTemplate zeroes the private attributes of a template once the
// object is made (only those: others may share package-level values).
func clearTemplate(tmpl []*p11.Attribute) {
	for _, a := range tmpl {
		switch a.Type {
		case p11.CKA_VALUE, p11.CKA_PRIVATE_EXPONENT, p11.CKA_PRIME_1, p11.CKA_PRIME_2, p11.CKA_EXPONENT_1, p11.CKA_EXPONENT_2, p11.CKA_COEFFICIENT:
			clear(a.Value)
		}
	}
}

// privateObjectTemplate is the object template of an RSA or EC private
// key held in process memory, with the attributes of an unwrapped one.
// The caller zeroes it after use (clearTemplate).
func privateObjectTemplate(op string, key crypto.PrivateKey) ([]*p11.Attribute, error) {
	var tmpl []*p11.Attribute
	switch key := key.(type) {
	case *rsa.PrivateKey:
		if n := key.N.BitLen(); n < minTestRSABits || n > maxRSABits || len(key.Primes) != 2 {
			return nil, fmt.Errorf("pkcs11: failed to %s: want a two-prime RSA key of %d to %d bits: %w", op, minTestRSABits, maxRSABits, hsm.ErrInvalidInput)
		}
		p, q := key.Primes[0], key.Primes[1]
		one := big.NewInt(1)
		dp := new(big.Int).Mod(key.D, new(big.Int).Sub(p, one))
		dq := new(big.Int).Mod(key.D, new(big.Int).Sub(q, one))
		qinv := new(big.Int).ModInverse(q, p)
		if qinv == nil {
			return nil, fmt.Errorf("pkcs11: failed to %s: the RSA primes are not coprime: %w", op, hsm.ErrInvalidInput)
		}
		k, _ := parseSpec(hsm.KeyPairSpec{Algorithm: "RSA", RSABits: 2048})
		tmpl = append(privateKeyTemplate(k),
			p11.NewAttribute(p11.CKA_MODULUS, key.N.Bytes()),
			p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, big.NewInt(int64(key.E)).Bytes()),
			p11.NewAttribute(p11.CKA_PRIVATE_EXPONENT, key.D.Bytes()),
			p11.NewAttribute(p11.CKA_PRIME_1, p.Bytes()),
			p11.NewAttribute(p11.CKA_PRIME_2, q.Bytes()),
			p11.NewAttribute(p11.CKA_EXPONENT_1, dp.Bytes()),
			p11.NewAttribute(p11.CKA_EXPONENT_2, dq.Bytes()),
			p11.NewAttribute(p11.CKA_COEFFICIENT, qinv.Bytes()))
	case *ecdsa.PrivateKey:
		var curve string
		switch key.Curve {
		case elliptic.P256():
			curve = "P-256"
		case elliptic.P384():
			curve = "P-384"
		default:
			return nil, fmt.Errorf("pkcs11: failed to %s: EC keys are on P-256 or P-384: %w", op, hsm.ErrInvalidInput)
		}
		d, err := key.Bytes()
		if err != nil {
			return nil, fmt.Errorf("pkcs11: failed to %s: %v: %w", op, err, hsm.ErrInvalidInput)
		}
		k, _ := parseSpec(hsm.KeyPairSpec{Algorithm: "EC", Curve: curve})
		tmpl = append(privateKeyTemplate(k),
			p11.NewAttribute(p11.CKA_EC_PARAMS, k.ecParams),
			p11.NewAttribute(p11.CKA_VALUE, d))
	default:
		return nil, fmt.Errorf("pkcs11: failed to %s: unsupported key type %T: %w", op, key, hsm.ErrInvalidInput)
	}
	return tmpl, nil
}
