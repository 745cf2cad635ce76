package kms

// The deletion of one replica of a multi-region key (docs/multi-region.md),
// the way AWS KMS deletes a replica key:
//
//  1. ScheduleReplicaDeletion (replica.go), on the primary, marks the
//     replica PENDING_DELETION with its own window (7-30 days); the
//     replication workflow carries it to the replica region.
//  2. The replica region applies it (ApplyReplicaMetadata →
//     applyOwnDeletion): its copy of the key becomes pending deletion
//     with that date and refuses every use. Its transport then starts the
//     region's standard deletion timer (workflows.DeletionWorkflow) on
//     its own Temporal: ReplicaDeletionPending says when.
//  3. At the end of the window that timer runs the standard steps in the
//     replica region (DestroyMaterial, MarkDestroyed): the replica's
//     wrapped blobs and HSM session objects are gone and its key is
//     DESTROYED. It then reports to the primary (MarkReplicaDestroyed,
//     over the link), which marks the replica DESTROYED, and records
//     the report (RecordReplicaDestroyed). Both regions record
//     io.keyflow.key.replica.destroyed.v1.
//  4. Before the window ends, CancelReplicaDeletion on the primary makes
//     the replica DISABLED (AWS: CancelKeyDeletion leaves the key
//     Disabled); the replica region clears its pending deletion, which
//     makes its timer destroy nothing, and its transport stops the timer.
//     `key replicate` on the primary enables it again.
//
// Guards: a DESTROYED replica refuses every later message from its
// primary (refuseDestroyedReplica), so nothing brings it back; and each
// change of a replica's deletion carries the primary's count of them
// (Replica.DeletionSeq), so a stale message does not undo a newer
// schedule or cancel. A replica region does not schedule or cancel its
// own deletion: that is done on the primary.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keyflow/keyflow/events"
)

// refuseDestroyedReplica refuses every replication message to a replica
// whose material this region destroyed.
func (s *Service) refuseDestroyedReplica(k *Key, from string) error {
	if k.State != StateDestroyed && k.State != StateDestroyedCompromised {
		return nil
	}
	return newError(CodeInvalidState, "the replica of key %s in region %s is %s; a message from region %s does not bring it back", k.ID, s.region, k.State, truncate(from, 64))
}

// applyOwnDeletion sets next (the replica's record being built from the
// primary's metadata) to what the primary says of this region's replica:
// pending deletion with its date, or disabled after a cancel. News older
// than what the replica has (DeletionSeq) is stale and ignored.
func (s *Service) applyOwnDeletion(local, next *Key) {
	own, _ := next.ReplicaIn(s.region)
	if prev, ok := local.ReplicaIn(s.region); ok && own.DeletionSeq < prev.DeletionSeq {
		own = prev
		if i := slices.IndexFunc(next.Replicas, func(r Replica) bool { return r.Region == s.region }); i >= 0 {
			next.Replicas[i] = prev
		}
	}
	switch own.State {
	case ReplicaPendingDeletion:
		next.Lifecycle.PendingDeletion, next.Lifecycle.DeletionDate = true, own.DeletionDate
		next.Lifecycle.CancelDeletionOnUse = false
	case ReplicaDisabled:
		if next.State == StateActive {
			next.State = StateSuspended
		}
	}
}

// refuseDeletion is what refuses to schedule k's deletion, whether
// directly (ScheduleDeletion) or under dual control
// (PrepareScheduleDeletion): a replica in its own region, a primary with
// live replicas, a key already pending deletion.
func (s *Service) refuseDeletion(k *Key) error {
	if err := s.refuseReplicaDeletionHere(k); err != nil {
		return err
	}
	if err := s.refusePrimaryWithReplicas(k); err != nil {
		return err
	}
	if k.Lifecycle.PendingDeletion {
		return newError(CodeInvalidState, "key %s is already pending deletion (scheduled for %s)", k.ID, k.Lifecycle.DeletionDate.Format(time.RFC3339))
	}
	return nil
}

// refuseReplicaDeletionHere refuses to schedule or cancel the deletion of
// a replica in its own region: its primary does it
// (ScheduleReplicaDeletion, CancelReplicaDeletion), so that the primary
// and the replica never disagree about it.
func (s *Service) refuseReplicaDeletionHere(k *Key) error {
	if !s.IsReplica(k) {
		return nil
	}
	return newError(CodeUnsupportedOperation, "key %s is a replica of a multi-region key whose primary is in region %s; schedule or cancel a replica's deletion in the primary's region "+
		"(key schedule-replica-deletion / key cancel-replica-deletion %s --region %s; over the AWS API, ScheduleKeyDeletion / CancelKeyDeletion with this replica's ARN at region %s's endpoint)",
		k.ID, k.PrimaryRegion, k.ID, s.region, k.PrimaryRegion)
}

