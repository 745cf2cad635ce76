package kms_test

import (
	"context"
	"testing"

	"github.com/keyflow/keyflow/kms"
)

// The cost of the authorization token a security-relevant signal or
// update carries: minting on the request path (one HMAC-SHA256 in the
// HSM) and checking it in the workflow's local activity (one more).
// Compare with BenchmarkEncryptNoAuditBaseline (one AES-GCM in the HSM)
// and with the approval vote round trip it rides on
// (workflows BenchmarkApprovalVote):
//
//	go test -run '^$' -bench 'OpToken|EncryptNoAuditBaseline' -benchtime 2s -count 3 ./kms/
func BenchmarkOpTokenMint(b *testing.B) {
	_, svc := benchService(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := svc.MintOpToken(ctx, benchCaller, "approval-1", "approve", ""); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpTokenVerify(b *testing.B) {
	_, svc := benchService(b)
	ctx := context.Background()
	tok, err := svc.MintOpToken(ctx, benchCaller, "approval-1", "approve", "")
	if err != nil {
		b.Fatal(err)
	}
	chk := kms.OpTokenCheck{WorkflowID: "approval-1", Operation: "approve", Tenant: benchCaller.Tenant, Principal: benchCaller.Principal, Token: tok}
	for b.Loop() {
		if err := svc.VerifyOpToken(ctx, chk); err != nil {
			b.Fatal(err)
		}
	}
}
