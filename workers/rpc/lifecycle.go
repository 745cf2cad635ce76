package rpc

import (
	"context"
	"time"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
)

// Lifecycle runs a key's durable lifecycle machinery (the Temporal
// workflows and schedules, in production): timers, schedules, the deletion
// window. The domain decides and records; Lifecycle only keeps the timers
// in line with what the domain decided.
type Lifecycle interface {
	// KeyChanged brings the key's activation timer, cryptoperiod timer
	// and rotation schedule in line with its metadata.
	KeyChanged(ctx context.Context, c kms.Caller, k *kms.Key) error
	// ScheduleDeletion starts the deletion window of a key pending
	// deletion and returns its workflow ID.
	ScheduleDeletion(ctx context.Context, c kms.Caller, k *kms.Key) (string, error)
	// CancelDeletion stops the window early.
	CancelDeletion(ctx context.Context, c kms.Caller, keyID string) error
	// ScheduleRetirement starts the retirement window of a version
	// pending retirement and returns its workflow ID.
	ScheduleRetirement(ctx context.Context, c kms.Caller, keyID string, version uint32, date time.Time) (string, error)
	// CancelRetirement stops a version's retirement window early.
	CancelRetirement(ctx context.Context, c kms.Caller, keyID string, version uint32) error
	// RemediationWorkflowID names the remediation of a compromised
	// version, which the remediation worker starts from the audit event.
	RemediationWorkflowID(tenant, keyID string, version uint32) string
}

var errNoLifecycle = &kms.Error{Code: kms.CodeInternal, Message: "the lifecycle workflows are not available on this worker"}

// keyChanged tells Lifecycle about a new or changed key. A failure leaves
// the key as it is (its state and its refusals do not depend on the
// timers) and is reported, so the caller can retry with set-rotation.
func (s *Server) keyChanged(ctx context.Context, c kms.Caller, k *kms.Key) error {
	if s.cfg.Lifecycle == nil {
		return nil
	}
	if err := s.cfg.Lifecycle.KeyChanged(ctx, c, k); err != nil {
		s.cfg.Logger.Error("lifecycle timers not started", "key", k.ResourceName(), "err", err)
		return &kms.Error{Code: kms.CodeInternal, Message: "key " + k.ID + " is saved, but its lifecycle timers could not be started; retry with keys.setrotation"}
	}
	return nil
}

// StateFollower is the optional part of a Lifecycle that carries a key's
// state change (enable, disable, compromise, scheduled deletion and its
// cancellation) to the clouds the key is distributed to
// (workflows.Client.KeyStateChanged).
type StateFollower interface {
	KeyStateChanged(ctx context.Context, c kms.Caller, k *kms.Key) error
}

// stateChanged tells the Lifecycle, when it follows states, about a key
// whose state changed. A failure leaves the change made and is logged:
// the scheduled cloud reconcile finds what did not propagate.
func (s *Server) stateChanged(ctx context.Context, c kms.Caller, k *kms.Key) {
	f, ok := s.cfg.Lifecycle.(StateFollower)
	if !ok || k == nil {
		return
	}
	if err := f.KeyStateChanged(ctx, c, k); err != nil {
		s.cfg.Logger.Warn("key state not propagated to its clouds", "key", k.ResourceName(), "err", err)
	}
}

// rotated wakes the key's cryptoperiod timer for the new version.
func (s *Server) rotated(ctx context.Context, c kms.Caller, keyID string) {
	if s.cfg.Lifecycle == nil {
		return
	}
	if k, err := s.cfg.KMS.GetKey(ctx, c, keyID); err == nil {
		if err := s.cfg.Lifecycle.KeyChanged(ctx, c, k); err != nil {
			s.cfg.Logger.Warn("cryptoperiod timer not updated after rotation", "key", k.ResourceName(), "err", err)
		}
	}
}

func createLifecycle(p *kms.CreateKeyParams, req api.CreateKeyRequest) {
	if req.ActivationDate != nil {
		p.ActivationDate = *req.ActivationDate
	}
	p.RotationPeriod = time.Duration(req.RotationPeriodInDays) * kms.Day
	p.Cryptoperiod = time.Duration(req.CryptoperiodInDays) * kms.Day
	p.RewrapOnRotation = req.RewrapOnRotation
}

func lifecycleMetadata(m *api.KeyMetadata, k *kms.Key) {
	l := k.Lifecycle
	if !l.ActivationDate.IsZero() {
		t := l.ActivationDate
		m.ActivationDate = &t
	}
	m.RotationPeriodInDays = int(l.RotationPeriod / kms.Day)
	m.CryptoperiodInDays = int(l.Cryptoperiod / kms.Day)
	m.PendingDeletion = l.PendingDeletion
	m.RewrapOnRotation = l.RewrapOnRotation
	if l.PendingDeletion {
		t := l.DeletionDate
		m.DeletionDate = &t
	}
	for i, v := range k.Versions {
		if !v.DeactivationDate.IsZero() && i < len(m.Versions) {
			t := v.DeactivationDate
			m.Versions[i].DeactivationDate = &t
		}
		if !v.RetirementDate.IsZero() && i < len(m.Versions) {
			t := v.RetirementDate
			m.Versions[i].RetirementDate = &t
		}
	}
}

