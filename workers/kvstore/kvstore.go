// Package kvstore is keyflow's key store on JetStream KV buckets: the
// production implementation of kms.Store.
//
// Three buckets, all file-backed and replicated like any stream:
//
//	kf_keys      <tenant>.<keyID>            -> key metadata (JSON)
//	kf_aliases   <tenant>.<alias>            -> key ID
//	kf_material  <tenant>.<keyID>.<version>  -> wrapped version material (JSON)
//
// Updates use the KV revision as an optimistic lock, so two workers that
// change the same key cannot overwrite each other. Wrapped material is
// write-once. Watch lets every worker evict its caches when a key changes.
package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/kms"
)

// Bucket names.
const (
	BucketKeys     = "kf_keys"
	BucketAliases  = "kf_aliases"
	BucketMaterial = "kf_material"
)

// Store implements kms.Store.
type Store struct {
	keys, aliases, material jetstream.KeyValue
	archive, backups        jetstream.KeyValue // archive.go
	authz                   jetstream.KeyValue // authz.go
	datakeys                jetstream.KeyValue // see datakeys.go
	accessKeys              jetstream.KeyValue // accesskeys.go
	cloud                   jetstream.KeyValue // cloud.go, opened on first use
	cloudMu                 sync.Mutex
	js                      jetstream.JetStream
	lists                   listCache // see datakeys.go
}

var _ kms.Store = (*Store)(nil)

// Open creates the buckets if needed and returns the store.
func Open(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	open := func(name, desc string, history uint8) (jetstream.KeyValue, error) {
		kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: name, Description: desc, History: history, Storage: jetstream.FileStorage,
		})
		if err != nil {
			return nil, fmt.Errorf("failed to open bucket %s: %w", name, err)
		}
		return kv, nil
	}
	s := Store{js: js}
	var err error
	if s.keys, err = open(BucketKeys, "keyflow key metadata", 16); err != nil {
		return nil, err
	}
	if s.aliases, err = open(BucketAliases, "keyflow key aliases", 1); err != nil {
		return nil, err
	}
	if s.material, err = open(BucketMaterial, "keyflow wrapped key material", 1); err != nil {
		return nil, err
	}
	if err := s.openArchive(open); err != nil {
		return nil, err
	}
	if s.authz, err = open(BucketAuthz, "keyflow key policies, grants and disabled principals", 8); err != nil {
		return nil, err
	}
	if s.datakeys, err = openDataKeys(ctx, js); err != nil {
		return nil, err
	}
	if s.accessKeys, err = open(BucketAccessKeys, "keyflow access keys of the AWS KMS API (secrets sealed under the HSM root key)", 4); err != nil {
		return nil, err
	}
	return &s, nil
}

func keyKey(tenant, keyID string) string { return tenant + "." + keyID }

func mapErr(err error) error {
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return fmt.Errorf("%w: %w", kms.ErrStoreNotFound, err)
	case errors.Is(err, jetstream.ErrKeyExists):
		return fmt.Errorf("%w: %w", kms.ErrStoreExists, err)
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return fmt.Errorf("%w: %w", kms.ErrStoreConflict, err)
	}
	return err
}

// GetKey implements kms.Store.
func (s *Store) GetKey(ctx context.Context, tenant, keyID string) (*kms.Key, kms.Revision, error) {
	e, err := s.keys.Get(ctx, keyKey(tenant, keyID))
	if err != nil {
		return nil, 0, fmt.Errorf("failed to get key: %w", mapErr(err))
	}
	var k kms.Key
	if err := json.Unmarshal(e.Value(), &k); err != nil {
		return nil, 0, fmt.Errorf("failed to decode key %s: %w", keyID, err)
	}
	if k.Tenant != tenant { // defence in depth: the record names its tenant too
		return nil, 0, fmt.Errorf("key %s: %w", keyID, kms.ErrStoreNotFound)
	}
	return &k, kms.Revision(e.Revision()), nil
}

// CreateKey implements kms.Store.
func (s *Store) CreateKey(ctx context.Context, k *kms.Key) (kms.Revision, error) {
	b, err := json.Marshal(k)
	if err != nil {
		return 0, fmt.Errorf("failed to encode key: %w", err)
	}
	rev, err := s.keys.Create(ctx, keyKey(k.Tenant, k.ID), b)
	if err != nil {
		return 0, fmt.Errorf("failed to create key: %w", mapErr(err))
	}
	return kms.Revision(rev), nil
}

