package client

import (
	"context"

	"github.com/keyflow/keyflow/client/api"
)

// Cloud distribution (docs/multi-cloud.md).

// AddCloudDestination registers (or replaces) a cloud destination; a
// tenant admin's act.
func (c *Client) AddCloudDestination(ctx context.Context, req api.CloudAddRequest) (*api.CloudDestination, error) {
	var out api.CloudDestination
	return &out, c.Call(ctx, api.OpCloudAdd, req, &out)
}

// ListCloudDestinations lists the tenant's destinations.
func (c *Client) ListCloudDestinations(ctx context.Context) (*api.CloudListReply, error) {
	var out api.CloudListReply
	return &out, c.Call(ctx, api.OpCloudList, struct{}{}, &out)
}

// CloudStatus reports the health and pending work of one destination
// (name), or of every one (name empty); probe asks each provider a cheap
// question first.
func (c *Client) CloudStatus(ctx context.Context, name string, probe bool) (*api.CloudStatusReply, error) {
	var out api.CloudStatusReply
	return &out, c.Call(ctx, api.OpCloudStatus, api.CloudStatusRequest{Name: name, Probe: probe}, &out)
}

// RemoveCloudDestination forgets a destination; refused
// (ConflictException) while keys are placed there.
func (c *Client) RemoveCloudDestination(ctx context.Context, name string) error {
	return c.Call(ctx, api.OpCloudRemove, api.CloudNameRequest{Name: name}, nil)
}

// DistributeKey puts a key into a destination through the provider's
// BYOK import; with wait, the reply comes when it is there (or the
// server's wait ran out: Running).
func (c *Client) DistributeKey(ctx context.Context, keyID, dest string, wait bool) (*api.CloudDistributeReply, error) {
	var out api.CloudDistributeReply
	return &out, c.Call(ctx, api.OpCloudDistribute, api.CloudDistributeRequest{KeyID: keyID, Destination: dest, Wait: wait}, &out)
}

// UndistributeKey takes a key out of a destination: the provider deletes
// its copy after the provider's own deletion window.
func (c *Client) UndistributeKey(ctx context.Context, keyID, dest string, wait bool) (*api.CloudDistributeReply, error) {
	var out api.CloudDistributeReply
	return &out, c.Call(ctx, api.OpCloudUndistribute, api.CloudDistributeRequest{KeyID: keyID, Destination: dest, Wait: wait}, &out)
}
