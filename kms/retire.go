package kms

import (
	"context"

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
// Data keys keyflow never saw (not registered) are the caller's
// responsibility: the registry is the only record of what still uses a
// version.

// RetireVersionParams name the version to retire.
type RetireVersionParams struct {
	KeyRef  string
	Version uint32
}

// RetireVersionResult reports the retirement. Transition is empty when
// the version was already destroyed (retiring is idempotent).
type RetireVersionResult struct {
	Key        *Key
	Version    uint32
	From       KeyState
	State      KeyState
	Transition string
	Copies     []string
}

// RetireVersion destroys one non-primary version's material and records it
// as destroyed, refusing (KMSInvalidStateException, naming the count) while
// registered data keys still use it. It is idempotent: the material is
// deleted before the metadata changes, and a retry of a half-done
// retirement finishes it.
func (s *Service) RetireVersion(ctx context.Context, c Caller, p RetireVersionParams) (res *RetireVersionResult, err error) {
	keyID := ""
	registered := -1
	defer s.finish(ctx, c, events.TypeKeyVersionRetired, &err, func() (string, map[string]any) {
		data := map[string]any{"keyId": keyID, "version": p.Version}
		if keyID == "" {
			data["keyId"] = truncate(p.KeyRef, 64)
		}
		if registered >= 0 {
			data["registeredDataKeys"] = registered
		}
		if res != nil {
			data["from"] = string(res.From)
			data["state"] = string(res.State)
			data["copies"] = res.Copies
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
	if p.Version == 0 {
		return nil, newError(CodeValidation, "name the version to retire (1 or more)")
	}
	k0, _, err := s.resolve(ctx, c.Tenant, p.KeyRef)
	if err != nil {
		return nil, err
	}
	keyID = k0.ID
	if _, err := retirable(k0, p.Version); err != nil {
		return nil, err
	}
	counts, err := s.CountDataKeys(ctx, c, keyID)
	if err != nil {
		return nil, err
	}
	registered = counts[p.Version]
	if registered > 0 {
		return nil, newError(CodeInvalidState, "%d registered data keys still use version %d of key %s; rewrap them first (keyflow key rotate --rewrap, or keyflow rewrap)", registered, p.Version, keyID)
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
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	res.Key = k
	return res, nil
}

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
