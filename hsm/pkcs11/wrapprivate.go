//go:build cgo

package pkcs11

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyflow/keyflow/hsm"
)

var _ hsm.PrivateKeyWrapper = (*Token)(nil)

// WrapPrivateKey implements hsm.PrivateKeyWrapper: the key becomes a
// temporary session object (sensitive, extractable only so that it can be
// wrapped once, as in GenerateWrappedKeyPair), is wrapped with AES-KWP
// under wrappingKey and destroyed. The public key is derived in Go from
// the parsed key.
func (t *Token) WrapPrivateKey(ctx context.Context, wrappingKey hsm.KeyHandle, pkcs8 []byte, spec hsm.KeyPairSpec) (*hsm.WrappedKeyPair, error) {
	const op = "wrap a private key"
	k, err := parseSpec(spec)
	if err != nil || k.isEd25519() {
		return nil, fmt.Errorf("pkcs11: failed to %s: RSA or EC key pairs only: %w", op, hsm.ErrInvalidInput)
	}
	key, err := x509.ParsePKCS8PrivateKey(pkcs8)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: failed to %s: not a PKCS#8 private key: %w", op, hsm.ErrInvalidInput)
	}
	switch key := key.(type) {
	case *rsa.PrivateKey:
		if !k.isRSA() || key.N.BitLen() != spec.RSABits {
			return nil, fmt.Errorf("pkcs11: failed to %s: the key is not of the spec: %w", op, hsm.ErrInvalidInput)
		}
	case *ecdsa.PrivateKey:
		if k.isRSA() || key.Curve != k.curve {
			return nil, fmt.Errorf("pkcs11: failed to %s: the key is not of the spec: %w", op, hsm.ErrInvalidInput)
		}
	default:
		return nil, fmt.Errorf("pkcs11: failed to %s: RSA or EC key pairs only: %w", op, hsm.ErrInvalidInput)
	}
	pub := key.(interface{ Public() crypto.PublicKey }).Public()
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: failed to %s: %w", op, err)
	}
	tmpl, err := privateObjectTemplate(op, key)
	if err != nil {
		return nil, err
	}
	defer clearTemplate(tmpl)
	for i, a := range tmpl {
		if a.Type == p11.CKA_EXTRACTABLE {
			tmpl[i] = p11.NewAttribute(p11.CKA_EXTRACTABLE, true)
		}
	}
	var blob []byte
	err = t.do(ctx, op, func(a *attempt) error {
		w, err := t.object(op, wrappingKey)
		if err != nil {
			return err
		}
		obj, err := t.ctx.CreateObject(a.s, tmpl)
		if err != nil {
			return fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
		}
		defer func() { _ = t.ctx.DestroyObject(a.s, obj) }()
		if blob, err = t.ctx.WrapKey(a.s, kwp, w, obj); err != nil {
			return keyErr(op, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &hsm.WrappedKeyPair{PublicKeyDER: spki, WrappedPrivate: blob}, nil
}
