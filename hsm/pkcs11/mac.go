//go:build cgo

package pkcs11

import (
	"context"
	"crypto/sha256"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyflow/keyflow/hsm"
)

var _ hsm.MACs = (*Token)(nil)

// HMAC key sizes, in bytes. SoftHSM's CKM_SHA256_HMAC refuses keys
// shorter than the hash (CKR_KEY_SIZE_RANGE) or longer than 512 bytes;
// the same bounds hold for every HMAC key keyflow makes or loads.
const (
	minHMACKey = 32
	maxHMACKey = 512
)

// maxMACMessage bounds the data of one HMAC call, which crosses into the
// HSM whole.
const maxMACMessage = 16 << 20

var hmacMechs = []uint{p11.CKM_SHA256_HMAC}

// hmacKeyTemplate is every HMAC key keyflow loads: a sensitive,
// non-extractable generic secret that can compute and check HMAC-SHA256
// and nothing else.
func hmacKeyTemplate() []*p11.Attribute {
	return []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_GENERIC_SECRET),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_SIGN, true),
		p11.NewAttribute(p11.CKA_VERIFY, true),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
		p11.NewAttribute(p11.CKA_ALLOWED_MECHANISMS, mechanismList(hmacMechs)),
	}
}

// GenerateWrappedSecret generates a generic secret of size bytes (32 to
// 512) inside the HSM as a temporary session object, wraps it under
// wrappingKey with AES-KWP and destroys it, as GenerateWrappedAESKey
// does.
func (t *Token) GenerateWrappedSecret(ctx context.Context, wrappingKey hsm.KeyHandle, size int) ([]byte, error) {
	const op = "generate a wrapped secret"
	if size < minHMACKey || size > maxHMACKey {
		return nil, fmt.Errorf("pkcs11: failed to %s: size must be %d to %d bytes, not %d: %w", op, minHMACKey, maxHMACKey, size, hsm.ErrInvalidInput)
	}
	return t.generateWrapped(ctx, op, wrappingKey, []*p11.Mechanism{p11.NewMechanism(p11.CKM_GENERIC_SECRET_KEY_GEN, nil)}, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_GENERIC_SECRET),
		p11.NewAttribute(p11.CKA_VALUE_LEN, size),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		// Extractable only so that it can be wrapped, once, below.
		p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
		p11.NewAttribute(p11.CKA_SIGN, false),
		p11.NewAttribute(p11.CKA_VERIFY, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
	})
}

// UnwrapHMACKey unwraps blob under wrappingKey into a sensitive,
// non-extractable generic secret that can compute HMAC-SHA256 and
// nothing else. A blob that fails the KWP check returns
// hsm.ErrAuthFailed; one that holds a secret SoftHSM will not use for
// HMAC-SHA256 (under 32 bytes) returns hsm.ErrInvalidInput.
func (t *Token) UnwrapHMACKey(ctx context.Context, wrappingKey hsm.KeyHandle, blob []byte) (hsm.KeyHandle, error) {
	const op = "unwrap an HMAC key"
	// KWP pads to 8 bytes and adds 8, so 32 to 512 bytes wrap to 40 to
	// 520; a 40-byte blob may still hold as few as 25, checked below.
	if n := len(blob); n < minHMACKey+8 || n > maxHMACKey+8 || n%8 != 0 {
		return 0, fmt.Errorf("pkcs11: failed to %s: a wrapped HMAC key cannot be %d bytes: %w", op, n, hsm.ErrInvalidInput)
	}
	var h hsm.KeyHandle
	err := t.doOwner(ctx, op, func(a *attempt) error {
		w, err := t.object(op, wrappingKey)
		if err != nil {
			return err
		}
		k, err := t.ctx.UnwrapKey(a.s, kwp, w, blob, hmacKeyTemplate())
		if err != nil {
			if isAuthFailure(err) {
				return fmt.Errorf("pkcs11: failed to %s: %w", op, hsm.ErrAuthFailed)
			}
			return keyErr(op, err)
		}
		// An unwrapped secret has no CKA_VALUE_LEN on SoftHSM, and its
		// size is only checked when a MAC starts; check it now, not at
		// first use.
		if perr := t.probeHMACKey(a, k); perr != nil {
			_ = t.ctx.DestroyObject(a.s, k)
			if deviceSide(perr) {
				return fmt.Errorf("pkcs11: failed to %s: failed to check the key: %w", op, ckr(perr))
			}
			return fmt.Errorf("pkcs11: failed to %s: the blob does not hold a usable HMAC key: %w", op, hsm.ErrInvalidInput)
		}
		h, err = t.tagged(op, a, k)
		return err
	})
	if err != nil {
		return 0, err
	}
	return h, nil
}

// probeHMACKey computes a throwaway MAC of nothing under k. A failure
// that leaves a.s unusable replaces it.
func (t *Token) probeHMACKey(a *attempt, k p11.ObjectHandle) error {
	if err := t.signInit(a.s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_SHA256_HMAC, nil)}, k); err != nil {
		t.afterInitFailure(a, err)
		return err
	}
	if _, err := t.ctx.Sign(a.s, nil); err != nil {
		t.settle(a)
		return err
	}
	return nil
}

// HMACSHA256 computes HMAC-SHA256 of data under key inside the HSM.
func (t *Token) HMACSHA256(ctx context.Context, key hsm.KeyHandle, data []byte) ([]byte, error) {
	const op = "compute an HMAC"
	if len(data) > maxMACMessage {
		return nil, fmt.Errorf("pkcs11: failed to %s: %d bytes is over the %d-byte limit: %w", op, len(data), maxMACMessage, hsm.ErrInvalidInput)
	}
	var mac []byte
	err := t.do(ctx, op, func(a *attempt) error {
		k, err := t.object(op, key)
		if err != nil {
			return err
		}
		if err := t.signInit(a.s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_SHA256_HMAC, nil)}, k); err != nil {
			t.afterInitFailure(a, err)
			return keyErr(op, err)
		}
		if mac, err = t.ctx.Sign(a.s, data); err != nil {
			t.settle(a)
			return fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(mac) != sha256.Size {
		return nil, fmt.Errorf("pkcs11: failed to %s: the token returned %d bytes", op, len(mac))
	}
	return mac, nil
}

// ImportHMACKeyForTesting DANGEROUSLY loads raw key bytes (32 to 512, the
// sizes SoftHSM's HMAC-SHA256 takes) as an HMAC key with the attributes
// of an unwrapped one. Key material that has been in process memory was
// never protected by the HSM: this exists for known-answer tests.
func (t *Token) ImportHMACKeyForTesting(ctx context.Context, raw []byte) (hsm.KeyHandle, error) {
	const op = "import an HMAC key"
	if len(raw) < minHMACKey || len(raw) > maxHMACKey {
		return 0, fmt.Errorf("pkcs11: failed to %s: key must be %d to %d bytes, not %d: %w", op, minHMACKey, maxHMACKey, len(raw), hsm.ErrInvalidInput)
	}
	return t.createObject(ctx, op, append(hmacKeyTemplate(), p11.NewAttribute(p11.CKA_VALUE, raw)))
}
