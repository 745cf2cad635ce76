//go:build cgo

package pkcs11

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"math/big"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyflow/keyflow/hsm"
)

var _ hsm.TransportWrapper = (*Token)(nil)

// WrapForTransport implements hsm.TransportWrapper on SoftHSM: the blob is
// unwrapped (C_UnwrapKey, AES-KWP) into a temporary object that is
// sensitive but extractable, the other HSM's public key is created as a
// temporary public-key object that may only wrap, and C_WrapKey with
// CKM_RSA_PKCS_OAEP (SHA-1) wraps the one under the other. The material
// never reaches process memory.
func (t *Token) WrapForTransport(ctx context.Context, wrappingKey hsm.KeyHandle, blob []byte, target hsm.ImportTarget, publicKeyDER []byte) ([]byte, error) {
	const op = "wrap a key for transport"
	if err := checkTarget(target); err != nil {
		return nil, fmt.Errorf("pkcs11: failed to %s: %v: %w", op, err, hsm.ErrInvalidInput)
	}
	parsed, err := x509.ParsePKIXPublicKey(publicKeyDER)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: failed to %s: the wrapping public key does not parse: %w", op, hsm.ErrInvalidInput)
	}
	pub, ok := parsed.(*rsa.PublicKey)
	if !ok || pub.N.BitLen() < minRSABits || pub.N.BitLen() > maxRSABits {
		return nil, fmt.Errorf("pkcs11: failed to %s: the wrapping public key is not an RSA key of %d to %d bits: %w", op, minRSABits, maxRSABits, hsm.ErrInvalidInput)
	}
	var out []byte
	err = t.do(ctx, op, func(a *attempt) error {
		w, err := t.object(op, wrappingKey)
		if err != nil {
			return err
		}
		obj, err := t.ctx.UnwrapKey(a.s, kwp, w, blob, targetTemplate(target, nil))
		if err != nil {
			if isAuthFailure(err) {
				return fmt.Errorf("pkcs11: failed to %s: %w", op, hsm.ErrAuthFailed)
			}
			return keyErr(op, err)
		}
		defer func() { _ = t.ctx.DestroyObject(a.s, obj) }()
		pk, err := t.ctx.CreateObject(a.s, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA),
			p11.NewAttribute(p11.CKA_TOKEN, false),
			p11.NewAttribute(p11.CKA_PRIVATE, false),
			p11.NewAttribute(p11.CKA_MODULUS, pub.N.Bytes()),
			p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, big.NewInt(int64(pub.E)).Bytes()),
			p11.NewAttribute(p11.CKA_WRAP, true),
			p11.NewAttribute(p11.CKA_ENCRYPT, false),
			p11.NewAttribute(p11.CKA_VERIFY, false),
		})
		if err != nil {
			return fmt.Errorf("pkcs11: failed to %s: failed to load the wrapping public key: %w", op, ckr(err))
		}
		defer func() { _ = t.ctx.DestroyObject(a.s, pk) }()
		if out, err = t.ctx.WrapKey(a.s, oaepSHA1, pk, obj); err != nil {
			return keyErr(op, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
