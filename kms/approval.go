package kms

import (
	"context"
	"errors"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// ApprovalKind names a protected operation: one a tenant policy can put
// under dual control.
type ApprovalKind string

// Protected operations.
const (
	ApprovalScheduleDeletion     ApprovalKind = "schedule-deletion"
	ApprovalDisable              ApprovalKind = "disable"
	ApprovalImport               ApprovalKind = "import"
	ApprovalPolicyChange         ApprovalKind = "policy-change"
	ApprovalArchiveRestoreCancel ApprovalKind = "archive-restore-cancel"
	ApprovalRootShareExport      ApprovalKind = "root-share-export"
	ApprovalMigrationCutover     ApprovalKind = "migration-cutover"
	ApprovalRotate               ApprovalKind = "rotate"
	// ApprovalRetireVersionNow is `key retire-version --now`: the
	// destruction of a version's material with no pending window.
	ApprovalRetireVersionNow ApprovalKind = "retire-version-now"
)

// ApprovalKinds lists the protected operations a policy may name.
func ApprovalKinds() []ApprovalKind {
	return []ApprovalKind{ApprovalScheduleDeletion, ApprovalDisable, ApprovalImport, ApprovalPolicyChange,
		ApprovalArchiveRestoreCancel, ApprovalRootShareExport, ApprovalMigrationCutover, ApprovalRotate, ApprovalRetireVersionNow}
}

// ApprovalState is where an approval request stands.
type ApprovalState string

// Approval states. PENDING waits for votes; APPROVED has its approvals and
// runs the operation, which ends COMPLETED or FAILED; DENIED and EXPIRED
// never ran it.
const (
	ApprovalPending   ApprovalState = "PENDING"
	ApprovalApproved  ApprovalState = "APPROVED"
	ApprovalCompleted ApprovalState = "COMPLETED"
	ApprovalFailed    ApprovalState = "FAILED"
	ApprovalDenied    ApprovalState = "DENIED"
	ApprovalExpired   ApprovalState = "EXPIRED"
)

// Final reports whether nothing more happens to the request.
func (s ApprovalState) Final() bool {
	return s == ApprovalCompleted || s == ApprovalFailed || s == ApprovalDenied || s == ApprovalExpired
}

// Approval is one approval request, as stored in kf_approvals and shown by
// `keyflow approval show`. It holds IDs and names, never key material.
type Approval struct {
	ID        string         `json:"id"`
	Tenant    string         `json:"tenant"`
	Operation ApprovalKind   `json:"operation"`
	Target    string         `json:"target"`
	Requester string         `json:"requester"`
	RequestID string         `json:"requestId,omitempty"`
	Required  int            `json:"required"`
	Approvers []string       `json:"approvers,omitempty"` // who may approve; empty: any approver
	State     ApprovalState  `json:"state"`
	Votes     []ApprovalVote `json:"votes,omitempty"`
	CreatedAt time.Time      `json:"createdAt"`
	ExpiresAt time.Time      `json:"expiresAt"`
	UpdatedAt time.Time      `json:"updatedAt"`
	// ErrorCode and Message report a FAILED operation (or why it did not
	// run).
	ErrorCode string `json:"errorCode,omitempty"`
	Message   string `json:"message,omitempty"`
	// ConsumedAt is set when an approval that is a one-time permit (an
	// import's: see importGate) was used.
	ConsumedAt *time.Time `json:"consumedAt,omitempty"`
}

// ApprovalVote is one approver's decision.
type ApprovalVote struct {
	Principal string    `json:"principal"`
	Approve   bool      `json:"approve"`
	Comment   string    `json:"comment,omitempty"`
	At        time.Time `json:"at"`
}

// Approvals counts the approving votes.
func (a *Approval) Approvals() int {
	n := 0
	for _, v := range a.Votes {
		if v.Approve {
			n++
		}
	}
	return n
}

// ApprovalResource is an approval request's name in audit events.
func ApprovalResource(tenant, id string) string { return "kf:" + tenant + ":approval/" + id }

// ApprovalEngine runs approval workflows (Temporal, in production: package
// workflows). The domain decides that an operation needs approval and
// records every step; the engine keeps the durable state machine: the
// votes, the expiry timer, and running the operation once approved.
type ApprovalEngine interface {
	// StartApproval starts the workflow of a stored request. It is
	// idempotent on a.ID.
	StartApproval(ctx context.Context, a *Approval) error
	// CastVote hands one vote to the request's workflow and returns once
	// the workflow accepted and recorded it, or refused it with a kms
	// error (self-approval, duplicate, closed request).
	CastVote(ctx context.Context, tenant, id string, v ApprovalVote) error
}

// governance is the service's tenant-policy and approval wiring.
type governance struct {
	store  GovernanceStore
	mu     sync.RWMutex
	engine ApprovalEngine
}

// SetApprovalEngine wires the workflow engine that runs approvals. It is
// a setter rather than a Config field because the engine (a Temporal
// client) usually starts after the service. Until it is set, an operation
// that needs approval is refused (fail closed).
func (s *Service) SetApprovalEngine(e ApprovalEngine) {
	s.gov.mu.Lock()
	s.gov.engine = e
	s.gov.mu.Unlock()
}

func (s *Service) approvalEngine() ApprovalEngine {
	s.gov.mu.RLock()
	defer s.gov.mu.RUnlock()
	return s.gov.engine
}

func (s *Service) newApprovalID() (string, error) {
	id, err := uuid.NewRandom()
	if err != nil {
		return "", wrapError(CodeInternal, err, "failed to draw an approval ID")
	}
	return id.String(), nil
}

// PendingApproval is the cause of a PendingApprovalException: the
// operation was not run, an approval request was opened instead.
type PendingApproval struct{ ID string }

func (p *PendingApproval) Error() string { return "pending approval " + p.ID }

// PendingApprovalError returns the error a transport answers a protected
// operation with when it waits for approval: code
// PendingApprovalException, the approval ID in the message and in
// PendingApprovalID.
func PendingApprovalError(id string) error {
	return &Error{Code: CodePendingApproval, Message: "the operation needs approval; approval ID=" + id +
		" (approvers: keyflow approval approve " + id + ")", cause: &PendingApproval{ID: id}}
}

// PendingApprovalID returns the approval ID of a PendingApprovalException
// ("" for any other error).
func PendingApprovalID(err error) string {
	var p *PendingApproval
	if errors.As(err, &p) {
		return p.ID
	}
	return ""
}

// RequireApproval is the dual-control hook. The transport handler of every
// protected operation calls it once, after validating the request and
// resolving its target (a key ID, or TenantPolicyTarget), before running
// the operation:
//
//	if id, pending, err := svc.RequireApproval(ctx, c, kms.ApprovalDisable, keyID); err != nil {
//		return nil, err
//	} else if pending {
//		return nil, kms.PendingApprovalError(id)
//	}
//
// When the tenant policy does not list kind, it returns pending=false and
// the handler goes on. Otherwise it stores a PENDING request, records
// io.keyflow.approval.requested.v1, starts the approval workflow and
// returns its ID with pending=true; the handler must then not run the
// operation: the workflow runs it (its registered protected operation,
// calling the domain directly, not through this hook) once M approvers
// agreed.
func (s *Service) RequireApproval(ctx context.Context, c Caller, kind ApprovalKind, target string) (approvalID string, pending bool, err error) {
	if err := checkCaller(c); err != nil {
		return "", false, err
	}
	p, _, err := s.tenantPolicy(ctx, c.Tenant)
	if err != nil {
		return "", false, err
	}
	if p.Rule(kind) == nil {
		return "", false, nil
	}
	id, err := s.newApprovalID()
	if err != nil {
		return "", false, err
	}
	if _, err := s.requireApproval(ctx, c, p, id, kind, target); err != nil {
		return "", false, err
	}
	return id, true, nil
}

// requireApproval opens approval request id under policy p's rule for
// kind (which must exist).
func (s *Service) requireApproval(ctx context.Context, c Caller, p *TenantPolicy, id string, kind ApprovalKind, target string) (a *Approval, err error) {
	defer s.finish(ctx, c, events.TypeApprovalRequested, &err, func() (string, map[string]any) {
		data := map[string]any{"approvalId": id, "operation": string(kind), "target": truncate(target, 256)}
		if a != nil {
			data["required"] = a.Required
			data["expiresAt"] = a.ExpiresAt.Format(time.RFC3339)
		}
		return ApprovalResource(c.Tenant, id), data
	}, func() { a = nil })
	rule := p.Rule(kind)
	engine := s.approvalEngine()
	if engine == nil || s.gov.store == nil {
		return nil, newError(CodeInternal, "the tenant policy requires approval for %s, and approvals are not available on this worker", kind)
	}
	ttl, err := rule.expiry()
	if err != nil {
		return nil, newError(CodeInternal, "the tenant policy's approval rule for %s is invalid", kind)
	}
	now := s.now().UTC()
	a = &Approval{
		ID: id, Tenant: c.Tenant, Operation: kind, Target: target, Requester: c.Principal, RequestID: c.RequestID,
		Required: rule.Required, Approvers: slices.Clone(rule.Approvers), State: ApprovalPending,
		CreatedAt: now, ExpiresAt: now.Add(ttl), UpdatedAt: now,
	}
	if err := s.gov.store.CreateApproval(ctx, a); err != nil {
		return nil, wrapError(CodeInternal, err, "failed to store the approval request")
	}
	if err := engine.StartApproval(ctx, a); err != nil {
		// Nothing will ever decide it: close it, so it does not sit
		// in the pending list.
		a.State, a.ErrorCode, a.Message = ApprovalFailed, string(CodeInternal), "the approval workflow did not start"
		if _, rev, gerr := s.gov.store.GetApproval(ctx, c.Tenant, id); gerr == nil {
			_, _ = s.gov.store.UpdateApproval(context.WithoutCancel(ctx), a, rev)
		}
		return nil, wrapError(CodeInternal, err, "failed to start the approval workflow")
	}
	return a, nil
}

// ApprovalDecision is one approver's answer to a request.
type ApprovalDecision struct {
	ID      string
	Approve bool
	// Comment is the approval's comment or the denial's reason (required
	// to deny). It is recorded in the audit trail: no secrets.
	Comment string
}

// DecideApproval approves or denies a pending request as the caller. The
// rules: with role information, the caller must have the approver role;
// when the rule lists approvers, the caller must be one; the requester
// cannot approve (or deny) their own request; each principal votes once;
// one denial ends the request. The workflow checks the same rules again
// (it is the authority, and serializes concurrent votes); a refusal is
// recorded here (io.keyflow.approval.approved.v1 or .denied.v1, outcome
// denied or failure), an accepted vote by the workflow.
func (s *Service) DecideApproval(ctx context.Context, c Caller, d ApprovalDecision) (a *Approval, err error) {
	typ := events.TypeApprovalApproved
	if !d.Approve {
		typ = events.TypeApprovalDenied
	}
	defer func() {
		if err == nil {
			return // the workflow recorded the vote
		}
		data := map[string]any{"approvalId": truncate(d.ID, 64), "comment": truncate(d.Comment, 1024)}
		if a != nil {
			data["operation"], data["target"] = string(a.Operation), truncate(a.Target, 256)
		}
		err = s.emit(ctx, c, typ, ApprovalResource(c.Tenant, truncate(d.ID, 64)), data, err)
		a = nil
	}()
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if c.Roles != nil && !slices.Contains(c.Roles, string(keypolicy.RoleApprover)) {
		return nil, newError(CodeAccessDenied, "principal %s does not have the %s role", truncate(c.Principal, 128), keypolicy.RoleApprover)
	}
	if !d.Approve && d.Comment == "" {
		return nil, newError(CodeValidation, "a denial needs a reason")
	}
	if len(d.Comment) > 1024 {
		return nil, newError(CodeValidation, "the comment is longer than 1024 characters")
	}
	if !PrintableText(d.Comment) {
		return nil, newError(CodeValidation, "the comment must be valid UTF-8 without control characters")
	}
	a, err = s.getApproval(ctx, c.Tenant, d.ID)
	if err != nil {
		return nil, err
	}
	if err := CheckVote(a, c.Principal); err != nil {
		return a, err
	}
	engine := s.approvalEngine()
	if engine == nil {
		return a, newError(CodeInternal, "approvals are not available on this worker")
	}
	vote := ApprovalVote{Principal: c.Principal, Approve: d.Approve, Comment: d.Comment}
	if err := engine.CastVote(ctx, c.Tenant, a.ID, vote); err != nil {
		return a, err
	}
	return s.getApproval(ctx, c.Tenant, d.ID)
}

// CheckVote applies the voting rules to a request as stored. The approval
// workflow calls it too (as its update validator), so the caller and the
// workflow judge alike.
func CheckVote(a *Approval, principal string) error {
	if principal == "" {
		return newError(CodeAccessDenied, "an anonymous caller cannot vote")
	}
	if a.State != ApprovalPending {
		return newError(CodeInvalidState, "approval %s is %s; only a PENDING request takes votes", a.ID, a.State)
	}
	if principal == a.Requester {
		return newError(CodeAccessDenied, "principal %s requested %s and cannot approve or deny its own request", truncate(principal, 128), a.ID)
	}
	if len(a.Approvers) > 0 && !slices.Contains(a.Approvers, principal) {
		return newError(CodeAccessDenied, "principal %s is not one of the approvers of %s", truncate(principal, 128), a.Operation)
	}
	for _, v := range a.Votes {
		if v.Principal == principal {
			return newError(CodeConflict, "principal %s has already voted on %s; approvals must come from %d distinct principals", truncate(principal, 128), a.ID, a.Required)
		}
	}
	return nil
}

func (s *Service) getApproval(ctx context.Context, tenant, id string) (*Approval, error) {
	if s.gov.store == nil {
		return nil, newError(CodeInternal, "approvals are not available on this worker")
	}
	if _, err := uuid.Parse(id); err != nil || len(id) != 36 {
		return nil, newError(CodeValidation, "%q is not an approval ID", truncate(id, 64))
	}
	a, _, err := s.gov.store.GetApproval(ctx, tenant, id)
	if errors.Is(err, ErrStoreNotFound) {
		return nil, newError(CodeNotFound, "approval %s does not exist", id)
	}
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to read the approval request")
	}
	return a, nil
}

