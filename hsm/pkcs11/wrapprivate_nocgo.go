//go:build !cgo

package pkcs11

import (
	"context"

	"github.com/keyflow/keyflow/hsm"
)

// WrapPrivateKey always fails without cgo.
func (t *Token) WrapPrivateKey(ctx context.Context, wrappingKey hsm.KeyHandle, pkcs8 []byte, spec hsm.KeyPairSpec) (*hsm.WrappedKeyPair, error) {
	return nil, errNoCgo
}
