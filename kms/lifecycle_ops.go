package kms

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/keyflow/keyflow/events"
)

// MaterialDestroyer destroys copies of a key's material that keyflow keeps
// outside the store (archives, backups). Register one with
// Service.RegisterDestroyer; destruction calls every registered destroyer.
// DestroyMaterial must be idempotent: destroying what is already gone
// succeeds.
type MaterialDestroyer interface {
	// Name names the copies in the destruction record, e.g. "archive".
	Name() string
	DestroyMaterial(ctx context.Context, tenant, keyID string, versions []uint32) error
}

// RegisterDestroyer adds a destroyer run by every later destruction.
func (s *Service) RegisterDestroyer(d MaterialDestroyer) {
	s.destroyersMu.Lock()
	defer s.destroyersMu.Unlock()
	s.destroyers = append(s.destroyers, d)
}

// changeKey is the shape of a recorded change to one key of the caller's
// tenant: the caller is checked, ref resolved, pre (if any) checks the key
// as it is, change is applied under updateKey, and one record of typ is
// written with data and, once known, the key's resource name.
func (s *Service) changeKey(ctx context.Context, c Caller, typ, ref string, data map[string]any, pre func(cur *Key) error, change func(k *Key) (done bool, err error)) (k *Key, err error) {
	defer s.finish(ctx, c, typ, &err, func() (string, map[string]any) {
		if k != nil {
			return k.ResourceName(), data
		}
		return "", data
	}, func() { k = nil })
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	cur, _, err := s.resolve(ctx, c.Tenant, ref)
	if err != nil {
		return nil, err
	}
	if pre != nil {
		if err := pre(cur); err != nil {
			return nil, err
		}
	}
	return s.updateKey(ctx, c.Tenant, cur.ID, change)
}

// updateKey reads key keyID, applies change and stores the result with
// optimistic concurrency, retrying on conflicts. change returns done=true
// when there is nothing to store (idempotent no-op).
func (s *Service) updateKey(ctx context.Context, tenant, keyID string, change func(k *Key) (done bool, err error)) (*Key, error) {
	for attempt := 0; attempt < 5; attempt++ {
		k, rev, err := s.getKey(ctx, tenant, keyID)
		if err != nil {
			return nil, err
		}
		done, err := change(k)
		if err != nil || done {
			return k, err
		}
		if _, err := s.store.UpdateKey(ctx, k, rev); errors.Is(err, ErrStoreConflict) {
			continue
		} else if err != nil {
			return nil, wrapError(CodeInternal, err, "failed to store key")
		}
		s.Invalidate(tenant, keyID)
		return k, nil
	}
	return nil, newError(CodeConflict, "key %s is changing concurrently; retry", keyID)
}

// cryptoperiodOf is the originator-usage period of k's versions.
func cryptoperiodOf(k *Key) time.Duration {
	if k.Lifecycle.Cryptoperiod > 0 {
		return k.Lifecycle.Cryptoperiod
	}
	return DefaultCryptoperiod(k.Usage)
}

// SetStateParams are the inputs of SetState.
type SetStateParams struct {
	KeyRef string
	// Version is the version to change; 0 changes the key itself.
	Version uint32
	To      KeyState
	Reason  string
}

// SetStateResult reports the transition made.
type SetStateResult struct {
	Key        *Key
	Version    uint32 // the version changed; 0 for the key
	From       KeyState
	Transition string // "" when the key was already in the state
}

