package workflows_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

// TestApprovedDeletionWithoutTimerIsUndone: an approved schedule-deletion
// whose deletion timer cannot be started (a worker without the lifecycle
// workflows) cancels the pending deletion it made, and the request ends
// FAILED: no key is left refusing every use with nothing to destroy it.
func TestApprovedDeletionWithoutTimerIsUndone(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	if _, err := b.KMS.SetTenantPolicy(ctx, alice, &kms.TenantPolicy{Approvals: []kms.ApprovalRule{
		{Operation: kms.ApprovalScheduleDeletion, Required: 1, ExpiresAfter: "1h"}}}); err != nil {
		t.Fatal(err)
	}
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	if err != nil {
		t.Fatal(err)
	}
	eng := &captureEngine{}
	b.KMS.SetApprovalEngine(eng)
	target, err := b.KMS.PrepareScheduleDeletion(ctx, alice, kms.ScheduleDeletionParams{KeyRef: k.ID, Window: 10 * kms.Day})
	if err != nil {
		t.Fatal(err)
	}
	if _, pending, err := b.KMS.RequireApproval(ctx, alice, kms.ApprovalScheduleDeletion, target); err != nil || !pending {
		t.Fatalf("RequireApproval: %v %v", pending, err)
	}
	a := eng.last
	env := newEnv(t, b) // Activities without a Temporal client: no timers
	var bob voteResult
	scheduleVote(env, time.Minute, workflows.UpdateApprove, "bob", &bob)
	env.ExecuteWorkflow(workflows.ApprovalWorkflow, workflows.ApprovalParams{ID: a.ID, Tenant: a.Tenant, Operation: a.Operation, Target: a.Target,
		Requester: a.Requester, RequestID: a.RequestID, Required: a.Required, Timeout: time.Hour})
	var res workflows.ApprovalResult
	if err := env.GetWorkflowResult(&res); err != nil || res.State != kms.ApprovalFailed || res.ErrorCode != string(kms.CodeInternal) {
		t.Fatalf("result %+v, %v", res, err)
	}
	if got, _ := b.KMS.GetKey(ctx, alice, k.ID); got.Lifecycle.PendingDeletion {
		t.Fatal("the key stayed pending deletion without a timer")
	}
	var scheduled, cancelled int
	for _, e := range b.EventsOfType("alpha", events.TypeKeyDeletionScheduled) {
		if e.ErrorCode == "" && e.Data["windowDays"] == float64(10) {
			scheduled++
		}
	}
	for _, e := range b.EventsOfType("alpha", events.TypeKeyDeletionCancelled) {
		if e.ErrorCode == "" {
			cancelled++
		}
	}
	if scheduled != 1 || cancelled != 1 {
		t.Fatalf("%d scheduled and %d cancelled records, want 1 and 1", scheduled, cancelled)
	}
}
