package kms

import (
	"context"
	"errors"
	"time"

	"github.com/keyflow/keyflow/events"
)

// Archival.
//
// A version that no longer encrypts (DEACTIVATED, or any version of a
// DEACTIVATED key other than an active key's primary) and is older than the
// retention age moves to the archive: its wrapped material is copied to a
// separate store (workers/kvstore's kf_archive bucket), the version is
// marked Archived, and the material is deleted from the live store. From
// then on nothing loads it: decryption under it fails with
// KMSInvalidStateException ("archived") until a recovery restores it.
// Recovery needs an approval (workflows.RecoveryWorkflow); RestoreVersion is
// the step that runs once it is given.
//
// Every step is idempotent, so a retried workflow activity is harmless:
// copying material that is already archived, marking a version that is
// already marked, and deleting material that is already gone all succeed.

// DefaultArchiveRetention is how long a deactivated version stays live
// before archival moves it, unless configured otherwise.
const DefaultArchiveRetention = 90 * 24 * time.Hour

func errArchived(k *Key, v Version) *Error {
	return newError(CodeInvalidState, "version %d of key %s is archived and cannot be used until it is restored (keyflow archive restore)", v.Number, k.ID)
}

func (s *Service) archiveStore() (ArchiveStore, error) {
	as, ok := s.store.(ArchiveStore)
	if !ok {
		return nil, newError(CodeInternal, "this key store has no archive")
	}
	return as, nil
}

// Archivable reports whether version v of k may be archived once cutoff
// (now minus the retention age) has passed: it no longer encrypts (the
// version, or the whole key, is DEACTIVATED; never the primary of an
// ACTIVE key), is not archived yet, and was created before cutoff.
//
// The age counts from the version's creation, because versions carry no
// deactivation time yet; the lifecycle state machine's deactivation
// timestamp replaces it when it lands.
func Archivable(k *Key, v Version, cutoff time.Time) bool {
	if v.Archived || (k.State == StateActive && v.Number == k.PrimaryVersion) {
		return false
	}
	if v.State != StateDeactivated && k.State != StateDeactivated {
		return false
	}
	return v.CreatedAt.Before(cutoff)
}

// VersionRef names one version of one key.
type VersionRef struct {
	KeyID   string `json:"keyId"`
	Version uint32 `json:"version"`
}

// ListArchivable returns the caller's tenant's versions that archival would
// move now with this retention age (0 means DefaultArchiveRetention). It is
// a plain read for the archival workflow and emits no event.
func (s *Service) ListArchivable(ctx context.Context, c Caller, retention time.Duration) ([]VersionRef, error) {
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if retention <= 0 {
		retention = DefaultArchiveRetention
	}
	keys, err := s.store.ListKeys(ctx, c.Tenant)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to list keys")
	}
	cutoff := s.now().Add(-retention)
	var out []VersionRef
	for _, k := range keys {
		for _, v := range k.Versions {
			if Archivable(k, v, cutoff) {
				out = append(out, VersionRef{KeyID: k.ID, Version: v.Number})
			}
		}
	}
	return out, nil
}

// ArchiveVersionParams are the inputs of ArchiveVersion.
type ArchiveVersionParams struct {
	KeyID   string
	Version uint32
	// Retention is the age a version must have; 0 means
	// DefaultArchiveRetention. It is checked again here, so a request
	// cannot archive a version that is too young.
	Retention time.Duration
}

