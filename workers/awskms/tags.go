package awskms

import (
	"context"
	"strings"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
)

// Tags, descriptions and grants created through this API: TagResource,
// UntagResource, ListResourceTags, UpdateKeyDescription, CreateGrant and
// ListRetirableGrants. Each is one keyflow operation (keys.tag,
// keys.untag, keys.describe, keys.setdescription, grants.create,
// grants.listretirable), so roles, key policies and the audit record are
// the NATS path's.

func tagsToAPI(in []tag) []api.Tag {
	if in == nil {
		return nil
	}
	out := make([]api.Tag, len(in))
	for i, t := range in {
		out[i] = api.Tag{TagKey: t.TagKey, TagValue: t.TagValue}
	}
	return out
}

func (s *Server) tagResource(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		KeyID string `json:"KeyId"`
		Tags  []tag  `json:"Tags"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	ref, err := s.ref(c, req.KeyID)
	if err != nil {
		return nil, err
	}
	_, err = s.call(ctx, c, api.OpKeyTag, api.TagKeyRequest{KeyID: ref, Tags: tagsToAPI(req.Tags)})
	return struct{}{}, err
}

func (s *Server) untagResource(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		KeyID   string   `json:"KeyId"`
		TagKeys []string `json:"TagKeys"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	ref, err := s.ref(c, req.KeyID)
	if err != nil {
		return nil, err
	}
	_, err = s.call(ctx, c, api.OpKeyUntag, api.UntagKeyRequest{KeyID: ref, TagKeys: req.TagKeys})
	return struct{}{}, err
}

func (s *Server) listResourceTags(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		pageReq
		KeyID string `json:"KeyId"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	m, err := s.describe(ctx, c, req.KeyID)
	if err != nil {
		return nil, err
	}
	all := make([]tag, len(m.Tags))
	for i, t := range m.Tags {
		all[i] = tag{TagKey: t.TagKey, TagValue: t.TagValue}
	}
	pg, next, more, err := page(req.pageReq, all)
	if err != nil {
		return nil, err
	}
	return map[string]any{"Tags": pg, "NextMarker": next, "Truncated": more}, nil
}

func (s *Server) updateKeyDescription(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		KeyID       string `json:"KeyId"`
		Description string `json:"Description"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	ref, err := s.ref(c, req.KeyID)
	if err != nil {
		return nil, err
	}
	_, err = s.call(ctx, c, api.OpKeySetDescription, api.SetDescriptionRequest{KeyID: ref, Description: req.Description})
	return struct{}{}, err
}

// principalName maps an AWS principal to a keyflow principal of the
// caller's tenant: a bare name, or an IAM user or role ARN
// (arn:aws:iam::ACCOUNT:user/NAME, :role/NAME) of the tenant's account.
func principalName(tenant, p string) (string, error) {
	if strings.HasSuffix(p, ".amazonaws.com") {
		return "", clientError("ValidationException", "AWS service principals (%s) have no keyflow identity; name a keyflow principal", truncate(p, 64))
	}
	if !strings.HasPrefix(p, "arn:") {
		return p, nil
	}
	parts := strings.SplitN(p, ":", 6)
	if len(parts) != 6 || parts[2] != "iam" || parts[4] != AccountID(tenant) {
		return "", clientError("ValidationException", "a grant principal is a keyflow principal name or an IAM user or role ARN of account %s", AccountID(tenant))
	}
	res := parts[5]
	for _, pre := range []string{"user/", "role/"} {
		if name, ok := strings.CutPrefix(res, pre); ok && name != "" && !strings.Contains(name, "/") {
			return name, nil
		}
	}
	return "", clientError("ValidationException", "a grant principal ARN names a user/NAME or role/NAME")
}

func (s *Server) createGrant(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		KeyID             string   `json:"KeyId"`
		GranteePrincipal  string   `json:"GranteePrincipal"`
		RetiringPrincipal string   `json:"RetiringPrincipal"`
		Operations        []string `json:"Operations"`
		Constraints       *struct {
			EncryptionContextEquals map[string]string `json:"EncryptionContextEquals"`
			EncryptionContextSubset map[string]string `json:"EncryptionContextSubset"`
		} `json:"Constraints"`
		GrantTokens []string `json:"GrantTokens"`
		Name        string   `json:"Name"`
		DryRun      bool     `json:"DryRun"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	if req.DryRun {
		return nil, clientError("UnsupportedOperationException", "keyflow does not support DryRun")
	}
	ref, err := s.ref(c, req.KeyID)
	if err != nil {
		return nil, err
	}
	grantee, err := principalName(c.Tenant, req.GranteePrincipal)
	if err != nil {
		return nil, err
	}
	retiring := ""
	if req.RetiringPrincipal != "" {
		if retiring, err = principalName(c.Tenant, req.RetiringPrincipal); err != nil {
			return nil, err
		}
	}
	r := api.CreateGrantRequest{KeyID: ref, Grantee: grantee, Operations: req.Operations, RetiringPrincipal: retiring}
	if req.Constraints != nil {
		r.Constraints = &api.GrantConstraints{
			EncryptionContextEquals: req.Constraints.EncryptionContextEquals,
			EncryptionContextSubset: req.Constraints.EncryptionContextSubset,
		}
	}
	g, err := callAs[api.Grant](s, ctx, c, api.OpGrantCreate, r)
	if err != nil {
		return nil, err
	}
	// keyflow grants take effect at once (no eventual consistency), so
	// the grant token is only the grant's ID, accepted and ignored later.
	return map[string]any{"GrantId": g.GrantID, "GrantToken": g.GrantID}, nil
}

func (s *Server) listRetirableGrants(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		pageReq
		RetiringPrincipal string `json:"RetiringPrincipal"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	name, err := principalName(c.Tenant, req.RetiringPrincipal)
	if err != nil {
		return nil, err
	}
	r, err := callAs[api.ListGrantsReply](s, ctx, c, api.OpGrantListRetirable, api.ListRetirableGrantsRequest{RetiringPrincipal: name})
	if err != nil {
		return nil, err
	}
	return s.grantPage(c, req.pageReq, r.Grants)
}
