package kms

// Cloud administration (docs/multi-cloud.md): what the NATS API and the
// CLI ask of the domain beyond cloud.go's destinations and placements.
//
//   - RemoveCloudDestination forgets a destination, and is refused while
//     any key is placed there (undistribute them first): a destination
//     that vanished under its placements would leave copies in a provider
//     that nobody keeps in step;
//   - CheckCloudDistribution decides, before any workflow starts, whether
//     a key may go to (or leave) a destination, and records the refusal;
//   - CloudStatus sums up each destination: how many keys are there, which
//     have work left (a step started and not finished, a keyflow version
//     not yet there, a state that differs from keyflow's, an error) and
//     the most recent error.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/keyflow/keyflow/events"
)

// Bounds of a destination's reconcile period.
const (
	MinCloudReconcile = time.Minute
	MaxCloudReconcile = 30 * Day
)

// CloudDestinationRemover is the store ability to forget a destination
// (workers/kvstore).
type CloudDestinationRemover interface {
	DeleteCloudDestination(ctx context.Context, tenant, name string) error
}

// RemoveCloudDestination forgets a destination. Nothing is deleted in the
// provider. It is refused (ConflictException) while keys are placed there.
func (s *Service) RemoveCloudDestination(ctx context.Context, c Caller, name string) (err error) {
	var d *CloudDestination
	placed := 0
	defer s.finish(ctx, c, events.TypeCloudDestinationRemoved, &err, func() (string, map[string]any) {
		data := map[string]any{"destination": truncate(name, 64), "placements": placed}
		if d != nil {
			data["provider"] = d.Provider
		}
		return "", data
	}, nil)
	if d, err = s.GetCloudDestination(ctx, c, name); err != nil {
		return err
	}
	cs, err := s.cloudStore()
	if err != nil {
		return err
	}
	rm, ok := cs.(CloudDestinationRemover)
	if !ok {
		return newError(CodeUnsupportedOperation, "this store cannot forget cloud destinations")
	}
	ps, err := cs.ListCloudPlacements(ctx, c.Tenant, "")
	if err != nil {
		return wrapError(CodeInternal, err, "failed to list placements")
	}
	var keys []string
	for _, p := range ps {
		if p.Destination == d.Name {
			keys = append(keys, p.KeyID)
		}
	}
	if placed = len(keys); placed > 0 {
		slices.Sort(keys)
		some := strings.Join(keys[:min(3, len(keys))], ", ")
		if len(keys) > 3 {
			some += ", ..."
		}
		return newError(CodeConflict, "destination %s still holds %d keys (%s); undistribute them first (keyflow key undistribute KEY --from %s)", d.Name, placed, some, d.Name)
	}
	if err := rm.DeleteCloudDestination(ctx, c.Tenant, d.Name); err != nil {
		return wrapError(CodeInternal, err, "failed to forget the destination")
	}
	return nil
}

// checkCloudReplace refuses (ConflictException) to move a destination
// that holds keys elsewhere: another provider or other settings would
// leave the copies already there with nobody keeping them in step. Its
// drift mode and reconcile period may change.
func (s *Service) checkCloudReplace(ctx context.Context, cs CloudStore, tenant string, d *CloudDestination) error {
	old, err := cs.GetCloudDestination(ctx, tenant, d.Name)
	if errors.Is(err, ErrStoreNotFound) {
		return nil
	}
	if err != nil {
		return wrapError(CodeInternal, err, "failed to read the destination")
	}
	if old.Provider == d.Provider && maps.Equal(old.Settings, d.Settings) {
		return nil
	}
	ps, err := cs.ListCloudPlacements(ctx, tenant, "")
	if err != nil {
		return wrapError(CodeInternal, err, "failed to list placements")
	}
	for _, p := range ps {
		if p.Destination == d.Name {
			return newError(CodeConflict, "destination %s holds keys; its provider and settings cannot change until they are undistributed (its drift mode and reconcile period can)", d.Name)
		}
	}
	return nil
}

// CloudReconcilePeriod is the period the tenant's reconcile schedule
// should run at: the shortest of its destinations' (0: none asks for one).
func (s *Service) CloudReconcilePeriod(ctx context.Context, c Caller) (time.Duration, error) {
	ds, err := s.ListCloudDestinations(ctx, c)
	if err != nil {
		return 0, err
	}
	var p time.Duration
	for _, d := range ds {
		if d.ReconcileEvery > 0 && (p == 0 || d.ReconcileEvery < p) {
			p = d.ReconcileEvery
		}
	}
	return p, nil
}

// CheckCloudDistribution decides whether a key may be distributed to dest
// (remove false) or taken out of it (remove true), before any workflow
// starts, and returns the key and the destination. A refusal is recorded
// as io.keyflow.request.rejected.v1 for op:
//
//   - the key or the destination does not exist (NotFoundException);
//   - the key is not exportable (AccessDeniedException): only an
//     exportable key's releasable copy may leave keyflow's HSM;
//   - the key is destroyed or pending deletion (KMSInvalidStateException);
//   - to take a key out, it must be there (NotFoundException).
//
// Whether the provider takes the key's spec is the connector's to say
// (the caller asks it next).
func (s *Service) CheckCloudDistribution(ctx context.Context, c Caller, op, keyRef, dest string, remove bool) (*Key, *CloudDestination, error) {
	k, d, err := s.checkCloudDistribution(ctx, c, keyRef, dest, remove)
	if err != nil {
		return nil, nil, s.Reject(ctx, c, op, err)
	}
	return k, d, nil
}

