package kms

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/keyflow/keyflow/events"
)

// Dual control of key lifecycle operations.
//
// A protected operation is checked before it is parked for approval, so
// approvers never vote on a request that could not run: Prepare* does the
// operation's own checks (the key exists, the window is allowed, the
// state is valid) without changing anything, and returns the approval
// target. An operation whose input is more than a key ID carries its
// parameters in the target, in a form approvers read in `approval show`
// ("<keyID>;window=30d;cancelOnUse=false"): the approvers approve exactly
// what will run, and the approval workflow (whose input is the target)
// runs exactly that. Targets hold IDs and numbers only, never secrets.
//
// A refusal in Prepare* is recorded as the operation's own event (outcome
// denied or failure), as if the operation had been refused; success
// records nothing (io.keyflow.approval.requested.v1 follows, or the
// operation itself runs and records its event).

// DeletionTarget is the approval target of a schedule-deletion request.
func DeletionTarget(keyID string, window time.Duration, cancelOnUse bool) string {
	return fmt.Sprintf("%s;window=%dd;cancelOnUse=%t", keyID, int(window/Day), cancelOnUse)
}

// ParseDeletionTarget reads a DeletionTarget back into the parameters of
// ScheduleDeletion.
func ParseDeletionTarget(target string) (ScheduleDeletionParams, error) {
	parts := strings.Split(target, ";")
	if len(parts) != 3 || !strings.HasPrefix(parts[1], "window=") || !strings.HasSuffix(parts[1], "d") || !strings.HasPrefix(parts[2], "cancelOnUse=") {
		return ScheduleDeletionParams{}, newError(CodeValidation, "%q is not a schedule-deletion target", truncate(target, 128))
	}
	days, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(parts[1], "window="), "d"))
	if err != nil {
		return ScheduleDeletionParams{}, newError(CodeValidation, "%q is not a schedule-deletion target", truncate(target, 128))
	}
	cancel, err := strconv.ParseBool(strings.TrimPrefix(parts[2], "cancelOnUse="))
	if err != nil {
		return ScheduleDeletionParams{}, newError(CodeValidation, "%q is not a schedule-deletion target", truncate(target, 128))
	}
	return ScheduleDeletionParams{KeyRef: parts[0], Window: time.Duration(days) * Day, CancelOnUse: cancel}, nil
}

// DisableTarget is the approval target of a disable request: the key ID,
// or "<keyID>;version=N" to suspend one version.
func DisableTarget(keyID string, version uint32) string {
	if version == 0 {
		return keyID
	}
	return fmt.Sprintf("%s;version=%d", keyID, version)
}

