//go:build !cgo

package pkcs11

import (
	"context"
	"crypto"

	"github.com/keyflow/keyflow/hsm"
)

var _ hsm.KeyImporter = (*Token)(nil)

// LoadImportKey always fails without cgo.
func (t *Token) LoadImportKey(ctx context.Context, wrappingKey hsm.KeyHandle, blob []byte, spec hsm.KeyPairSpec) (hsm.KeyHandle, error) {
	return 0, errNoCgo
}

// ImportRSAOAEP always fails without cgo.
func (t *Token) ImportRSAOAEP(ctx context.Context, importKey hsm.KeyHandle, hash crypto.Hash, ciphertext []byte, target hsm.ImportTarget, wrappingKey hsm.KeyHandle) ([]byte, error) {
	return nil, errNoCgo
}

// ImportRSAAESKeyWrap always fails without cgo.
func (t *Token) ImportRSAAESKeyWrap(ctx context.Context, importKey hsm.KeyHandle, hash crypto.Hash, ciphertext []byte, target hsm.ImportTarget, wrappingKey hsm.KeyHandle) ([]byte, error) {
	return nil, errNoCgo
}

// ImportPlaintext always fails without cgo.
func (t *Token) ImportPlaintext(ctx context.Context, material []byte, target hsm.ImportTarget, wrappingKey hsm.KeyHandle) ([]byte, error) {
	return nil, errNoCgo
}

// ImportPrivateKeyRSAAESKeyWrap always fails without cgo.
func (t *Token) ImportPrivateKeyRSAAESKeyWrap(ctx context.Context, importKey hsm.KeyHandle, hash crypto.Hash, ciphertext []byte, spec hsm.KeyPairSpec, wrappingKey hsm.KeyHandle) (*hsm.WrappedKeyPair, error) {
	return nil, errNoCgo
}

// WrapForTransport always fails without cgo.
func (t *Token) WrapForTransport(ctx context.Context, wrappingKey hsm.KeyHandle, blob []byte, target hsm.ImportTarget, publicKeyDER []byte) ([]byte, error) {
	return nil, errNoCgo
}
