package api

// Tags, descriptions and retirable grants (key admins; the AWS KMS API's
// TagResource, UntagResource, UpdateKeyDescription and
// ListRetirableGrants). The replies of tag, untag and setdescription are
// the key's KeyMetadata, whose Tags field lists the tags
// (ListResourceTags reads keys.describe).
//
//	kf.v1.<tenant>.keys.<op>    tag, untag, setdescription
//	kf.v1.<tenant>.grants.<op>  listretirable
const (
	OpKeyTag             = "keys.tag"
	OpKeyUntag           = "keys.untag"
	OpKeySetDescription  = "keys.setdescription"
	OpGrantListRetirable = "grants.listretirable"
)

// Tag is one tag of a key.
type Tag struct {
	TagKey   string `json:"tagKey"`
	TagValue string `json:"tagValue"`
}

// TagKeyRequest sets tags on a key; a tag key the key already has gets
// the new value.
type TagKeyRequest struct {
	KeyID string `json:"keyId"`
	Tags  []Tag  `json:"tags"`
}

// UntagKeyRequest removes tags from a key; tag keys it does not have are
// ignored.
type UntagKeyRequest struct {
	KeyID   string   `json:"keyId"`
	TagKeys []string `json:"tagKeys"`
}

// SetDescriptionRequest replaces a key's description.
type SetDescriptionRequest struct {
	KeyID       string `json:"keyId"`
	Description string `json:"description"`
}

// ListRetirableGrantsRequest names the retiring principal whose grants
// to list, across the tenant's keys; the reply is a ListGrantsReply.
type ListRetirableGrantsRequest struct {
	RetiringPrincipal string `json:"retiringPrincipal"`
}
