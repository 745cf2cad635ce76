package api

import "time"

// Governance operations: dual control (approvals) and the tenant policy.
//
//	kf.v1.<tenant>.approvals.<op>     list, show, approve, deny
//	kf.v1.<tenant>.tenantpolicy.<op>  get, set
const (
	OpApprovalList     = "approvals.list"
	OpApprovalShow     = "approvals.show"
	OpApprovalApprove  = "approvals.approve"
	OpApprovalDeny     = "approvals.deny"
	OpTenantPolicyGet  = "tenantpolicy.get"
	OpTenantPolicySet  = "tenantpolicy.set"
	HeaderRetryAfterMs = "Kf-Retry-After-Ms" // on ThrottlingException replies
	HeaderApprovalID   = "Kf-Approval-Id"    // on PendingApprovalException replies
)

// TenantPolicy is a tenant's governance document (see kms.TenantPolicy
// for what each field does).
type TenantPolicy struct {
	Approvals             []ApprovalRule `json:"approvals,omitempty"`
	Quotas                *Quotas        `json:"quotas,omitempty"`
	Profiles              []string       `json:"profiles,omitempty"`
	MinDeletionWindowDays int            `json:"minDeletionWindowDays,omitempty"`
	RequiredOrigin        string         `json:"requiredOrigin,omitempty"`
	UpdatedAt             *time.Time     `json:"updatedAt,omitempty"`
	UpdatedBy             string         `json:"updatedBy,omitempty"`
}

// ApprovalRule makes one operation need Required approvals.
type ApprovalRule struct {
	Operation    string   `json:"operation"`
	Required     int      `json:"required"`
	Approvers    []string `json:"approvers,omitempty"`
	ExpiresAfter string   `json:"expiresAfter,omitempty"`
}

// Quotas are a tenant's limits; zero means none.
type Quotas struct {
	RequestsPerSecond float64 `json:"requestsPerSecond,omitempty"`
	Burst             int     `json:"burst,omitempty"`
	MaxKeys           int     `json:"maxKeys,omitempty"`
}

// SetTenantPolicyRequest replaces the caller's tenant policy.
type SetTenantPolicyRequest struct {
	Policy TenantPolicy `json:"policy"`
}

// TenantPolicyReply is the tenant policy in force. (A change that waits
// for approval is answered with PendingApprovalException instead.)
type TenantPolicyReply struct {
	Policy *TenantPolicy `json:"policy"`
}

// ApprovalListRequest lists approval requests, optionally in one state.
type ApprovalListRequest struct {
	State string `json:"state,omitempty"`
}

// ApprovalRequest names one approval request (show).
type ApprovalRequest struct {
	ApprovalID string `json:"approvalId"`
}

// ApprovalDecisionRequest approves (comment optional) or denies (comment
// is the required reason) one request.
type ApprovalDecisionRequest struct {
	ApprovalID string `json:"approvalId"`
	Comment    string `json:"comment,omitempty"`
}

// Approval is one approval request.
type Approval struct {
	ApprovalID string         `json:"approvalId"`
	Operation  string         `json:"operation"`
	Target     string         `json:"target"`
	Requester  string         `json:"requester"`
	State      string         `json:"state"`
	Required   int            `json:"required"`
	Approvals  int            `json:"approvals"`
	Approvers  []string       `json:"approvers,omitempty"`
	Votes      []ApprovalVote `json:"votes,omitempty"`
	CreatedAt  time.Time      `json:"createdAt"`
	ExpiresAt  time.Time      `json:"expiresAt"`
	UpdatedAt  time.Time      `json:"updatedAt"`
	ErrorCode  string         `json:"errorCode,omitempty"`
	Message    string         `json:"message,omitempty"`
}

// ApprovalVote is one approver's decision.
type ApprovalVote struct {
	Principal string    `json:"principal"`
	Decision  string    `json:"decision"` // APPROVE or DENY
	Comment   string    `json:"comment,omitempty"`
	At        time.Time `json:"at"`
}

// ApprovalListReply lists approval requests, newest first.
type ApprovalListReply struct {
	Approvals []Approval `json:"approvals"`
}
