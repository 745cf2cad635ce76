package kvstore

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/kms"
)

// Cloud destinations and placements (kms.CloudStore) live in their own
// bucket:
//
//	kf_cloud  <tenant>.d.<destination>          -> destination (JSON)
//	          <tenant>.p.<keyID>.<destination>  -> placement (JSON)
//
// Neither holds a secret: destinations name where credentials come from.

// BucketCloud is the cloud bucket.
const BucketCloud = "kf_cloud"

var _ kms.CloudStore = (*Store)(nil)

func (s *Store) cloudKV(ctx context.Context) (jetstream.KeyValue, error) {
	s.cloudMu.Lock()
	defer s.cloudMu.Unlock()
	if s.cloud != nil {
		return s.cloud, nil
	}
	kv, err := s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: BucketCloud, Description: "keyflow cloud destinations and key placements", History: 4, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", BucketCloud, err)
	}
	s.cloud = kv
	return kv, nil
}

func (s *Store) cloudPut(ctx context.Context, key string, v any) error {
	kv, err := s.cloudKV(ctx)
	if err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("failed to encode %s: %w", key, err)
	}
	if _, err := kv.Put(ctx, key, b); err != nil {
		return fmt.Errorf("failed to store %s: %w", key, mapErr(err))
	}
	return nil
}

func (s *Store) cloudGet(ctx context.Context, key string, v any) error {
	kv, err := s.cloudKV(ctx)
	if err != nil {
		return err
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("failed to get %s: %w", key, mapErr(err))
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return fmt.Errorf("failed to decode %s: %w", key, err)
	}
	return nil
}

// cloudList returns every value under a subject filter, in one watch.
func cloudList[T any](ctx context.Context, s *Store, filter string) ([]*T, error) {
	kv, err := s.cloudKV(ctx)
	if err != nil {
		return nil, err
	}
	w, err := kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("failed to list %s: %w", filter, err)
	}
	defer w.Stop()
	var out []*T
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e := <-w.Updates():
			if e == nil {
				return out, nil
			}
			var v T
			if err := json.Unmarshal(e.Value(), &v); err != nil {
				return nil, fmt.Errorf("failed to decode %s: %w", e.Key(), err)
			}
			out = append(out, &v)
		}
	}
}

// PutCloudDestination implements kms.CloudStore.
func (s *Store) PutCloudDestination(ctx context.Context, d *kms.CloudDestination) error {
	return s.cloudPut(ctx, d.Tenant+".d."+d.Name, d)
}

// GetCloudDestination implements kms.CloudStore.
func (s *Store) GetCloudDestination(ctx context.Context, tenant, name string) (*kms.CloudDestination, error) {
	var d kms.CloudDestination
	if err := s.cloudGet(ctx, tenant+".d."+name, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// ListCloudDestinations implements kms.CloudStore.
func (s *Store) ListCloudDestinations(ctx context.Context, tenant string) ([]*kms.CloudDestination, error) {
	return cloudList[kms.CloudDestination](ctx, s, tenant+".d.*")
}

// PutCloudPlacement implements kms.CloudStore.
func (s *Store) PutCloudPlacement(ctx context.Context, p *kms.CloudPlacement) error {
	return s.cloudPut(ctx, p.Tenant+".p."+p.KeyID+"."+p.Destination, p)
}

// GetCloudPlacement implements kms.CloudStore.
func (s *Store) GetCloudPlacement(ctx context.Context, tenant, keyID, dest string) (*kms.CloudPlacement, error) {
	var p kms.CloudPlacement
	if err := s.cloudGet(ctx, tenant+".p."+keyID+"."+dest, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// ListCloudPlacements implements kms.CloudStore.
func (s *Store) ListCloudPlacements(ctx context.Context, tenant, keyID string) ([]*kms.CloudPlacement, error) {
	filter := tenant + ".p.>"
	if keyID != "" {
		filter = tenant + ".p." + keyID + ".*"
	}
	return cloudList[kms.CloudPlacement](ctx, s, filter)
}

// DeleteCloudPlacement implements kms.CloudStore.
func (s *Store) DeleteCloudPlacement(ctx context.Context, tenant, keyID, dest string) error {
	kv, err := s.cloudKV(ctx)
	if err != nil {
		return err
	}
	return purge(ctx, kv, tenant+".p."+keyID+"."+dest)
}
