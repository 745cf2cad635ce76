package kvstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// DeleteMaterial removes a version's wrapped material, for imported key
// material that expired or was deleted (BYOK). The material bucket is
// otherwise create-only. It purges the entry, so the wrapped blob does
// not stay in the bucket's history; a later PutMaterial of the same
// version (a re-import) creates it again. Deleting what is not there is
// not an error.
func (s *Store) DeleteMaterial(ctx context.Context, tenant, keyID string, version uint32) error {
	err := s.material.Purge(ctx, materialKey(tenant, keyID, version))
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("failed to delete material: %w", mapErr(err))
	}
	return nil
}
