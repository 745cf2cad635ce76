//go:build !cgo

package pkcs11

import (
	"context"
	"crypto"
	"errors"

	"github.com/keyflow/keyflow/hsm"
)

var errNoCgo = errors.New("keyflow was built without cgo; the PKCS#11 backend needs cgo")

// Token is an open PKCS#11 token. In a build without cgo none can be
// opened; the type exists so that code using it still compiles.
type Token struct{}

var _ hsm.Backend = (*Token)(nil)

// Open always fails without cgo.
func Open(ctx context.Context, cfg Config) (*Token, error) { return nil, errNoCgo }

// InitToken always fails without cgo.
func InitToken(ctx context.Context, module, label, soPIN, userPIN string) error { return errNoCgo }

// Label returns "".
func (t *Token) Label() string { return "" }

// Close does nothing.
func (t *Token) Close() error { return nil }

func (t *Token) EncryptGCM(ctx context.Context, key hsm.KeyHandle, iv, plaintext, aad []byte) ([]byte, error) {
	return nil, errNoCgo
}

func (t *Token) DecryptGCM(ctx context.Context, key hsm.KeyHandle, iv, ciphertext, aad []byte) ([]byte, error) {
	return nil, errNoCgo
}

func (t *Token) GenerateWrappedAESKey(ctx context.Context, wrappingKey hsm.KeyHandle, size int) ([]byte, error) {
	return nil, errNoCgo
}

func (t *Token) UnwrapAESKey(ctx context.Context, wrappingKey hsm.KeyHandle, blob []byte) (hsm.KeyHandle, error) {
	return 0, errNoCgo
}

func (t *Token) UnwrapKEK(ctx context.Context, wrappingKey hsm.KeyHandle, blob []byte) (hsm.KeyHandle, error) {
	return 0, errNoCgo
}

func (t *Token) WrapKey(ctx context.Context, wrappingKey, key hsm.KeyHandle) ([]byte, error) {
	return nil, errNoCgo
}

func (t *Token) ImportAESKeyForTesting(ctx context.Context, raw []byte, extractable bool) (hsm.KeyHandle, error) {
	return 0, errNoCgo
}

func (t *Token) DestroyKey(ctx context.Context, key hsm.KeyHandle) error { return errNoCgo }

func (t *Token) EnsureRootKey(ctx context.Context, label string) (hsm.KeyHandle, error) {
	return 0, errNoCgo
}

func (t *Token) GenerateRandom(ctx context.Context, n int) ([]byte, error) { return nil, errNoCgo }

var (
	_ hsm.KeyPairs     = (*Token)(nil)
	_ hsm.Signer       = (*Token)(nil)
	_ hsm.RSAEncrypter = (*Token)(nil)
	_ hsm.MACs         = (*Token)(nil)
)

func (t *Token) GenerateWrappedKeyPair(ctx context.Context, wrappingKey hsm.KeyHandle, spec hsm.KeyPairSpec) (*hsm.WrappedKeyPair, error) {
	return nil, errNoCgo
}

func (t *Token) UnwrapPrivateKey(ctx context.Context, wrappingKey hsm.KeyHandle, blob []byte, spec hsm.KeyPairSpec) (hsm.KeyHandle, error) {
	return 0, errNoCgo
}

func (t *Token) ImportPublicKey(ctx context.Context, spkiDER []byte) (hsm.KeyHandle, error) {
	return 0, errNoCgo
}

func (t *Token) ImportPrivateKeyForTesting(ctx context.Context, key crypto.PrivateKey) (hsm.KeyHandle, error) {
	return 0, errNoCgo
}

func (t *Token) Sign(ctx context.Context, key hsm.KeyHandle, p hsm.SignParams, input []byte) ([]byte, error) {
	return nil, errNoCgo
}

func (t *Token) Verify(ctx context.Context, publicKey hsm.KeyHandle, p hsm.SignParams, input, signature []byte) error {
	return errNoCgo
}

func (t *Token) EncryptOAEP(ctx context.Context, publicKey hsm.KeyHandle, hash crypto.Hash, plaintext, label []byte) ([]byte, error) {
	return nil, errNoCgo
}

func (t *Token) DecryptOAEP(ctx context.Context, privateKey hsm.KeyHandle, hash crypto.Hash, ciphertext, label []byte) ([]byte, error) {
	return nil, errNoCgo
}

func (t *Token) GenerateWrappedSecret(ctx context.Context, wrappingKey hsm.KeyHandle, size int) ([]byte, error) {
	return nil, errNoCgo
}

func (t *Token) UnwrapHMACKey(ctx context.Context, wrappingKey hsm.KeyHandle, blob []byte) (hsm.KeyHandle, error) {
	return 0, errNoCgo
}

func (t *Token) HMACSHA256(ctx context.Context, key hsm.KeyHandle, data []byte) ([]byte, error) {
	return nil, errNoCgo
}

func (t *Token) ImportHMACKeyForTesting(ctx context.Context, raw []byte) (hsm.KeyHandle, error) {
	return 0, errNoCgo
}

// WrapSecret needs cgo.
func (t *Token) WrapSecret(ctx context.Context, wrappingKey hsm.KeyHandle, secret []byte) ([]byte, error) {
	return nil, errNoCgo
}

// UnwrapSecret needs cgo.
func (t *Token) UnwrapSecret(ctx context.Context, wrappingKey hsm.KeyHandle, blob []byte) ([]byte, error) {
	return nil, errNoCgo
}
