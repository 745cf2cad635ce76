package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/kms"
)

// The archive and the backup registry are two more buckets:
//
//	kf_archive   <tenant>.<keyID>.<version>  -> archived wrapped material (JSON)
//	kf_backups   <tenant>.<backupID>         -> backup registry record (JSON)
//
// kf_archive is kept apart from kf_material so that it can have its own
// access rule: only the archival and recovery workflows (and backup and
// key destruction) touch it, and no crypto worker needs it. In NATS terms
// a worker user without archive access is one whose permissions deny
// publishing to $KV.kf_archive.> and $JS.API.*.*.KV_kf_archive (with
// $JS.API.DIRECT.GET.KV_kf_archive.>), which the server enforces; see
// docs/backup-and-recovery.md. Archived and destroyed entries are purged,
// not just deleted, so no earlier revision of the material stays in the
// stream.
const (
	BucketArchive = "kf_archive"
	BucketBackups = "kf_backups"
)

var (
	_ kms.ArchiveStore   = (*Store)(nil)
	_ kms.BackupRegistry = (*Store)(nil)
)

func (s *Store) openArchive(open func(name, desc string, history uint8) (jetstream.KeyValue, error)) error {
	var err error
	if s.archive, err = open(BucketArchive, "keyflow archived key material (archival and recovery only)", 1); err != nil {
		return err
	}
	if s.backups, err = open(BucketBackups, "keyflow backup registry", 1); err != nil {
		return err
	}
	return nil
}

// PutArchived implements kms.ArchiveStore.
func (s *Store) PutArchived(ctx context.Context, m *kms.VersionMaterial) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("failed to encode material: %w", err)
	}
	if _, err := s.archive.Create(ctx, materialKey(m.Tenant, m.KeyID, m.Version), b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("failed to archive material: %w", mapErr(err))
	}
	return nil
}

// GetArchived implements kms.ArchiveStore.
func (s *Store) GetArchived(ctx context.Context, tenant, keyID string, version uint32) (*kms.VersionMaterial, error) {
	e, err := s.archive.Get(ctx, materialKey(tenant, keyID, version))
	if err != nil {
		return nil, fmt.Errorf("failed to get archived material: %w", mapErr(err))
	}
	var m kms.VersionMaterial
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		return nil, fmt.Errorf("failed to decode archived material: %w", err)
	}
	if m.Tenant != tenant || m.KeyID != keyID || m.Version != version {
		return nil, fmt.Errorf("archive record does not match its name: %w", kms.ErrStoreNotFound)
	}
	return &m, nil
}

// ListArchived implements kms.ArchiveStore.
func (s *Store) ListArchived(ctx context.Context, tenant, keyID string) ([]uint32, error) {
	lister, err := s.archive.ListKeysFiltered(ctx, keyKey(tenant, keyID)+".*")
	if err != nil {
		return nil, fmt.Errorf("failed to list the archive: %w", err)
	}
	var out []uint32
	for name := range lister.Keys() {
		n, err := strconv.ParseUint(name[strings.LastIndexByte(name, '.')+1:], 10, 32)
		if err == nil {
			out = append(out, uint32(n))
		}
	}
	return out, nil
}

// DeleteArchived implements kms.ArchiveStore.
func (s *Store) DeleteArchived(ctx context.Context, tenant, keyID string, version uint32) error {
	return purge(ctx, s.archive, materialKey(tenant, keyID, version))
}

// DeleteMaterial implements kms.ArchiveStore.
func (s *Store) DeleteMaterial(ctx context.Context, tenant, keyID string, version uint32) error {
	return purge(ctx, s.material, materialKey(tenant, keyID, version))
}

func purge(ctx context.Context, kv jetstream.KeyValue, key string) error {
	if _, err := kv.Get(ctx, key); errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil
	}
	if err := kv.Purge(ctx, key); err != nil {
		return fmt.Errorf("failed to purge %s from %s: %w", key, kv.Bucket(), mapErr(err))
	}
	return nil
}

// PutBackupRecord implements kms.BackupRegistry.
func (s *Store) PutBackupRecord(ctx context.Context, r *kms.BackupRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("failed to encode backup record: %w", err)
	}
	if _, err := s.backups.Put(ctx, keyKey(r.Tenant, r.ID), b); err != nil {
		return fmt.Errorf("failed to store backup record: %w", mapErr(err))
	}
	return nil
}

// GetBackupRecord implements kms.BackupRegistry.
func (s *Store) GetBackupRecord(ctx context.Context, tenant, id string) (*kms.BackupRecord, error) {
	e, err := s.backups.Get(ctx, keyKey(tenant, id))
	if err != nil {
		return nil, fmt.Errorf("failed to get backup record: %w", mapErr(err))
	}
	var r kms.BackupRecord
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, fmt.Errorf("failed to decode backup record: %w", err)
	}
	if r.Tenant != tenant {
		return nil, fmt.Errorf("backup %s: %w", id, kms.ErrStoreNotFound)
	}
	return &r, nil
}

// ListBackupRecords implements kms.BackupRegistry.
func (s *Store) ListBackupRecords(ctx context.Context, tenant string) ([]*kms.BackupRecord, error) {
	lister, err := s.backups.ListKeysFiltered(ctx, tenant+".*")
	if err != nil {
		return nil, fmt.Errorf("failed to list backups: %w", err)
	}
	var out []*kms.BackupRecord
	for name := range lister.Keys() {
		r, err := s.GetBackupRecord(ctx, tenant, strings.TrimPrefix(name, tenant+"."))
		if errors.Is(err, kms.ErrStoreNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}
