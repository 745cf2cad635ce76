package rpc

import (
	"context"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
)

// The access keys of the AWS KMS API (tenant admins; see kms/accesskeys.go).

func accessKeyToWire(k *kms.AccessKey) api.AccessKey {
	return api.AccessKey{AccessKeyID: k.ID, Tenant: k.Tenant, Principal: k.Principal, Roles: k.Roles,
		CreatedAt: k.CreatedAt, CreatedBy: k.CreatedBy, DisabledAt: k.DisabledAt}
}

func (s *Server) createAccessKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.AccessKeyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpAccessKeyCreate, err)
	}
	k, secret, err := s.cfg.KMS.CreateAccessKey(ctx, c, s.directory(), req.Principal)
	if err != nil {
		return nil, err
	}
	out := accessKeyToWire(k)
	out.SecretAccessKey = secret
	return out, nil
}

func (s *Server) listAccessKeys(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct{}
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpAccessKeyList, err)
	}
	ks, err := s.cfg.KMS.ListAccessKeys(ctx, c)
	if err != nil {
		return nil, err
	}
	out := api.ListAccessKeysReply{AccessKeys: make([]api.AccessKey, 0, len(ks))}
	for _, k := range ks {
		out.AccessKeys = append(out.AccessKeys, accessKeyToWire(k))
	}
	return out, nil
}

func (s *Server) disableAccessKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.AccessKeyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpAccessKeyDisable, err)
	}
	return req, s.cfg.KMS.DisableAccessKey(ctx, c, req.AccessKeyID)
}

func (s *Server) deleteAccessKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.AccessKeyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpAccessKeyDelete, err)
	}
	return req, s.cfg.KMS.DeleteAccessKey(ctx, c, req.AccessKeyID)
}

// Aliases after creation (kms/aliases.go), for the AWS KMS API's alias
// operations.

func (s *Server) setAlias(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.SetAliasRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeySetAlias, err)
	}
	k, err := s.cfg.KMS.SetAlias(ctx, c, kms.SetAliasParams{Alias: req.Alias, KeyRef: req.KeyID, Create: req.Create})
	if err != nil {
		return nil, err
	}
	return Metadata(k), nil
}

func (s *Server) deleteAlias(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.AliasRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyDeleteAlias, err)
	}
	return req, s.cfg.KMS.DeleteAlias(ctx, c, req.Alias)
}
