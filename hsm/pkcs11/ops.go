//go:build cgo

package pkcs11

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyflow/keyflow/hsm"
)

// maxRandom bounds GenerateRandom: keyflow draws IVs and data keys, not
// bulk randomness, and a huge request would only tie up a session.
const maxRandom = 1 << 20

// kwp is AES key wrap with padding (RFC 5649). It has no parameters, so
// one read-only value serves every call.
var kwp = []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}

var aesKeyGen = []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}

// rootMu serialises find-or-create of root keys across every Token in the
// process, so two concurrent first calls cannot create two keys with one
// label. It is held across device calls, which is acceptable because root
// keys are looked up once per process, not per request.
var rootMu sync.Mutex

// EncryptGCM encrypts plaintext under key with AES-GCM and returns
// ciphertext||tag. iv must be exactly hsm.GCMIVSize bytes: SoftHSM
// accepts an empty IV and then repeats its key stream.
func (t *Token) EncryptGCM(ctx context.Context, key hsm.KeyHandle, iv, plaintext, aad []byte) ([]byte, error) {
	const op = "encrypt"
	if len(iv) != hsm.GCMIVSize {
		return nil, fmt.Errorf("pkcs11: failed to %s: IV must be %d bytes, not %d: %w", op, hsm.GCMIVSize, len(iv), hsm.ErrInvalidInput)
	}
	var out []byte
	err := t.do(ctx, op, func(a *attempt) error {
		k, err := t.object(op, key)
		if err != nil {
			return err
		}
		params := p11.NewGCMParams(iv, aad, hsm.GCMTagSize*8)
		defer params.Free()
		mech := []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}
		if err := t.encryptInit(a.s, mech, k); err != nil {
			t.afterInitFailure(a, err)
			return keyErr(op, err)
		}
		if out, err = t.ctx.Encrypt(a.s, plaintext); err != nil {
			t.settle(a)
			return fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DecryptGCM opens ciphertext||tag under key. Every integrity failure
// returns hsm.ErrAuthFailed and nothing more specific.
func (t *Token) DecryptGCM(ctx context.Context, key hsm.KeyHandle, iv, ciphertext, aad []byte) ([]byte, error) {
	const op = "decrypt"
	if len(iv) != hsm.GCMIVSize {
		return nil, fmt.Errorf("pkcs11: failed to %s: IV must be %d bytes, not %d: %w", op, hsm.GCMIVSize, len(iv), hsm.ErrInvalidInput)
	}
	return t.openGCM(ctx, op, key, iv, ciphertext, aad)
}

// openGCM is the decryption shared by DecryptGCM and DecryptGCMLongIV,
// once they have checked the IV length.
func (t *Token) openGCM(ctx context.Context, op string, key hsm.KeyHandle, iv, ciphertext, aad []byte) ([]byte, error) {
	if len(ciphertext) < hsm.GCMTagSize {
		return nil, fmt.Errorf("pkcs11: failed to %s: %w", op, hsm.ErrAuthFailed)
	}
	var out []byte
	err := t.do(ctx, op, func(a *attempt) error {
		k, err := t.object(op, key)
		if err != nil {
			return err
		}
		params := p11.NewGCMParams(iv, aad, hsm.GCMTagSize*8)
		defer params.Free()
		mech := []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}
		if err := t.decryptInit(a.s, mech, k); err != nil {
			t.afterInitFailure(a, err)
			return keyErr(op, err)
		}
		if out, err = t.ctx.Decrypt(a.s, ciphertext); err != nil {
			t.settle(a)
			if isAuthFailure(err) {
				return fmt.Errorf("pkcs11: failed to %s: %w", op, hsm.ErrAuthFailed)
			}
			return fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// encryptInit starts an encryption. A session runs one operation of any
// kind at a time, so if a previous failure left one behind it clears it
// and tries once more.
func (t *Token) encryptInit(s p11.SessionHandle, mech []*p11.Mechanism, key p11.ObjectHandle) error {
	err := t.ctx.EncryptInit(s, mech, key)
	if isCKR(err, p11.CKR_OPERATION_ACTIVE) {
		t.clearOperation(s)
		err = t.ctx.EncryptInit(s, mech, key)
	}
	return err
}

func (t *Token) decryptInit(s p11.SessionHandle, mech []*p11.Mechanism, key p11.ObjectHandle) error {
	err := t.ctx.DecryptInit(s, mech, key)
	if isCKR(err, p11.CKR_OPERATION_ACTIVE) {
		t.clearOperation(s)
		err = t.ctx.DecryptInit(s, mech, key)
	}
	return err
}

// afterInitFailure settles the session after a C_*Init failed, if the
// failure says an operation is stuck on it.
func (t *Token) afterInitFailure(a *attempt, err error) {
	if isCKR(err, p11.CKR_OPERATION_ACTIVE) {
		t.settle(a)
	}
}

// isAuthFailure reports whether a C_Decrypt or C_UnwrapKey failure means
// the input did not authenticate. SoftHSM reports a GCM tag mismatch and
// a bad KWP integrity check as CKR_GENERAL_ERROR; other modules use the
// return values meant for it. Callers check it before anything else, so
// on these paths CKR_GENERAL_ERROR is never taken for a device error.
func isAuthFailure(err error) bool {
	for _, rv := range []uint{
		p11.CKR_GENERAL_ERROR,
		p11.CKR_ENCRYPTED_DATA_INVALID,
		p11.CKR_ENCRYPTED_DATA_LEN_RANGE,
		p11.CKR_WRAPPED_KEY_INVALID,
		p11.CKR_WRAPPED_KEY_LEN_RANGE,
	} {
		if isCKR(err, rv) {
			return true
		}
	}
	return false
}

// keyErr wraps a failure to start an operation with a key, mapping the
// return values that mean "no such key" and "wrong key for this" to the
// hsm sentinels. A key handle that names no object is
// hsm.ErrKeyHandleInvalid, which also matches hsm.ErrNotFound.
func keyErr(op string, err error) error {
	switch {
	case classify(err) == failKeyHandle:
		return fmt.Errorf("pkcs11: failed to %s: %w (%w)", op, hsm.ErrKeyHandleInvalid, ckr(err))
	case isCKR(err, p11.CKR_KEY_FUNCTION_NOT_PERMITTED),
		// A key whose CKA_ALLOWED_MECHANISMS leaves this one out.
		isCKR(err, p11.CKR_MECHANISM_INVALID),
		isCKR(err, p11.CKR_KEY_TYPE_INCONSISTENT),
		isCKR(err, p11.CKR_KEY_SIZE_RANGE),
		isCKR(err, p11.CKR_KEY_NOT_WRAPPABLE),
		isCKR(err, p11.CKR_KEY_UNEXTRACTABLE),
		isCKR(err, p11.CKR_WRAPPING_KEY_TYPE_INCONSISTENT),
		isCKR(err, p11.CKR_WRAPPING_KEY_SIZE_RANGE),
		isCKR(err, p11.CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT),
		isCKR(err, p11.CKR_UNWRAPPING_KEY_SIZE_RANGE):
		return fmt.Errorf("pkcs11: failed to %s: %w (%w)", op, hsm.ErrInvalidInput, ckr(err))
	default:
		return fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
	}
}

// tagged returns the KeyHandle for a session object that a.s (the owner
// session) just created, destroying the object if it cannot have one.
// The epoch is read after the object exists: if the objects of the
// previous epoch were lost meanwhile, this one may be too, and then its
// handle must not outlive the epoch.
func (t *Token) tagged(op string, a *attempt, k p11.ObjectHandle) (hsm.KeyHandle, error) {
	h, err := tag(k, t.epoch.Load())
	if err != nil {
		_ = t.ctx.DestroyObject(a.s, k)
		return 0, fmt.Errorf("pkcs11: failed to %s: %v", op, err)
	}
	return h, nil
}

func validAESKeySize(n int) bool { return n == 16 || n == 24 || n == 32 }

// GenerateWrappedAESKey generates an AES key of size bytes as a temporary
// session object, wraps it under wrappingKey with AES-KWP and destroys it.
func (t *Token) GenerateWrappedAESKey(ctx context.Context, wrappingKey hsm.KeyHandle, size int) ([]byte, error) {
	const op = "generate a wrapped AES key"
	if !validAESKeySize(size) {
		return nil, fmt.Errorf("pkcs11: failed to %s: size must be 16, 24 or 32 bytes, not %d: %w", op, size, hsm.ErrInvalidInput)
	}
	return t.generateWrapped(ctx, op, wrappingKey, aesKeyGen, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_VALUE_LEN, size),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		// Extractable only so that it can be wrapped, once, below;
		// the object is destroyed before this returns (or dies with
		// its session, which is a pooled one).
		p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
	})
}

// generateWrapped generates a secret key from template as a temporary
// session object, wraps it under wrappingKey with AES-KWP and destroys it:
// only the blob leaves. The template must make the key sensitive and
// extractable (so it can be wrapped, once) and useless for anything else.
func (t *Token) generateWrapped(ctx context.Context, op string, wrappingKey hsm.KeyHandle, mech []*p11.Mechanism, template []*p11.Attribute) ([]byte, error) {
	var blob []byte
	err := t.do(ctx, op, func(a *attempt) error {
		w, err := t.object(op, wrappingKey)
		if err != nil {
			return err
		}
		tmp, err := t.ctx.GenerateKey(a.s, mech, template)
		if err != nil {
			return fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
		}
		defer func() { _ = t.ctx.DestroyObject(a.s, tmp) }()
		if blob, err = t.ctx.WrapKey(a.s, kwp, w, tmp); err != nil {
			return keyErr(op, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return blob, nil
}

// UnwrapAESKey unwraps blob under wrappingKey into a sensitive,
// non-extractable session object that can encrypt and decrypt, and
// nothing else. A blob that fails the integrity check returns
// hsm.ErrAuthFailed; one that opens but does not hold an AES key returns
// hsm.ErrInvalidInput.
func (t *Token) UnwrapAESKey(ctx context.Context, wrappingKey hsm.KeyHandle, blob []byte) (hsm.KeyHandle, error) {
	return t.unwrap(ctx, "unwrap an AES key", wrappingKey, blob, false)
}

// UnwrapKEK unwraps blob under wrappingKey into a sensitive,
// non-extractable session object that can wrap and unwrap, and nothing
// else: a per-tenant key-encryption key. Its handle serves as the
// wrappingKey of GenerateWrappedAESKey and UnwrapAESKey. Errors are as
// for UnwrapAESKey.
func (t *Token) UnwrapKEK(ctx context.Context, wrappingKey hsm.KeyHandle, blob []byte) (hsm.KeyHandle, error) {
	return t.unwrap(ctx, "unwrap a key-encryption key", wrappingKey, blob, true)
}

func (t *Token) unwrap(ctx context.Context, op string, wrappingKey hsm.KeyHandle, blob []byte, kek bool) (hsm.KeyHandle, error) {
	// A KWP blob is 8 bytes longer than the key padded to 8 bytes, so an
	// AES key of 16, 24 or 32 bytes always wraps to 24, 32 or 40. The
	// length is public, so refusing others early tells nobody anything.
	if n := len(blob) - 8; !validAESKeySize(n) {
		return 0, fmt.Errorf("pkcs11: failed to %s: a wrapped AES key is 24, 32 or 40 bytes, not %d: %w", op, len(blob), hsm.ErrInvalidInput)
	}
	var h hsm.KeyHandle
	err := t.doOwner(ctx, op, func(a *attempt) error {
		w, err := t.object(op, wrappingKey)
		if err != nil {
			return err
		}
		// Keep data keys and key-encryption keys apart: a data key that
		// could unwrap would let anyone who can decrypt also import keys.
		k, err := t.ctx.UnwrapKey(a.s, kwp, w, blob, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
			p11.NewAttribute(p11.CKA_TOKEN, false),
			p11.NewAttribute(p11.CKA_PRIVATE, true),
			p11.NewAttribute(p11.CKA_SENSITIVE, true),
			p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
			p11.NewAttribute(p11.CKA_ENCRYPT, !kek),
			p11.NewAttribute(p11.CKA_DECRYPT, !kek),
			p11.NewAttribute(p11.CKA_WRAP, kek),
			p11.NewAttribute(p11.CKA_UNWRAP, kek),
		})
		if err != nil {
			if isAuthFailure(err) {
				return fmt.Errorf("pkcs11: failed to %s: %w", op, hsm.ErrAuthFailed)
			}
			return keyErr(op, err)
		}
		if !kek {
			// SoftHSM's C_UnwrapKey stores whatever the blob held,
			// without checking that it is a valid AES key length (and
			// leaves CKA_VALUE_LEN at 0, so it cannot be read back
			// either). Starting an encryption makes it check; otherwise
			// the first real use would fail, far from the cause.
			if perr := t.probeAESKey(a, k); perr != nil {
				_ = t.ctx.DestroyObject(a.s, k)
				if deviceSide(perr) {
					return fmt.Errorf("pkcs11: failed to %s: failed to check the key: %w", op, ckr(perr))
				}
				return fmt.Errorf("pkcs11: failed to %s: the blob does not hold a usable AES key: %w", op, hsm.ErrInvalidInput)
			}
		}
		h, err = t.tagged(op, a, k)
		return err
	})
	if err != nil {
		return 0, err
	}
	return h, nil
}

// probeIV only starts and finishes a throwaway encryption of nothing,
// whose output is discarded.
var probeIV [hsm.GCMIVSize]byte

// probeAESKey checks that k is an AES key the token can encrypt with. A
// failure that leaves a.s unusable replaces it.
func (t *Token) probeAESKey(a *attempt, k p11.ObjectHandle) error {
	params := p11.NewGCMParams(probeIV[:], nil, hsm.GCMTagSize*8)
	defer params.Free()
	if err := t.encryptInit(a.s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}, k); err != nil {
		t.afterInitFailure(a, err)
		return err
	}
	if _, err := t.ctx.Encrypt(a.s, nil); err != nil {
		t.settle(a)
		return err
	}
	return nil
}

// WrapKey wraps key under wrappingKey with AES-KWP. key must be
// extractable; keys that keyflow unwraps are not, so this serves tests
// and exporting freshly imported or generated keys for backup.
func (t *Token) WrapKey(ctx context.Context, wrappingKey, key hsm.KeyHandle) ([]byte, error) {
	const op = "wrap a key"
	var blob []byte
	err := t.do(ctx, op, func(a *attempt) error {
		w, err := t.object(op, wrappingKey)
		if err != nil {
			return err
		}
		k, err := t.object(op, key)
		if err != nil {
			return err
		}
		if blob, err = t.ctx.WrapKey(a.s, kwp, w, k); err != nil {
			return keyErr(op, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return blob, nil
}

// ImportAESKeyForTesting DANGEROUSLY puts raw key bytes into the HSM as a
// session object that can encrypt, decrypt, wrap and unwrap. Key material
// that has been in process memory was never protected by the HSM: this
// exists for known-answer tests and as the base of a future BYOK import,
// which must take a wrapped key instead.
func (t *Token) ImportAESKeyForTesting(ctx context.Context, raw []byte, extractable bool) (hsm.KeyHandle, error) {
	const op = "import an AES key"
	if !validAESKeySize(len(raw)) {
		return 0, fmt.Errorf("pkcs11: failed to %s: key must be 16, 24 or 32 bytes, not %d: %w", op, len(raw), hsm.ErrInvalidInput)
	}
	return t.createObject(ctx, op, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_VALUE, raw),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, extractable),
		p11.NewAttribute(p11.CKA_ENCRYPT, true),
		p11.NewAttribute(p11.CKA_DECRYPT, true),
		p11.NewAttribute(p11.CKA_WRAP, true),
		p11.NewAttribute(p11.CKA_UNWRAP, true),
	})
}

// createObject creates a session object from tmpl on the owner session.
func (t *Token) createObject(ctx context.Context, op string, tmpl []*p11.Attribute) (hsm.KeyHandle, error) {
	var h hsm.KeyHandle
	err := t.doOwner(ctx, op, func(a *attempt) error {
		k, err := t.ctx.CreateObject(a.s, tmpl)
		if err != nil {
			return fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
		}
		h, err = t.tagged(op, a, k)
		return err
	})
	if err != nil {
		return 0, err
	}
	return h, nil
}

// DestroyKey destroys a session object. An unknown handle is not an
// error, nor is one whose object died with a lost session. It refuses
// token objects, so a stray handle can never destroy the root key.
func (t *Token) DestroyKey(ctx context.Context, key hsm.KeyHandle) error {
	const op = "destroy a key"
	return t.do(ctx, op, func(a *attempt) error {
		k, err := t.object(op, key)
		if err != nil {
			return nil // its object is already gone
		}
		attrs, err := t.ctx.GetAttributeValue(a.s, k, []*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, nil)})
		switch {
		case isCKR(err, p11.CKR_OBJECT_HANDLE_INVALID):
			return nil
		case err != nil:
			return fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
		case attrBool(attrs[0]):
			return fmt.Errorf("pkcs11: failed to %s: refusing to destroy a token object: %w", op, hsm.ErrInvalidInput)
		}
		if err := t.ctx.DestroyObject(a.s, k); err != nil && !isCKR(err, p11.CKR_OBJECT_HANDLE_INVALID) {
			return fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
		}
		return nil
	})
}

// EnsureRootKey finds the AES-256 token key labelled label, or creates it:
// private, sensitive, able to wrap and unwrap and nothing else, and
// extractable only wrapped under a key the security officer marked
// trusted (CKA_WRAP_WITH_TRUSTED; see ExportRootKey). It refuses an
// existing key with that label that is weaker. Root keys made
// non-extractable (by earlier versions) are accepted and cannot be
// exported.
//
// The handle it returns stands for the key by token and label, not for
// the device's object handle, which changes when the token is reset; see
// the package documentation on failure handling.
func (t *Token) EnsureRootKey(ctx context.Context, label string) (hsm.KeyHandle, error) {
	const op = "ensure the root key"
	if label == "" {
		return 0, fmt.Errorf("pkcs11: failed to %s: empty label: %w", op, hsm.ErrInvalidInput)
	}
	// Lock before borrowing a session: the other order could deadlock
	// against callers that hold every session while waiting for rootMu.
	rootMu.Lock()
	defer rootMu.Unlock()
	var obj p11.ObjectHandle
	err := t.do(ctx, op, func(a *attempt) error {
		found, err := t.findObjects(a.s, rootTemplate(label))
		if err != nil {
			return fmt.Errorf("pkcs11: failed to %s %q: %w", op, label, err)
		}
		switch len(found) {
		case 0:
		case 1:
			if err := t.checkRootKey(a.s, found[0]); err != nil {
				return fmt.Errorf("pkcs11: failed to %s %q: %w", op, label, err)
			}
			obj = found[0]
			return nil
		default:
			// Blobs wrapped under one would not open under the other, so
			// guessing would lose data.
			return fmt.Errorf("pkcs11: failed to %s %q: %d keys have that label", op, label, len(found))
		}

		// If the device fails after creating the key but before saying
		// so, the retry finds it above instead of making a second one.
		obj, err = t.ctx.GenerateKey(a.s, aesKeyGen, append(rootKeyTemplate(label), p11.NewAttribute(p11.CKA_VALUE_LEN, 32)))
		if err != nil {
			return fmt.Errorf("pkcs11: failed to %s %q: failed to create it: %w", op, label, ckr(err))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return t.mod.rootHandle(t.label, label, obj), nil
}

// checkRootKey refuses a root key that someone made freely extractable or short:
// it would silently weaken every key wrapped under it.
func (t *Token) checkRootKey(s p11.SessionHandle, k p11.ObjectHandle) error {
	attrs, err := t.ctx.GetAttributeValue(s, k, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_VALUE_LEN, nil),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, nil),
		p11.NewAttribute(p11.CKA_SENSITIVE, nil),
		p11.NewAttribute(p11.CKA_WRAP_WITH_TRUSTED, nil),
	})
	if err != nil {
		return fmt.Errorf("failed to read its attributes: %w", ckr(err))
	}
	// A key that came in through C_UnwrapKey has CKA_VALUE_LEN 0 on
	// SoftHSM; only a length that is known and wrong is refused. An
	// extractable root is accepted only if nothing but a trusted key can
	// wrap it.
	if n := attrUint(attrs[0]); (n != 0 && n != 32) || (attrBool(attrs[1]) && !attrBool(attrs[3])) || !attrBool(attrs[2]) {
		return errors.New("the existing key is not a sensitive AES-256 key that is non-extractable or extractable only under a trusted key")
	}
	return nil
}

// findObjects returns up to two objects matching tmpl (two is enough to
// tell "one" from "several").
func (t *Token) findObjects(s p11.SessionHandle, tmpl []*p11.Attribute) ([]p11.ObjectHandle, error) {
	err := t.ctx.FindObjectsInit(s, tmpl)
	if isCKR(err, p11.CKR_OPERATION_ACTIVE) {
		t.clearOperation(s)
		err = t.ctx.FindObjectsInit(s, tmpl)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to search objects: %w", ckr(err))
	}
	found, _, err := t.ctx.FindObjects(s, 2)
	if ferr := t.ctx.FindObjectsFinal(s); err == nil && ferr != nil {
		err = ferr
	}
	if err != nil {
		return nil, fmt.Errorf("failed to search objects: %w", ckr(err))
	}
	return found, nil
}

// GenerateRandom returns n bytes from the token's generator, 0 < n <= 1 MiB.
func (t *Token) GenerateRandom(ctx context.Context, n int) ([]byte, error) {
	const op = "generate random bytes"
	if n <= 0 || n > maxRandom {
		return nil, fmt.Errorf("pkcs11: failed to %s: length must be 1 to %d, not %d: %w", op, maxRandom, n, hsm.ErrInvalidInput)
	}
	var out []byte
	err := t.do(ctx, op, func(a *attempt) error {
		var err error
		if out, err = t.ctx.GenerateRandom(a.s, n); err != nil {
			return fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) != n {
		return nil, fmt.Errorf("pkcs11: failed to %s: got %d bytes, want %d", op, len(out), n)
	}
	return out, nil
}

// attrUint decodes a CK_ULONG attribute, which PKCS#11 stores in native
// byte order and size.
func attrUint(a *p11.Attribute) uint64 {
	switch len(a.Value) {
	case 8:
		return binary.NativeEndian.Uint64(a.Value)
	case 4:
		return uint64(binary.NativeEndian.Uint32(a.Value))
	default:
		return 0
	}
}

func attrBool(a *p11.Attribute) bool {
	return len(a.Value) > 0 && a.Value[0] != 0
}
