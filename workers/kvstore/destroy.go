package kvstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// DeleteMaterial implements kms.MaterialDeleter: it purges a version's
// wrapped material from the material bucket, with its history, so the
// bucket no longer holds it. Deleting material that is not there succeeds,
// so a retried destruction is harmless.
//
// A purge removes the record from the stream; JetStream's file store frees
// the bytes on disk when it compacts the block, not at once. The material is
// wrapped under the HSM root key either way.
func (s *Store) DeleteMaterial(ctx context.Context, tenant, keyID string, version uint32) error {
	err := s.material.Purge(ctx, materialKey(tenant, keyID, version))
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("failed to delete material: %w", mapErr(err))
	}
	return nil
}

// ListKeyIDs implements kms.KeyIDLister: the tenant's key IDs, sorted,
// without reading each key.
func (s *Store) ListKeyIDs(ctx context.Context, tenant string) ([]string, error) {
	lister, err := s.keys.ListKeysFiltered(ctx, tenant+".*")
	if err != nil {
		return nil, fmt.Errorf("failed to list keys: %w", err)
	}
	var out []string
	for name := range lister.Keys() {
		out = append(out, strings.TrimPrefix(name, tenant+"."))
	}
	slices.Sort(out)
	return out, nil
}
