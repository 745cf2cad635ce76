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

// CancelReplicaDeletion cancels, on the primary, the scheduled deletion
// of a multi-region key's replica in region before its window ends; the
// replica becomes DISABLED (ReplicateKey enables it again).
func (c *Client) CancelReplicaDeletion(ctx context.Context, keyID, region string) (*api.KeyMetadata, error) {
	var out api.KeyMetadata
	return &out, c.Call(ctx, api.OpKeyCancelReplicaDeletion, api.ReplicateKeyRequest{KeyID: keyID, Region: region}, &out)
}

// ScheduleReplicaDeletion schedules the deletion of one replica region of
// a multi-region key, on its primary, after pendingDays (7 to 30).
func (c *Client) ScheduleReplicaDeletion(ctx context.Context, keyID, region string, pendingDays int) (*api.KeyMetadata, error) {
	var out api.KeyMetadata
	return &out, c.Call(ctx, api.OpKeyReplicaDeletion, api.ReplicaDeletionRequest{KeyID: keyID, Region: region, PendingWindowInDays: pendingDays}, &out)
}
