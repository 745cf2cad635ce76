//go:build cgo

package pkcs11

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyflow/keyflow/hsm"
)

// maxSecret bounds WrapSecret: software keys (ML-DSA seeds, SLH-DSA keys)
// are far smaller.
const maxSecret = 4096

// secretTemplate is a generic secret that can do nothing but be wrapped:
// the carrier for software key material.
func secretTemplate(value []byte, sensitive bool) []*p11.Attribute {
	a := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_GENERIC_SECRET),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, sensitive),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
		p11.NewAttribute(p11.CKA_SIGN, false),
		p11.NewAttribute(p11.CKA_VERIFY, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
	}
	if value != nil {
		a = append(a, p11.NewAttribute(p11.CKA_VALUE, value))
	}
	return a
}

// WrapSecret implements hsm.SecretWrapper: the secret enters the HSM as a
// temporary generic-secret object, is wrapped with AES-KWP under
// wrappingKey, and the object is destroyed.
func (t *Token) WrapSecret(ctx context.Context, wrappingKey hsm.KeyHandle, secret []byte) ([]byte, error) {
	const op = "wrap a secret"
	if len(secret) == 0 || len(secret) > maxSecret {
		return nil, fmt.Errorf("pkcs11: failed to %s: length must be 1 to %d: %w", op, maxSecret, hsm.ErrInvalidInput)
	}
	// SoftHSM's KWP unwrap of a generic secret returns the padded value
	// (it ignores the length in the KWP header), so the secret carries its
	// own length and is padded to whole blocks here.
	framed := frameSecret(secret)
	defer clear(framed)
	var blob []byte
	err := t.do(ctx, op, func(a *attempt) error {
		w, err := t.object(op, wrappingKey)
		if err != nil {
			return err
		}
		s := a.s
		tmp, err := t.ctx.CreateObject(s, secretTemplate(framed, true))
		if err != nil {
			return fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
		}
		defer func() { _ = t.ctx.DestroyObject(s, tmp) }()
		if blob, err = t.ctx.WrapKey(s, kwp, w, tmp); err != nil {
			return keyErr(op, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return blob, nil
}

// UnwrapSecret implements hsm.SecretWrapper: the blob is unwrapped into a
// short-lived readable generic secret, read and destroyed at once.
func (t *Token) UnwrapSecret(ctx context.Context, wrappingKey hsm.KeyHandle, blob []byte) ([]byte, error) {
	const op = "unwrap a secret"
	if len(blob) < 24 || len(blob)%8 != 0 || len(blob) > maxSecret+24 {
		return nil, fmt.Errorf("pkcs11: failed to %s: %w", op, hsm.ErrAuthFailed)
	}
	var framed []byte
	err := t.do(ctx, op, func(a *attempt) error {
		w, err := t.object(op, wrappingKey)
		if err != nil {
			return err
		}
		// A temporary object, destroyed at once (or with its pooled
		// session): it need not be on the owner session.
		tmp, err := t.ctx.UnwrapKey(a.s, kwp, w, blob, secretTemplate(nil, false))
		if err != nil {
			if isAuthFailure(err) {
				return fmt.Errorf("pkcs11: failed to %s: %w", op, hsm.ErrAuthFailed)
			}
			return keyErr(op, err)
		}
		attrs, err := t.ctx.GetAttributeValue(a.s, tmp, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)})
		_ = t.ctx.DestroyObject(a.s, tmp)
		if err != nil {
			return fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
		}
		framed = attrs[0].Value
		return nil
	})
	if err != nil {
		return nil, err
	}
	defer clear(framed)
	secret, ok := unframeSecret(framed)
	if !ok {
		return nil, fmt.Errorf("pkcs11: failed to %s: the blob does not hold a wrapped secret: %w", op, hsm.ErrInvalidInput)
	}
	return secret, nil
}

// frameSecret encodes len(secret) as two bytes, then the secret, then zero
// padding to a multiple of 8 bytes (at least 16).
func frameSecret(secret []byte) []byte {
	n := 2 + len(secret)
	size := max(16, (n+7)/8*8)
	out := make([]byte, size)
	binary.BigEndian.PutUint16(out, uint16(len(secret)))
	copy(out[2:], secret)
	return out
}

func unframeSecret(framed []byte) ([]byte, bool) {
	if len(framed) < 16 || len(framed)%8 != 0 {
		return nil, false
	}
	n := int(binary.BigEndian.Uint16(framed))
	if n == 0 || 2+n > len(framed) || len(framed)-(2+n) >= 8 && len(framed) > 16 {
		return nil, false
	}
	for _, b := range framed[2+n:] {
		if b != 0 {
			return nil, false
		}
	}
	return bytes.Clone(framed[2 : 2+n]), true
}
