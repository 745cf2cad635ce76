package workflows_test

import (
	"context"
	"testing"

	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"

	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

// BenchmarkApprovalVote is one approval vote end to end on a real
// Temporal server: kms.DecideApproval mints the vote's token, the update
// reaches the approval workflow, its local activity checks the token, and
// an activity records the vote. Next to kms's BenchmarkOpTokenMint and
// BenchmarkOpTokenVerify, it gives the tokens' share of a vote.
func BenchmarkApprovalVote(b *testing.B) {
	ctx := context.Background()
	bed := testbed.New(b)
	ts := temporaltest.NewServer() // WithT takes a *testing.T only
	defer ts.Stop()
	w := ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) { workflows.Register(r, &workflows.Activities{KMS: bed.KMS}) })
	defer w.Stop()
	bed.KMS.SetApprovalEngine(&workflows.ApprovalEngine{Temporal: ts.GetDefaultClient(), Tokens: bed.KMS})
	if _, err := bed.KMS.SetTenantPolicy(ctx, alice, &kms.TenantPolicy{Approvals: []kms.ApprovalRule{{Operation: kms.ApprovalDisable, Required: 2}}}); err != nil {
		b.Fatal(err)
	}
	bob := kms.Caller{Tenant: "alpha", Principal: "bob", RequestID: "bench"}
	for b.Loop() {
		b.StopTimer()
		k, err := bed.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
		if err != nil {
			b.Fatal(err)
		}
		id, pending, err := bed.KMS.RequireApproval(ctx, alice, kms.ApprovalDisable, k.ID)
		if err != nil || !pending {
			b.Fatal(pending, err)
		}
		b.StartTimer()
		if _, err := bed.KMS.DecideApproval(ctx, bob, kms.ApprovalDecision{ID: id, Approve: true}); err != nil {
			b.Fatal(err)
		}
	}
}
