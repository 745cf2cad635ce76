package kms

import (
	"context"
	"errors"
	"time"

	"github.com/keyflow/keyflow/kms/keypolicy"
)

// Revision is a store's optimistic-concurrency token for one record.
type Revision uint64

// Store errors. Implementations wrap these with %w.
var (
	ErrStoreNotFound = errors.New("kms store: not found")
	ErrStoreExists   = errors.New("kms store: already exists")
	ErrStoreConflict = errors.New("kms store: revision conflict")
)

// Store keeps key metadata, aliases and wrapped version material. keyflow's
// production store is a set of JetStream KV buckets (package workers/kvstore);
// the domain only sees this interface. Every method is scoped by tenant, so
// a store cannot hand one tenant's key to another by mistake.
type Store interface {
	GetKey(ctx context.Context, tenant, keyID string) (*Key, Revision, error)
	// CreateKey stores a new key and fails with ErrStoreExists if the ID is taken.
	CreateKey(ctx context.Context, k *Key) (Revision, error)
	// UpdateKey replaces a key if its revision is still rev, else ErrStoreConflict.
	UpdateKey(ctx context.Context, k *Key, rev Revision) (Revision, error)
	ListKeys(ctx context.Context, tenant string) ([]*Key, error)

	// CreateAlias binds alias to keyID and fails with ErrStoreExists if the
	// alias is bound.
	CreateAlias(ctx context.Context, tenant, alias, keyID string) error
	DeleteAlias(ctx context.Context, tenant, alias string) error
	ResolveAlias(ctx context.Context, tenant, alias string) (string, error)

	// PutMaterial stores a version's wrapped material. It is create-only:
	// material, once written, never changes (ErrStoreExists).
	PutMaterial(ctx context.Context, m *VersionMaterial) error
	GetMaterial(ctx context.Context, tenant, keyID string, version uint32) (*VersionMaterial, error)
}

// Optional store abilities. A Store may implement any of these as well;
// the operations that need one check for it and refuse cleanly (or do
// without) when the store lacks it. workers/kvstore implements them all.

// ArchiveStore is the optional store ability archival needs: a separate
// archive of wrapped material, and deleting material from the live store.
// workers/kvstore implements it.
type ArchiveStore interface {
	// PutArchived stores m in the archive; an existing entry is kept
	// (material never changes), and that is not an error.
	PutArchived(ctx context.Context, m *VersionMaterial) error
	GetArchived(ctx context.Context, tenant, keyID string, version uint32) (*VersionMaterial, error)
	// ListArchived returns the archived versions of one key.
	ListArchived(ctx context.Context, tenant, keyID string) ([]uint32, error)
	// DeleteArchived removes an archive entry; a missing one is not an error.
	DeleteArchived(ctx context.Context, tenant, keyID string, version uint32) error
	// DeleteMaterial removes material from the live store; a missing one
	// is not an error.
	DeleteMaterial(ctx context.Context, tenant, keyID string, version uint32) error
}

// AuthzStore keeps what authorization needs beyond the key itself: each
// key's policy and grants, and each tenant's list of disabled principals.
// A Store that also implements AuthzStore (workers/kvstore does) enables
// key policies, grants and the worker-side deny list; without one, only
// roles are enforced.
type AuthzStore interface {
	// GetKeyAuthz returns ErrStoreNotFound when the key has neither a
	// policy nor grants.
	GetKeyAuthz(ctx context.Context, tenant, keyID string) (*keypolicy.KeyAuthz, Revision, error)
	// PutKeyAuthz creates (rev 0, else ErrStoreExists) or replaces (if the
	// revision is still rev, else ErrStoreConflict) a key's record.
	PutKeyAuthz(ctx context.Context, a *keypolicy.KeyAuthz, rev Revision) (Revision, error)
	// GetDisabled returns ErrStoreNotFound when no principal of the tenant
	// was ever disabled.
	GetDisabled(ctx context.Context, tenant string) (*DisabledPrincipals, Revision, error)
	PutDisabled(ctx context.Context, d *DisabledPrincipals, rev Revision) (Revision, error)
}

