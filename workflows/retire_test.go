package workflows_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

// The retirement window's timer (time skipped): at the date it destroys
// the version; cancelled before, it destroys nothing.
func TestRetirementWorkflow(t *testing.T) {
	ctx := context.Background()
	for _, cancel := range []bool{false, true} {
		b := testbed.New(t)
		k, _ := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
		old, _ := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("v1")})
		if _, err := b.KMS.CreateVersion(ctx, alice, kms.CreateVersionParams{KeyID: k.ID, Version: 2}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.KMS.SetPrimaryVersion(ctx, alice, kms.SetPrimaryParams{KeyID: k.ID, Version: 2}); err != nil {
			t.Fatal(err)
		}
		res, err := b.KMS.RetireVersion(ctx, alice, kms.RetireVersionParams{KeyRef: k.ID, Version: 1, Window: 7 * kms.Day})
		if err != nil {
			t.Fatal(err)
		}
		env := newEnv(t, b)
		if cancel {
			env.RegisterDelayedCallback(func() {
				if _, err := b.KMS.CancelRetirement(ctx, alice, k.ID, 1); err != nil {
					t.Error(err)
				}
				env.SignalWorkflow(workflows.SignalCancel, workflows.CancelSignal{Principal: "alice", Token: opToken(t, b.KMS, "alice", workflows.SignalCancel, "")})
			}, time.Hour)
		}
		env.ExecuteWorkflow(workflows.RetirementWorkflow, workflows.RetirementParams{Tenant: "alpha", KeyID: k.ID, Version: 1, RetirementDate: res.RetirementDate, Principal: "alice", RequestID: "r1"})
		var out workflows.RetirementResult
		if err := env.GetWorkflowResult(&out); err != nil {
			t.Fatal(err)
		}
		_, derr := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: old.Ciphertext})
		if cancel {
			if !out.Cancelled || derr != nil {
				t.Fatalf("cancelled window: %+v, decrypt %v", out, derr)
			}
			continue
		}
		if out.Cancelled || out.State != kms.StateDestroyed || kms.CodeOf(derr) != kms.CodeInvalidState {
			t.Fatalf("window ended: %+v, decrypt %v", out, derr)
		}
	}
}

// retire-version --now under a "retire-version-now" rule: parked for two
// approvers, nothing destroyed meanwhile, then run as the requester. The
// default (a pending window) needs no approval: the window is the safety.
func TestRetireNowGateOverNATS(t *testing.T) {
	ctx := context.Background()
	b, _ := gatedBed(t)
	kmsAlice := alice
	alice, bob, carol := b.Client("alpha", "alice"), b.Client("alpha", "bob"), b.Client("alpha", "carol")
	if _, err := alice.SetTenantPolicy(ctx, api.TenantPolicy{Approvals: []api.ApprovalRule{
		{Operation: "retire-version-now", Required: 2, ExpiresAfter: "1h"},
	}}); err != nil {
		t.Fatal(err)
	}
	k, err := alice.CreateKey(ctx, api.CreateKeyRequest{Alias: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	for v := uint32(2); v <= 3; v++ {
		if _, err := b.KMS.CreateVersion(ctx, kmsAlice, kms.CreateVersionParams{KeyID: k.KeyID, Version: v}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.KMS.SetPrimaryVersion(ctx, kmsAlice, kms.SetPrimaryParams{KeyID: k.KeyID, Version: v}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = alice.RetireVersion(ctx, api.RetireVersionRequest{KeyID: "alias/orders", Version: 1, Now: true})
	id := pending(t, "retire-version --now", err)
	if a, _ := alice.ShowApproval(ctx, id); a.Operation != "retire-version-now" || a.Target != k.KeyID+";version=1" {
		t.Fatalf("approval: %+v", a)
	}
	if m, _ := alice.DescribeKey(ctx, k.KeyID); m.Versions[0].State != "ACTIVE" {
		t.Fatalf("version 1 before approval: %+v", m.Versions[0])
	}
	if _, err := bob.Approve(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.Approve(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	waitState(t, alice, id, kms.ApprovalCompleted)
	if m, _ := alice.DescribeKey(ctx, k.KeyID); m.Versions[0].State != "DESTROYED" {
		t.Fatalf("version 1 after approval: %+v", m.Versions[0])
	}
	// The window needs no approval.
	r, err := alice.RetireVersion(ctx, api.RetireVersionRequest{KeyID: "alias/orders", Version: 2})
	if err != nil || r.RetirementDate == nil || r.WorkflowID != workflows.RetirementWorkflowID("alpha", k.KeyID, 2) {
		t.Fatalf("retire-version with a window: %+v %v", r, err)
	}
	allValid(t, b)
}
