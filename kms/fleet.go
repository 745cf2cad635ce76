package kms

import (
	"context"
	"slices"
	"sort"
	"time"
)

// ListKeyIDs returns up to limit of the tenant's key IDs after the ID
// after, in order: the pages of a fleet operation. It is a plain read for
// the fleet workflows (each key they then act on is audited).
func (s *Service) ListKeyIDs(ctx context.Context, c Caller, after string, limit int) ([]string, error) {
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	var ids []string
	if l, ok := s.store.(KeyIDLister); ok {
		var err error
		if ids, err = l.ListKeyIDs(ctx, c.Tenant); err != nil {
			return nil, wrapError(CodeInternal, err, "failed to list keys")
		}
	} else {
		keys, err := s.store.ListKeys(ctx, c.Tenant)
		if err != nil {
			return nil, wrapError(CodeInternal, err, "failed to list keys")
		}
		for _, k := range keys {
			ids = append(ids, k.ID)
		}
		slices.Sort(ids)
	}
	i := sort.SearchStrings(ids, after)
	if i < len(ids) && ids[i] == after {
		i++
	}
	ids = ids[i:]
	if limit > 0 && len(ids) > limit {
		ids = ids[:limit]
	}
	return ids, nil
}

// CampaignTarget decides, for a rotation campaign that began at since,
// which version rotating k means, so that a retried or resumed campaign
// rotates each key once: done when the primary already changed since the
// campaign began; the newest version when the campaign created it but
// did not make it primary yet (a crash between the two steps); the next
// one otherwise.
func CampaignTarget(k *Key, since time.Time) (version uint32, done bool) {
	if !k.RotatedAt.IsZero() && !k.RotatedAt.Before(since) {
		return k.PrimaryVersion, true
	}
	newest := k.Versions[len(k.Versions)-1]
	if newest.Number > k.PrimaryVersion && !newest.CreatedAt.Before(since) {
		return newest.Number, false
	}
	return newest.Number + 1, false
}
