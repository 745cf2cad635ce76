package kms

import (
	"context"
	"errors"
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
