package hsm

import "context"

// PrivateKeyWrapper takes a private key that keyflow holds in process
// memory — the key pair of an exportable key, made in Go so that its
// releasable copy exists (kms/export.go) — and wraps it under wrappingKey
// in exactly the blob format of WrappedKeyPair.WrappedPrivate, which
// KeyPairs.UnwrapPrivateKey loads. It is the key-pair counterpart of
// KeyImporter.ImportPlaintext; the caller zeroes pkcs8 afterwards.
//
// pkcs8 is the PKCS#8 DER of an RSA or EC key of spec; another kind,
// size or curve returns ErrInvalidInput (wrapped). Ed25519 is not taken.
type PrivateKeyWrapper interface {
	WrapPrivateKey(ctx context.Context, wrappingKey KeyHandle, pkcs8 []byte, spec KeyPairSpec) (*WrappedKeyPair, error)
}
