package kms

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/keyflow/keyflow/events"
)

// Retiring a version ends the life of one old version of a key once
// nothing registered still needs it: its material is destroyed (the HSM
// session objects, the wrapped blob in the store, and whatever registered
// destroyers keep) and the version moves to DESTROYED (or
// DESTROYED_COMPROMISED), along the SP 800-57 transition from its state.
// The key and its other versions are untouched. Ciphertexts made under the
// retired version can no longer be decrypted, which is why the data-key
// registry is asked first: while registered data keys are still wrapped
// under the version, retirement is refused with their count, and a rewrap
// (rotation with rewrap, or the rewrap workflow) moves them away.
//
// Like a key's deletion, a retirement has a pending window (7 to 30 days,
// default 30, the tenant policy's minimum deletion window applies): the
// version is pending retirement (Version.RetirementDate), every use of it
// is refused and recorded (io.keyflow.key.use.refused.v1 with the
// version), CancelRetirement ends the window, and at the date the
// retirement workflow destroys the material (RetireVersion with Due). Data
// keys keyflow never saw (not registered) are the caller's responsibility:
// the registry is the only record of what still uses a version, and the
// window is the chance to find the rest. Now destroys at once (the
// transport puts it under dual control when the tenant policy lists
// ApprovalRetireVersionNow).

// RetireVersionParams name the version to retire.
type RetireVersionParams struct {
	KeyRef  string
	Version uint32
	// Window is the pending window (0: DefaultDeletionWindow).
	Window time.Duration
	// Now destroys the material at once, with no window (also a
	// version already pending retirement).
	Now bool
	// Due is set by the retirement workflow at the end of the window: it
	// destroys the version only if it is still pending retirement for
	// that date (a cancelled or rescheduled retirement is left alone, and
	// the result says Cancelled).
	Due time.Time
}

// RetireVersionResult reports the retirement. Transition is empty when
// the version was already destroyed (retiring is idempotent), or when it
// was only scheduled (RetirementDate set, the state unchanged).
type RetireVersionResult struct {
	Key            *Key
	Version        uint32
	From           KeyState
	State          KeyState
	Transition     string
	Copies         []string
	RetirementDate time.Time
	// Cancelled: Due no longer matched; nothing was destroyed.
	Cancelled bool
}

// errPendingRetirement is the cause of every refusal of a version pending
// retirement; Service.finish sees it and records the attempt.
type errPendingRetirement struct{ version uint32 }

func (e errPendingRetirement) Error() string { return "version is pending retirement" }

// pendingRetirement refuses a use of version v of k, pending retirement.
func pendingRetirement(k *Key, v Version) error {
	return wrapError(CodeInvalidState, errPendingRetirement{v.Number}, "version %d of key %s is pending retirement (scheduled for %s); cancel the retirement to use it (keyflow key retire-version %s --version %d --cancel)",
		v.Number, k.ID, v.RetirementDate.UTC().Format(time.RFC3339), k.ID, v.Number)
}

// refusedWhilePendingRetirement records an attempt to use a version
// pending retirement, as refusedWhilePendingDeletion does for keys.
func (s *Service) refusedWhilePendingRetirement(ctx context.Context, c Caller, opType, subject string, version uint32) {
	_, keyID, ok := strings.Cut(subject, ":key/")
	if !ok || !ValidKeyID(keyID) {
		return
	}
	_ = s.emit(ctx, c, events.TypeKeyUseRefused, subject, map[string]any{"keyId": keyID, "operation": opType, "cancelledDeletion": false, "version": version},
		newError(CodeInvalidState, "version is pending retirement"))
}

// pendingRetirementOf reports the version an error refused for pending
// retirement.
func pendingRetirementOf(err error) (uint32, bool) {
	var pr errPendingRetirement
	if errors.As(err, &pr) {
		return pr.version, true
	}
	return 0, false
}

