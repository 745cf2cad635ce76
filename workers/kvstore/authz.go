package kvstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// BucketAuthz holds what authorization needs besides the key:
//
//	kf_authz  <tenant>.key.<keyID>  -> the key's policy and live grants (JSON)
//	kf_authz  <tenant>.disabled     -> the tenant's disabled principals (JSON)
//
// Like key metadata, records are replaced with the KV revision as an
// optimistic lock, and every worker watches the bucket to drop its cached
// copies (WatchAuthz).
const BucketAuthz = "kf_authz"

var _ kms.AuthzStore = (*Store)(nil)

func authzKey(tenant, keyID string) string { return tenant + ".key." + keyID }
func disabledKey(tenant string) string     { return tenant + ".disabled" }

// GetKeyAuthz implements kms.AuthzStore.
func (s *Store) GetKeyAuthz(ctx context.Context, tenant, keyID string) (*keypolicy.KeyAuthz, kms.Revision, error) {
	var a keypolicy.KeyAuthz
	rev, err := s.getJSON(ctx, authzKey(tenant, keyID), &a)
	if err != nil {
		return nil, 0, err
	}
	if a.Tenant != tenant || a.KeyID != keyID { // defence in depth
		return nil, 0, fmt.Errorf("key policy %s: %w", keyID, kms.ErrStoreNotFound)
	}
	return &a, rev, nil
}

// PutKeyAuthz implements kms.AuthzStore.
func (s *Store) PutKeyAuthz(ctx context.Context, a *keypolicy.KeyAuthz, rev kms.Revision) (kms.Revision, error) {
	return s.putJSON(ctx, authzKey(a.Tenant, a.KeyID), a, rev)
}

// GetDisabled implements kms.AuthzStore.
func (s *Store) GetDisabled(ctx context.Context, tenant string) (*kms.DisabledPrincipals, kms.Revision, error) {
	var d kms.DisabledPrincipals
	rev, err := s.getJSON(ctx, disabledKey(tenant), &d)
	if err != nil {
		return nil, 0, err
	}
	if d.Tenant != tenant {
		return nil, 0, fmt.Errorf("deny list of %s: %w", tenant, kms.ErrStoreNotFound)
	}
	return &d, rev, nil
}

// PutDisabled implements kms.AuthzStore.
func (s *Store) PutDisabled(ctx context.Context, d *kms.DisabledPrincipals, rev kms.Revision) (kms.Revision, error) {
	return s.putJSON(ctx, disabledKey(d.Tenant), d, rev)
}

func (s *Store) getJSON(ctx context.Context, key string, v any) (kms.Revision, error) {
	e, err := s.authz.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("failed to get %s: %w", key, mapErr(err))
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return 0, fmt.Errorf("failed to decode %s: %w", key, err)
	}
	return kms.Revision(e.Revision()), nil
}

func (s *Store) putJSON(ctx context.Context, key string, v any, rev kms.Revision) (kms.Revision, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("failed to encode %s: %w", key, err)
	}
	var nrev uint64
	if rev == 0 {
		nrev, err = s.authz.Create(ctx, key, b)
	} else {
		nrev, err = s.authz.Update(ctx, key, b, uint64(rev))
	}
	if err != nil {
		return 0, fmt.Errorf("failed to store %s: %w", key, mapErr(err))
	}
	return kms.Revision(nrev), nil
}

// AuthzInvalidator is told when a key's policy or grants, or a tenant's
// deny list (keyID ""), change.
type AuthzInvalidator interface {
	InvalidateAuthz(tenant, keyID string)
}

// WatchAuthz calls inv for every change to the authorization bucket until
// ctx ends, so a policy change, a revoked grant or a disabled principal
// takes effect on every worker, not only the one that made it.
func (s *Store) WatchAuthz(ctx context.Context, inv AuthzInvalidator) error {
	w, err := s.authz.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("failed to watch key policies: %w", err)
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
				tenant, rest, _ := strings.Cut(e.Key(), ".")
				if keyID, ok := strings.CutPrefix(rest, "key."); ok {
					inv.InvalidateAuthz(tenant, keyID)
				} else {
					inv.InvalidateAuthz(tenant, "")
				}
			}
		}
	}()
	return nil
}
