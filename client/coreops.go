package client

import (
	"context"

	"github.com/keyflow/keyflow/client/api"
)

// call sends req on op and decodes the reply as T.
func call[T any](ctx context.Context, c *Client, op string, req any) (*T, error) {
	var out T
	if err := c.Call(ctx, op, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Sign signs a message or digest.
func (c *Client) Sign(ctx context.Context, r api.SignRequest) (*api.SignReply, error) {
	return call[api.SignReply](ctx, c, api.OpSign, r)
}

// Verify verifies a signature; an invalid one is an *Error with code
// KMSInvalidSignatureException.
func (c *Client) Verify(ctx context.Context, r api.VerifyRequest) (*api.VerifyReply, error) {
	return call[api.VerifyReply](ctx, c, api.OpVerify, r)
}

// GenerateMac computes an HMAC.
func (c *Client) GenerateMac(ctx context.Context, r api.MacRequest) (*api.MacReply, error) {
	return call[api.MacReply](ctx, c, api.OpGenerateMac, r)
}

// VerifyMac verifies an HMAC; an invalid one is an *Error with code
// KMSInvalidMacException.
func (c *Client) VerifyMac(ctx context.Context, r api.MacRequest) (*api.MacReply, error) {
	return call[api.MacReply](ctx, c, api.OpVerifyMac, r)
}

// GetPublicKey returns a public key as DER SubjectPublicKeyInfo.
func (c *Client) GetPublicKey(ctx context.Context, r api.PublicKeyRequest) (*api.PublicKeyReply, error) {
	return call[api.PublicKeyReply](ctx, c, api.OpGetPublicKey, r)
}

// GenerateRandom returns random bytes from the HSM.
func (c *Client) GenerateRandom(ctx context.Context, n int) (*api.RandomReply, error) {
	return call[api.RandomReply](ctx, c, api.OpRandom, api.RandomRequest{NumberOfBytes: n})
}

// ReEncrypt re-encrypts a ciphertext under another key (or the same key's
// primary version).
func (c *Client) ReEncrypt(ctx context.Context, r api.ReEncryptRequest) (*api.ReEncryptReply, error) {
	return call[api.ReEncryptReply](ctx, c, api.OpReEncrypt, r)
}

// GenerateDataKeyPair returns a data key pair.
func (c *Client) GenerateDataKeyPair(ctx context.Context, r api.DataKeyPairRequest) (*api.DataKeyPairReply, error) {
	return call[api.DataKeyPairReply](ctx, c, api.OpDataKeyPair, r)
}

// BatchEncrypt encrypts up to 1000 items in one request.
func (c *Client) BatchEncrypt(ctx context.Context, items []api.EncryptRequest) (*api.BatchReply[api.EncryptReply], error) {
	return call[api.BatchReply[api.EncryptReply]](ctx, c, api.OpBatchEncrypt, api.BatchEncryptRequest{Items: items})
}

// BatchDecrypt decrypts up to 1000 items in one request.
func (c *Client) BatchDecrypt(ctx context.Context, items []api.DecryptRequest) (*api.BatchReply[api.DecryptReply], error) {
	return call[api.BatchReply[api.DecryptReply]](ctx, c, api.OpBatchDecrypt, api.BatchDecryptRequest{Items: items})
}

// BatchGenerateDataKey generates up to 1000 data keys in one request.
func (c *Client) BatchGenerateDataKey(ctx context.Context, items []api.DataKeyRequest) (*api.BatchReply[api.DataKeyReply], error) {
	return call[api.BatchReply[api.DataKeyReply]](ctx, c, api.OpBatchDataKey, api.BatchDataKeyRequest{Items: items})
}

// Inventory returns the tenant's keys as crypto assets (r.Format "json")
// or a CycloneDX 1.6 CBOM (r.Format "cyclonedx").
func (c *Client) Inventory(ctx context.Context, r api.InventoryRequest) (*api.InventoryReply, error) {
	return call[api.InventoryReply](ctx, c, api.OpKeyInventory, r)
}
