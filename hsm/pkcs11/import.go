//go:build cgo

package pkcs11

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyflow/keyflow/hsm"
)

var _ hsm.KeyImporter = (*Token)(nil)

// Importing key material (BYOK) on SoftHSM 2.6.1: what runs where.
//
//   - RSA-OAEP with SHA-1: C_UnwrapKey with CKM_RSA_PKCS_OAEP decrypts the
//     material straight into a sensitive HSM object, which is checked and
//     wrapped under the root key (C_WrapKey, AES-KWP). The material never
//     reaches process memory.
//   - RSA-OAEP with SHA-256: SoftHSM has no OAEP with SHA-2, so the raw
//     RSA operation runs in the HSM (the private key stays inside) and
//     OAEP is decoded here in constant time (see DecryptOAEP). The
//     material is then in process memory for the length of the call, is
//     loaded into the HSM with C_CreateObject and wrapped, and is zeroed.
//   - RSA + AES key wrap (CKM_RSA_AES_KEY_WRAP's format; SoftHSM does not
//     have the mechanism itself): two HSM steps. The ephemeral AES key is
//     OAEP-decrypted into an HSM object (SHA-1: C_UnwrapKey; SHA-256:
//     decoded here, so the ephemeral key — not the material — passes
//     through process memory and is zeroed), then C_UnwrapKey with
//     CKM_AES_KEY_WRAP_PAD opens the material under it into an HSM
//     object. The material never reaches process memory.
//   - RSA private keys (ImportPrivateKeyRSAAESKeyWrap): as RSA + AES key
//     wrap, the PKCS#8 unwrapped by C_UnwrapKey into a private key object;
//     the private key never reaches process memory.
//   - ImportPlaintext: for material the caller opened in process (a
//     post-quantum KEM the HSM lacks), loaded with C_CreateObject.

// errImport is the one error every failure to decrypt or unwrap the
// caller's ciphertext returns: which step failed is not said.
var errImport = fmt.Errorf("pkcs11: failed to import key material: the wrapped material could not be decrypted: %w", hsm.ErrAuthFailed)

// importKeyMechs are the only mechanisms a loaded import key may be used
// with: OAEP unwrap in the HSM, and raw RSA for OAEP with SHA-2.
var importKeyMechs = []uint{p11.CKM_RSA_PKCS_OAEP, p11.CKM_RSA_X_509}

// importKeyTemplate is an import (wrapping) private key: it may unwrap
// and decrypt, and never sign.
func importKeyTemplate(k pairKind) []*p11.Attribute {
	return []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, k.keyType),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_SIGN, false),
		p11.NewAttribute(p11.CKA_SIGN_RECOVER, false),
		p11.NewAttribute(p11.CKA_DECRYPT, true),
		p11.NewAttribute(p11.CKA_UNWRAP, true),
		p11.NewAttribute(p11.CKA_DERIVE, false),
		p11.NewAttribute(p11.CKA_ALLOWED_MECHANISMS, mechanismList(importKeyMechs)),
	}
}

// LoadImportKey implements hsm.KeyImporter. Only RSA key pairs import.
func (t *Token) LoadImportKey(ctx context.Context, wrappingKey hsm.KeyHandle, blob []byte, spec hsm.KeyPairSpec) (hsm.KeyHandle, error) {
	const op = "load an import key"
	k, err := parseSpec(spec)
	if err != nil || !k.isRSA() {
		return 0, fmt.Errorf("pkcs11: failed to %s: import keys are RSA key pairs: %w", op, hsm.ErrInvalidInput)
	}
	return t.unwrapPrivate(ctx, op, wrappingKey, blob, k, importKeyTemplate(k))
}

func checkTarget(target hsm.ImportTarget) error {
	switch target.Kind {
	case hsm.ImportAES:
		if !validAESKeySize(target.Size) {
			return fmt.Errorf("AES keys are 16, 24 or 32 bytes, not %d", target.Size)
		}
	case hsm.ImportHMAC:
		// Whole 8-byte blocks: SoftHSM's KWP unwrap of a generic secret
		// returns the padded value, and the length check below counts
		// blocks.
		if target.Size < minHMACKey || target.Size > maxHMACKey || target.Size%8 != 0 {
			return fmt.Errorf("imported HMAC keys are %d to %d bytes in whole 8-byte blocks, not %d", minHMACKey, maxHMACKey, target.Size)
		}
	default:
		return fmt.Errorf("unknown kind of key material %q", target.Kind)
	}
	return nil
}

