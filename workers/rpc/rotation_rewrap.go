package rpc

import (
	"context"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
)

// Rotation with rewrap, the rewrap's progress, and retirement of old
// versions (docs/lifecycle.md, "Rotation and rewrap"). The rotation and the
// rewrap run in Temporal; these handlers only pass the request on.

// RewrapRotator is a Rotator that can also rewrap the key's registered data
// keys after the rotation on request, and report the progress of the key's
// rewrap workflow. A Rotator without it rotates (rewrapping only when the
// key's policy asks) and answers keys.rewrapstatus with
// KMSInternalException.
type RewrapRotator interface {
	Rotator
	RotateAndRewrap(ctx context.Context, c kms.Caller, keyID string) (*RotateResult, error)
	RewrapProgress(ctx context.Context, c kms.Caller, keyID string) (*api.RewrapStatusReply, error)
}

var errNoRewrap = &kms.Error{Code: kms.CodeInternal, Message: "rotation with rewrap is not available on this worker"}

// runRotation runs the rotation, with a rewrap when asked for.
func (s *Server) runRotation(ctx context.Context, c kms.Caller, keyID string, rewrap bool) (*RotateResult, error) {
	if !rewrap {
		return s.cfg.Rotator.Rotate(ctx, c, keyID)
	}
	rr, ok := s.cfg.Rotator.(RewrapRotator)
	if !ok {
		return nil, errNoRewrap
	}
	return rr.RotateAndRewrap(ctx, c, keyID)
}

// rotateReply is keys.rotate's reply.
func rotateReply(res *RotateResult) api.RotateKeyReply {
	return api.RotateKeyReply{KeyID: res.KeyID, PreviousVersion: res.PreviousVersion, NewVersion: res.NewVersion, WorkflowID: res.WorkflowID, Rewrap: res.Rewrap, Running: res.Running}
}

func (s *Server) rewrapStatus(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.KeyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyRewrapStatus, err)
	}
	rr, ok := s.cfg.Rotator.(RewrapRotator)
	if !ok {
		return nil, s.rejectWith(ctx, c, api.OpKeyRewrapStatus, errNoRewrap)
	}
	// Resolving the reference is a describe of the key (audited as one).
	k, err := s.cfg.KMS.DescribeKey(ctx, c, req.KeyID)
	if err != nil {
		return nil, err
	}
	return rr.RewrapProgress(ctx, c, k.ID)
}

func (s *Server) retireVersion(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.RetireVersionRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyRetireVersion, err)
	}
	res, err := s.cfg.KMS.RetireVersion(ctx, c, kms.RetireVersionParams{KeyRef: req.KeyID, Version: req.Version})
	if err != nil {
		return nil, err
	}
	return api.RetireVersionReply{Key: Metadata(res.Key), Version: res.Version, PreviousState: string(res.From), State: string(res.State), Transition: res.Transition}, nil
}