// ParseDisableTarget reads a DisableTarget back.
func ParseDisableTarget(target string) (keyID string, version uint32, err error) {
	keyID, v, found := strings.Cut(target, ";version=")
	if !found {
		return target, 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n == 0 {
		return "", 0, newError(CodeValidation, "%q is not a disable target", truncate(target, 128))
	}
	return keyID, uint32(n), nil
}

// checkDeletionWindow applies ScheduleDeletion's window rules, the
// tenant's minimum included, and returns the window (default filled in).
func (s *Service) checkDeletionWindow(ctx context.Context, tenant string, w time.Duration) (time.Duration, error) {
	if w == 0 {
		w = DefaultDeletionWindow
	}
	if w < MinDeletionWindow || w > MaxDeletionWindow || w%Day != 0 {
		return 0, newError(CodeValidation, "the deletion window must be a whole number of days from 7 to 30, not %s", w)
	}
	tp, _, err := s.tenantPolicy(ctx, tenant)
	if err != nil {
		return 0, err
	}
	if err := tp.CheckDeletionWindow(int(w / Day)); err != nil {
		return 0, err
	}
	return w, nil
}

// PrepareScheduleDeletion checks a deletion request as ScheduleDeletion
// would, without scheduling it, and returns its approval target (see
// DeletionTarget).
func (s *Service) PrepareScheduleDeletion(ctx context.Context, c Caller, p ScheduleDeletionParams) (target string, err error) {
	keyID := ""
	defer func() {
		if err == nil {
			return
		}
		data := map[string]any{"keyId": truncate(p.KeyRef, 64), "windowDays": int(p.Window / Day), "cancelOnUse": p.CancelOnUse}
		subject := ""
		if keyID != "" {
			data["keyId"], subject = keyID, ResourceName(c.Tenant, keyID)
		}
		err = s.emit(ctx, c, events.TypeKeyDeletionScheduled, subject, data, err)
	}()
	if err := checkCaller(c); err != nil {
		return "", err
	}
	k, _, err := s.resolve(ctx, c.Tenant, p.KeyRef)
	if err != nil {
		return "", err
	}
	keyID = k.ID
	w, err := s.checkDeletionWindow(ctx, c.Tenant, p.Window)
	if err != nil {
		return "", err
	}
	p.Window = w
	if err := s.refuseDeletion(k); err != nil {
		return "", err
	}
	if k.State == StateDestroyed || k.State == StateDestroyedCompromised {
		return "", newError(CodeInvalidState, "key %s is %s already", k.ID, k.State)
	}
	return DeletionTarget(k.ID, p.Window, p.CancelOnUse), nil
}

// PrepareDisable checks a request to suspend a key (or one version) and
// returns its approval target (see DisableTarget), or "" when the key
// (version) is SUSPENDED already: SetState changes nothing then, so
// there is nothing to approve.
func (s *Service) PrepareDisable(ctx context.Context, c Caller, p SetStateParams) (target string, err error) {
	keyID := ""
	defer func() {
		if err == nil {
			return
		}
		data := map[string]any{"keyId": truncate(p.KeyRef, 64), "to": string(StateSuspended)}
		if p.Version != 0 {
			data["version"] = p.Version
		}
		subject := ""
		if keyID != "" {
			data["keyId"], subject = keyID, ResourceName(c.Tenant, keyID)
		}
		err = s.emit(ctx, c, events.TypeKeyStateChanged, subject, data, err)
	}()
	if err := checkCaller(c); err != nil {
		return "", err
	}
	if len(p.Reason) > 1024 {
		return "", newError(CodeValidation, "reason is longer than 1024 characters")
	}
	k, _, err := s.resolve(ctx, c.Tenant, p.KeyRef)
	if err != nil {
		return "", err
	}
	keyID = k.ID
	if p.Version == 0 && k.State == StateSuspended {
		return "", nil // nothing to approve: SetState is a no-op
	}
	for _, v := range k.Versions {
		if p.Version != 0 && v.Number == p.Version && v.State == StateSuspended {
			return "", nil
		}
	}
	return DisableTarget(k.ID, p.Version), nil
}

// NeedsApproval reports whether the caller's tenant policy lists kind. It
// is a hint for transports, to skip the checks of Prepare* when no
// approval applies: RequireApproval decides, and fails closed when the
// policy cannot be read (NeedsApproval then answers true).
func (s *Service) NeedsApproval(ctx context.Context, c Caller, kind ApprovalKind) bool {
	p, _, err := s.tenantPolicy(ctx, c.Tenant)
	return err != nil || p.Rule(kind) != nil
}

// importGate is the dual-control hook of ImportKeyMaterial (the default
// ImportApprover) for a tenant policy that lists "import".
//
// An import is approved before it runs, and the wrapped material is never
// parked: the first ImportKeyMaterial call opens an approval request for
// the key (target: the key ID) and is refused with
// PendingApprovalException; once approved, the request is a one-time
// permit, and the requester runs the same import again (with the same
// wrapped material and token while the token is valid, or with new import
// parameters). That import consumes the permit. Asking again while a
// request is pending answers with the same approval ID. The protected
// operation of "import" therefore does nothing but complete: the
// approval is the permit.
func (s *Service) importGate(ctx context.Context, c Caller, k *Key) error {
	p, _, err := s.tenantPolicy(ctx, c.Tenant)
	if err != nil {
		return err
	}
	if p.Rule(ApprovalImport) == nil {
		return nil
	}
	if s.gov.store == nil {
		return newError(CodeInternal, "the tenant policy requires approval for import, and approvals are not available on this worker")
	}
	all, err := s.gov.store.ListApprovals(ctx, c.Tenant)
	if err != nil {
		return wrapError(CodeInternal, err, "failed to list approval requests")
	}
	for _, a := range all {
		if a.Operation != ApprovalImport || a.Target != k.ID || a.Requester != c.Principal {
			continue
		}
		switch {
		case a.State == ApprovalPending || a.State == ApprovalApproved:
			return PendingApprovalError(a.ID)
		case a.State == ApprovalCompleted && a.ConsumedAt == nil:
			ok, err := s.consumePermit(ctx, c.Tenant, a.ID)
			if err != nil {
				return err
			}
			if ok {
				return nil
			}
		}
	}
	id, pending, err := s.RequireApproval(ctx, c, ApprovalImport, k.ID)
	if err != nil {
		return err
	}
	if !pending { // the policy changed in between
		return nil
	}
	return PendingApprovalError(id)
}

// consumePermit marks a completed approval used, under its revision, so
// two imports racing for one permit cannot both have it. It reports
// whether this caller got it.
func (s *Service) consumePermit(ctx context.Context, tenant, id string) (bool, error) {
	a, rev, err := s.gov.store.GetApproval(ctx, tenant, id)
	if err != nil {
		return false, wrapError(CodeInternal, err, "failed to read the approval request")
	}
	if a.State != ApprovalCompleted || a.ConsumedAt != nil {
		return false, nil
	}
	now := s.now().UTC()
	a.ConsumedAt, a.UpdatedAt = &now, now
	if _, err := s.gov.store.UpdateApproval(ctx, a, rev); errors.Is(err, ErrStoreConflict) {
		return false, nil
	} else if err != nil {
		return false, wrapError(CodeInternal, err, "failed to store the approval request")
	}
	return true, nil
}

// CutoverApprovalID is the approval request of round round of a
// campaign's cutover gate: derived from the campaign, so the gate's
// activity can open it again after a retry without a second request.
func CutoverApprovalID(tenant, campaignID string, round int) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, fmt.Appendf(nil, "keyflow:%s:migration/%s/cutover/%d", tenant, campaignID, round)).String()
}

