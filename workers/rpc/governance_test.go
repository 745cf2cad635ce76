package rpc_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// evtApprovals runs the approval workflow's steps in-process, as its
// activities do: each vote is recorded at once, and an approved request
// completes (without running an operation). workflows tests the real one.
type evtApprovals struct{ kms *kms.Service }

func (e evtApprovals) StartApproval(context.Context, *kms.Approval) error { return nil }

func (e evtApprovals) CastVote(ctx context.Context, tenant, id string, v kms.ApprovalVote) error {
	c := kms.Caller{Tenant: tenant, Principal: v.Principal, RequestID: "evt-vote"}
	if err := e.kms.RecordApprovalVote(ctx, c, id, v); err != nil {
		return err
	}
	a, err := e.kms.GetApproval(ctx, c, id)
	if err != nil {
		return err
	}
	if a.State == kms.ApprovalApproved {
		return e.kms.RecordApprovalOutcome(ctx, kms.Caller{Tenant: tenant, Principal: "keyflow-approvals", RequestID: "evt-outcome"}, id, kms.ApprovalOutcome{})
	}
	return nil
}

// governanceWireMessages sends the governance messages for
// TestSchemaWireMessages (send, ok and refused validate them) and makes
// every governance event type happen.
func governanceWireMessages(t *testing.T, b *testbed.Bed,
	send func(op, reqSchema, body, replySchema string) []byte,
	ok func(op, reqSchema, body, replySchema string) []byte,
	refused func(op, reqSchema, body string, code kms.Code)) {
	t.Helper()
	ctx := context.Background()
	b.KMS.SetApprovalEngine(evtApprovals{b.KMS})
	bob := b.Client("alpha", "bob")
	ok(api.OpTenantPolicyGet, "", `{}`, "TenantPolicyReply")
	ok(api.OpTenantPolicySet, "SetTenantPolicyRequest", `{"policy":{"approvals":[{"operation":"rotate","required":1,"approvers":["bob","carol"],"expiresAfter":"1h"}],"profiles":["nist-ir-8547"],"minDeletionWindowDays":7}}`, "TenantPolicyReply")
	ok(api.OpTenantPolicyGet, "", `{}`, "TenantPolicyReply")
	refused(api.OpTenantPolicySet, "", `{"policy":{"profiles":["fips-9000"]}}`, kms.CodeValidation)
	refused(api.OpTenantPolicySet, "", `{"policy":{"quotas":{"rps":1}}}`, kms.CodeValidation)

	pending := func() string {
		t.Helper()
		var er api.ErrorReply
		if err := json.Unmarshal(send(api.OpKeyRotate, "KeyRequest", `{"keyId":"wire"}`, "ErrorReply"), &er); err != nil || er.Error.Code != string(kms.CodePendingApproval) || er.Error.ApprovalID == "" {
			t.Fatalf("rotation under dual control: %+v, %v", er, err)
		}
		return er.Error.ApprovalID
	}
	id := pending()
	ok(api.OpApprovalList, "ApprovalListRequest", `{"state":"PENDING"}`, "ApprovalListReply")
	ok(api.OpApprovalList, "ApprovalListRequest", `{}`, "ApprovalListReply")
	refused(api.OpApprovalList, "", `{"state":"MAYBE"}`, kms.CodeValidation)
	ok(api.OpApprovalShow, "ApprovalRequest", `{"approvalId":"`+id+`"}`, "Approval")
	refused(api.OpApprovalShow, "ApprovalRequest", `{"approvalId":"nope"}`, kms.CodeValidation)
	refused(api.OpApprovalApprove, "ApprovalDecisionRequest", `{"approvalId":"`+id+`","comment":"mine"}`, kms.CodeAccessDenied)
	if a, err := bob.Approve(ctx, id, "ok"); err != nil || a.State != "COMPLETED" {
		t.Fatalf("bob's approval: %+v, %v", a, err)
	}
	refused(api.OpApprovalDeny, "ApprovalDecisionRequest", `{"approvalId":"`+id+`","comment":"too late"}`, kms.CodeInvalidState)
	denyID := pending()
	if _, err := bob.Deny(ctx, denyID, "no"); err != nil {
		t.Fatal(err)
	}
	expID := pending()
	if err := b.KMS.RecordApprovalOutcome(ctx, kms.Caller{Tenant: "alpha", Principal: "keyflow-approvals", RequestID: "evt-expiry"}, expID, kms.ApprovalOutcome{Expired: true}); err != nil {
		t.Fatal(err)
	}

	// Quotas: a burst of one, then ThrottlingException with its hint.
	ok(api.OpTenantPolicySet, "SetTenantPolicyRequest", `{"policy":{"quotas":{"requestsPerSecond":0.0001,"burst":1,"maxKeys":1000}}}`, "TenantPolicyReply")
	ok(api.OpEncrypt, "EncryptRequest", `{"keyId":"wire","plaintext":"aGVsbG8="}`, "EncryptReply")
	var er api.ErrorReply
	if err := json.Unmarshal(send(api.OpEncrypt, "EncryptRequest", `{"keyId":"wire","plaintext":"aGVsbG8="}`, "ErrorReply"), &er); err != nil || er.Error.Code != string(kms.CodeThrottling) || er.Error.RetryAfterMillis < 1000 {
		t.Fatalf("over the quota: %+v, %v", er, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(b.EventsOfType("alpha", events.TypeQuotaThrottled)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no throttle record")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Lift the quota again (the rest of the test sends more).
	if _, err := b.KMS.SetTenantPolicy(ctx, kms.Caller{Tenant: "alpha", Principal: "alice", RequestID: "evt-lift"}, &kms.TenantPolicy{}); err != nil {
		t.Fatal(err)
	}
}
