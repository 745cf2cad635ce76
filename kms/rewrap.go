package kms

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/keyflow/keyflow/events"
)

// Rewrap moves ciphertexts to a key's current primary version (or to
// another key) without their plaintext ever leaving keyflow. Two forms:
//
//   - Rewrap takes a batch of ciphertexts from the caller and answers with
//     the new ones (each item audited as a re-encryption);
//   - RewrapRegistered rewraps a page of the data-key registry in place.
//     Workflows drive it a page at a time (rotation, compromise
//     remediation, the post-quantum migration).
//
// Both share ReEncrypt's body, so every path decrypts and encrypts the same
// way.

// MaxRewrapItems is the most ciphertexts one Rewrap call takes.
const MaxRewrapItems = 1000

// RewrapItem is one ciphertext to move. KeyRef and Algorithm are for raw
// RSA-OAEP ciphertexts only.
type RewrapItem struct {
	Ciphertext []byte
	Context    EncryptionContext
	KeyRef     string
	Algorithm  EncryptionAlgorithm
}

// RewrapParams are the inputs of Rewrap. DestinationKeyRef empty means
// each ciphertext's own key, whose primary version may have changed.
type RewrapParams struct {
	Items             []RewrapItem
	DestinationKeyRef string
}

// RewrapItemResult is one item's outcome: Result or Err.
type RewrapItemResult struct {
	Result *ReEncryptResult
	Err    error
}

// Rewrap re-encrypts a batch of ciphertexts under the destination key's
// current primary version, keeping each one's encryption context. Items
// fail one by one (each with its own code); the call itself fails only on a
// malformed batch.
func (s *Service) Rewrap(ctx context.Context, c Caller, p RewrapParams) ([]RewrapItemResult, error) {
	if len(p.Items) == 0 || len(p.Items) > MaxRewrapItems {
		return nil, s.Reject(ctx, c, "crypto.rewrap", newError(CodeValidation, "a rewrap takes 1 to %d ciphertexts", MaxRewrapItems))
	}
	out := make([]RewrapItemResult, len(p.Items))
	sem := make(chan struct{}, rewrapParallelism)
	var wg sync.WaitGroup
	for i, it := range p.Items {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() {
				// A panic is recorded by reencryptOne and re-raised; here
				// it fails the item, not the worker.
				if r := recover(); r != nil {
					out[i] = RewrapItemResult{Err: newError(CodeInternal, "internal error")}
				}
				<-sem
			}()
			res, err := s.reencryptOne(ctx, c, reencryptInput{
				ciphertext: it.Ciphertext, sourceContext: it.Context, sourceKeyRef: it.KeyRef, sourceAlgorithm: it.Algorithm,
				destinationKeyRef: p.DestinationKeyRef, destinationContext: it.Context,
			})
			out[i] = RewrapItemResult{Result: res, Err: err}
		})
	}
	wg.Wait()
	return out, nil
}

// RewrapRegisteredParams select a page of the registry to rewrap: the
// registrations of KeyID after the cursor After (the NextCursor of the
// previous page), under FromVersions (every version when empty), at most Limit.
// They move to DestinationKeyID's primary version (KeyID's when empty).
type RewrapRegisteredParams struct {
	KeyID            string
	FromVersions     []uint32
	DestinationKeyID string
	After            string
	Limit            int // default 100, at most 1000
	// AllowCompromised lets the rewrap open data keys under a COMPROMISED
	// version: compromise remediation moves them away from it (the
	// remediation is audited as such).
	AllowCompromised bool
	// Progress, when set, is called after each item (workflows heartbeat
	// from it).
	Progress func(done int, cursor string)
}

// RewrapPage is what one page did. Done is true when the page was the
// last; NextCursor continues otherwise.
type RewrapPage struct {
	Rewrapped  int
	Skipped    int
	Failed     int
	NextCursor string
	Done       bool
	// DestinationVersion is the version the page rewrapped to.
	DestinationVersion uint32
}