// OpenCutoverApproval opens the approval request of a migration
// campaign's cutover when the tenant policy lists "migration-cutover",
// as the campaign's starter (c.Principal), so the starter cannot approve
// it. It returns "" when the policy does not list it (the campaign's own
// `migrate approve` count applies). The migration workflow calls it at
// its gate; it is idempotent: the round's request, if it exists, is
// returned as it is.
func (s *Service) OpenCutoverApproval(ctx context.Context, c Caller, campaignID string, round int) (string, error) {
	if err := checkCaller(c); err != nil {
		return "", err
	}
	p, _, err := s.tenantPolicy(ctx, c.Tenant)
	if err != nil {
		return "", err
	}
	if p.Rule(ApprovalMigrationCutover) == nil {
		return "", nil
	}
	id := CutoverApprovalID(c.Tenant, campaignID, round)
	if _, _, err := s.gov.store.GetApproval(ctx, c.Tenant, id); err == nil {
		return id, nil
	} else if !errors.Is(err, ErrStoreNotFound) {
		return "", wrapError(CodeInternal, err, "failed to read the approval request")
	}
	if _, err := s.requireApproval(ctx, c, p, id, ApprovalMigrationCutover, campaignID); err != nil {
		return "", err
	}
	return id, nil
}

// CutoverVote turns `migrate approve` into a vote on the campaign's
// pending cutover approval request, under the approval rules (approver
// role, listed approvers, not the campaign's starter, one vote each). It
// reports voted=false when there is no such request: the policy does not
// list migration-cutover, or the campaign has not reached its gate, or
// its last request was denied or expired (the transport then signals the
// campaign as before, which opens a new request when governed).
func (s *Service) CutoverVote(ctx context.Context, c Caller, campaignID string) (a *Approval, err error) {
	if !s.NeedsApproval(ctx, c, ApprovalMigrationCutover) || s.gov.store == nil {
		return nil, nil
	}
	all, err := s.gov.store.ListApprovals(ctx, c.Tenant)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to list approval requests")
	}
	for _, x := range all {
		if x.Operation == ApprovalMigrationCutover && x.Target == campaignID && x.State == ApprovalPending {
			return s.DecideApproval(ctx, c, ApprovalDecision{ID: x.ID, Approve: true, Comment: "migrate approve " + campaignID})
		}
	}
	return nil, nil
}