// BackupRegistry is the optional store ability that keeps the list of
// backups keyflow made. workers/kvstore implements it (kf_backups).
type BackupRegistry interface {
	PutBackupRecord(ctx context.Context, r *BackupRecord) error
	GetBackupRecord(ctx context.Context, tenant, id string) (*BackupRecord, error)
	ListBackupRecords(ctx context.Context, tenant string) ([]*BackupRecord, error)
}

// DataKeyStore keeps the data-key registry (datakeys.go). It is optional: a Store that also
// implements it gives the Service a registry (kvstore.Store does, in the
// kf_datakeys bucket); without it the registry operations answer
// KMSInternalException.
type DataKeyStore interface {
	// CreateDataKey stores a new registration (ErrStoreExists if the ID is taken).
	CreateDataKey(ctx context.Context, d *DataKey) error
	GetDataKey(ctx context.Context, tenant, id string) (*DataKey, Revision, error)
	// UpdateDataKey replaces d if its revision is still rev (else
	// ErrStoreConflict) and moves it in the per-key index from
	// (prevKeyID, prevVersion).
	UpdateDataKey(ctx context.Context, d *DataKey, rev Revision, prevKeyID string, prevVersion uint32) (Revision, error)
	DeleteDataKey(ctx context.Context, tenant, id string) error
	ListDataKeys(ctx context.Context, q DataKeyQuery) (*DataKeyListing, error)
	// CountDataKeys counts the registrations of a key per version.
	CountDataKeys(ctx context.Context, tenant, keyID string) (map[uint32]int, error)
}

// KeyIDLister is the optional Store ability to list a tenant's key IDs
// without reading every key (fleet operations page through them).
type KeyIDLister interface {
	ListKeyIDs(ctx context.Context, tenant string) ([]string, error)
}

// MaterialDeleter is the optional Store ability to delete a version's
// wrapped material (the material bucket is otherwise create-only). Deleting
// what is not there succeeds.
type MaterialDeleter interface {
	DeleteMaterial(ctx context.Context, tenant, keyID string, version uint32) error
}

// KeyCreateLocker is the optional store ability that makes a tenant's
// key-count quota (Quotas.MaxKeys) hold across workers: CreateKey holds the
// tenant's lock from the count to the stored key. A lock whose holder died
// is taken over after ttl. workers/kvstore implements it; without it the
// count is per worker's view, and concurrent creates may pass the quota.
type KeyCreateLocker interface {
	LockKeyCreate(ctx context.Context, tenant string, ttl time.Duration) (unlock func(), err error)
}

// GovernanceStore keeps tenant policies and approval requests: the
// kf_tenant_policy and kf_approvals buckets in production (package
// workers/kvstore). Every method is scoped by tenant.
type GovernanceStore interface {
	// GetTenantPolicy returns ErrStoreNotFound when the tenant has none.
	// It is called on every request for the quotas, so implementations
	// serve it from memory.
	GetTenantPolicy(ctx context.Context, tenant string) (*TenantPolicy, Revision, error)
	// PutTenantPolicy replaces the policy if its revision is still rev
	// (0: there is none yet), else ErrStoreConflict.
	PutTenantPolicy(ctx context.Context, tenant string, p *TenantPolicy, rev Revision) (Revision, error)
	// PutProposedPolicy parks a policy change waiting for approval, and
	// GetProposedPolicy reads it back when the approval completes.
	PutProposedPolicy(ctx context.Context, tenant, approvalID string, p *TenantPolicy) error
	GetProposedPolicy(ctx context.Context, tenant, approvalID string) (*TenantPolicy, error)

	CreateApproval(ctx context.Context, a *Approval) error
	GetApproval(ctx context.Context, tenant, id string) (*Approval, Revision, error)
	UpdateApproval(ctx context.Context, a *Approval, rev Revision) (Revision, error)
	ListApprovals(ctx context.Context, tenant string) ([]*Approval, error)
}
