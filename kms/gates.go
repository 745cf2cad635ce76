package kms

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

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
	if k.Lifecycle.PendingDeletion {
		return "", newError(CodeInvalidState, "key %s is already pending deletion (scheduled for %s)", k.ID, k.Lifecycle.DeletionDate.Format(time.RFC3339))
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