// SetState moves a key (or one version) to another state along one of the
// transitions of SP 800-57 (see Transitions). Destruction is not done here
// but by ScheduleDeletion and the destruction workflow, which destroy the
// material first. It is idempotent: asking for the current state changes
// nothing and succeeds. Moving to COMPROMISED records a compromise (see
// Compromise), which starts remediation.
func (s *Service) SetState(ctx context.Context, c Caller, p SetStateParams) (res *SetStateResult, err error) {
	keyID := ""
	typ := events.TypeKeyStateChanged
	if p.To == StateCompromised {
		typ = events.TypeKeyCompromised
	}
	defer s.finish(ctx, c, typ, &err, func() (string, map[string]any) {
		data := map[string]any{"keyId": keyID, "to": truncate(string(p.To), 64)}
		if keyID == "" {
			data["keyId"] = truncate(p.KeyRef, 64)
		}
		if p.Version != 0 {
			data["version"] = p.Version
		}
		if p.Reason != "" {
			data["reason"] = truncate(p.Reason, 256)
		}
		if res != nil {
			data["from"] = string(res.From)
			if res.Transition != "" {
				data["transition"] = res.Transition
			}
		}
		subject := ""
		if keyID != "" {
			subject = ResourceName(c.Tenant, keyID)
		}
		return subject, data
	}, func() {
		res = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if !ValidState(p.To) {
		return nil, newError(CodeValidation, "unknown state %q; states: %v", truncate(string(p.To), 64), States)
	}
	if p.To == StateDestroyed || p.To == StateDestroyedCompromised {
		return nil, newError(CodeValidation, "a key is destroyed by schedule-deletion, after its waiting period, not by a state change")
	}
	if len(p.Reason) > 1024 {
		return nil, newError(CodeValidation, "reason is longer than 1024 characters")
	}
	if p.To == StateCompromised && strings.TrimSpace(p.Reason) == "" {
		return nil, newError(CodeValidation, "a compromise needs a reason")
	}
	k0, _, err := s.resolve(ctx, c.Tenant, p.KeyRef)
	if err != nil {
		return nil, err
	}
	keyID = k0.ID
	res = &SetStateResult{Version: p.Version}
	now := s.now().UTC()
	k, err := s.updateKey(ctx, c.Tenant, keyID, func(k *Key) (bool, error) {
		if p.Version == 0 {
			res.From = k.State
		} else {
			v, ok := k.Version(p.Version)
			if !ok {
				return false, newError(CodeNotFound, "key %s has no version %d", k.ID, p.Version)
			}
			res.From = v.State
		}
		if res.From == p.To {
			return true, nil
		}
		// A key pending deletion changes state only to record a
		// compromise, which must never be refused.
		if k.Lifecycle.PendingDeletion && p.To != StateCompromised {
			return false, newError(CodeInvalidState, "key %s is pending deletion; cancel the deletion first", k.ID)
		}
		t, err := FindTransition(res.From, p.To)
		if err != nil {
			if p.Version != 0 {
				return false, newError(CodeInvalidState, "version %d of key %s: %s", p.Version, k.ID, PublicMessage(err))
			}
			return false, newError(CodeInvalidState, "key %s: %s", k.ID, PublicMessage(err))
		}
		res.Transition = t.Name
		if p.Version != 0 {
			setVersionState(k, p.Version, t.To)
			return false, nil
		}
		k.State = t.To
		k.Lifecycle.StateChangedAt = now
		if t.To == StateActive && res.From == StatePreActive {
			// T4 activates the key's pre-active versions with it; their
			// originator-usage period starts now.
			for i := range k.Versions {
				if k.Versions[i].State == StatePreActive {
					k.Versions[i].State = StateActive
					k.Versions[i].DeactivationDate = now.Add(cryptoperiodOf(k))
				}
			}
		}
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	res.Key = k
	return res, nil
}

func setVersionState(k *Key, n uint32, to KeyState) {
	for i := range k.Versions {
		if k.Versions[i].Number == n {
			k.Versions[i].State = to
		}
	}
}

// CompromiseParams are the inputs of Compromise.
type CompromiseParams struct {
	KeyRef string
	// Version is the compromised version; 0 means the primary version
	// (the material in use).
	Version uint32
	Reason  string
}

// Compromise records that a version's material is compromised. The
// version moves to COMPROMISED (T3, T6, T10, T14; a destroyed version to
// DESTROYED_COMPROMISED), and the io.keyflow.key.compromised.v1 event it
// records starts the remediation workflow (workers/remediation). The key
// itself keeps its state, so remediation can rotate it to fresh material.
func (s *Service) Compromise(ctx context.Context, c Caller, p CompromiseParams) (*SetStateResult, error) {
	if p.Version == 0 && checkCaller(c) == nil {
		if k, _, err := s.resolve(ctx, c.Tenant, p.KeyRef); err == nil {
			p.Version = k.PrimaryVersion
		}
	}
	if p.Version == 0 {
		// Let SetState record the refusal (unknown key, bad caller).
		return s.SetState(ctx, c, SetStateParams{KeyRef: p.KeyRef, Version: 0, To: StateCompromised, Reason: p.Reason})
	}
	return s.SetState(ctx, c, SetStateParams{KeyRef: p.KeyRef, Version: p.Version, To: StateCompromised, Reason: p.Reason})
}

// ScheduleDeletionParams are the inputs of ScheduleDeletion.
type ScheduleDeletionParams struct {
	KeyRef string
	// Window is the waiting period, 7 to 30 days (default 30).
	Window time.Duration
	// CancelOnUse cancels the deletion if anyone tries to use the key
	// while it is pending (the attempt is refused either way).
	CancelOnUse bool
}

// ScheduleDeletion puts a key into pending deletion: from now on every use
// is refused and recorded, and when the window ends the destruction
// workflow destroys every copy of its material. The transport starts that
// workflow with the returned key's DeletionDate.
func (s *Service) ScheduleDeletion(ctx context.Context, c Caller, p ScheduleDeletionParams) (k *Key, err error) {
	keyID := ""
	defer s.finish(ctx, c, events.TypeKeyDeletionScheduled, &err, func() (string, map[string]any) {
		data := map[string]any{"keyId": keyID, "windowDays": int(p.Window / Day), "cancelOnUse": p.CancelOnUse}
		if keyID == "" {
			data["keyId"] = truncate(p.KeyRef, 64)
			return "", data
		}
		if k != nil {
			data["deletionDate"] = k.Lifecycle.DeletionDate.Format(time.RFC3339)
		}
		return ResourceName(c.Tenant, keyID), data
	}, func() {
		k = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	// The window's range and the tenant policy's minimum (dualcontrol.go).
	w, err := s.checkDeletionWindow(ctx, c.Tenant, p.Window)
	if err != nil {
		return nil, err
	}
	p.Window = w
	k0, _, err := s.resolve(ctx, c.Tenant, p.KeyRef)
	if err != nil {
		return nil, err
	}
	keyID = k0.ID
	now := s.now().UTC()
	return s.updateKey(ctx, c.Tenant, keyID, func(k *Key) (bool, error) {
		if err := s.refuseDeletion(k); err != nil {
			return false, err
		}
		if k.State == StateDestroyed || k.State == StateDestroyedCompromised {
			return false, newError(CodeInvalidState, "key %s is %s already", k.ID, k.State)
		}
		k.Lifecycle.PendingDeletion = true
		k.Lifecycle.DeletionDate = now.Add(p.Window).Truncate(time.Second)
		k.Lifecycle.CancelDeletionOnUse = p.CancelOnUse
		return false, nil
	})
}

// CancelDeletion ends a pending deletion before its date; the key returns
// to its state (which pending deletion did not change).
func (s *Service) CancelDeletion(ctx context.Context, c Caller, ref string) (k *Key, err error) {
	keyID := ""
	defer s.finish(ctx, c, events.TypeKeyDeletionCancelled, &err, func() (string, map[string]any) {
		if keyID == "" {
			return "", map[string]any{"keyId": truncate(ref, 64), "reason": "requested"}
		}
		return ResourceName(c.Tenant, keyID), map[string]any{"keyId": keyID, "reason": "requested"}
	}, func() {
		k = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	k0, _, err := s.resolve(ctx, c.Tenant, ref)
	if err != nil {
		return nil, err
	}
	keyID = k0.ID
	now := s.now()
	return s.updateKey(ctx, c.Tenant, keyID, func(k *Key) (bool, error) {
		if err := s.refuseReplicaDeletionHere(k); err != nil {
			return false, err
		}
		return false, cancelPending(k, now)
	})
}

func cancelPending(k *Key, now time.Time) error {
	if !k.Lifecycle.PendingDeletion {
		return newError(CodeInvalidState, "key %s is %s and not pending deletion", k.ID, k.State)
	}
	if !now.Before(k.Lifecycle.DeletionDate) {
		return newError(CodeInvalidState, "key %s reached its deletion date (%s); destruction is under way", k.ID, k.Lifecycle.DeletionDate.Format(time.RFC3339))
	}
	k.Lifecycle.PendingDeletion = false
	k.Lifecycle.DeletionDate = time.Time{}
	k.Lifecycle.CancelDeletionOnUse = false
	return nil
}

// refusedWhilePendingDeletion records an attempt to use a key pending
// deletion (deletion safety) and, if the key's policy says so, cancels the
// deletion. finish calls it for every operation refused for that reason.
func (s *Service) refusedWhilePendingDeletion(ctx context.Context, c Caller, opType, subject string) {
	_, keyID, ok := strings.Cut(subject, ":key/")
	if !ok || !ValidKeyID(keyID) {
		return
	}
	cancelled := false
	k, _, err := s.getKey(ctx, c.Tenant, keyID)
	if err == nil && k.Lifecycle.CancelDeletionOnUse {
		now := s.now()
		_, err := s.updateKey(ctx, c.Tenant, keyID, func(k *Key) (bool, error) {
			if !k.Lifecycle.PendingDeletion {
				return true, nil
			}
			return false, cancelPending(k, now)
		})
		if err == nil {
			cancelled = true
			_ = s.emit(ctx, c, events.TypeKeyDeletionCancelled, subject, map[string]any{"keyId": keyID, "reason": "use-attempted"}, nil)
		}
	}
	// The attempt itself is a success of the safety net, recorded as a
	// denial so that alerting on denied outcomes catches it.
	_ = s.emit(ctx, c, events.TypeKeyUseRefused, subject, map[string]any{"keyId": keyID, "operation": opType, "cancelledDeletion": cancelled},
		newError(CodeInvalidState, "key is pending deletion"))
}

// DestroyParams are the inputs of the destruction steps.
type DestroyParams struct {
	KeyID string
	// DeletionDate is the date the deletion was scheduled for; a key
	// whose pending deletion was cancelled (or rescheduled) since is left
	// alone.
	DeletionDate time.Time
}

// DestroyResult reports what a destruction step did.
type DestroyResult struct {
	// Cancelled is true when the key is no longer pending deletion for
	// DeletionDate: nothing was destroyed.
	Cancelled bool
	Versions  []uint32
	Copies    []string
	State     KeyState
}

// destroyable checks that k is (still) due for destruction.
func destroyable(k *Key, p DestroyParams, now time.Time) (bool, error) {
	if k.State == StateDestroyed || k.State == StateDestroyedCompromised {
		return true, nil
	}
	if !k.Lifecycle.PendingDeletion || !k.Lifecycle.DeletionDate.Equal(p.DeletionDate) {
		return false, nil
	}
	if now.Before(k.Lifecycle.DeletionDate) {
		return false, newError(CodeInvalidState, "key %s is not due for destruction before %s", k.ID, k.Lifecycle.DeletionDate.Format(time.RFC3339))
	}
	return true, nil
}

// DestroyMaterial destroys every copy of a key's material that keyflow
// holds: the HSM session objects loaded from it (on this worker; other
// workers drop theirs on the key change that MarkDestroyed makes), the
// wrapped blobs in the store, and whatever the registered destroyers keep
// (archives, backups). It is the first destruction step and idempotent.
func (s *Service) DestroyMaterial(ctx context.Context, c Caller, p DestroyParams) (res *DestroyResult, err error) {
	defer s.finish(ctx, c, events.TypeKeyMaterialDestroyed, &err, func() (string, map[string]any) {
		data := map[string]any{"keyId": p.KeyID}
		if res != nil {
			data["cancelled"] = res.Cancelled
			data["versions"] = res.Versions
			data["copies"] = res.Copies
		}
		return ResourceName(c.Tenant, p.KeyID), data
	}, func() {
		res = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if !ValidKeyID(p.KeyID) {
		return nil, newError(CodeValidation, "%q is not a key ID", truncate(p.KeyID, 64))
	}
	k, _, err := s.getKey(ctx, c.Tenant, p.KeyID)
	if err != nil {
		return nil, err
	}
	due, err := destroyable(k, p, s.now())
	if err != nil {
		return nil, err
	}
	if !due {
		return &DestroyResult{Cancelled: true, Versions: []uint32{}, Copies: []string{}, State: k.State}, nil
	}
	res = &DestroyResult{State: k.State, Versions: []uint32{}, Copies: []string{"hsm-session-objects"}}
	for _, v := range k.Versions {
		res.Versions = append(res.Versions, v.Number)
	}
	s.Invalidate(c.Tenant, k.ID)
	if del, ok := s.store.(MaterialDeleter); ok {
		for _, v := range res.Versions {
			if err := del.DeleteMaterial(ctx, c.Tenant, k.ID, v); err != nil {
				return nil, wrapError(CodeInternal, err, "failed to delete the wrapped material of version %d", v)
			}
		}
		res.Copies = append(res.Copies, "store")
	}
	s.destroyersMu.Lock()
	ds := append([]MaterialDestroyer(nil), s.destroyers...)
	s.destroyersMu.Unlock()
	for _, d := range ds {
		if err := d.DestroyMaterial(ctx, c.Tenant, k.ID, res.Versions); err != nil {
			return nil, wrapError(CodeInternal, err, "failed to destroy the %s copies", d.Name())
		}
		res.Copies = append(res.Copies, d.Name())
	}
	return res, nil
}

// MarkDestroyed records the destruction in the key's metadata: the key and
// every version move to DESTROYED (T2, T5, T9, T13, T15) or, if
// compromised, DESTROYED_COMPROMISED (K1). The metadata stays. It is the
// last destruction step and idempotent.
func (s *Service) MarkDestroyed(ctx context.Context, c Caller, p DestroyParams) (res *DestroyResult, err error) {
	defer s.finish(ctx, c, events.TypeKeyDestroyed, &err, func() (string, map[string]any) {
		data := map[string]any{"keyId": p.KeyID}
		if res != nil {
			data["cancelled"] = res.Cancelled
			data["state"] = string(res.State)
			data["versions"] = res.Versions
		}
		return ResourceName(c.Tenant, p.KeyID), data
	}, func() {
		res = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if !ValidKeyID(p.KeyID) {
		return nil, newError(CodeValidation, "%q is not a key ID", truncate(p.KeyID, 64))
	}
	now := s.now().UTC()
	res = &DestroyResult{Versions: []uint32{}, Copies: []string{}}
	k, err := s.updateKey(ctx, c.Tenant, p.KeyID, func(k *Key) (bool, error) {
		due, err := destroyable(k, p, now)
		if err != nil {
			return false, err
		}
		if !due {
			res.Cancelled = true
			return true, nil
		}
		res.Versions = res.Versions[:0]
		for _, v := range k.Versions {
			res.Versions = append(res.Versions, v.Number)
		}
		if k.State == StateDestroyed || k.State == StateDestroyedCompromised {
			return true, nil
		}
		for i := range k.Versions {
			k.Versions[i].State = destroyedState(k.Versions[i].State)
		}
		k.State = destroyedState(k.State)
		k.Lifecycle.PendingDeletion = false
		k.Lifecycle.DestroyedAt = now
		k.Lifecycle.StateChangedAt = now
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	res.State = k.State
	return res, nil
}

func destroyedState(s KeyState) KeyState {
	switch s {
	case StateCompromised, StateDestroyedCompromised:
		return StateDestroyedCompromised
	default:
		return StateDestroyed
	}
}

// SetPolicyParams are the inputs of SetLifecyclePolicy; nil leaves a
// setting as it is.
type SetPolicyParams struct {
	KeyRef         string
	RotationPeriod *time.Duration // 0 turns automatic rotation off
	Cryptoperiod   *time.Duration // applies to versions created from now on
	// RewrapOnRotation: rotations rewrap the registered data keys.
	RewrapOnRotation *bool
}

// SetLifecyclePolicy changes a key's automatic rotation period and
// cryptoperiod. The transport then creates, updates or deletes the key's
// rotation schedule.
func (s *Service) SetLifecyclePolicy(ctx context.Context, c Caller, p SetPolicyParams) (k *Key, err error) {
	keyID := ""
	defer s.finish(ctx, c, events.TypeKeyLifecycleChanged, &err, func() (string, map[string]any) {
		data := map[string]any{"keyId": keyID}
		if keyID == "" {
			data["keyId"] = truncate(p.KeyRef, 64)
		}
		if p.RotationPeriod != nil {
			data["rotationPeriodDays"] = int(*p.RotationPeriod / Day)
		}
		if p.Cryptoperiod != nil {
			data["cryptoperiodDays"] = int(*p.Cryptoperiod / Day)
		}
		if p.RewrapOnRotation != nil {
			data["rewrapOnRotation"] = *p.RewrapOnRotation
		}
		subject := ""
		if keyID != "" {
			subject = ResourceName(c.Tenant, keyID)
		}
		return subject, data
	}, func() {
		k = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if p.RotationPeriod != nil {
		if err := checkPeriod("the rotation period", *p.RotationPeriod, MinRotationPeriod, MaxRotationPeriod); err != nil {
			return nil, err
		}
	}
	if p.Cryptoperiod != nil {
		if err := checkPeriod("the cryptoperiod", *p.Cryptoperiod, MinRotationPeriod, MaxRotationPeriod); err != nil {
			return nil, err
		}
	}
	k0, _, err := s.resolve(ctx, c.Tenant, p.KeyRef)
	if err != nil {
		return nil, err
	}
	keyID = k0.ID
	return s.updateKey(ctx, c.Tenant, keyID, func(k *Key) (bool, error) {
		if err := permitKey(k, UseDescribe); err != nil {
			return false, err
		}
		if k.State == StateDestroyed || k.State == StateDestroyedCompromised {
			return false, newError(CodeInvalidState, "key %s is %s", k.ID, k.State)
		}
		if p.RotationPeriod != nil {
			k.Lifecycle.RotationPeriod = *p.RotationPeriod
		}
		if p.Cryptoperiod != nil {
			k.Lifecycle.Cryptoperiod = *p.Cryptoperiod
		}
		if p.RewrapOnRotation != nil {
			k.Lifecycle.RewrapOnRotation = *p.RewrapOnRotation
		}
		return false, nil
	})
}

// CryptoperiodCheck reports what DeactivateExpiredVersions did and when it
// should run next.
type CryptoperiodCheck struct {
	Deactivated []uint32
	// Next is the earliest originator-usage end of an active version;
	// zero when there is none.
	Next time.Time
	// Final is true when the key is destroyed: nothing will ever expire.
	Final bool
}

// DeactivateExpiredVersions moves every ACTIVE version whose
// originator-usage period has ended to DEACTIVATED (T8), one
// io.keyflow.key.state.changed.v1 record each. The cryptoperiod workflow
// calls it at each deadline; it is idempotent.
func (s *Service) DeactivateExpiredVersions(ctx context.Context, c Caller, keyID string) (*CryptoperiodCheck, error) {
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	now := s.now()
	out := &CryptoperiodCheck{}
	k, err := s.updateKey(ctx, c.Tenant, keyID, func(k *Key) (bool, error) {
		out.Deactivated = out.Deactivated[:0]
		for i := range k.Versions {
			v := &k.Versions[i]
			if v.State == StateActive && !v.DeactivationDate.IsZero() && !now.Before(v.DeactivationDate) {
				v.State = StateDeactivated
				out.Deactivated = append(out.Deactivated, v.Number)
			}
		}
		return len(out.Deactivated) == 0, nil
	})
	if err != nil {
		return nil, err
	}
	for _, n := range out.Deactivated {
		vc := c
		if c.IdempotencyKey != "" {
			vc.IdempotencyKey = c.IdempotencyKey + "/v" + itoa(n)
		}
		if err := s.emit(ctx, vc, events.TypeKeyStateChanged, k.ResourceName(), map[string]any{
			"keyId": k.ID, "version": n, "from": string(StateActive), "to": string(StateDeactivated), "transition": "T8",
			"reason": "originator-usage period (cryptoperiod) ended",
		}, nil); err != nil {
			return nil, err
		}
	}
	out.Final = k.State == StateDestroyed || k.State == StateDestroyedCompromised
	for _, v := range k.Versions {
		if v.State == StateActive && !v.DeactivationDate.IsZero() && (out.Next.IsZero() || v.DeactivationDate.Before(out.Next)) {
			out.Next = v.DeactivationDate
		}
	}
	return out, nil
}

func itoa(n uint32) string {
	if n == 0 {
		return "0"
	}
	var b [10]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// GetKey returns a key's metadata without an audit record, for the
// lifecycle workflows' own reads (their decisions are recorded by the
// steps that act on them).
func (s *Service) GetKey(ctx context.Context, c Caller, keyID string) (*Key, error) {
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	k, _, err := s.getKey(ctx, c.Tenant, keyID)
	return k, err
}

// RemediationReport is what a compromise remediation did and what is still
// exposed, recorded as io.keyflow.key.compromise.remediated.v1.
type RemediationReport struct {
	KeyID   string
	Version uint32 // the compromised version (0: the key)
	// NewVersion is the fresh primary version (0: rotation refused).
	NewVersion uint32
	Rewrapped  int
	Failed     int
	// Remaining is how many registered data keys still depend on the
	// compromised version; -1 when the rewrap did not run.
	Remaining int
	// Problems lists the steps that did not complete, for the operator.
	Problems []string
}

// RecordRemediation records a remediation's report (the notification step).
func (s *Service) RecordRemediation(ctx context.Context, c Caller, r RemediationReport) error {
	if err := checkCaller(c); err != nil {
		return err
	}
	problems := r.Problems
	if problems == nil {
		problems = []string{}
	}
	data := map[string]any{
		"keyId": r.KeyID, "version": r.Version, "newVersion": r.NewVersion,
		"rewrapped": r.Rewrapped, "failed": r.Failed, "remaining": r.Remaining, "problems": problems,
	}
	return s.emit(ctx, c, events.TypeKeyRemediated, ResourceName(c.Tenant, r.KeyID), data, nil)
}
