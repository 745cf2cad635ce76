package workflows_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

// registerDataKeys registers n data keys of key keyID and returns their
// registration IDs and plaintexts.
func registerDataKeys(t *testing.T, b *testbed.Bed, keyID string, n int) ([]string, [][]byte) {
	t.Helper()
	ctx := context.Background()
	var ids []string
	var pts [][]byte
	for i := range n {
		ec := kms.EncryptionContext{"row": fmt.Sprint(i)}
		dk, err := b.KMS.GenerateDataKey(ctx, alice, kms.GenerateDataKeyParams{KeyRef: keyID, Context: ec})
		if err != nil {
			t.Fatal(err)
		}
		d, err := b.KMS.RegisterDataKey(ctx, alice, kms.RegisterDataKeyParams{Ciphertext: dk.CiphertextBlob, Context: ec})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.ID)
		pts = append(pts, dk.Plaintext)
	}
	return ids, pts
}

func rotateWith(t *testing.T, b *testbed.Bed, p workflows.RotateKeyParams) workflows.RotateKeyResult {
	t.Helper()
	env := newEnv(t, b)
	env.ExecuteWorkflow(workflows.RotateKeyWorkflow, p)
	if !env.IsWorkflowCompleted() || env.GetWorkflowError() != nil {
		t.Fatalf("rotation: %v", env.GetWorkflowError())
	}
	var res workflows.RotateKeyResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	return res
}

// A rotation asked to rewrap moves every registered data key to the new
// primary version (each still opening to its data key), reports the
// counts, and then lets the old version be retired, which was refused
// before with the count.
func TestRotateKeyWorkflowRewrap(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	if err != nil {
		t.Fatal(err)
	}
	ids, pts := registerDataKeys(t, b, k.ID, 4)

	// Without the flag or the policy, a rotation leaves them where they are.
	res := rotateWith(t, b, workflows.RotateKeyParams{Tenant: "alpha", KeyID: k.ID, Principal: "alice", RequestID: "r1"})
	if res.NewVersion != 2 || res.Rewrap != nil {
		t.Fatalf("plain rotation: %+v", res)
	}
	if n, _ := b.KMS.CountDataKeys(ctx, alice, k.ID); n[1] != 4 {
		t.Fatalf("after a plain rotation: %v", n)
	}
	_, err = b.KMS.RetireVersion(ctx, alice, kms.RetireVersionParams{KeyRef: k.ID, Version: 1, Now: true})
	if !errors.Is(err, kms.ErrInvalidState) || !bytes.Contains([]byte(kms.PublicMessage(err)), []byte("4 registered data keys")) {
		t.Fatalf("retire of version 1 in use: %v, want KMSInvalidStateException naming 4", err)
	}

	res = rotateWith(t, b, workflows.RotateKeyParams{Tenant: "alpha", KeyID: k.ID, Principal: "alice", RequestID: "r2", Rewrap: true})
	if res.NewVersion != 3 || res.Rewrap == nil || res.RewrapProblem != "" {
		t.Fatalf("rotation with rewrap: %+v", res)
	}
	if res.Rewrap.Rewrapped != 4 || res.Rewrap.Failed != 0 || res.Rewrap.Remaining != 0 {
		t.Fatalf("rewrap counts %+v, want 4 rewrapped, none failed or remaining", *res.Rewrap)
	}
	for i, id := range ids {
		d, err := b.KMS.GetDataKey(ctx, alice, id)
		if err != nil || d.KeyVersion != 3 {
			t.Fatalf("registration %d after the rewrap: %+v %v", i, d, err)
		}
		pt, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: d.Ciphertext, Context: d.Context})
		if err != nil || !bytes.Equal(pt.Plaintext, pts[i]) {
			t.Fatalf("registration %d does not open to its data key: %v", i, err)
		}
	}
	if n := len(b.EventsOfType("alpha", events.TypeDataKeyRewrapped)); n != 4 {
		t.Fatalf("%d rewrapped records, want 4", n)
	}

	// Nothing registered uses version 1 any more: it retires.
	ret, err := b.KMS.RetireVersion(ctx, alice, kms.RetireVersionParams{KeyRef: k.ID, Version: 1, Now: true})
	if err != nil || ret.State != kms.StateDestroyed || ret.Transition != "T5" {
		t.Fatalf("retire of version 1: %+v %v", ret, err)
	}
	got, _ := b.KMS.DescribeKey(ctx, alice, k.ID)
	if v, _ := got.Version(1); v.State != kms.StateDestroyed || got.PrimaryVersion != 3 {
		t.Fatalf("version 1 is %s, primary %d", v.State, got.PrimaryVersion)
	}
	// The registered keys still open under the primary.
	d, _ := b.KMS.GetDataKey(ctx, alice, ids[0])
	if _, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: d.Ciphertext, Context: d.Context}); err != nil {
		t.Fatalf("registration after retirement: %v", err)
	}
	// The primary version never retires.
	if _, err := b.KMS.RetireVersion(ctx, alice, kms.RetireVersionParams{KeyRef: k.ID, Version: 3, Now: true}); !errors.Is(err, kms.ErrInvalidState) {
		t.Fatalf("retire of the primary: %v", err)
	}
	var ok, refused int
	for _, e := range b.EventsOfType("alpha", events.TypeKeyVersionRetired) {
		if e.Outcome == events.OutcomeSuccess {
			ok++
		} else {
			refused++
		}
	}
	if ok != 1 || refused != 2 {
		t.Fatalf("retired records: %d success, %d refused; want 1 and 2", ok, refused)
	}
}

// A key whose lifecycle policy asks for it rewraps on every rotation
// (including the scheduled ones, which carry no flag); remediation's own
// rotation skips it.
func TestRotateKeyWorkflowRewrapOnRotationPolicy(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{RewrapOnRotation: true})
	if err != nil {
		t.Fatal(err)
	}
	registerDataKeys(t, b, k.ID, 3)
	res := rotateWith(t, b, workflows.RotateKeyParams{Tenant: "alpha", KeyID: k.ID, Principal: workflows.SchedulerPrincipal, RequestID: "sched"})
	if res.Rewrap == nil || res.Rewrap.Rewrapped != 3 || res.Rewrap.Remaining != 0 {
		t.Fatalf("rotation under the policy: %+v", res)
	}
	if n, _ := b.KMS.CountDataKeys(ctx, alice, k.ID); n[2] != 3 || n[1] != 0 {
		t.Fatalf("registrations per version: %v", n)
	}
	res = rotateWith(t, b, workflows.RotateKeyParams{Tenant: "alpha", KeyID: k.ID, Principal: "alice", RequestID: "r3", SkipRewrap: true})
	if res.Rewrap != nil {
		t.Fatalf("SkipRewrap rotation rewrapped: %+v", res)
	}
	if n, _ := b.KMS.CountDataKeys(ctx, alice, k.ID); n[2] != 3 {
		t.Fatalf("registrations per version after a skipped rewrap: %v", n)
	}

	off := false
	if _, err := b.KMS.SetLifecyclePolicy(ctx, alice, kms.SetPolicyParams{KeyRef: k.ID, RewrapOnRotation: &off}); err != nil {
		t.Fatal(err)
	}
	res = rotateWith(t, b, workflows.RotateKeyParams{Tenant: "alpha", KeyID: k.ID, Principal: "alice", RequestID: "r4"})
	if res.Rewrap != nil {
		t.Fatalf("rotation with the policy off rewrapped: %+v", res)
	}
}
