package api

import "time"

// Access keys: the SigV4 credentials of the AWS KMS API (workers/awskms),
// issued to principals by tenant admins.
const (
	OpAccessKeyCreate  = "accesskeys.create"
	OpAccessKeyList    = "accesskeys.list"
	OpAccessKeyDisable = "accesskeys.disable"
	OpAccessKeyDelete  = "accesskeys.delete"
)

// AccessKeyRequest names a principal (create) or an access key (disable,
// delete).
type AccessKeyRequest struct {
	Principal   string `json:"principal,omitempty"`
	AccessKeyID string `json:"accessKeyId,omitempty"`
}

// AccessKey describes an access key. SecretAccessKey is set only in the
// reply of create, the one time it is shown.
type AccessKey struct {
	AccessKeyID     string     `json:"accessKeyId"`
	SecretAccessKey string     `json:"secretAccessKey,omitempty"`
	Tenant          string     `json:"tenant"`
	Principal       string     `json:"principal"`
	Roles           []string   `json:"roles"`
	CreatedAt       time.Time  `json:"createdAt"`
	CreatedBy       string     `json:"createdBy,omitempty"`
	DisabledAt      *time.Time `json:"disabledAt,omitempty"`
}

// ListAccessKeysReply lists the tenant's access keys.
type ListAccessKeysReply struct {
	AccessKeys []AccessKey `json:"accessKeys"`
}

// Aliases after a key's creation (the AWS KMS API's CreateAlias,
// UpdateAlias and DeleteAlias; key admins).
const (
	OpKeySetAlias    = "keys.setalias"
	OpKeyDeleteAlias = "keys.deletealias"
)

// SetAliasRequest points an alias at a key: a new alias with Create, an
// existing one otherwise. The reply is the key's KeyMetadata.
type SetAliasRequest struct {
	Alias  string `json:"alias"`
	KeyID  string `json:"keyId"`
	Create bool   `json:"create,omitempty"`
}

// AliasRequest names an alias (delete); the reply echoes it.
type AliasRequest struct {
	Alias string `json:"alias"`
}

// AliasEntry is one alias and the key it names. There is no list
// operation on the wire: a keyflow key carries at most one alias, so
// clients build the list from keys.list (client.ListAliases).
type AliasEntry struct {
	Alias string `json:"alias"`
	KeyID string `json:"keyId"`
	Arn   string `json:"arn"`
}

// ListAliasesReply lists the tenant's aliases, sorted by alias.
type ListAliasesReply struct {
	Aliases []AliasEntry `json:"aliases"`
}
