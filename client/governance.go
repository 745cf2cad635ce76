package client

import (
	"context"
	"errors"

	"github.com/keyflow/keyflow/client/api"
)

// PendingApproval returns the approval ID when err says the operation
// waits for approval (PendingApprovalException), else "".
func PendingApproval(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Code == "PendingApprovalException" {
		return e.ApprovalID
	}
	return ""
}

// ListApprovals lists the tenant's approval requests, newest first
// (state "" for all).
func (c *Client) ListApprovals(ctx context.Context, state string) (*api.ApprovalListReply, error) {
	var out api.ApprovalListReply
	return &out, c.Call(ctx, api.OpApprovalList, api.ApprovalListRequest{State: state}, &out)
}

// ShowApproval returns one approval request.
func (c *Client) ShowApproval(ctx context.Context, id string) (*api.Approval, error) {
	var out api.Approval
	return &out, c.Call(ctx, api.OpApprovalShow, api.ApprovalRequest{ApprovalID: id}, &out)
}

// Approve approves a request as this principal.
func (c *Client) Approve(ctx context.Context, id, comment string) (*api.Approval, error) {
	var out api.Approval
	return &out, c.Call(ctx, api.OpApprovalApprove, api.ApprovalDecisionRequest{ApprovalID: id, Comment: comment}, &out)
}

// Deny denies a request as this principal; the reason is required.
func (c *Client) Deny(ctx context.Context, id, reason string) (*api.Approval, error) {
	var out api.Approval
	return &out, c.Call(ctx, api.OpApprovalDeny, api.ApprovalDecisionRequest{ApprovalID: id, Comment: reason}, &out)
}

// GetTenantPolicy returns the tenant policy.
func (c *Client) GetTenantPolicy(ctx context.Context) (*api.TenantPolicyReply, error) {
	var out api.TenantPolicyReply
	return &out, c.Call(ctx, api.OpTenantPolicyGet, struct{}{}, &out)
}

// SetTenantPolicy replaces the tenant policy. When the current policy puts
// policy changes under dual control, it fails with
// PendingApprovalException (see PendingApproval).
func (c *Client) SetTenantPolicy(ctx context.Context, p api.TenantPolicy) (*api.TenantPolicyReply, error) {
	var out api.TenantPolicyReply
	return &out, c.Call(ctx, api.OpTenantPolicySet, api.SetTenantPolicyRequest{Policy: p}, &out)
}
