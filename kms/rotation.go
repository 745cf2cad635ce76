package kms

import (
	"context"
	"sort"

	"github.com/keyflow/keyflow/events"
)

func sortStrings(s []string) { sort.Strings(s) }

// CreateVersionParams are the inputs of CreateVersion.
type CreateVersionParams struct {
	KeyID   string
	Version uint32 // the version number to create: the key's newest + 1
}

// CreateVersion adds a new version to a key without making it primary. It is
// idempotent: creating a version that exists returns it, so a retried
// workflow activity is harmless. Asking for any other number than the next
// one is a conflict.
func (s *Service) CreateVersion(ctx context.Context, c Caller, p CreateVersionParams) (v *Version, err error) {
	defer s.finish(ctx, c, events.TypeKeyVersionCreated, &err, func() (string, map[string]any) {
		data := map[string]any{"keyId": p.KeyID, "version": p.Version}
		return ResourceName(c.Tenant, p.KeyID), data
	}, func() {
		v = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if !ValidKeyID(p.KeyID) {
		return nil, newError(CodeValidation, "%q is not a key ID", truncate(p.KeyID, 64))
	}
	var nv Version
	_, err = s.updateKey(ctx, c.Tenant, p.KeyID, func(k *Key) (bool, error) {
		if existing, ok := k.Version(p.Version); ok {
			nv = existing
			return true, nil
		}
		newest := k.Versions[len(k.Versions)-1].Number
		if p.Version != newest+1 {
			return false, newError(CodeConflict, "key %s has versions up to %d; cannot create version %d", k.ID, newest, p.Version)
		}
		if err := permitRotation(k); err != nil {
			return false, err
		}
		if err := s.refuseReplicaChange(k, "create versions"); err != nil {
			return false, err
		}
		if err := refuseExternalRotation(k); err != nil {
			return false, err
		}
		info := specs[k.Spec]
		if info == nil {
			return false, newError(CodeInternal, "key %s has unknown spec %q", k.ID, k.Spec)
		}
		// Material is write-once: a retry after a conflict keeps it.
		if err := s.newRotatedMaterial(ctx, k, p.Version, info); err != nil {
			return false, err
		}
		now := s.now().UTC()
		nv = Version{Number: p.Version, State: StateActive, Algorithm: info.alg, CreatedAt: now, DeactivationDate: now.Add(cryptoperiodOf(k))}
		k.Versions = append(k.Versions, nv)
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	return &nv, nil
}

// SetPrimaryParams are the inputs of SetPrimaryVersion.
type SetPrimaryParams struct {
	KeyID   string
	Version uint32
}

// SetPrimaryResult reports the primary version before and after.
type SetPrimaryResult struct {
	Key             *Key
	PreviousPrimary uint32
}

// SetPrimaryVersion makes a version the one that encrypts. Older versions
// keep decrypting. It is idempotent: if the version is already primary,
// nothing changes (and the rotated event is re-emitted with the same ID when
// an idempotency key is set, which the stream deduplicates).
func (s *Service) SetPrimaryVersion(ctx context.Context, c Caller, p SetPrimaryParams) (res *SetPrimaryResult, err error) {
	defer s.finish(ctx, c, events.TypeKeyRotated, &err, func() (string, map[string]any) {
		data := map[string]any{"keyId": p.KeyID, "version": p.Version}
		if res != nil {
			data["previousVersion"] = res.PreviousPrimary
		}
		return ResourceName(c.Tenant, p.KeyID), data
	}, func() {
		res = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	var prev uint32
	k, err := s.updateKey(ctx, c.Tenant, p.KeyID, func(k *Key) (bool, error) {
		v, ok := k.Version(p.Version)
		if !ok {
			return false, newError(CodeNotFound, "key %s has no version %d", k.ID, p.Version)
		}
		if k.PrimaryVersion == p.Version {
			prev = p.Version
			if p.Version > 1 {
				prev = p.Version - 1
			}
			return true, nil
		}
		if err := permitRotation(k); err != nil {
			return false, err
		}
		if err := s.refuseReplicaChange(k, "switch its primary version"); err != nil {
			return false, err
		}
		if !v.State.Allows(UseProtect) {
			return false, newError(CodeInvalidState, "version %d of key %s is %s and cannot become primary", v.Number, k.ID, v.State)
		}
		prev = k.PrimaryVersion
		k.PrimaryVersion = p.Version
		k.RotatedAt = s.now().UTC()
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	return &SetPrimaryResult{Key: k, PreviousPrimary: prev}, nil
}

// RequestRotation checks a rotation request and returns the key's ID, so
// the transport can start the rotation workflow for it. A refusal (unknown
// key, wrong state) is recorded here, as rotation.started with the failure
// outcome. An accepted request is recorded by the workflow itself, once its
// start is durable (RecordRotationStarted): a crash between this check and
// the start then leaves no started record without an outcome.
func (s *Service) RequestRotation(ctx context.Context, c Caller, ref string) (keyID string, err error) {
	defer func() {
		if p := recover(); p != nil {
			_ = s.RefuseRotation(ctx, c, ref, newError(CodeInternal, "internal error"))
			panic(p)
		}
		if err != nil {
			keyID, err = "", s.RefuseRotation(ctx, c, ref, err)
		}
	}()
	if err := checkCaller(c); err != nil {
		return "", err
	}
	k, _, err := s.resolve(ctx, c.Tenant, ref)
	if err != nil {
		return "", err
	}
	if err := permitRotation(k); err != nil {
		return "", err
	}
	if err := s.refuseReplicaChange(k, "rotate"); err != nil {
		return "", err
	}
	if err := refuseExternalRotation(k); err != nil {
		return "", err
	}
	return k.ID, nil
}

// RefuseRotation records a rotation request refused before its workflow
// started (by RequestRotation's checks, or because another rotation of the
// key is running) and returns err for the reply. The record is
// rotation.started with the failure outcome: the request's whole story.
func (s *Service) RefuseRotation(ctx context.Context, c Caller, ref string, err error) error {
	subject := ""
	if ValidKeyID(ref) && ValidTenant(c.Tenant) {
		subject = ResourceName(c.Tenant, ref)
	}
	return s.emit(ctx, c, events.TypeKeyRotationStart, subject, map[string]any{"keyRef": truncate(ref, 64)}, err)
}

// RecordRotationStarted records that a rotation of keyID started: the
// rotation workflow's first step, with an idempotency key naming its run,
// so exactly one record exists per run however often the step is retried.
func (s *Service) RecordRotationStarted(ctx context.Context, c Caller, keyID string) error {
	if err := checkCaller(c); err != nil {
		return err
	}
	err, _ := s.emitRecord(ctx, c, events.TypeKeyRotationStart, ResourceName(c.Tenant, keyID), map[string]any{"keyRef": keyID}, nil)
	return err
}

// NextVersion returns the number the next version of a key will have. It
// is a plain read for the rotation workflow and emits no event.
func (s *Service) NextVersion(ctx context.Context, c Caller, keyID string) (uint32, error) {
	if err := checkCaller(c); err != nil {
		return 0, err
	}
	k, _, err := s.getKey(ctx, c.Tenant, keyID)
	if err != nil {
		return 0, err
	}
	return k.Versions[len(k.Versions)-1].Number + 1, nil
}

// RecordRotationFailed records that a started rotation did not finish:
// the rotation workflow's outcome when a step failed before the new
// version became primary. Its error is only about the record: nil once it
// is stored, AuditUnavailable if it could not be (the workflow retries).
func (s *Service) RecordRotationFailed(ctx context.Context, c Caller, keyID string, opErr error) error {
	if opErr == nil {
		opErr = newError(CodeInternal, "the rotation failed")
	}
	_, lost := s.emitRecord(ctx, c, events.TypeKeyRotationFailed, ResourceName(c.Tenant, keyID), map[string]any{"keyId": keyID}, opErr)
	return lost
}