// RewrapRegistered rewraps one page of registered data keys in place. It is
// idempotent per item: a registration already under the destination's
// primary version is skipped, so a retried page does no work twice and,
// with an idempotency key in the caller, records each move once (the
// rewrapped event's ID derives from the move itself).
func (s *Service) RewrapRegistered(ctx context.Context, c Caller, p RewrapRegisteredParams) (*RewrapPage, error) {
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	ds, err := s.dataKeys()
	if err != nil {
		return nil, err
	}
	if p.Limit == 0 {
		p.Limit = defaultDataKeyPg
	}
	if p.Limit < 1 || p.Limit > MaxDataKeyPage {
		return nil, newError(CodeValidation, "limit must be between 1 and %d", MaxDataKeyPage)
	}
	if !ValidKeyID(p.KeyID) {
		return nil, newError(CodeValidation, "%q is not a key ID", truncate(p.KeyID, 64))
	}
	if _, _, err := s.getKey(ctx, c.Tenant, p.KeyID); err != nil {
		return nil, err
	}
	dstID := p.DestinationKeyID
	if dstID == "" {
		dstID = p.KeyID
	}
	// The destination is read fresh (not from the cache): a rotation that
	// just changed its primary version must be seen.
	dst, _, err := s.getKey(ctx, c.Tenant, dstID)
	if err != nil {
		return nil, err
	}
	from := p.FromVersions
	if dst.ID == p.KeyID && len(from) == 0 {
		// Every version but the primary: the registrations this rewrap
		// moves land under the primary, and a scan that filtered them
		// out does not meet them again.
		for _, v := range dst.Versions {
			if v.Number != dst.PrimaryVersion {
				from = append(from, v.Number)
			}
		}
		if len(from) == 0 {
			return &RewrapPage{Done: true, NextCursor: p.After, DestinationVersion: dst.PrimaryVersion}, nil
		}
	}
	list, err := ds.ListDataKeys(ctx, DataKeyQuery{Tenant: c.Tenant, KeyID: p.KeyID, Versions: from, After: p.After, Limit: p.Limit})
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to list registrations")
	}
	page := &RewrapPage{Done: list.Done, NextCursor: list.Next, DestinationVersion: dst.PrimaryVersion}
	// Items are independent (each its own record, its own optimistic
	// lock), so a page runs rewrapParallelism of them at a time: the HSM,
	// the registry and the audit stream each wait on I/O.
	var mu sync.Mutex
	var stop error
	done := 0
	sem := make(chan struct{}, rewrapParallelism)
	var wg sync.WaitGroup
	for _, d := range list.DataKeys {
		mu.Lock()
		halted := stop != nil
		mu.Unlock()
		if halted {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() {
				if r := recover(); r != nil {
					mu.Lock()
					if stop == nil {
						stop = newError(CodeInternal, "internal error")
					}
					mu.Unlock()
				}
				<-sem
			}()
			moved, err := s.rewrapOne(ctx, c, ds, d, dst, p.AllowCompromised)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil && (errors.Is(err, ErrAuditUnavailable) || CodeOf(err) == CodeInternal):
				// Not the item's fault: stop, so the caller retries
				// the page from the same cursor (finished items are
				// skipped then).
				if stop == nil {
					stop = err
				}
				return
			case err != nil:
				page.Failed++
			case moved:
				page.Rewrapped++
			default:
				page.Skipped++
			}
			done++
			if p.Progress != nil {
				p.Progress(done, d.ID)
			}
		})
	}
	wg.Wait()
	if stop != nil {
		return nil, stop
	}
	return page, nil
}

// rewrapParallelism bounds the items of one page in flight.
const rewrapParallelism = 8

