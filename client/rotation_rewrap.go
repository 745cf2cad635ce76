package client

import (
	"context"

	"github.com/keyflow/keyflow/client/api"
)

// RotateKeyWith rotates a key and waits for the rotation; with r.Rewrap it
// then rewraps the key's registered data keys and reports the counts.
func (c *Client) RotateKeyWith(ctx context.Context, r api.RotateKeyRequest) (*api.RotateKeyReply, error) {
	return call[api.RotateKeyReply](ctx, c, api.OpKeyRotate, r)
}

// RewrapStatus reports the progress of the key's rewrap workflow.
func (c *Client) RewrapStatus(ctx context.Context, keyID string) (*api.RewrapStatusReply, error) {
	return call[api.RewrapStatusReply](ctx, c, api.OpKeyRewrapStatus, api.KeyRequest{KeyID: keyID})
}

// RetireVersion destroys an old version's material once no registered
// data key uses it.
func (c *Client) RetireVersion(ctx context.Context, r api.RetireVersionRequest) (*api.RetireVersionReply, error) {
	return call[api.RetireVersionReply](ctx, c, api.OpKeyRetireVersion, r)
}