// RetireVersion retires one non-primary version: by default it schedules
// the retirement (the version becomes pending retirement for the window;
// the transport starts the retirement workflow with the returned
// RetirementDate), with Now or Due it destroys the material and records
// the version as destroyed. Every mode refuses (KMSInvalidStateException,
// naming the count) while registered data keys still use the version. The
// destruction is idempotent: the material is deleted before the metadata
// changes, and a retry of a half-done retirement finishes it.
func (s *Service) RetireVersion(ctx context.Context, c Caller, p RetireVersionParams) (res *RetireVersionResult, err error) {
	keyID := ""
	registered := -1
	schedule := !p.Now && p.Due.IsZero()
	typ := events.TypeKeyVersionRetired
	if schedule {
		typ = events.TypeKeyVersionRetirementScheduled
	}
	defer s.finish(ctx, c, typ, &err, func() (string, map[string]any) {
		data := map[string]any{"keyId": keyID, "version": p.Version}
		if keyID == "" {
			data["keyId"] = truncate(p.KeyRef, 64)
		}
		if registered >= 0 {
			data["registeredDataKeys"] = registered
		}
		switch {
		case schedule:
			data["windowDays"] = int(p.Window / Day)
			if res != nil {
				data["retirementDate"] = res.RetirementDate.Format(time.RFC3339)
			}
		case res != nil:
			data["from"] = string(res.From)
			data["state"] = string(res.State)
			data["copies"] = res.Copies
			if res.Transition != "" {
				data["transition"] = res.Transition
			}
			if !p.Due.IsZero() {
				data["cancelled"] = res.Cancelled
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
	if p.Version == 0 {
		return nil, newError(CodeValidation, "name the version to retire (1 or more)")
	}
	if schedule {
		if p.Window, err = s.checkDeletionWindow(ctx, c.Tenant, p.Window); err != nil {
			return nil, err
		}
	}
	k0, _, err := s.resolve(ctx, c.Tenant, p.KeyRef)
	if err != nil {
		return nil, err
	}
	keyID = k0.ID
	if !p.Due.IsZero() {
		if v, ok := k0.Version(p.Version); !ok || (!isDestroyed(v.State) && !v.RetirementDate.Equal(p.Due)) {
			return &RetireVersionResult{Key: k0, Version: p.Version, From: v.State, State: v.State, Cancelled: true}, nil
		}
	}
	if registered, err = s.checkRetirable(ctx, c, k0, p.Version); err != nil {
		return nil, err
	}
	if schedule {
		return s.scheduleRetirement(ctx, c.Tenant, keyID, p)
	}

	res = &RetireVersionResult{Version: p.Version, Copies: []string{"hsm-session-objects"}}
	s.Invalidate(c.Tenant, keyID)
	if del, ok := s.store.(MaterialDeleter); ok {
		if err := del.DeleteMaterial(ctx, c.Tenant, keyID, p.Version); err != nil {
			return nil, wrapError(CodeInternal, err, "failed to delete the wrapped material of version %d", p.Version)
		}
		res.Copies = append(res.Copies, "store")
	}
	s.destroyersMu.Lock()
	ds := append([]MaterialDestroyer(nil), s.destroyers...)
	s.destroyersMu.Unlock()
	for _, d := range ds {
		if err := d.DestroyMaterial(ctx, c.Tenant, keyID, []uint32{p.Version}); err != nil {
			return nil, wrapError(CodeInternal, err, "failed to destroy the %s copies", d.Name())
		}
		res.Copies = append(res.Copies, d.Name())
	}

	k, err := s.updateKey(ctx, c.Tenant, keyID, func(k *Key) (bool, error) {
		v, err := retirable(k, p.Version)
		if err != nil {
			return false, err
		}
		res.From = v.State
		res.State = destroyedState(v.State)
		if v.State == res.State {
			return true, nil
		}
		t, err := FindTransition(v.State, res.State)
		if err != nil {
			return false, newError(CodeInvalidState, "version %d of key %s: %s", p.Version, k.ID, PublicMessage(err))
		}
		res.Transition = t.Name
		setVersionState(k, p.Version, t.To)
		setRetirementDate(k, p.Version, time.Time{})
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	res.Key = k
	return res, nil
}

// PrepareRetireVersion checks an immediate retirement as RetireVersion
// would, without destroying anything, and returns its approval target
// ("<keyID>;version=N", the form of DisableTarget). A refusal is recorded
// as the retirement's own event.
func (s *Service) PrepareRetireVersion(ctx context.Context, c Caller, p RetireVersionParams) (target string, err error) {
	keyID := ""
	defer func() {
		if err == nil {
			return
		}
		data := map[string]any{"keyId": truncate(p.KeyRef, 64), "version": p.Version}
		subject := ""
		if keyID != "" {
			data["keyId"], subject = keyID, ResourceName(c.Tenant, keyID)
		}
		err = s.emit(ctx, c, events.TypeKeyVersionRetired, subject, data, err)
	}()
	if err := checkCaller(c); err != nil {
		return "", err
	}
	if p.Version == 0 {
		return "", newError(CodeValidation, "name the version to retire (1 or more)")
	}
	k, _, err := s.resolve(ctx, c.Tenant, p.KeyRef)
	if err != nil {
		return "", err
	}
	keyID = k.ID
	if _, err := s.checkRetirable(ctx, c, k, p.Version); err != nil {
		return "", err
	}
	return DisableTarget(keyID, p.Version), nil
}

// checkRetirable refuses a version that cannot retire (see retirable) or
// that registered data keys still use, and returns their count (-1 when
// the version was refused before they were counted).
func (s *Service) checkRetirable(ctx context.Context, c Caller, k *Key, n uint32) (int, error) {
	if _, err := retirable(k, n); err != nil {
		return -1, err
	}
	counts, err := s.CountDataKeys(ctx, c, k.ID)
	if err != nil {
		return -1, err
	}
	if registered := counts[n]; registered > 0 {
		return registered, newError(CodeInvalidState, "%d registered data keys still use version %d of key %s; rewrap them first (keyflow key rotate --rewrap, or keyflow rewrap)", registered, n, k.ID)
	}
	return 0, nil
}

// scheduleRetirement makes the version pending retirement for p.Window.
func (s *Service) scheduleRetirement(ctx context.Context, tenant, keyID string, p RetireVersionParams) (*RetireVersionResult, error) {
	res := &RetireVersionResult{Version: p.Version}
	date := s.now().UTC().Add(p.Window).Truncate(time.Second)
	k, err := s.updateKey(ctx, tenant, keyID, func(k *Key) (bool, error) {
		v, err := retirable(k, p.Version)
		if err != nil {
			return false, err
		}
		if isDestroyed(v.State) {
			return false, newError(CodeInvalidState, "version %d of key %s is %s already", v.Number, k.ID, v.State)
		}
		if !v.RetirementDate.IsZero() {
			return false, newError(CodeInvalidState, "version %d of key %s is already pending retirement (scheduled for %s); retire it at once with --now, or cancel first", v.Number, k.ID, v.RetirementDate.Format(time.RFC3339))
		}
		res.From, res.State, res.RetirementDate = v.State, v.State, date
		setRetirementDate(k, p.Version, date)
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	res.Key = k
	return res, nil
}

// CancelRetirement ends a version's pending retirement before its date;
// the version is usable again in its state (which the window did not
// change). The transport also stops the retirement workflow's timer.
func (s *Service) CancelRetirement(ctx context.Context, c Caller, ref string, version uint32) (k *Key, err error) {
	keyID := ""
	defer s.finish(ctx, c, events.TypeKeyVersionRetirementCancelled, &err, func() (string, map[string]any) {
		if keyID == "" {
			return "", map[string]any{"keyId": truncate(ref, 64), "version": version}
		}
		return ResourceName(c.Tenant, keyID), map[string]any{"keyId": keyID, "version": version}
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
		v, ok := k.Version(version)
		if !ok {
			return false, newError(CodeNotFound, "key %s has no version %d", k.ID, version)
		}
		if v.RetirementDate.IsZero() {
			return false, newError(CodeInvalidState, "version %d of key %s is %s and not pending retirement", version, k.ID, v.State)
		}
		if !now.Before(v.RetirementDate) {
			return false, newError(CodeInvalidState, "version %d of key %s reached its retirement date (%s); destruction is under way", version, k.ID, v.RetirementDate.Format(time.RFC3339))
		}
		setRetirementDate(k, version, time.Time{})
		return false, nil
	})
}

// PendingRetirements lists the versions of k pending retirement.
func PendingRetirements(k *Key) []Version {
	var out []Version
	for _, v := range k.Versions {
		if !v.RetirementDate.IsZero() {
			out = append(out, v)
		}
	}
	return out
}

func setRetirementDate(k *Key, n uint32, date time.Time) {
	for i := range k.Versions {
		if k.Versions[i].Number == n {
			k.Versions[i].RetirementDate = date
		}
	}
}

func isDestroyed(s KeyState) bool { return s == StateDestroyed || s == StateDestroyedCompromised }

// retirable checks that version n of k exists and may be retired: never the
// primary version (it is what encrypts), and not while the key itself is
// pending deletion or destroyed (the deletion owns the material then).
func retirable(k *Key, n uint32) (Version, error) {
	v, ok := k.Version(n)
	if !ok {
		return Version{}, newError(CodeNotFound, "key %s has no version %d", k.ID, n)
	}
	if k.PrimaryVersion == n {
		return Version{}, newError(CodeInvalidState, "version %d is the primary version of key %s; rotate the key before retiring it", n, k.ID)
	}
	if k.Lifecycle.PendingDeletion {
		return Version{}, newError(CodeInvalidState, "key %s is pending deletion; its versions are destroyed with it", k.ID)
	}
	if k.State == StateDestroyed || k.State == StateDestroyedCompromised {
		return Version{}, newError(CodeInvalidState, "key %s is %s", k.ID, k.State)
	}
	return v, nil
}