// rewrapOne moves one registration to dst's primary version and reports
// whether it moved. The move is recorded before the registry is updated
// (no record, no move), under an event ID derived from the move itself
// (registration, from, to) when the caller has an idempotency key: a
// worker that dies after the record and before the update leaves a move
// that the retried page does again under the same ID, which the audit
// stream drops. One move, one record, whatever crashes.
func (s *Service) rewrapOne(ctx context.Context, c Caller, ds DataKeyStore, d *DataKey, dst *Key, allowCompromised bool) (bool, error) {
	for attempt := 0; attempt < 3; attempt++ {
		cur, rev, err := ds.GetDataKey(ctx, c.Tenant, d.ID)
		if errors.Is(err, ErrStoreNotFound) {
			return false, nil // deregistered meanwhile
		}
		if err != nil {
			return false, wrapError(CodeInternal, err, "failed to read the registration")
		}
		if cur.KeyID == dst.ID && cur.KeyVersion == dst.PrimaryVersion {
			return false, nil
		}
		_, _, res, err := s.reencrypt(ctx, c, reencryptInput{
			ciphertext: cur.Ciphertext, sourceContext: cur.Context, sourceKeyRef: cur.KeyID, sourceAlgorithm: cur.Algorithm,
			destination: dst, destinationContext: cur.Context, allowCompromised: allowCompromised,
		})
		if err != nil {
			return false, s.recordRewrap(ctx, c, cur, cur.KeyID, cur.KeyVersion, err)
		}
		prevKey, prevVer := cur.KeyID, cur.KeyVersion
		next := *cur
		next.KeyID, next.KeyVersion, next.Ciphertext, next.Algorithm = res.KeyID, res.KeyVersion, res.Ciphertext, ""
		next.UpdatedAt = s.now().UTC()
		next.Rewraps++
		next.RewrappedFrom = &DataKeyVersion{KeyID: prevKey, Version: prevVer}
		if err := s.recordRewrap(ctx, c, &next, prevKey, prevVer, nil); err != nil {
			return false, err
		}
		if _, err := ds.UpdateDataKey(ctx, &next, rev, prevKey, prevVer); errors.Is(err, ErrStoreConflict) {
			continue // the application changed it meanwhile; look again
		} else if err != nil {
			return false, wrapError(CodeInternal, err, "failed to store the rewrapped data key")
		}
		return true, nil
	}
	return false, newError(CodeConflict, "registration %s is changing concurrently", d.ID)
}

// recordRewrap records one move (or a failed attempt) of a registration.
func (s *Service) recordRewrap(ctx context.Context, c Caller, d *DataKey, fromKey string, fromVersion uint32, opErr error) error {
	data := map[string]any{
		"registrationId": d.ID, "sourceKey": ResourceName(c.Tenant, fromKey), "sourceKeyVersion": fromVersion,
	}
	if opErr == nil {
		data["keyVersion"] = d.KeyVersion
	}
	ec := c
	if c.IdempotencyKey != "" && opErr == nil {
		ec.IdempotencyKey = fmt.Sprintf("datakey/%s/%s/%s.%d/%s.%d", c.Tenant, d.ID, fromKey, fromVersion, d.KeyID, d.KeyVersion)
	} else {
		ec.IdempotencyKey = ""
	}
	return s.emit(ctx, ec, events.TypeDataKeyRewrapped, ResourceName(c.Tenant, d.KeyID), data, opErr)
}

// DataKeyVersion names a key version.
type DataKeyVersion struct {
	KeyID   string `json:"keyId"`
	Version uint32 `json:"version"`
}

// RemainingDataKeys counts the registrations a rewrap of keyID (versions
// from, every version when empty) to destKeyID (keyID when empty) has
// still to move: those not under the destination's primary version. It is
// a plain read for workflows and emits no event.
func (s *Service) RemainingDataKeys(ctx context.Context, c Caller, keyID string, from []uint32, destKeyID string) (int, error) {
	counts, err := s.CountDataKeys(ctx, c, keyID)
	if err != nil {
		return 0, err
	}
	var primary uint32
	if destKeyID == "" || destKeyID == keyID {
		k, _, err := s.getKey(ctx, c.Tenant, keyID)
		if err != nil {
			return 0, err
		}
		primary = k.PrimaryVersion
	}
	n := 0
	for v, cnt := range counts {
		if v != primary && (len(from) == 0 || slices.Contains(from, v)) {
			n += cnt
		}
	}
	return n, nil
}