// ArchiveVersion moves one version's material to the archive: copy, mark
// the version Archived, delete the live copy, drop the caches. A version
// that is already archived is left as it is (idempotent).
func (s *Service) ArchiveVersion(ctx context.Context, c Caller, p ArchiveVersionParams) (err error) {
	defer s.finish(ctx, c, events.TypeKeyVersionArchived, &err, func() (string, map[string]any) {
		return ResourceName(c.Tenant, p.KeyID), map[string]any{"keyId": p.KeyID, "version": p.Version}
	}, nil)
	if err := checkCaller(c); err != nil {
		return err
	}
	if !ValidKeyID(p.KeyID) {
		return newError(CodeValidation, "%q is not a key ID", truncate(p.KeyID, 64))
	}
	as, err := s.archiveStore()
	if err != nil {
		return err
	}
	if p.Retention <= 0 {
		p.Retention = DefaultArchiveRetention
	}
	var v Version
	k, err := s.updateKey(ctx, c.Tenant, p.KeyID, func(k *Key) (bool, error) {
		i := versionIndex(k, p.Version)
		if i < 0 {
			return false, newError(CodeNotFound, "key %s has no version %d", k.ID, p.Version)
		}
		v = k.Versions[i]
		if v.Archived {
			return true, nil
		}
		if !Archivable(k, v, s.now().Add(-p.Retention)) {
			return false, newError(CodeInvalidState, "version %d of key %s is %s (key %s) and %s old; only deactivated versions older than the retention age (%s) are archived",
				v.Number, k.ID, v.State, k.State, s.now().Sub(v.CreatedAt).Round(time.Second), p.Retention)
		}
		m, err := s.store.GetMaterial(ctx, c.Tenant, k.ID, v.Number)
		switch {
		case err == nil:
			if err := as.PutArchived(ctx, m); err != nil {
				return false, wrapError(CodeInternal, err, "failed to copy material to the archive")
			}
		case errors.Is(err, ErrStoreNotFound):
			// A retry after the delete below but before the mark
			// was stored: the archive must already hold it.
			if _, aerr := as.GetArchived(ctx, c.Tenant, k.ID, v.Number); aerr != nil {
				return false, wrapError(CodeInternal, aerr, "version %d of key %s has material neither live nor archived", v.Number, k.ID)
			}
		default:
			return false, wrapError(CodeInternal, err, "failed to read key material")
		}
		k.Versions[i].Archived = true
		k.Versions[i].ArchivedAt = s.now().UTC()
		return false, nil
	})
	if err != nil {
		return err
	}
	// Only once the mark is stored: a worker that still sees the
	// version live finds its material until then.
	if err := as.DeleteMaterial(ctx, c.Tenant, k.ID, v.Number); err != nil {
		return wrapError(CodeInternal, err, "failed to delete live material")
	}
	s.Invalidate(c.Tenant, k.ID)
	return nil
}

func versionIndex(k *Key, n uint32) int {
	for i, v := range k.Versions {
		if v.Number == n {
			return i
		}
	}
	return -1
}

// RequestVersionRestore records a request to restore an archived version
// and checks that there is something to restore. The approval and the
// restore itself are the recovery workflow's.
func (s *Service) RequestVersionRestore(ctx context.Context, c Caller, ref string, version uint32) (keyID string, err error) {
	defer s.finish(ctx, c, events.TypeKeyVersionRestoreRequested, &err, func() (string, map[string]any) {
		subject := ""
		if keyID != "" {
			subject = ResourceName(c.Tenant, keyID)
		}
		return subject, map[string]any{"keyRef": truncate(ref, 64), "version": version}
	}, func() { keyID = "" })
	if err := checkCaller(c); err != nil {
		return "", err
	}
	k, _, err := s.resolve(ctx, c.Tenant, ref)
	if err != nil {
		return "", err
	}
	v, ok := k.Version(version)
	if !ok {
		return "", newError(CodeNotFound, "key %s has no version %d", k.ID, version)
	}
	if !v.Archived {
		return "", newError(CodeInvalidState, "version %d of key %s is not archived", version, k.ID)
	}
	return k.ID, nil
}

// RecordRestoreDecision records the approver's decision on a restore
// request. The requester cannot approve their own request: that is
// refused (AccessDeniedException) and recorded as denied.
func (s *Service) RecordRestoreDecision(ctx context.Context, c Caller, keyID string, version uint32, requester string, approved bool) (err error) {
	typ := events.TypeKeyVersionRestoreApproved
	if !approved {
		typ = events.TypeKeyVersionRestoreRejected
	}
	defer s.finish(ctx, c, typ, &err, func() (string, map[string]any) {
		data := map[string]any{"keyId": keyID, "version": version, "requestedBy": requester}
		if !approved {
			data["reason"] = "rejected"
		}
		return ResourceName(c.Tenant, keyID), data
	}, nil)
	if err := checkCaller(c); err != nil {
		return err
	}
	if c.Principal == "" || c.Principal == requester {
		return newError(CodeAccessDenied, "the requester of a restore cannot approve it; another principal must")
	}
	return nil
}

