package rpc

import (
	"context"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
)

// Tags, descriptions and retirable grants (kms/tags.go, kms/grants.go),
// for the AWS KMS API's TagResource, UntagResource, UpdateKeyDescription
// and ListRetirableGrants and the CLI's `key tag|untag|update-description`.

func (s *Server) tagKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.TagKeyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyTag, err)
	}
	return keyReply(s.cfg.KMS.TagKey(ctx, c, kms.TagKeyParams{KeyRef: req.KeyID, Tags: tagsFromWire(req.Tags)}))
}

func (s *Server) untagKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.UntagKeyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyUntag, err)
	}
	return keyReply(s.cfg.KMS.UntagKey(ctx, c, kms.UntagKeyParams{KeyRef: req.KeyID, TagKeys: req.TagKeys}))
}

func (s *Server) setDescription(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.SetDescriptionRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeySetDescription, err)
	}
	return keyReply(s.cfg.KMS.SetDescription(ctx, c, req.KeyID, req.Description))
}

func (s *Server) listRetirableGrants(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.ListRetirableGrantsRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpGrantListRetirable, err)
	}
	return grantsReply(s.cfg.KMS.ListRetirableGrants(ctx, c, req.RetiringPrincipal))
}

// keyReply is a changed key's KeyMetadata.
func keyReply(k *kms.Key, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return Metadata(k), nil
}

func tagsFromWire(in []api.Tag) []kms.Tag {
	if in == nil {
		return nil
	}
	out := make([]kms.Tag, len(in))
	for i, t := range in {
		out[i] = kms.Tag{Key: t.TagKey, Value: t.TagValue}
	}
	return out
}

func tagsToWire(in []kms.Tag) []api.Tag {
	if len(in) == 0 {
		return nil
	}
	out := make([]api.Tag, len(in))
	for i, t := range in {
		out[i] = api.Tag{TagKey: t.Key, TagValue: t.Value}
	}
	return out
}