// GetApproval returns one of the caller's tenant's approval requests.
func (s *Service) GetApproval(ctx context.Context, c Caller, id string) (a *Approval, err error) {
	defer s.finish(ctx, c, events.TypeApprovalRead, &err, func() (string, map[string]any) {
		return ApprovalResource(c.Tenant, truncate(id, 64)), map[string]any{"approvalId": truncate(id, 64), "count": btoi(a != nil)}
	}, func() { a = nil })
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	return s.getApproval(ctx, c.Tenant, id)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ListApprovals returns the tenant's approval requests, newest first,
// optionally only those in one state.
func (s *Service) ListApprovals(ctx context.Context, c Caller, state ApprovalState) (out []*Approval, err error) {
	defer s.finish(ctx, c, events.TypeApprovalRead, &err, func() (string, map[string]any) {
		return "", map[string]any{"count": len(out), "state": truncate(string(state), 64)}
	}, func() { out = nil })
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	switch state {
	case "", ApprovalPending, ApprovalApproved, ApprovalCompleted, ApprovalFailed, ApprovalDenied, ApprovalExpired:
	default:
		return nil, newError(CodeValidation, "state %q is not one of PENDING, APPROVED, COMPLETED, FAILED, DENIED, EXPIRED", truncate(string(state), 64))
	}
	if s.gov.store == nil {
		return nil, newError(CodeInternal, "approvals are not available on this worker")
	}
	all, err := s.gov.store.ListApprovals(ctx, c.Tenant)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to list approval requests")
	}
	out = make([]*Approval, 0, len(all))
	for _, a := range all {
		if state == "" || a.State == state {
			out = append(out, a)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out, nil
}

// RecordApprovalVote stores an accepted vote and records it
// (io.keyflow.approval.approved.v1 or .denied.v1, as the voter). The
// approval workflow calls it from its update handler, after its validator
// accepted the vote; it is idempotent (a vote already stored is not
// stored again, and c.IdempotencyKey keeps one audit record).
func (s *Service) RecordApprovalVote(ctx context.Context, c Caller, id string, v ApprovalVote) (err error) {
	typ := events.TypeApprovalApproved
	if !v.Approve {
		typ = events.TypeApprovalDenied
	}
	var a *Approval
	c.Principal = v.Principal
	defer s.finish(ctx, c, typ, &err, func() (string, map[string]any) {
		data := map[string]any{"approvalId": id, "comment": truncate(v.Comment, 1024)}
		if a != nil {
			data["operation"], data["target"] = string(a.Operation), truncate(a.Target, 256)
			data["approvals"], data["required"], data["state"] = a.Approvals(), a.Required, string(a.State)
		}
		return ApprovalResource(c.Tenant, id), data
	}, nil)
	return s.updateApproval(ctx, c.Tenant, id, func(x *Approval) {
		a = x
		for _, old := range x.Votes {
			if old.Principal == v.Principal {
				return
			}
		}
		v.At = s.now().UTC()
		x.Votes = append(x.Votes, v)
		switch {
		case !v.Approve:
			x.State = ApprovalDenied
		case x.Approvals() >= x.Required:
			x.State = ApprovalApproved
		}
	})
}

// ApprovalOutcome is how a request ended without a vote: it expired, or
// its operation ran (ErrorCode empty: it succeeded).
type ApprovalOutcome struct {
	Expired   bool
	ErrorCode Code
	Message   string
}

// RecordApprovalOutcome stores and records the end of a request: expired
// (io.keyflow.approval.expired.v1) or completed, that is, the approved
// operation ran (io.keyflow.approval.completed.v1; data.result is
// "succeeded" or "failed", with the operation's errorCode). The record's
// own outcome is success: the workflow completed; the operation's own
// events carry its failure. The workflow calls it; it is idempotent.
func (s *Service) RecordApprovalOutcome(ctx context.Context, c Caller, id string, o ApprovalOutcome) (err error) {
	typ := events.TypeApprovalCompleted
	if o.Expired {
		typ = events.TypeApprovalExpired
	}
	var a *Approval
	defer s.finish(ctx, c, typ, &err, func() (string, map[string]any) {
		data := map[string]any{"approvalId": id}
		if !o.Expired {
			data["result"] = "succeeded"
			if o.ErrorCode != "" {
				data["result"], data["errorCode"] = "failed", string(o.ErrorCode)
			}
		}
		if a != nil {
			data["operation"], data["target"] = string(a.Operation), truncate(a.Target, 256)
			data["approvals"], data["required"] = a.Approvals(), a.Required
			approvers := []string{}
			for _, v := range a.Votes {
				if v.Approve {
					approvers = append(approvers, truncate(v.Principal, 128))
				}
			}
			data["approvers"] = approvers
		}
		return ApprovalResource(c.Tenant, id), data
	}, nil)
	return s.updateApproval(ctx, c.Tenant, id, func(x *Approval) {
		a = x
		if x.State.Final() {
			return
		}
		switch {
		case o.Expired:
			x.State = ApprovalExpired
		case o.ErrorCode != "":
			x.State, x.ErrorCode, x.Message = ApprovalFailed, string(o.ErrorCode), truncate(o.Message, 1024)
		default:
			x.State = ApprovalCompleted
		}
	})
}

// updateApproval applies change to a stored request under its revision.
func (s *Service) updateApproval(ctx context.Context, tenant, id string, change func(*Approval)) error {
	if err := checkCaller(Caller{Tenant: tenant}); err != nil {
		return err
	}
	if s.gov.store == nil {
		return newError(CodeInternal, "approvals are not available on this worker")
	}
	for attempt := 0; attempt < 5; attempt++ {
		a, rev, err := s.gov.store.GetApproval(ctx, tenant, id)
		if errors.Is(err, ErrStoreNotFound) {
			return newError(CodeNotFound, "approval %s does not exist", id)
		}
		if err != nil {
			return wrapError(CodeInternal, err, "failed to read the approval request")
		}
		before := len(a.Votes)
		state := a.State
		change(a)
		if len(a.Votes) == before && a.State == state {
			return nil // already applied (a retried activity)
		}
		a.UpdatedAt = s.now().UTC()
		if _, err := s.gov.store.UpdateApproval(ctx, a, rev); errors.Is(err, ErrStoreConflict) {
			continue
		} else if err != nil {
			return wrapError(CodeInternal, err, "failed to store the approval request")
		}
		return nil
	}
	return newError(CodeConflict, "approval %s is changing concurrently; retry", id)
}
