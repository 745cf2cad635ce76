package client

import (
	"context"

	"github.com/keyflow/keyflow/client/api"
)

// CreateAccessKey issues an access key of the AWS KMS API to a principal
// of the client's tenant. The reply carries the secret, shown this once.
// Tenant admins only.
func (c *Client) CreateAccessKey(ctx context.Context, principal string) (*api.AccessKey, error) {
	var out api.AccessKey
	return &out, c.Call(ctx, api.OpAccessKeyCreate, api.AccessKeyRequest{Principal: principal}, &out)
}

// ListAccessKeys lists the tenant's access keys (never their secrets).
func (c *Client) ListAccessKeys(ctx context.Context) (*api.ListAccessKeysReply, error) {
	var out api.ListAccessKeysReply
	return &out, c.Call(ctx, api.OpAccessKeyList, struct{}{}, &out)
}

// DisableAccessKey disables an access key at once.
func (c *Client) DisableAccessKey(ctx context.Context, id string) error {
	return c.Call(ctx, api.OpAccessKeyDisable, api.AccessKeyRequest{AccessKeyID: id}, nil)
}

// DeleteAccessKey deletes an access key.
func (c *Client) DeleteAccessKey(ctx context.Context, id string) error {
	return c.Call(ctx, api.OpAccessKeyDelete, api.AccessKeyRequest{AccessKeyID: id}, nil)
}