// targetTemplate is the temporary object imported material lands in: it
// can be checked (one throwaway encryption or MAC) and wrapped once, and
// is destroyed before the import returns.
func targetTemplate(target hsm.ImportTarget, value []byte) []*p11.Attribute {
	keyType := uint(p11.CKK_AES)
	if target.Kind == hsm.ImportHMAC {
		keyType = p11.CKK_GENERIC_SECRET
	}
	a := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, keyType),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
		p11.NewAttribute(p11.CKA_ENCRYPT, target.Kind == hsm.ImportAES),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_SIGN, target.Kind == hsm.ImportHMAC),
		p11.NewAttribute(p11.CKA_VERIFY, false),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
	}
	if value != nil {
		a = append(a, p11.NewAttribute(p11.CKA_VALUE, value))
	}
	return a
}

// ephemeralTemplate is the one-time AES key of RSA + AES key wrap: it may
// unwrap the material and nothing else.
func ephemeralTemplate(value []byte) []*p11.Attribute {
	a := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_UNWRAP, true),
		p11.NewAttribute(p11.CKA_DERIVE, false),
	}
	if value != nil {
		a = append(a, p11.NewAttribute(p11.CKA_VALUE, value))
	}
	return a
}

// finishImport checks that obj holds material of the target's kind and
// size, and wraps it under w. The caller destroys obj.
func (t *Token) finishImport(a *attempt, op string, obj, w p11.ObjectHandle, target hsm.ImportTarget) ([]byte, error) {
	var perr error
	if target.Kind == hsm.ImportAES {
		perr = t.probeAESKey(a, obj)
	} else {
		perr = t.probeHMACKey(a, obj)
	}
	if perr != nil {
		if deviceSide(perr) {
			return nil, fmt.Errorf("pkcs11: failed to %s: failed to check the material: %w", op, ckr(perr))
		}
		return nil, fmt.Errorf("pkcs11: failed to %s: the material is not a %d-byte %s key: %w", op, target.Size, target.Kind, hsm.ErrInvalidInput)
	}
	blob, err := t.ctx.WrapKey(a.s, kwp, w, obj)
	if err != nil {
		return nil, keyErr(op, err)
	}
	// KWP output is the value padded to 8 bytes, plus 8. With the probe
	// (AES: 16, 24 or 32 bytes; HMAC: at least 32) this pins the length
	// exactly for every size checkTarget allows.
	if want := (target.Size+7)/8*8 + 8; len(blob) != want {
		return nil, fmt.Errorf("pkcs11: failed to %s: the material is not a %d-byte %s key: %w", op, target.Size, target.Kind, hsm.ErrInvalidInput)
	}
	return blob, nil
}

// modulusLen returns the byte length of an RSA private key's modulus.
func (t *Token) modulusLen(a *attempt, op string, k p11.ObjectHandle) (int, error) {
	attrs, err := t.ctx.GetAttributeValue(a.s, k, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, nil),
		p11.NewAttribute(p11.CKA_KEY_TYPE, nil),
		p11.NewAttribute(p11.CKA_MODULUS, nil),
	})
	if err != nil {
		return 0, keyErr(op, err)
	}
	if attrUint(attrs[0]) != p11.CKO_PRIVATE_KEY || attrUint(attrs[1]) != p11.CKK_RSA {
		return 0, fmt.Errorf("pkcs11: failed to %s: not an RSA private key: %w", op, hsm.ErrInvalidInput)
	}
	return (new(big.Int).SetBytes(attrs[2].Value).BitLen() + 7) / 8, nil
}

var oaepSHA1 = []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_OAEP,
	p11.NewOAEPParams(p11.CKM_SHA_1, p11.CKG_MGF1_SHA1, p11.CKZ_DATA_SPECIFIED, nil))}

// ImportRSAOAEP implements hsm.KeyImporter; see the notes at the top of
// this file for where the material is decrypted.
func (t *Token) ImportRSAOAEP(ctx context.Context, importKey hsm.KeyHandle, hash crypto.Hash, ciphertext []byte, target hsm.ImportTarget, wrappingKey hsm.KeyHandle) ([]byte, error) {
	const op = "import key material with RSA-OAEP"
	if err := checkTarget(target); err != nil {
		return nil, fmt.Errorf("pkcs11: failed to %s: %v: %w", op, err, hsm.ErrInvalidInput)
	}
	if hash != crypto.SHA1 && hash != crypto.SHA256 {
		return nil, fmt.Errorf("pkcs11: failed to %s: hash must be SHA-1 or SHA-256: %w", op, hsm.ErrInvalidInput)
	}
	if hash == crypto.SHA256 {
		material, err := t.DecryptOAEP(ctx, importKey, hash, ciphertext, nil)
		if err != nil {
			if errors.Is(err, hsm.ErrAuthFailed) {
				return nil, errImport
			}
			return nil, err
		}
		defer clear(material)
		return t.ImportPlaintext(ctx, material, target, wrappingKey)
	}
	var blob []byte
	err := t.do(ctx, op, func(a *attempt) error {
		w, err := t.object(op, wrappingKey)
		if err != nil {
			return err
		}
		k, err := t.object(op, importKey)
		if err != nil {
			return err
		}
		n, err := t.modulusLen(a, op, k)
		if err != nil {
			return err
		}
		if len(ciphertext) != n {
			return errImport
		}
		obj, err := t.ctx.UnwrapKey(a.s, oaepSHA1, k, ciphertext, targetTemplate(target, nil))
		if err != nil {
			if isAuthFailure(err) || isCKR(err, p11.CKR_FUNCTION_FAILED) {
				return errImport
			}
			return keyErr(op, err)
		}
		defer func() { _ = t.ctx.DestroyObject(a.s, obj) }()
		blob, err = t.finishImport(a, op, obj, w, target)
		return err
	})
	if err != nil {
		return nil, err
	}
	return blob, nil
}

