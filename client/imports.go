package client

import (
	"context"

	"github.com/keyflow/keyflow/client/api"
)

// GetParametersForImport returns a wrapping public key and an import token
// for an EXTERNAL key (BYOK).
func (c *Client) GetParametersForImport(ctx context.Context, r api.ImportParamsRequest) (*api.ImportParamsReply, error) {
	var out api.ImportParamsReply
	return &out, c.Call(ctx, api.OpKeyImportParams, r, &out)
}

// ImportKeyMaterial imports key material wrapped to the parameters'
// public key.
func (c *Client) ImportKeyMaterial(ctx context.Context, r api.ImportRequest) (*api.ImportReply, error) {
	var out api.ImportReply
	return &out, c.Call(ctx, api.OpKeyImport, r, &out)
}

// DeleteImportedKeyMaterial deletes a key's imported material now.
func (c *Client) DeleteImportedKeyMaterial(ctx context.Context, keyID string) (*api.KeyMetadata, error) {
	var out api.KeyMetadata
	return &out, c.Call(ctx, api.OpKeyDeleteImport, api.KeyRequest{KeyID: keyID}, &out)
}
