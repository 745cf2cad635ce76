package client

import (
	"context"

	"github.com/keyflow/keyflow/client/api"
)

// TagKey sets tags on a key (key admins); a tag key it already has gets
// the new value.
func (c *Client) TagKey(ctx context.Context, keyID string, tags []api.Tag) (*api.KeyMetadata, error) {
	var out api.KeyMetadata
	return &out, c.Call(ctx, api.OpKeyTag, api.TagKeyRequest{KeyID: keyID, Tags: tags}, &out)
}

// UntagKey removes tags from a key (key admins).
func (c *Client) UntagKey(ctx context.Context, keyID string, tagKeys []string) (*api.KeyMetadata, error) {
	var out api.KeyMetadata
	return &out, c.Call(ctx, api.OpKeyUntag, api.UntagKeyRequest{KeyID: keyID, TagKeys: tagKeys}, &out)
}

// SetDescription replaces a key's description (key admins).
func (c *Client) SetDescription(ctx context.Context, keyID, description string) (*api.KeyMetadata, error) {
	var out api.KeyMetadata
	return &out, c.Call(ctx, api.OpKeySetDescription, api.SetDescriptionRequest{KeyID: keyID, Description: description}, &out)
}

// ListRetirableGrants lists the grants, across the tenant's keys, that
// name principal as their retiring principal.
func (c *Client) ListRetirableGrants(ctx context.Context, principal string) (*api.ListGrantsReply, error) {
	var out api.ListGrantsReply
	return &out, c.Call(ctx, api.OpGrantListRetirable, api.ListRetirableGrantsRequest{RetiringPrincipal: principal}, &out)
}
