package api

import (
	"encoding/json"
	"time"
)

// Operations of identity and access management.
//
//	kf.v1.<tenant>.keys.<op>        setpolicy, getpolicy
//	kf.v1.<tenant>.grants.<op>      create, list, retire, revoke
//	kf.v1.<tenant>.principals.<op>  create, list, disable
//	kf.v1.<tenant>.tenants.create   (platform tenant's tenant admins only)
const (
	OpKeySetPolicy     = "keys.setpolicy"
	OpKeyGetPolicy     = "keys.getpolicy"
	OpGrantCreate      = "grants.create"
	OpGrantList        = "grants.list"
	OpGrantRetire      = "grants.retire"
	OpGrantRevoke      = "grants.revoke"
	OpTenantCreate     = "tenants.create"
	OpPrincipalCreate  = "principals.create"
	OpPrincipalList    = "principals.list"
	OpPrincipalDisable = "principals.disable"
)

// SetKeyPolicyRequest replaces a key's policy with Policy, a document valid
// against schemas/policy/KeyPolicy.json.
type SetKeyPolicyRequest struct {
	KeyID  string          `json:"keyId"`
	Policy json.RawMessage `json:"policy"`
}

// KeyPolicyReply is a key's policy. Default is true, and Policy absent,
// when the key has none: then every principal whose roles allow an
// operation may perform it.
type KeyPolicyReply struct {
	KeyID   string          `json:"keyId"`
	Policy  json.RawMessage `json:"policy,omitempty"`
	Default bool            `json:"default,omitempty"`
}

// GrantConstraints narrow a grant; NotAfter is its expiry.
type GrantConstraints struct {
	EncryptionContextEquals map[string]string `json:"encryptionContextEquals,omitempty"`
	EncryptionContextSubset map[string]string `json:"encryptionContextSubset,omitempty"`
	SourcePrincipals        []string          `json:"sourcePrincipals,omitempty"`
	NotBefore               *time.Time        `json:"notBefore,omitempty"`
	NotAfter                *time.Time        `json:"notAfter,omitempty"`
}

// CreateGrantRequest gives Grantee (a principal of the caller's tenant)
// the Operations on KeyID.
type CreateGrantRequest struct {
	KeyID             string            `json:"keyId"`
	Grantee           string            `json:"grantee"`
	Operations        []string          `json:"operations"`
	Constraints       *GrantConstraints `json:"constraints,omitempty"`
	RetiringPrincipal string            `json:"retiringPrincipal,omitempty"`
}

// Grant is one live grant.
type Grant struct {
	GrantID           string            `json:"grantId"`
	KeyID             string            `json:"keyId"`
	Grantee           string            `json:"grantee"`
	Operations        []string          `json:"operations"`
	Constraints       *GrantConstraints `json:"constraints,omitempty"`
	RetiringPrincipal string            `json:"retiringPrincipal,omitempty"`
	CreationDate      time.Time         `json:"creationDate"`
	CreatedBy         string            `json:"createdBy"`
}

// ListGrantsReply lists a key's live grants.
type ListGrantsReply struct {
	Grants []Grant `json:"grants"`
}

// GrantRequest names one grant of one key (retire, revoke); the reply of
// those operations echoes it.
type GrantRequest struct {
	KeyID   string `json:"keyId"`
	GrantID string `json:"grantId"`
}

// CreateTenantRequest creates a tenant and its first tenant admin, whose
// user JWT is issued for AdminPublicKey (an NKEY user public key: the
// private key stays with the caller).
type CreateTenantRequest struct {
	Tenant string `json:"tenant"`
	// ForbiddenRoleSets are role combinations no principal of the tenant
	// may hold; absent means the default [[key-admin, crypto-user]].
	ForbiddenRoleSets [][]string `json:"forbiddenRoleSets,omitempty"`
	// AllowAnyRoleCombination sets an empty policy instead.
	AllowAnyRoleCombination bool   `json:"allowAnyRoleCombination,omitempty"`
	AdminName               string `json:"adminName,omitempty"`
	AdminPublicKey          string `json:"adminPublicKey"`
}

// CreateTenantReply is the new tenant and its admin's user JWT.
type CreateTenantReply struct {
	Tenant            string     `json:"tenant"`
	ForbiddenRoleSets [][]string `json:"forbiddenRoleSets"`
	Admin             string     `json:"admin"`
	AdminJWT          string     `json:"adminJwt"`
}

// CreatePrincipalRequest adds a principal to the caller's tenant.
type CreatePrincipalRequest struct {
	Name      string   `json:"name"`
	Roles     []string `json:"roles"`
	PublicKey string   `json:"publicKey"`
}

// Principal describes a principal (never its credentials).
type Principal struct {
	Name         string     `json:"name"`
	Roles        []string   `json:"roles"`
	CreationDate time.Time  `json:"creationDate"`
	CreatedBy    string     `json:"createdBy"`
	DisabledDate *time.Time `json:"disabledDate,omitempty"`
}

// CreatePrincipalReply is the new principal and its user JWT (to combine
// with the caller's private key into a creds file).
type CreatePrincipalReply struct {
	Principal Principal `json:"principal"`
	JWT       string    `json:"jwt"`
}

// ListPrincipalsReply lists the tenant's principals.
type ListPrincipalsReply struct {
	Principals []Principal `json:"principals"`
}

// PrincipalRequest names a principal (disable); the reply echoes it.
type PrincipalRequest struct {
	Name string `json:"name"`
}
