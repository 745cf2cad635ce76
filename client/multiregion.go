package client

import (
	"context"

	"github.com/keyflow/keyflow/client/api"
)

// ReplicateKey adds a replica region to a multi-region primary key; the
// primary region's replication workflow then sends it every version
// (docs/multi-region.md).
func (c *Client) ReplicateKey(ctx context.Context, keyID, region string) (*api.KeyMetadata, error) {
	var out api.KeyMetadata
	return &out, c.Call(ctx, api.OpKeyReplicate, api.ReplicateKeyRequest{KeyID: keyID, Region: region}, &out)
}

// UpdatePrimaryRegion makes a replica region the key's primary.
func (c *Client) UpdatePrimaryRegion(ctx context.Context, keyID, region string) (*api.KeyMetadata, error) {
	var out api.KeyMetadata
	return &out, c.Call(ctx, api.OpKeyUpdatePrimaryRegion, api.ReplicateKeyRequest{KeyID: keyID, Region: region}, &out)
}