func (s *Service) checkCloudDistribution(ctx context.Context, c Caller, keyRef, dest string, remove bool) (*Key, *CloudDestination, error) {
	if err := checkCaller(c); err != nil {
		return nil, nil, err
	}
	k, _, err := s.resolve(ctx, c.Tenant, keyRef)
	if err != nil {
		return nil, nil, err
	}
	d, err := s.GetCloudDestination(ctx, c, dest)
	if err != nil {
		return nil, nil, err
	}
	if remove {
		if _, err := s.CloudPlacement(ctx, c, k.ID, d.Name); err != nil {
			return nil, nil, err
		}
		return k, d, nil
	}
	switch {
	case !k.Exportable:
		return nil, nil, newError(CodeAccessDenied, "key %s cannot be distributed: only keys created exportable (keyflow key create --exportable) may leave keyflow's HSM", k.ID)
	case k.Lifecycle.PendingDeletion || k.State == StateDestroyed || k.State == StateDestroyedCompromised:
		return nil, nil, newError(CodeInvalidState, "key %s is %s; a key going away is not distributed", k.ID, cloudKeyCondition(k))
	}
	return k, d, nil
}

func cloudKeyCondition(k *Key) string {
	if k.Lifecycle.PendingDeletion {
		return "pending deletion"
	}
	return string(k.State)
}

// WantedCloudState is the state keyflow wants a provider to hold for k:
// only an ACTIVE key encrypts there; a key pending deletion (or
// destroyed) is scheduled for deletion; every other state is disabled,
// since providers cannot allow decrypt while refusing encrypt.
func WantedCloudState(k *Key) string {
	switch {
	case k.Lifecycle.PendingDeletion, k.State == StateDestroyed, k.State == StateDestroyedCompromised:
		return PlacementPendingDeletion
	case k.State == StateActive:
		return PlacementEnabled
	}
	return PlacementDisabled
}

// CloudDestinationStatus is one destination's summary.
type CloudDestinationStatus struct {
	Destination *CloudDestination
	Placements  int
	// Pending are the placements with work left, each with why.
	Pending []CloudPendingWork
	// LastError is the placement with the most recent error, if any.
	LastError *CloudPlacement
}

// CloudPendingWork is one placement with work left.
type CloudPendingWork struct {
	Placement *CloudPlacement
	Why       []string
}

// CloudStatus sums up one destination (name), or every destination of
// the tenant (name empty).
func (s *Service) CloudStatus(ctx context.Context, c Caller, name string) ([]CloudDestinationStatus, error) {
	var ds []*CloudDestination
	if name != "" {
		d, err := s.GetCloudDestination(ctx, c, name)
		if err != nil {
			return nil, err
		}
		ds = []*CloudDestination{d}
	} else {
		var err error
		if ds, err = s.ListCloudDestinations(ctx, c); err != nil {
			return nil, err
		}
		slices.SortFunc(ds, func(a, b *CloudDestination) int { return strings.Compare(a.Name, b.Name) })
	}
	ps, err := s.CloudPlacements(ctx, c, "")
	if err != nil {
		return nil, err
	}
	slices.SortFunc(ps, func(a, b *CloudPlacement) int { return strings.Compare(a.KeyID, b.KeyID) })
	out := make([]CloudDestinationStatus, 0, len(ds))
	keys := map[string]*Key{}
	for _, d := range ds {
		st := CloudDestinationStatus{Destination: d}
		for _, p := range ps {
			if p.Destination != d.Name {
				continue
			}
			st.Placements++
			k, ok := keys[p.KeyID]
			if !ok {
				k, _, err = s.getKey(ctx, c.Tenant, p.KeyID)
				if err != nil && !errors.Is(err, ErrNotFound) {
					return nil, err
				}
				keys[p.KeyID] = k
			}
			if why := CloudWorkLeft(p, k); len(why) > 0 {
				st.Pending = append(st.Pending, CloudPendingWork{Placement: p, Why: why})
			}
			if p.LastErrorCode != "" && (st.LastError == nil || p.LastErrorAt.After(st.LastError.LastErrorAt)) {
				st.LastError = p
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// CloudWorkLeft says why a placement is not in step with keyflow's key
// (nil when it is): a step started and not finished, an error, a state
// or a primary version other than keyflow's. k is nil when the key no
// longer exists.
func CloudWorkLeft(p *CloudPlacement, k *Key) []string {
	var why []string
	if p.Pending != "" {
		why = append(why, fmt.Sprintf("step %s started and not finished", p.Pending))
	}
	if p.LastErrorCode != "" {
		why = append(why, fmt.Sprintf("last error %s", p.LastErrorCode))
	}
	if k == nil {
		return append(why, "the key no longer exists in keyflow")
	}
	want := WantedCloudState(k)
	if want != p.State {
		why = append(why, fmt.Sprintf("state %s, keyflow wants %s", p.State, want))
	}
	if v, ok := p.Primary(); want != PlacementPendingDeletion && (!ok || v.KeyVersion != k.PrimaryVersion) {
		why = append(why, fmt.Sprintf("keyflow version %d is not there yet", k.PrimaryVersion))
	}
	return why
}
