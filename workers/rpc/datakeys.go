package rpc

import (
	"context"
	"strconv"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
)

// The data-key registry and rewrap: each a decode, one domain call and an
// encode.

func registration(d *kms.DataKey) api.DataKeyRegistration {
	return api.DataKeyRegistration{
		RegistrationID: d.ID, KeyID: d.KeyID, KeyVersion: d.KeyVersion, EncryptionAlgorithm: string(d.Algorithm),
		CiphertextBlob: d.Ciphertext, EncryptionContext: d.Context, Label: d.Label,
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, Rewraps: d.Rewraps,
	}
}

func (s *Server) registerDataKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.RegisterDataKeyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpDataKeyRegister, err)
	}
	d, err := s.cfg.KMS.RegisterDataKey(ctx, c, kms.RegisterDataKeyParams{Ciphertext: req.CiphertextBlob, Context: req.EncryptionContext,
		KeyRef: req.KeyID, Algorithm: kms.EncryptionAlgorithm(req.EncryptionAlgorithm), Label: req.Label})
	if err != nil {
		return nil, err
	}
	return registration(d), nil
}

func (s *Server) getDataKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.RegistrationRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpDataKeyGet, err)
	}
	d, err := s.cfg.KMS.GetDataKey(ctx, c, req.RegistrationID)
	if err != nil {
		return nil, err
	}
	return registration(d), nil
}

func (s *Server) deregisterDataKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.RegistrationRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpDataKeyDeregister, err)
	}
	if err := s.cfg.KMS.DeregisterDataKey(ctx, c, req.RegistrationID); err != nil {
		return nil, err
	}
	return req, nil
}

func (s *Server) listDataKeys(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.ListDataKeysRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpDataKeyList, err)
	}
	page, err := s.cfg.KMS.ListDataKeys(ctx, c, kms.ListDataKeysParams{KeyRef: req.KeyID, Versions: req.Versions, After: req.Cursor, Limit: req.Limit})
	if err != nil {
		return nil, err
	}
	out := api.ListDataKeysReply{KeyID: page.KeyID, Registrations: make([]api.DataKeyRegistration, 0, len(page.DataKeys)), NextCursor: page.NextCursor, Counts: map[string]int{}}
	for _, d := range page.DataKeys {
		out.Registrations = append(out.Registrations, registration(d))
	}
	for v, n := range page.Counts {
		out.Counts[strconv.FormatUint(uint64(v), 10)] = n
	}
	return out, nil
}

func (s *Server) rewrap(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.RewrapRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpRewrap, err)
	}
	p := kms.RewrapParams{DestinationKeyRef: req.DestinationKeyID, Items: make([]kms.RewrapItem, len(req.Items))}
	for i, it := range req.Items {
		p.Items[i] = kms.RewrapItem{Ciphertext: it.CiphertextBlob, Context: it.EncryptionContext, KeyRef: it.KeyID, Algorithm: kms.EncryptionAlgorithm(it.EncryptionAlgorithm)}
	}
	res, err := s.cfg.KMS.Rewrap(ctx, c, p)
	if err != nil {
		return nil, err
	}
	out := api.BatchReply[api.ReEncryptReply]{Results: make([]api.BatchResult[api.ReEncryptReply], len(res))}
	for i, r := range res {
		if r.Err != nil {
			out.Results[i].Error = &api.ErrorBody{Code: string(kms.CodeOf(r.Err)), Message: kms.PublicMessage(r.Err)}
			continue
		}
		out.Results[i].Result = &api.ReEncryptReply{SourceKeyID: r.Result.SourceKeyID, SourceKeyVersion: r.Result.SourceKeyVersion,
			KeyID: r.Result.KeyID, KeyVersion: r.Result.KeyVersion, CiphertextBlob: r.Result.Ciphertext}
	}
	return out, nil
}
