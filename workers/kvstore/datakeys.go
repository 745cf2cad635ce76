package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/kms"
)

// The data-key registry (kms.DataKeyStore) lives in its own bucket:
//
//	kf_datakeys  <tenant>.r.<registrationID>                     -> registration (JSON)
//	             <tenant>.i.<keyID>.<version>.<registrationID>   -> "" (index)
//
// The index answers "which registrations use this key (version)" with one
// subject-filtered listing. A registration and its index entry are two KV
// entries, so they change in an order that never leaves a registration
// unindexed: a new index entry first, then the record (with its revision
// as an optimistic lock), then the old index entry goes. A crash in
// between leaves a stale index entry at worst; listings and counts check
// each entry against its record and skip stale ones. (They do not delete
// them: an entry that looks stale may be the new one of an update in
// flight.)

// BucketDataKeys is the registry's bucket.
const BucketDataKeys = "kf_datakeys"

var _ kms.DataKeyStore = (*Store)(nil)

func openDataKeys(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: BucketDataKeys, Description: "keyflow registered wrapped data keys", History: 1, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", BucketDataKeys, err)
	}
	return kv, nil
}

func recordKey(tenant, id string) string { return tenant + ".r." + id }

func indexKey(tenant, keyID string, version uint32, id string) string {
	return tenant + ".i." + keyID + "." + strconv.FormatUint(uint64(version), 10) + "." + id
}

// CreateDataKey implements kms.DataKeyStore.
func (s *Store) CreateDataKey(ctx context.Context, d *kms.DataKey) error {
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("failed to encode registration: %w", err)
	}
	if _, err := s.datakeys.Put(ctx, indexKey(d.Tenant, d.KeyID, d.KeyVersion, d.ID), nil); err != nil {
		return fmt.Errorf("failed to index registration: %w", mapErr(err))
	}
	if _, err := s.datakeys.Create(ctx, recordKey(d.Tenant, d.ID), b); err != nil {
		return fmt.Errorf("failed to create registration: %w", mapErr(err))
	}
	return nil
}

// GetDataKey implements kms.DataKeyStore.
func (s *Store) GetDataKey(ctx context.Context, tenant, id string) (*kms.DataKey, kms.Revision, error) {
	e, err := s.datakeys.Get(ctx, recordKey(tenant, id))
	if err != nil {
		return nil, 0, fmt.Errorf("failed to get registration: %w", mapErr(err))
	}
	var d kms.DataKey
	if err := json.Unmarshal(e.Value(), &d); err != nil {
		return nil, 0, fmt.Errorf("failed to decode registration %s: %w", id, err)
	}
	if d.Tenant != tenant || d.ID != id {
		return nil, 0, fmt.Errorf("registration %s: %w", id, kms.ErrStoreNotFound)
	}
	return &d, kms.Revision(e.Revision()), nil
}

// UpdateDataKey implements kms.DataKeyStore.
func (s *Store) UpdateDataKey(ctx context.Context, d *kms.DataKey, rev kms.Revision, prevKeyID string, prevVersion uint32) (kms.Revision, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return 0, fmt.Errorf("failed to encode registration: %w", err)
	}
	moved := d.KeyID != prevKeyID || d.KeyVersion != prevVersion
	newIdx := indexKey(d.Tenant, d.KeyID, d.KeyVersion, d.ID)
	if moved {
		if _, err := s.datakeys.Put(ctx, newIdx, nil); err != nil {
			return 0, fmt.Errorf("failed to index registration: %w", mapErr(err))
		}
	}
	nrev, err := s.datakeys.Update(ctx, recordKey(d.Tenant, d.ID), b, uint64(rev))
	if err != nil {
		if moved {
			_ = s.datakeys.Delete(context.WithoutCancel(ctx), newIdx)
		}
		return 0, fmt.Errorf("failed to update registration: %w", mapErr(err))
	}
	if moved {
		if err := s.datakeys.Delete(ctx, indexKey(d.Tenant, prevKeyID, prevVersion, d.ID)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return 0, fmt.Errorf("failed to unindex registration: %w", err)
		}
	}
	return kms.Revision(nrev), nil
}

// DeleteDataKey implements kms.DataKeyStore.
func (s *Store) DeleteDataKey(ctx context.Context, tenant, id string) error {
	d, _, err := s.GetDataKey(ctx, tenant, id)
	if err != nil {
		return err
	}
	if err := s.datakeys.Delete(ctx, recordKey(tenant, id)); err != nil {
		return fmt.Errorf("failed to delete registration: %w", mapErr(err))
	}
	_ = s.datakeys.Delete(ctx, indexKey(tenant, d.KeyID, d.KeyVersion, id))
	return nil
}

// indexEntry is one parsed index key.
type indexEntry struct {
	key     string
	version uint32
	id      string
}

// index lists a key's index entries, ordered by registration ID.
func (s *Store) index(ctx context.Context, tenant, keyID string) ([]indexEntry, error) {
	prefix := tenant + ".i." + keyID + "."
	lister, err := s.datakeys.ListKeysFiltered(ctx, prefix+">")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("failed to list registrations: %w", err)
	}
	var out []indexEntry
	for name := range lister.Keys() {
		vs, id, ok := strings.Cut(strings.TrimPrefix(name, prefix), ".")
		v, err := strconv.ParseUint(vs, 10, 32)
		if !ok || err != nil {
			continue
		}
		out = append(out, indexEntry{key: name, version: uint32(v), id: id})
	}
	slices.SortFunc(out, func(a, b indexEntry) int { return strings.Compare(a.id, b.id) })
	return out, nil
}