// ImportRSAAESKeyWrap implements hsm.KeyImporter; see the notes at the
// top of this file for where each part is decrypted.
func (t *Token) ImportRSAAESKeyWrap(ctx context.Context, importKey hsm.KeyHandle, hash crypto.Hash, ciphertext []byte, target hsm.ImportTarget, wrappingKey hsm.KeyHandle) ([]byte, error) {
	const op = "import key material with RSA and AES key wrap"
	if err := checkTarget(target); err != nil {
		return nil, fmt.Errorf("pkcs11: failed to %s: %v: %w", op, err, hsm.ErrInvalidInput)
	}
	var blob []byte
	err := t.rsaAESUnwrap(ctx, op, importKey, hash, ciphertext, wrappingKey, targetTemplate(target, nil), false,
		func(a *attempt, obj, w p11.ObjectHandle) error {
			var err error
			blob, err = t.finishImport(a, op, obj, w, target)
			return err
		})
	if err != nil {
		return nil, err
	}
	return blob, nil
}

// importPrivateTemplate is the temporary object an imported private key
// lands in: it can be wrapped once and do nothing else.
func importPrivateTemplate(k pairKind) []*p11.Attribute {
	return []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, k.keyType),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
		p11.NewAttribute(p11.CKA_SIGN, false),
		p11.NewAttribute(p11.CKA_SIGN_RECOVER, false),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
	}
}

// ImportPrivateKeyRSAAESKeyWrap implements hsm.KeyImporter for RSA keys.
// The private key is unwrapped from its PKCS#8 inside the HSM, checked
// (size), wrapped under wrappingKey and destroyed; its public key is read
// from the modulus and exponent. EC keys are refused: a PKCS#11 EC
// private key object has no public point (CKA_EC_POINT is a public key
// attribute), so the public key could not be had without the private key
// leaving the HSM.
func (t *Token) ImportPrivateKeyRSAAESKeyWrap(ctx context.Context, importKey hsm.KeyHandle, hash crypto.Hash, ciphertext []byte, spec hsm.KeyPairSpec, wrappingKey hsm.KeyHandle) (*hsm.WrappedKeyPair, error) {
	const op = "import a private key with RSA and AES key wrap"
	k, err := parseSpec(spec)
	if err != nil || !k.isRSA() {
		return nil, fmt.Errorf("pkcs11: failed to %s: only RSA private keys import: %w", op, hsm.ErrInvalidInput)
	}
	var res *hsm.WrappedKeyPair
	err = t.rsaAESUnwrap(ctx, op, importKey, hash, ciphertext, wrappingKey, importPrivateTemplate(k), true,
		func(a *attempt, obj, w p11.ObjectHandle) error {
			if err := t.checkPrivateKey(a.s, obj, k); err != nil {
				if deviceSide(err) {
					return fmt.Errorf("pkcs11: failed to %s: %w", op, err)
				}
				return fmt.Errorf("pkcs11: failed to %s: %v: %w", op, err, hsm.ErrInvalidInput)
			}
			attrs, err := t.ctx.GetAttributeValue(a.s, obj, []*p11.Attribute{
				p11.NewAttribute(p11.CKA_MODULUS, nil),
				p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, nil),
			})
			if err != nil {
				return fmt.Errorf("pkcs11: failed to %s: failed to read the public key: %w", op, ckr(err))
			}
			n := new(big.Int).SetBytes(attrs[0].Value)
			e := new(big.Int).SetBytes(attrs[1].Value)
			if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
				return fmt.Errorf("pkcs11: failed to %s: unusable public exponent: %w", op, hsm.ErrInvalidInput)
			}
			spki, err := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: n, E: int(e.Int64())})
			if err != nil {
				return fmt.Errorf("pkcs11: failed to %s: %w", op, err)
			}
			blob, err := t.ctx.WrapKey(a.s, kwp, w, obj)
			if err != nil {
				return keyErr(op, err)
			}
			res = &hsm.WrappedKeyPair{PublicKeyDER: spki, WrappedPrivate: blob}
			return nil
		})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// rsaAESUnwrap opens a CKM_RSA_AES_KEY_WRAP-style ciphertext into an HSM
