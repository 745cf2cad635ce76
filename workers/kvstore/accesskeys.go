package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/kms"
)

// BucketAccessKeys holds the access keys of the AWS KMS API, by ID:
//
//	kf_accesskeys  <accessKeyID>  -> kms.AccessKey (JSON; the secret sealed)
//
// An access key ID is global (a signed request names only it), so the
// tenant is inside the record, not in the key.
const BucketAccessKeys = "kf_accesskeys"

var _ kms.AccessKeyStore = (*Store)(nil)

// PutAccessKey implements kms.AccessKeyStore.
func (s *Store) PutAccessKey(ctx context.Context, k *kms.AccessKey, rev kms.Revision) (kms.Revision, error) {
	b, err := json.Marshal(k)
	if err != nil {
		return 0, fmt.Errorf("failed to encode access key %s: %w", k.ID, err)
	}
	var nrev uint64
	if rev == 0 {
		nrev, err = s.accessKeys.Create(ctx, k.ID, b)
	} else {
		nrev, err = s.accessKeys.Update(ctx, k.ID, b, uint64(rev))
	}
	if err != nil {
		return 0, fmt.Errorf("failed to store access key %s: %w", k.ID, mapErr(err))
	}
	return kms.Revision(nrev), nil
}

// GetAccessKey implements kms.AccessKeyStore.
func (s *Store) GetAccessKey(ctx context.Context, id string) (*kms.AccessKey, kms.Revision, error) {
	e, err := s.accessKeys.Get(ctx, id)
	if err != nil {
		return nil, 0, fmt.Errorf("failed to get access key %s: %w", id, mapErr(err))
	}
	var k kms.AccessKey
	if err := json.Unmarshal(e.Value(), &k); err != nil {
		return nil, 0, fmt.Errorf("failed to decode access key %s: %w", id, err)
	}
	if k.ID != id { // defence in depth
		return nil, 0, fmt.Errorf("access key %s: %w", id, kms.ErrStoreNotFound)
	}
	return &k, kms.Revision(e.Revision()), nil
}

// DeleteAccessKey implements kms.AccessKeyStore.
func (s *Store) DeleteAccessKey(ctx context.Context, id string) error {
	if err := s.accessKeys.Purge(ctx, id); err != nil {
		return fmt.Errorf("failed to delete access key %s: %w", id, mapErr(err))
	}
	return nil
}

// ListAccessKeys implements kms.AccessKeyStore. It reads every record:
// access keys are few (people and applications, not requests).
func (s *Store) ListAccessKeys(ctx context.Context, tenant string) ([]*kms.AccessKey, error) {
	lister, err := s.accessKeys.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to list access keys: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	var out []*kms.AccessKey
	for id := range lister.Keys() {
		k, _, err := s.GetAccessKey(ctx, id)
		if errors.Is(err, kms.ErrStoreNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		if k.Tenant == tenant {
			out = append(out, k)
		}
	}
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	return out, nil
}