// UpdateKey implements kms.Store.
func (s *Store) UpdateKey(ctx context.Context, k *kms.Key, rev kms.Revision) (kms.Revision, error) {
	b, err := json.Marshal(k)
	if err != nil {
		return 0, fmt.Errorf("failed to encode key: %w", err)
	}
	nrev, err := s.keys.Update(ctx, keyKey(k.Tenant, k.ID), b, uint64(rev))
	if err != nil {
		return 0, fmt.Errorf("failed to update key: %w", mapErr(err))
	}
	return kms.Revision(nrev), nil
}

// ListKeys implements kms.Store.
func (s *Store) ListKeys(ctx context.Context, tenant string) ([]*kms.Key, error) {
	lister, err := s.keys.ListKeysFiltered(ctx, tenant+".*")
	if err != nil {
		return nil, fmt.Errorf("failed to list keys: %w", err)
	}
	var out []*kms.Key
	for name := range lister.Keys() {
		k, _, err := s.GetKey(ctx, tenant, strings.TrimPrefix(name, tenant+"."))
		if errors.Is(err, kms.ErrStoreNotFound) {
			continue // deleted between list and get
		}
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	sortKeys(out)
	return out, nil
}

// CreateAlias implements kms.Store.
func (s *Store) CreateAlias(ctx context.Context, tenant, alias, keyID string) error {
	if _, err := s.aliases.Create(ctx, keyKey(tenant, alias), []byte(keyID)); err != nil {
		return fmt.Errorf("failed to create alias: %w", mapErr(err))
	}
	return nil
}

// DeleteAlias implements kms.Store.
func (s *Store) DeleteAlias(ctx context.Context, tenant, alias string) error {
	if err := s.aliases.Delete(ctx, keyKey(tenant, alias)); err != nil {
		return fmt.Errorf("failed to delete alias: %w", mapErr(err))
	}
	return nil
}

// ResolveAlias implements kms.Store.
func (s *Store) ResolveAlias(ctx context.Context, tenant, alias string) (string, error) {
	e, err := s.aliases.Get(ctx, keyKey(tenant, alias))
	if err != nil {
		return "", fmt.Errorf("failed to resolve alias: %w", mapErr(err))
	}
	return string(e.Value()), nil
}

func materialKey(tenant, keyID string, version uint32) string {
	return tenant + "." + keyID + "." + strconv.FormatUint(uint64(version), 10)
}

// PutMaterial implements kms.Store.
func (s *Store) PutMaterial(ctx context.Context, m *kms.VersionMaterial) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("failed to encode material: %w", err)
	}
	if _, err := s.material.Create(ctx, materialKey(m.Tenant, m.KeyID, m.Version), b); err != nil {
		return fmt.Errorf("failed to store material: %w", mapErr(err))
	}
	return nil
}

// GetMaterial implements kms.Store.
func (s *Store) GetMaterial(ctx context.Context, tenant, keyID string, version uint32) (*kms.VersionMaterial, error) {
	e, err := s.material.Get(ctx, materialKey(tenant, keyID, version))
	if err != nil {
		return nil, fmt.Errorf("failed to get material: %w", mapErr(err))
	}
	var m kms.VersionMaterial
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		return nil, fmt.Errorf("failed to decode material: %w", err)
	}
	if m.Tenant != tenant || m.KeyID != keyID || m.Version != version {
		return nil, fmt.Errorf("material record does not match its name: %w", kms.ErrStoreNotFound)
	}
	return &m, nil
}

// Invalidator is told when a key changes.
type Invalidator interface {
	Invalidate(tenant, keyID string)
}

// WatchKeys calls inv for every change to the key bucket until ctx ends, so
// this worker's caches never outlive a change made by another worker.
func (s *Store) WatchKeys(ctx context.Context, inv Invalidator) error {
	w, err := s.keys.WatchAll(ctx, jetstream.UpdatesOnly(), jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("failed to watch keys: %w", err)
	}
	go func() {
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue
				}
				if tenant, keyID, ok := strings.Cut(e.Key(), "."); ok {
					inv.Invalidate(tenant, keyID)
				}
			}
		}
	}()
	return nil
}
