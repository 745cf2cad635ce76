package rpc

import (
	"context"
	"time"

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

// retireVersion schedules a version's retirement (the kms decides, then
// the timer starts; with no timer the retirement is cancelled again, as
// scheduleDeletion does), destroys it at once (now, under dual control
// when the tenant policy lists retire-version-now), or cancels a pending
// retirement.
func (s *Server) retireVersion(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.RetireVersionRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyRetireVersion, err)
	}
	if (req.Now && req.Cancel) || (req.PendingWindowInDays != 0 && (req.Now || req.Cancel)) {
		return nil, s.rejectWith(ctx, c, api.OpKeyRetireVersion, &kms.Error{Code: kms.CodeValidation, Message: "now, cancel and pendingWindowInDays exclude each other"})
	}
	p := kms.RetireVersionParams{KeyRef: req.KeyID, Version: req.Version, Window: time.Duration(req.PendingWindowInDays) * kms.Day, Now: req.Now}
	switch {
	case req.Cancel:
		k, err := s.cfg.KMS.CancelRetirement(ctx, c, req.KeyID, req.Version)
		if err != nil {
			return nil, err
		}
		if s.cfg.Lifecycle != nil {
			// The metadata decides; a timer not stopped destroys nothing.
			if err := s.cfg.Lifecycle.CancelRetirement(ctx, c, k.ID, req.Version); err != nil {
				s.cfg.Logger.Warn("retirement timer not stopped", "key", k.ResourceName(), "version", req.Version, "err", err)
			}
		}
		v, _ := k.Version(req.Version)
		return api.RetireVersionReply{Key: Metadata(k), Version: req.Version, PreviousState: string(v.State), State: string(v.State)}, nil
	case req.Now:
		if s.cfg.KMS.NeedsApproval(ctx, c, kms.ApprovalRetireVersionNow) {
			target, err := s.cfg.KMS.PrepareRetireVersion(ctx, c, p)
			if err != nil {
				return nil, err
			}
			if err := s.approvalGate(ctx, c, kms.ApprovalRetireVersionNow, target); err != nil {
				return nil, err
			}
		}
	case s.cfg.Lifecycle == nil:
		return nil, s.rejectWith(ctx, c, api.OpKeyRetireVersion, &kms.Error{Code: kms.CodeUnsupportedOperation,
			Message: "a retirement window needs the lifecycle workflows, which this worker does not run; retire with now"})
	}
	res, err := s.cfg.KMS.RetireVersion(ctx, c, p)
	if err != nil {
		return nil, err
	}
	reply := api.RetireVersionReply{Key: Metadata(res.Key), Version: res.Version, PreviousState: string(res.From), State: string(res.State), Transition: res.Transition}
	if !res.RetirementDate.IsZero() {
		id, err := s.cfg.Lifecycle.ScheduleRetirement(ctx, c, res.Key.ID, res.Version, res.RetirementDate)
		if err != nil {
			s.cfg.Logger.Error("retirement workflow not started", "key", res.Key.ResourceName(), "version", res.Version, "err", err)
			_, _ = s.cfg.KMS.CancelRetirement(context.WithoutCancel(ctx), c, res.Key.ID, res.Version)
			return nil, &kms.Error{Code: kms.CodeInternal, Message: "the retirement could not be scheduled; the version is unchanged"}
		}
		t := res.RetirementDate
		reply.RetirementDate, reply.WorkflowID = &t, id
	}
	return reply, nil
}