// refusePrimaryWithReplicas refuses to schedule the deletion of a
// multi-region primary while any of its replicas is not destroyed. AWS
// KMS puts such a primary in PendingReplicaDeletion and starts its window
// after its last replica is deleted; keyflow asks for the same order
// explicitly: the replicas' deletions first, then the primary's, so that
// no replica region is left serving a key whose primary is gone.
func (s *Service) refusePrimaryWithReplicas(k *Key) error {
	if !k.MultiRegion || k.PrimaryRegion != s.region {
		return nil
	}
	var live []string
	for _, r := range k.Replicas {
		if r.State != ReplicaDestroyed {
			live = append(live, r.Region+" ("+string(r.State)+")")
		}
	}
	if len(live) == 0 {
		return nil
	}
	return newError(CodeInvalidState, "key %s is a multi-region primary with replicas that are not destroyed: %s; "+
		"schedule the deletion of each replica first (key schedule-replica-deletion %s --region REGION, or the AWS API's ScheduleKeyDeletion with the replica's ARN), "+
		"then the primary's once they are destroyed", k.ID, strings.Join(live, ", "), k.ID)
}

// ReplicaDeletionPending reports whether k, as stored here, is a replica
// whose deletion its primary scheduled: the transport then makes sure the
// region's deletion timer runs for k.Lifecycle.DeletionDate.
func (s *Service) ReplicaDeletionPending(k *Key) bool {
	if !s.IsReplica(k) || !k.Lifecycle.PendingDeletion {
		return false
	}
	own, ok := k.ReplicaIn(s.region)
	return ok && own.State == ReplicaPendingDeletion && own.DeletionDate.Equal(k.Lifecycle.DeletionDate)
}

// ReplicaDeletionCancelled reports whether k, as stored here, is a
// replica whose deletion its primary cancelled: the transport then stops
// the region's deletion timer (which would destroy nothing anyway).
func (s *Service) ReplicaDeletionCancelled(k *Key) bool {
	if !s.IsReplica(k) || k.Lifecycle.PendingDeletion {
		return false
	}
	own, ok := k.ReplicaIn(s.region)
	return ok && own.State == ReplicaDisabled
}

// reenableReplica is ReplicateKey on a region that is a replica already:
// a replica disabled by a cancelled deletion becomes active again; a
// destroyed one is refused; any other is left as it is.
func reenableReplica(k *Key, r Replica) (bool, error) {
	switch r.State {
	case ReplicaDestroyed:
		return false, newError(CodeInvalidState, "the replica of key %s in region %s was destroyed; a destroyed replica is not replicated again", k.ID, r.Region)
	case ReplicaDisabled:
		i := slices.IndexFunc(k.Replicas, func(x Replica) bool { return x.Region == r.Region })
		k.Replicas[i].State = ReplicaActive
		if k.Replicas[i].LastSyncedVersion == 0 {
			k.Replicas[i].State = ReplicaCreating
		}
		k.Replicas[i].DeletionSeq++
		return false, nil
	}
	return true, nil
}

// CancelReplicaDeletion cancels, on the primary, the scheduled deletion of
// the key's replica in region, before its window ends. The replica becomes
// DISABLED (as AWS KMS leaves a replica whose deletion was cancelled);
// `key replicate` enables it again. The replication workflow carries the
// cancel to the replica region, whose deletion timer then destroys
// nothing. A cancel that reaches a cut-off replica region only after its
// window ended comes too late there: its material is destroyed, and its
// report marks the replica DESTROYED here.
func (s *Service) CancelReplicaDeletion(ctx context.Context, c Caller, ref, region string) (*Key, error) {
	data := map[string]any{"keyRef": truncate(ref, 64), "region": truncate(region, 64), "role": "primary"}
	now := s.now().UTC()
	return s.changeKey(ctx, c, events.TypeKeyReplicaDeletionCancelled, ref, data, s.checkPrimaryHere, func(k *Key) (bool, error) {
		i := slices.IndexFunc(k.Replicas, func(r Replica) bool { return r.Region == region })
		if i < 0 {
			return false, newError(CodeNotFound, "key %s has no replica in region %s", k.ID, truncate(region, 64))
		}
		r := &k.Replicas[i]
		if r.State != ReplicaPendingDeletion {
			return false, newError(CodeInvalidState, "the replica of key %s in region %s is %s and not pending deletion", k.ID, region, r.State)
		}
		if !now.Before(r.DeletionDate) {
			return false, newError(CodeInvalidState, "the replica of key %s in region %s reached its deletion date (%s); destruction is under way", k.ID, region, r.DeletionDate.Format(time.RFC3339))
		}
		r.State, r.DeletionDate = ReplicaDisabled, time.Time{}
		r.DeletionSeq++
		return false, nil
	})
}