func (s *Server) setKeyState(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.SetKeyStateRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeySetState, err)
	}
	p := kms.SetStateParams{KeyRef: req.KeyID, Version: req.Version, To: kms.KeyState(req.State), Reason: req.Reason}
	if p.To == kms.StateSuspended { // AWS DisableKey: under dual control (gates.go)
		if err := s.gateDisable(ctx, c, p); err != nil {
			return nil, err
		}
	}
	res, err := s.cfg.KMS.SetState(ctx, c, p)
	if err != nil {
		return nil, err
	}
	s.stateChanged(ctx, c, res.Key)
	return api.SetKeyStateReply{Key: Metadata(res.Key), PreviousState: string(res.From), Transition: res.Transition}, nil
}

func (s *Server) scheduleDeletion(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.ScheduleDeletionRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyScheduleDeletion, err)
	}
	if s.cfg.Lifecycle == nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyScheduleDeletion, errNoLifecycle)
	}
	p := kms.ScheduleDeletionParams{KeyRef: req.KeyID, Window: time.Duration(req.PendingWindowInDays) * kms.Day, CancelOnUse: req.CancelOnUse}
	if err := s.gateDeletion(ctx, c, p); err != nil {
		return nil, err
	}
	k, err := s.cfg.KMS.ScheduleDeletion(ctx, c, p)
	if err != nil {
		return nil, err
	}
	id, err := s.cfg.Lifecycle.ScheduleDeletion(ctx, c, k)
	if err != nil {
		// Compensation: no timer, so no pending deletion (recorded as a
		// cancellation).
		s.cfg.Logger.Error("deletion workflow not started", "key", k.ResourceName(), "err", err)
		_, _ = s.cfg.KMS.CancelDeletion(context.WithoutCancel(ctx), c, k.ID)
		return nil, &kms.Error{Code: kms.CodeInternal, Message: "the deletion could not be scheduled; the key is unchanged"}
	}
	s.stateChanged(ctx, c, k)
	return api.ScheduleDeletionReply{KeyID: k.ID, KeyState: string(k.State), DeletionDate: k.Lifecycle.DeletionDate, WorkflowID: id}, nil
}

func (s *Server) cancelDeletion(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.KeyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyCancelDeletion, err)
	}
	k, err := s.cfg.KMS.CancelDeletion(ctx, c, req.KeyID)
	if err != nil {
		return nil, err
	}
	if s.cfg.Lifecycle != nil {
		// The metadata decides; a timer that was not stopped finds the
		// key no longer pending and destroys nothing.
		if err := s.cfg.Lifecycle.CancelDeletion(ctx, c, k.ID); err != nil {
			s.cfg.Logger.Warn("deletion timer not stopped", "key", k.ResourceName(), "err", err)
		}
	}
	s.stateChanged(ctx, c, k)
	return Metadata(k), nil
}

func (s *Server) compromise(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.CompromiseRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyCompromise, err)
	}
	res, err := s.cfg.KMS.Compromise(ctx, c, kms.CompromiseParams{KeyRef: req.KeyID, Version: req.Version, Reason: req.Reason})
	if err != nil {
		return nil, err
	}
	s.stateChanged(ctx, c, res.Key)
	version := res.Version
	out := api.CompromiseReply{KeyID: res.Key.ID, Version: version, PreviousState: string(res.From), Transition: res.Transition}
	if s.cfg.Lifecycle != nil {
		out.RemediationWorkflowID = s.cfg.Lifecycle.RemediationWorkflowID(c.Tenant, res.Key.ID, version)
	}
	return out, nil
}

func (s *Server) setRotation(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.SetRotationRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeySetRotation, err)
	}
	if s.cfg.Lifecycle == nil {
		return nil, s.rejectWith(ctx, c, api.OpKeySetRotation, errNoLifecycle)
	}
	period := time.Duration(req.RotationPeriodInDays) * kms.Day
	k, err := s.cfg.KMS.SetLifecyclePolicy(ctx, c, kms.SetPolicyParams{KeyRef: req.KeyID, RotationPeriod: &period, RewrapOnRotation: req.RewrapOnRotation})
	if err != nil {
		return nil, err
	}
	if err := s.keyChanged(ctx, c, k); err != nil {
		return nil, err
	}
	return Metadata(k), nil
}
