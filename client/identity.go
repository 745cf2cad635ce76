package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/keyflow/keyflow/client/api"
)

// SetKeyPolicy replaces a key's policy with the JSON document policy
// (schemas/policy/KeyPolicy.json). Key admins only.
func (c *Client) SetKeyPolicy(ctx context.Context, keyID string, policy []byte) (*api.KeyPolicyReply, error) {
	var out api.KeyPolicyReply
	return &out, c.Call(ctx, api.OpKeySetPolicy, api.SetKeyPolicyRequest{KeyID: keyID, Policy: json.RawMessage(policy)}, &out)
}

// GetKeyPolicy returns a key's policy (Default is set when it has none).
func (c *Client) GetKeyPolicy(ctx context.Context, keyID string) (*api.KeyPolicyReply, error) {
	var out api.KeyPolicyReply
	return &out, c.Call(ctx, api.OpKeyGetPolicy, api.KeyRequest{KeyID: keyID}, &out)
}

// CreateGrant gives a principal narrow use of a key. Key admins only.
func (c *Client) CreateGrant(ctx context.Context, r api.CreateGrantRequest) (*api.Grant, error) {
	var out api.Grant
	return &out, c.Call(ctx, api.OpGrantCreate, r, &out)
}

// ListGrants lists a key's live grants.
func (c *Client) ListGrants(ctx context.Context, keyID string) (*api.ListGrantsReply, error) {
	var out api.ListGrantsReply
	return &out, c.Call(ctx, api.OpGrantList, api.KeyRequest{KeyID: keyID}, &out)
}

// RetireGrant ends a grant (its grantee, retiring principal or a key admin).
func (c *Client) RetireGrant(ctx context.Context, keyID, grantID string) error {
	return c.Call(ctx, api.OpGrantRetire, api.GrantRequest{KeyID: keyID, GrantID: grantID}, nil)
}

// RevokeGrant ends a grant. Key admins only.
func (c *Client) RevokeGrant(ctx context.Context, keyID, grantID string) error {
	return c.Call(ctx, api.OpGrantRevoke, api.GrantRequest{KeyID: keyID, GrantID: grantID}, nil)
}

// newUserKey generates a principal's key pair here, so that its private
// key never travels: keyflow only signs a JWT for the public key.
func newUserKey() (nkeys.KeyPair, string, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, "", fmt.Errorf("failed to create a user key: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, "", fmt.Errorf("failed to create a user key: %w", err)
	}
	return kp, pub, nil
}

// credsFile combines the JWT keyflow issued with the local private key.
func credsFile(token string, kp nkeys.KeyPair) ([]byte, error) {
	seed, err := kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("failed to read the user key: %w", err)
	}
	defer clear(seed)
	return jwt.FormatUserConfig(token, seed)
}

// CreatePrincipal adds a principal with roles to the client's tenant and
// returns it with its creds file (keep it secret: it holds the private
// key). Tenant admins only.
func (c *Client) CreatePrincipal(ctx context.Context, name string, roles []string) (*api.Principal, []byte, error) {
	kp, pub, err := newUserKey()
	if err != nil {
		return nil, nil, err
	}
	var out api.CreatePrincipalReply
	if err := c.Call(ctx, api.OpPrincipalCreate, api.CreatePrincipalRequest{Name: name, Roles: roles, PublicKey: pub}, &out); err != nil {
		return nil, nil, err
	}
	creds, err := credsFile(out.JWT, kp)
	if err != nil {
		return nil, nil, err
	}
	return &out.Principal, creds, nil
}

// ListPrincipals lists the tenant's principals.
func (c *Client) ListPrincipals(ctx context.Context) (*api.ListPrincipalsReply, error) {
	var out api.ListPrincipalsReply
	return &out, c.Call(ctx, api.OpPrincipalList, struct{}{}, &out)
}

// DisablePrincipal disables a principal at once. Tenant admins only.
func (c *Client) DisablePrincipal(ctx context.Context, name string) error {
	return c.Call(ctx, api.OpPrincipalDisable, api.PrincipalRequest{Name: name}, nil)
}

// CreateTenantParams describe a new tenant.
type CreateTenantParams struct {
	Tenant                  string
	ForbiddenRoleSets       [][]string // nil: the default, [[key-admin crypto-user]]
	AllowAnyRoleCombination bool
	AdminName               string // default "admin"
}

// CreateTenant creates a tenant and returns it with its first tenant
// admin's creds file. Tenant admins of the platform tenant only.
func (c *Client) CreateTenant(ctx context.Context, p CreateTenantParams) (*api.CreateTenantReply, []byte, error) {
	kp, pub, err := newUserKey()
	if err != nil {
		return nil, nil, err
	}
	var out api.CreateTenantReply
	req := api.CreateTenantRequest{Tenant: p.Tenant, ForbiddenRoleSets: p.ForbiddenRoleSets, AllowAnyRoleCombination: p.AllowAnyRoleCombination, AdminName: p.AdminName, AdminPublicKey: pub}
	if err := c.Call(ctx, api.OpTenantCreate, req, &out); err != nil {
		return nil, nil, err
	}
	creds, err := credsFile(out.AdminJWT, kp)
	if err != nil {
		return nil, nil, err
	}
	return &out, creds, nil
}

// credsRefused turns the NATS server's refusal of a principal's creds
// (revoked when the principal was disabled, or not issued for this
// deployment) into a refusal with a stable code, rather than a transport
// failure.
func credsRefused(err error) *Error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, nats.ErrAuthRevoked), errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired):
		return &Error{Code: "AccessDeniedException", Message: "the NATS server refused these creds: the principal is disabled, or the creds are not for this deployment (" + err.Error() + ")"}
	}
	return nil
}
