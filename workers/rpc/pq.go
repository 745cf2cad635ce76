package rpc

import (
	"context"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
)

// The post-quantum operations on KEY_ENCAPSULATION keys: HPKE seal and
// open, and raw KEM encapsulation and decapsulation. Signatures with ML-DSA
// and SLH-DSA keys go through sign and verify (coreops.go).

func (s *Server) seal(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.SealRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpSeal, err)
	}
	defer clear(req.Plaintext)
	res, err := s.cfg.KMS.Seal(ctx, c, kms.SealParams{KeyRef: req.KeyID, Plaintext: req.Plaintext, Info: req.Info})
	if err != nil {
		return nil, err
	}
	return api.SealReply{KeyID: res.KeyID, KeyVersion: res.KeyVersion, Sealed: res.Sealed}, nil
}

func (s *Server) open(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.OpenRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpOpen, err)
	}
	res, err := s.cfg.KMS.Open(ctx, c, kms.OpenParams{KeyRef: req.KeyID, Sealed: req.Sealed, Info: req.Info})
	if err != nil {
		return nil, err
	}
	return api.OpenReply{KeyID: res.KeyID, KeyVersion: res.KeyVersion, Plaintext: res.Plaintext}, nil
}

func (s *Server) encapsulate(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.EncapsulateRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpEncapsulate, err)
	}
	res, err := s.cfg.KMS.Encapsulate(ctx, c, req.KeyID)
	if err != nil {
		return nil, err
	}
	return api.EncapsulateReply{KeyID: res.KeyID, KeyVersion: res.KeyVersion, Ciphertext: res.Ciphertext, SharedSecret: res.SharedSecret}, nil
}

func (s *Server) decapsulate(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.DecapsulateRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpDecapsulate, err)
	}
	res, err := s.cfg.KMS.Decapsulate(ctx, c, kms.DecapsulateParams{KeyRef: req.KeyID, KeyVersion: req.KeyVersion, Ciphertext: req.Ciphertext})
	if err != nil {
		return nil, err
	}
	return api.DecapsulateReply{KeyID: res.KeyID, KeyVersion: res.KeyVersion, SharedSecret: res.SharedSecret}, nil
}
