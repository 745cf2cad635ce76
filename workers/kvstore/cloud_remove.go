package kvstore

import (
	"context"

	"github.com/keyflow/keyflow/kms"
)

var _ kms.CloudDestinationRemover = (*Store)(nil)

// DeleteCloudDestination implements kms.CloudDestinationRemover.
func (s *Store) DeleteCloudDestination(ctx context.Context, tenant, name string) error {
	kv, err := s.cloudKV(ctx)
	if err != nil {
		return err
	}
	return purge(ctx, kv, tenant+".d."+name)
}