// RestoreVersion brings an archived version back: material back into the
// live store, the Archived mark cleared, the archive entry removed. A
// version that is not archived is left as it is (idempotent). Call it only
// after the approval; the recovery workflow does.
func (s *Service) RestoreVersion(ctx context.Context, c Caller, keyID string, version uint32) (err error) {
	defer s.finish(ctx, c, events.TypeKeyVersionRestored, &err, func() (string, map[string]any) {
		return ResourceName(c.Tenant, keyID), map[string]any{"keyId": keyID, "version": version}
	}, nil)
	if err := checkCaller(c); err != nil {
		return err
	}
	if !ValidKeyID(keyID) {
		return newError(CodeValidation, "%q is not a key ID", truncate(keyID, 64))
	}
	as, err := s.archiveStore()
	if err != nil {
		return err
	}
	_, err = s.updateKey(ctx, c.Tenant, keyID, func(k *Key) (bool, error) {
		i := versionIndex(k, version)
		if i < 0 {
			return false, newError(CodeNotFound, "key %s has no version %d", k.ID, version)
		}
		if !k.Versions[i].Archived {
			return true, nil
		}
		m, err := as.GetArchived(ctx, c.Tenant, keyID, version)
		switch {
		case err == nil:
			if err := s.store.PutMaterial(ctx, m); err != nil && !errors.Is(err, ErrStoreExists) {
				return false, wrapError(CodeInternal, err, "failed to restore material")
			}
		case errors.Is(err, ErrStoreNotFound):
			if _, lerr := s.store.GetMaterial(ctx, c.Tenant, keyID, version); lerr != nil {
				return false, newError(CodeNotFound, "the archive holds no material for version %d of key %s (destroyed?)", version, keyID)
			}
		default:
			return false, wrapError(CodeInternal, err, "failed to read the archive")
		}
		k.Versions[i].Archived = false
		k.Versions[i].ArchivedAt = time.Time{}
		return false, nil
	})
	if err != nil {
		return err
	}
	if err := as.DeleteArchived(ctx, c.Tenant, keyID, version); err != nil {
		return wrapError(CodeInternal, err, "failed to remove the archive entry")
	}
	s.Invalidate(c.Tenant, keyID)
	return nil
}

// DestroyArchivedMaterialResult reports what DestroyArchivedMaterial
// removed.
type DestroyArchivedMaterialResult struct {
	ArchivedVersions []uint32 // archive entries deleted
	Backups          []string // registered backups revoked (see RevokeBackupsOf)
}

// DestroyArchivedMaterial destroys the copies of a key's material that
// keyflow manages outside the live store: every archived version in the
// archive, and every registered backup that holds the key is revoked (see
// RevokeBackupsOf for what that means, and its limit). The key deletion
// workflow calls it when a key is destroyed. It is idempotent.
func (s *Service) DestroyArchivedMaterial(ctx context.Context, c Caller, keyID string) (res *DestroyArchivedMaterialResult, err error) {
	out := &DestroyArchivedMaterialResult{}
	defer s.finish(ctx, c, events.TypeKeyArchiveDestroyed, &err, func() (string, map[string]any) {
		return ResourceName(c.Tenant, keyID), map[string]any{"keyId": keyID, "versions": len(out.ArchivedVersions), "backups": len(out.Backups)}
	}, func() { res = nil })
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if !ValidKeyID(keyID) {
		return nil, newError(CodeValidation, "%q is not a key ID", truncate(keyID, 64))
	}
	as, err := s.archiveStore()
	if err != nil {
		return nil, err
	}
	versions, err := as.ListArchived(ctx, c.Tenant, keyID)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to list the archive")
	}
	for _, v := range versions {
		if err := as.DeleteArchived(ctx, c.Tenant, keyID, v); err != nil {
			return nil, wrapError(CodeInternal, err, "failed to delete archived version %d", v)
		}
		out.ArchivedVersions = append(out.ArchivedVersions, v)
	}
	if out.Backups, err = s.revokeBackupsOf(ctx, c, keyID); err != nil {
		return nil, err
	}
	s.Invalidate(c.Tenant, keyID)
	return out, nil
}

// RecordRestoreExpired records that a restore request got no decision
// before its approval window closed; nothing was restored.
func (s *Service) RecordRestoreExpired(ctx context.Context, c Caller, keyID string, version uint32, requester string) error {
	if err := checkCaller(c); err != nil {
		return err
	}
	return s.emit(ctx, c, events.TypeKeyVersionRestoreRejected, ResourceName(c.Tenant, keyID),
		map[string]any{"keyId": keyID, "version": version, "requestedBy": requester, "reason": "expired"}, nil)
}
