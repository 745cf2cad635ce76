package client

import (
	"context"

	"github.com/keyflow/keyflow/client/api"
)

// Seal HPKE-encrypts a plaintext to a KEY_ENCAPSULATION key (ML_KEM_768,
// ML_KEM_1024, X_WING). Anyone with the key's public key can do the same
// locally with crypto/hpke (HKDF-SHA256, AES-256-GCM, no additional data);
// only keyflow can open the result.
func (c *Client) Seal(ctx context.Context, r api.SealRequest) (*api.SealReply, error) {
	return call[api.SealReply](ctx, c, api.OpSeal, r)
}

// Open decrypts a payload sealed to a KEY_ENCAPSULATION key. Every failure
// is an *Error with code InvalidCiphertextException.
func (c *Client) Open(ctx context.Context, r api.OpenRequest) (*api.OpenReply, error) {
	return call[api.OpenReply](ctx, c, api.OpOpen, r)
}

// Encapsulate returns a fresh shared secret and its KEM ciphertext under a
// KEY_ENCAPSULATION key's primary version. Zero the secret when done.
func (c *Client) Encapsulate(ctx context.Context, keyID string) (*api.EncapsulateReply, error) {
	return call[api.EncapsulateReply](ctx, c, api.OpEncapsulate, api.EncapsulateRequest{KeyID: keyID})
}

// Decapsulate returns the shared secret of a KEM ciphertext. Zero it when
// done.
func (c *Client) Decapsulate(ctx context.Context, r api.DecapsulateRequest) (*api.DecapsulateReply, error) {
	return call[api.DecapsulateReply](ctx, c, api.OpDecapsulate, r)
}
