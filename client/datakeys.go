package client

import (
	"context"

	"github.com/keyflow/keyflow/client/api"
)

// RegisterDataKey registers a wrapped data key, so keyflow keeps it
// current through rotations and migrations. Keep the registration ID with
// your data and fetch the current blob with GetDataKey.
func (c *Client) RegisterDataKey(ctx context.Context, r api.RegisterDataKeyRequest) (*api.DataKeyRegistration, error) {
	return call[api.DataKeyRegistration](ctx, c, api.OpDataKeyRegister, r)
}

// GetDataKey returns a registration with its current blob.
func (c *Client) GetDataKey(ctx context.Context, registrationID string) (*api.DataKeyRegistration, error) {
	return call[api.DataKeyRegistration](ctx, c, api.OpDataKeyGet, api.RegistrationRequest{RegistrationID: registrationID})
}

// ListDataKeys returns a page of a key's registrations.
func (c *Client) ListDataKeys(ctx context.Context, r api.ListDataKeysRequest) (*api.ListDataKeysReply, error) {
	return call[api.ListDataKeysReply](ctx, c, api.OpDataKeyList, r)
}

// DeregisterDataKey forgets a registration.
func (c *Client) DeregisterDataKey(ctx context.Context, registrationID string) error {
	_, err := call[api.RegistrationRequest](ctx, c, api.OpDataKeyDeregister, api.RegistrationRequest{RegistrationID: registrationID})
	return err
}

// Rewrap moves ciphertexts to the destination key's current primary
// version; one result per item.
func (c *Client) Rewrap(ctx context.Context, r api.RewrapRequest) (*api.BatchReply[api.ReEncryptReply], error) {
	return call[api.BatchReply[api.ReEncryptReply]](ctx, c, api.OpRewrap, r)
}