// ListDataKeys implements kms.DataKeyStore. It reads the index in stream
// order from the cursor (a stream sequence) with an ordered consumer, so a
// page costs the page, not the size of the registry: a campaign over a
// million data keys pages through them in linear time.
func (s *Store) ListDataKeys(ctx context.Context, q kms.DataKeyQuery) (*kms.DataKeyListing, error) {
	var after uint64
	if q.After != "" {
		var err error
		if after, err = strconv.ParseUint(q.After, 10, 64); err != nil {
			return nil, fmt.Errorf("cursor %q: %w", q.After, kms.ErrStoreNotFound)
		}
	}
	prefix := q.Tenant + ".i." + q.KeyID + "."
	filters := []string{prefix + ">"}
	if len(q.Versions) > 0 {
		filters = filters[:0]
		for _, v := range q.Versions {
			filters = append(filters, prefix+strconv.FormatUint(uint64(v), 10)+".*")
		}
	}
	for i, f := range filters {
		filters[i] = "$KV." + BucketDataKeys + "." + f
	}
	cacheKey := strings.Join(filters, ",")
	open := func() (jetstream.Consumer, error) {
		cons, err := s.js.OrderedConsumer(ctx, "KV_"+BucketDataKeys, jetstream.OrderedConsumerConfig{
			FilterSubjects: filters, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: after + 1,
			HeadersOnly: true, InactiveThreshold: 30 * time.Second,
		})
		if err != nil {
			return nil, fmt.Errorf("failed to read the registry index: %w", err)
		}
		return cons, nil
	}
	cons, cached := s.lists.take(cacheKey, q.After), true
	if cons == nil {
		var err error
		if cons, err = open(); err != nil {
			return nil, err
		}
		cached = false
	}
	out := &kms.DataKeyListing{Next: q.After}
	// A listing that stops mid-index keeps its consumer for the next
	// page (which starts where this one ends): creating a filtered
	// consumer costs the server a walk of the bucket's subjects.
	keep := false
	defer func() {
		if keep {
			s.lists.put(s, cacheKey, out.Next, cons)
			return
		}
		s.deleteConsumer(ctx, cons)
	}()
	subjPrefix := "$KV." + BucketDataKeys + "." + prefix
	for len(out.DataKeys) < q.Limit && !out.Done {
		want := q.Limit - len(out.DataKeys)
		batch, err := cons.FetchNoWait(want)
		if err != nil && cached && out.Next == q.After {
			// The kept consumer expired on the server: start afresh
			// from the same cursor.
			s.deleteConsumer(ctx, cons)
			if cons, err = open(); err == nil {
				batch, err = cons.FetchNoWait(want)
			}
		}
		cached = false
		if err != nil {
			return nil, fmt.Errorf("failed to read the registry index: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			meta, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("failed to read the registry index: %w", err)
			}
			out.Next = strconv.FormatUint(meta.Sequence.Stream, 10)
			if op := m.Headers().Get("KV-Operation"); op != "" {
				continue // a deleted index entry
			}
			vs, id, ok := strings.Cut(strings.TrimPrefix(m.Subject(), subjPrefix), ".")
			v, err := strconv.ParseUint(vs, 10, 32)
			if !ok || err != nil {
				continue
			}
			d, _, err := s.GetDataKey(ctx, q.Tenant, id)
			if errors.Is(err, kms.ErrStoreNotFound) || (err == nil && (d.KeyID != q.KeyID || d.KeyVersion != uint32(v))) {
				continue // stale: the record moved or is gone
			}
			if err != nil {
				return nil, err
			}
			out.DataKeys = append(out.DataKeys, d)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("failed to read the registry index: %w", err)
		}
		out.Done = got < want
	}
	keep = !out.Done
	return out, nil
}

func (s *Store) deleteConsumer(ctx context.Context, cons jetstream.Consumer) {
	if info := cons.CachedInfo(); info != nil {
		_ = s.js.DeleteConsumer(context.WithoutCancel(ctx), "KV_"+BucketDataKeys, info.Name)
	}
}

// listCache keeps, per index filter, the consumer of the last listing that
// stopped mid-index and the cursor it stopped at. Zero value ready.
type listCache struct {
	mu sync.Mutex
	m  map[string]cachedList
}

type cachedList struct {
	next string
	cons jetstream.Consumer
}

// take returns (and forgets) the consumer that stopped at cursor, if any.
func (c *listCache) take(key, cursor string) jetstream.Consumer {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l, ok := c.m[key]; ok && l.next == cursor {
		delete(c.m, key)
		return l.cons
	}
	return nil
}

// put keeps a consumer for the listing that continues at next, replacing
// (and deleting) the one kept before under the same filter.
func (c *listCache) put(s *Store, key, next string, cons jetstream.Consumer) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]cachedList{}
	}
	old, had := c.m[key]
	c.m[key] = cachedList{next: next, cons: cons}
	c.mu.Unlock()
	if had {
		s.deleteConsumer(context.Background(), old.cons)
	}
}

// CountDataKeys implements kms.DataKeyStore. It reads each indexed
// record, so a stale index entry never counts: the answer decides whether
// a version may be retired, and must be exact.
func (s *Store) CountDataKeys(ctx context.Context, tenant, keyID string) (map[uint32]int, error) {
	idx, err := s.index(ctx, tenant, keyID)
	if err != nil {
		return nil, err
	}
	out := map[uint32]int{}
	for _, e := range idx {
		d, _, err := s.GetDataKey(ctx, tenant, e.id)
		if errors.Is(err, kms.ErrStoreNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if d.KeyID == keyID && d.KeyVersion == e.version {
			out[e.version]++
		}
	}
	return out, nil
}
