package kvstore

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

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