// ReplicaDestroyedParams are the inputs of MarkReplicaDestroyed.
type ReplicaDestroyedParams struct {
	// From is the replica region that destroyed its material.
	From  string
	KeyID string
}

// MarkReplicaDestroyed takes, on the primary, a replica region's report
// that the window of its deletion ended and its material is destroyed:
// the replica becomes DESTROYED and receives nothing any more. It is
// idempotent (a repeated report changes nothing and records nothing). A
// report is taken from a replica pending deletion whose date has passed
// here, or from one whose cancel did not reach it in time (DISABLED): the
// destruction is a fact in its region either way.
func (s *Service) MarkReplicaDestroyed(ctx context.Context, c Caller, p ReplicaDestroyedParams) (res *ApplyResult, err error) {
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	subject, data := "", map[string]any{"keyId": keyIDOf(&Key{ID: p.KeyID}), "region": truncate(p.From, 64), "primaryRegion": s.region, "role": "primary"}
	if ValidKeyID(p.KeyID) {
		subject = ResourceName(c.Tenant, p.KeyID)
	}
	res, err = s.markReplicaDestroyed(ctx, c, p)
	if err != nil || res.Applied {
		if err = s.emit(ctx, c, events.TypeKeyReplicaDestroyed, subject, data, err); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func (s *Service) markReplicaDestroyed(ctx context.Context, c Caller, p ReplicaDestroyedParams) (*ApplyResult, error) {
	if !ValidKeyID(p.KeyID) || !ValidRegion(p.From) || p.From == s.region {
		return nil, newError(CodeValidation, "the report names no key or no other region")
	}
	now := s.now().UTC()
	applied := false
	k, err := s.updateKey(ctx, c.Tenant, p.KeyID, func(k *Key) (bool, error) {
		if err := s.checkPrimaryHere(k); err != nil {
			return false, err
		}
		i := slices.IndexFunc(k.Replicas, func(r Replica) bool { return r.Region == p.From })
		if i < 0 {
			return false, newError(CodeNotFound, "key %s has no replica in region %s", k.ID, p.From)
		}
		r := &k.Replicas[i]
		switch {
		case r.State == ReplicaDestroyed:
			return true, nil
		case r.State == ReplicaPendingDeletion && now.Before(r.DeletionDate):
			return false, newError(CodeInvalidState, "the replica of key %s in region %s is not due for destruction before %s", k.ID, p.From, r.DeletionDate.Format(time.RFC3339))
		case r.State != ReplicaPendingDeletion && r.State != ReplicaDisabled:
			return false, newError(CodeInvalidState, "the replica of key %s in region %s is %s, not pending deletion", k.ID, p.From, r.State)
		}
		r.State = ReplicaDestroyed
		r.DeletionSeq++
		applied = true
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	return &ApplyResult{Applied: applied, Key: k}, nil
}

// RecordReplicaDestroyed records, in a replica region, that its primary
// acknowledged the destruction of the replica's material (the last step
// of the region's deletion workflow). The caller sets an idempotency key,
// so a retried step leaves one record.
func (s *Service) RecordReplicaDestroyed(ctx context.Context, c Caller, keyID string) error {
	if err := checkCaller(c); err != nil {
		return err
	}
	k, _, err := s.getKey(ctx, c.Tenant, keyID)
	if err != nil {
		return err
	}
	if !s.IsReplica(k) || (k.State != StateDestroyed && k.State != StateDestroyedCompromised) {
		return newError(CodeInvalidState, "key %s is not a destroyed replica in region %s", k.ID, s.region)
	}
	versions := make([]uint32, 0, len(k.Versions))
	for _, v := range k.Versions {
		versions = append(versions, v.Number)
	}
	_, lost := s.emitRecord(ctx, c, events.TypeKeyReplicaDestroyed, k.ResourceName(),
		map[string]any{"keyId": k.ID, "region": s.region, "primaryRegion": k.PrimaryRegion, "versions": versions, "role": "replica"}, nil)
	if lost != nil {
		return fmt.Errorf("failed to record the replica's destruction: %w", lost)
	}
	return nil
}
