package rpc

import (
	"context"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
)

// approvalGate is the dual-control hook of a protected operation's
// handler: nil when the operation may run now, or the
// PendingApprovalException to reply with (the approval workflow runs the
// operation once approved). Each protected handler calls it once, after
// resolving its target and before acting:
//
//	if err := s.approvalGate(ctx, c, kms.ApprovalDisable, keyID); err != nil {
//		return nil, err
//	}
func (s *Server) approvalGate(ctx context.Context, c kms.Caller, kind kms.ApprovalKind, target string) error {
	id, pending, err := s.cfg.KMS.RequireApproval(ctx, c, kind, target)
	if err != nil {
		return err
	}
	if pending {
		return kms.PendingApprovalError(id)
	}
	return nil
}

// governanceHeaders repeats the governance fields of an error in headers,
// for clients that read headers only.
func governanceHeaders(h nats.Header, e api.ErrorBody) {
	if e.ApprovalID != "" {
		h.Set(api.HeaderApprovalID, e.ApprovalID)
	}
	if e.RetryAfterMillis > 0 {
		h.Set(api.HeaderRetryAfterMs, strconv.FormatInt(e.RetryAfterMillis, 10))
	}
}

func (s *Server) approvalOps() map[string]handlerFunc {
	return map[string]handlerFunc{
		"list": s.approvalList, "show": s.approvalShow,
		"approve": s.approvalDecide(true), "deny": s.approvalDecide(false),
	}
}

func (s *Server) tenantPolicyOps() map[string]handlerFunc {
	return map[string]handlerFunc{"get": s.tenantPolicyGet, "set": s.tenantPolicySet}
}

func (s *Server) approvalList(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.ApprovalListRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpApprovalList, err)
	}
	list, err := s.cfg.KMS.ListApprovals(ctx, c, kms.ApprovalState(req.State))
	if err != nil {
		return nil, err
	}
	out := api.ApprovalListReply{Approvals: make([]api.Approval, 0, len(list))}
	for _, a := range list {
		out.Approvals = append(out.Approvals, ApprovalInfo(a))
	}
	return out, nil
}

func (s *Server) approvalShow(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.ApprovalRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpApprovalShow, err)
	}
	a, err := s.cfg.KMS.GetApproval(ctx, c, req.ApprovalID)
	if err != nil {
		return nil, err
	}
	return ApprovalInfo(a), nil
}

func (s *Server) approvalDecide(approve bool) handlerFunc {
	op := api.OpApprovalApprove
	if !approve {
		op = api.OpApprovalDeny
	}
	return func(ctx context.Context, c kms.Caller, body []byte) (any, error) {
		var req api.ApprovalDecisionRequest
		if err := decode(body, &req); err != nil {
			return nil, s.rejectWith(ctx, c, op, err)
		}
		a, err := s.cfg.KMS.DecideApproval(ctx, c, kms.ApprovalDecision{ID: req.ApprovalID, Approve: approve, Comment: req.Comment})
		if err != nil {
			return nil, err
		}
		return ApprovalInfo(a), nil
	}
}

func (s *Server) tenantPolicyGet(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct{}
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpTenantPolicyGet, err)
	}
	p, err := s.cfg.KMS.GetTenantPolicy(ctx, c)
	if err != nil {
		return nil, err
	}
	return api.TenantPolicyReply{Policy: PolicyInfo(p)}, nil
}

func (s *Server) tenantPolicySet(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.SetTenantPolicyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpTenantPolicySet, err)
	}
	res, err := s.cfg.KMS.SetTenantPolicy(ctx, c, policyFromAPI(req.Policy))
	if err != nil {
		return nil, err
	}
	if res.ApprovalID != "" {
		return nil, kms.PendingApprovalError(res.ApprovalID)
	}
	return api.TenantPolicyReply{Policy: PolicyInfo(res.Policy)}, nil
}

// ApprovalInfo converts an approval request to its wire form.
func ApprovalInfo(a *kms.Approval) api.Approval {
	out := api.Approval{
		ApprovalID: a.ID, Operation: string(a.Operation), Target: a.Target, Requester: a.Requester,
		State: string(a.State), Required: a.Required, Approvals: a.Approvals(), Approvers: a.Approvers,
		CreatedAt: a.CreatedAt, ExpiresAt: a.ExpiresAt, UpdatedAt: a.UpdatedAt, ErrorCode: a.ErrorCode, Message: a.Message,
	}
	for _, v := range a.Votes {
		d := "APPROVE"
		if !v.Approve {
			d = "DENY"
		}
		out.Votes = append(out.Votes, api.ApprovalVote{Principal: v.Principal, Decision: d, Comment: v.Comment, At: v.At})
	}
	return out
}

// PolicyInfo converts a tenant policy to its wire form.
func PolicyInfo(p *kms.TenantPolicy) *api.TenantPolicy {
	out := &api.TenantPolicy{Profiles: p.Profiles, MinDeletionWindowDays: p.MinDeletionWindowDays,
		RequiredOrigin: string(p.RequiredOrigin), UpdatedBy: p.UpdatedBy}
	if !p.UpdatedAt.IsZero() {
		t := p.UpdatedAt
		out.UpdatedAt = &t
	}
	for _, r := range p.Approvals {
		out.Approvals = append(out.Approvals, api.ApprovalRule{Operation: string(r.Operation), Required: r.Required, Approvers: r.Approvers, ExpiresAfter: r.ExpiresAfter})
	}
	if q := p.Quotas; q != nil {
		out.Quotas = &api.Quotas{RequestsPerSecond: q.RequestsPerSecond, Burst: q.Burst, MaxKeys: q.MaxKeys}
	}
	return out
}

// policyFromAPI converts a wire policy to the domain's. The server-set
// fields are ignored.
func policyFromAPI(p api.TenantPolicy) *kms.TenantPolicy {
	out := &kms.TenantPolicy{Profiles: p.Profiles, MinDeletionWindowDays: p.MinDeletionWindowDays, RequiredOrigin: kms.Origin(p.RequiredOrigin)}
	for _, r := range p.Approvals {
		out.Approvals = append(out.Approvals, kms.ApprovalRule{Operation: kms.ApprovalKind(r.Operation), Required: r.Required, Approvers: r.Approvers, ExpiresAfter: r.ExpiresAfter})
	}
	if q := p.Quotas; q != nil {
		out.Quotas = &kms.Quotas{RequestsPerSecond: q.RequestsPerSecond, Burst: q.Burst, MaxKeys: q.MaxKeys}
	}
	return out
}
