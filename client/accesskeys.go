package client

import (
	"context"
	"slices"
	"strings"

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

// CreateAlias gives a key a new alias (with or without "alias/"): refused
// with AlreadyExistsException if the alias names a key, and with
// LimitExceededException if the key already has another alias (a keyflow
// key has at most one). Key admins. The reply is the key's metadata.
func (c *Client) CreateAlias(ctx context.Context, alias, keyID string) (*api.KeyMetadata, error) {
	return c.setAlias(ctx, api.SetAliasRequest{Alias: alias, KeyID: keyID, Create: true})
}

// UpdateAlias moves an existing alias to another key of the tenant
// (NotFoundException if there is no such alias). Key admins.
func (c *Client) UpdateAlias(ctx context.Context, alias, keyID string) (*api.KeyMetadata, error) {
	return c.setAlias(ctx, api.SetAliasRequest{Alias: alias, KeyID: keyID})
}

func (c *Client) setAlias(ctx context.Context, req api.SetAliasRequest) (*api.KeyMetadata, error) {
	var out api.KeyMetadata
	return &out, c.Call(ctx, api.OpKeySetAlias, req, &out)
}

// DeleteAlias removes an alias; its key keeps working by its ID. Key
// admins.
func (c *Client) DeleteAlias(ctx context.Context, alias string) error {
	return c.Call(ctx, api.OpKeyDeleteAlias, api.AliasRequest{Alias: alias}, nil)
}

// ListAliases lists the tenant's aliases and the keys they name, sorted by
// alias. It reads keys.list (a key has at most one alias), so it needs
// the caller's right to list keys.
func (c *Client) ListAliases(ctx context.Context) (*api.ListAliasesReply, error) {
	keys, err := c.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := &api.ListAliasesReply{Aliases: []api.AliasEntry{}}
	for _, k := range keys.Keys {
		if k.Alias != "" {
			out.Aliases = append(out.Aliases, api.AliasEntry{Alias: "alias/" + strings.TrimPrefix(k.Alias, "alias/"), KeyID: k.KeyID, Arn: k.Arn})
		}
	}
	slices.SortFunc(out.Aliases, func(a, b api.AliasEntry) int { return strings.Compare(a.Alias, b.Alias) })
	return out, nil
}
