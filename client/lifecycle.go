package client

import (
	"context"

	"github.com/keyflow/keyflow/client/api"
)

// SetKeyState moves a key (or one version) to another lifecycle state.
func (c *Client) SetKeyState(ctx context.Context, r api.SetKeyStateRequest) (*api.SetKeyStateReply, error) {
	var out api.SetKeyStateReply
	return &out, c.Call(ctx, api.OpKeySetState, r, &out)
}

// ScheduleDeletion puts a key into pending deletion.
func (c *Client) ScheduleDeletion(ctx context.Context, r api.ScheduleDeletionRequest) (*api.ScheduleDeletionReply, error) {
	var out api.ScheduleDeletionReply
	return &out, c.Call(ctx, api.OpKeyScheduleDeletion, r, &out)
}

// CancelDeletion ends a pending deletion.
func (c *Client) CancelDeletion(ctx context.Context, keyID string) (*api.KeyMetadata, error) {
	var out api.KeyMetadata
	return &out, c.Call(ctx, api.OpKeyCancelDeletion, api.KeyRequest{KeyID: keyID}, &out)
}

// Compromise records a compromise, which starts remediation.
func (c *Client) Compromise(ctx context.Context, r api.CompromiseRequest) (*api.CompromiseReply, error) {
	var out api.CompromiseReply
	return &out, c.Call(ctx, api.OpKeyCompromise, r, &out)
}

// SetRotation sets a key's automatic rotation period (0: off).
func (c *Client) SetRotation(ctx context.Context, r api.SetRotationRequest) (*api.KeyMetadata, error) {
	var out api.KeyMetadata
	return &out, c.Call(ctx, api.OpKeySetRotation, r, &out)
}
