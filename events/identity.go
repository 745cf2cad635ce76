package events

// Event types of identity and access: tenants, principals, key policies,
// grants, and every access an authorization rule denied.
const (
	// TypeAccessDenied records a request that an authorization rule
	// refused before the operation ran; data.rule names the rule
	// ("role:crypto-user required", "key-policy:statement S",
	// "condition:encryptionContext", "grant:none", "principal:disabled").
	TypeAccessDenied      = "io.keyflow.access.denied.v1"
	TypeKeyPolicyChanged  = "io.keyflow.key.policy.changed.v1"
	TypeKeyPolicyRead     = "io.keyflow.key.policy.read.v1"
	TypeGrantCreated      = "io.keyflow.grant.created.v1"
	TypeGrantListed       = "io.keyflow.grant.listed.v1"
	TypeGrantRetired      = "io.keyflow.grant.retired.v1"
	TypeGrantRevoked      = "io.keyflow.grant.revoked.v1"
	TypeTenantCreated     = "io.keyflow.tenant.created.v1"
	TypePrincipalCreated  = "io.keyflow.principal.created.v1"
	TypePrincipalListed   = "io.keyflow.principal.listed.v1"
	TypePrincipalDisabled = "io.keyflow.principal.disabled.v1"
	// Access keys: the SigV4 credentials of the AWS KMS API. Records
	// name the access key ID, never the secret.
	TypeAccessKeyCreated  = "io.keyflow.accesskey.created.v1"
	TypeAccessKeyListed   = "io.keyflow.accesskey.listed.v1"
	TypeAccessKeyDisabled = "io.keyflow.accesskey.disabled.v1"
	TypeAccessKeyDeleted  = "io.keyflow.accesskey.deleted.v1"
	// TypeKeyAliasChanged records an alias created, moved or deleted
	// after the key's creation (data.action).
	TypeKeyAliasChanged = "io.keyflow.key.alias.changed.v1"
	// TypeKeyTagsChanged records tags set on or removed from a key
	// (data.action tag|untag, data.tagKeys; never the values).
	TypeKeyTagsChanged = "io.keyflow.key.tags.changed.v1"
	// TypeKeyDescriptionChanged records a key's new description (its
	// length, not its text).
	TypeKeyDescriptionChanged = "io.keyflow.key.description.changed.v1"
	// TypeGrantListedRetirable records a listing of the grants a principal
	// may retire, across the tenant's keys.
	TypeGrantListedRetirable = "io.keyflow.grant.listed.retirable.v1"
)