// object made from tmpl and runs fn with it (and the wrapping key); the
// object and the one-time AES key are destroyed afterwards. private says
// that tmpl is a private key, whose PKCS#8 SoftHSM refuses with
// CKR_FUNCTION_FAILED when it does not hold a key of that type.
func (t *Token) rsaAESUnwrap(ctx context.Context, op string, importKey hsm.KeyHandle, hash crypto.Hash, ciphertext []byte, wrappingKey hsm.KeyHandle, tmpl []*p11.Attribute, private bool, fn func(a *attempt, obj, w p11.ObjectHandle) error) error {
	if hash != crypto.SHA1 && hash != crypto.SHA256 {
		return fmt.Errorf("pkcs11: failed to %s: hash must be SHA-1 or SHA-256: %w", op, hsm.ErrInvalidInput)
	}
	// The modulus length splits the ciphertext; read it once.
	var n int
	err := t.do(ctx, op, func(a *attempt) error {
		k, err := t.object(op, importKey)
		if err != nil {
			return err
		}
		n, err = t.modulusLen(a, op, k)
		return err
	})
	if err != nil {
		return err
	}
	// KWP output is at least 16 bytes, in whole 8-byte blocks.
	if len(ciphertext) < n+16 || (len(ciphertext)-n)%8 != 0 {
		return errImport
	}
	ephCT, wrapped := ciphertext[:n], ciphertext[n:]
	var ephKey []byte
	if hash == crypto.SHA256 {
		ephKey, err = t.DecryptOAEP(ctx, importKey, hash, ephCT, nil)
		if err != nil {
			if errors.Is(err, hsm.ErrAuthFailed) {
				return errImport
			}
			return err
		}
		defer clear(ephKey)
		if !validAESKeySize(len(ephKey)) {
			return errImport
		}
	}
	return t.do(ctx, op, func(a *attempt) error {
		w, err := t.object(op, wrappingKey)
		if err != nil {
			return err
		}
		var eph p11.ObjectHandle
		if ephKey != nil {
			if eph, err = t.ctx.CreateObject(a.s, ephemeralTemplate(ephKey)); err != nil {
				return fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
			}
		} else {
			k, err := t.object(op, importKey)
			if err != nil {
				return err
			}
			if eph, err = t.ctx.UnwrapKey(a.s, oaepSHA1, k, ephCT, ephemeralTemplate(nil)); err != nil {
				if isAuthFailure(err) || isCKR(err, p11.CKR_FUNCTION_FAILED) {
					return errImport
				}
				return keyErr(op, err)
			}
		}
		defer func() { _ = t.ctx.DestroyObject(a.s, eph) }()
		obj, err := t.ctx.UnwrapKey(a.s, kwp, eph, wrapped, tmpl)
		if err != nil {
			switch {
			case isAuthFailure(err):
				return errImport
			case isCKR(err, p11.CKR_FUNCTION_FAILED) && private:
				return fmt.Errorf("pkcs11: failed to %s: the material is not a private key of this type: %w", op, hsm.ErrInvalidInput)
			case isCKR(err, p11.CKR_FUNCTION_FAILED):
				return errImport
			default:
				return keyErr(op, err)
			}
		}
		defer func() { _ = t.ctx.DestroyObject(a.s, obj) }()
		return fn(a, obj, w)
	})
}

// ImportPlaintext implements hsm.KeyImporter: the material enters the
// HSM as a temporary object, is checked, wrapped and destroyed.
func (t *Token) ImportPlaintext(ctx context.Context, material []byte, target hsm.ImportTarget, wrappingKey hsm.KeyHandle) ([]byte, error) {
	const op = "import key material"
	if err := checkTarget(target); err != nil {
		return nil, fmt.Errorf("pkcs11: failed to %s: %v: %w", op, err, hsm.ErrInvalidInput)
	}
	if len(material) != target.Size {
		return nil, fmt.Errorf("pkcs11: failed to %s: the material is %d bytes, not %d: %w", op, len(material), target.Size, hsm.ErrInvalidInput)
	}
	var blob []byte
	err := t.do(ctx, op, func(a *attempt) error {
		w, err := t.object(op, wrappingKey)
		if err != nil {
			return err
		}
		obj, err := t.ctx.CreateObject(a.s, targetTemplate(target, material))
		if err != nil {
			return fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
		}
		defer func() { _ = t.ctx.DestroyObject(a.s, obj) }()
		blob, err = t.finishImport(a, op, obj, w, target)
		return err
	})
	if err != nil {
		return nil, err
	}
	return blob, nil
}
