package workflows_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/schemas"
	"github.com/keyflow/keyflow/workers/rpc"
	"github.com/keyflow/keyflow/workflows"
)

// gatedBed is the dual-control stack of the lifecycle gates: the real
// NATS server, the rpc workers with the lifecycle workflows, and a real
// Temporal server running the approval and deletion workflows.
func gatedBed(t *testing.T) (*testbed.Bed, *workflows.Client) {
	t.Helper()
	b := testbed.New(t)
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	tc := ts.GetDefaultClient()
	w := ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) {
		workflows.Register(r, &workflows.Activities{KMS: b.KMS, Temporal: tc})
	})
	t.Cleanup(w.Stop)
	b.KMS.SetApprovalEngine(&workflows.ApprovalEngine{Temporal: tc, Tokens: b.KMS})
	wc := &workflows.Client{Temporal: tc, Tokens: b.KMS}
	srv, err := rpc.Start(rpc.Config{Conn: b.Conn, KMS: b.KMS, Tenants: b.Identity, JS: b.JS, Rotator: temporalRotator{wc}, Lifecycle: wc, Workers: 8,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return b, wc
}

// allValid checks every audit record of the tenant against its schema
// (the refusals and the approved operations' records included).
func allValid(t *testing.T, b *testbed.Bed) {
	t.Helper()
	for _, e := range b.Events("alpha") {
		if err := schemas.ValidateEvent(e.Raw); err != nil {
			t.Errorf("%s (%s): %v", e.Type, e.ErrorCode, err)
		}
	}
}

// pending asserts a PendingApprovalException and returns its approval ID.
func pending(t *testing.T, what string, err error) string {
	t.Helper()
	wantCode(t, what, err, kms.CodePendingApproval)
	id := client.PendingApproval(err)
	if id == "" {
		t.Fatalf("%s: no approval ID in %v", what, err)
	}
	return id
}

// TestLifecycleGatesOverNATS: schedule-deletion and disable under a 2-of-N
// rule, through NATS and the real approval workflow. Each request returns
// PendingApprovalException and changes nothing; two distinct approvers
// make it run with the requested parameters; a denial leaves the key
// alone; a window below the tenant's minimum is refused before any
// approval opens.
func TestLifecycleGatesOverNATS(t *testing.T) {
	ctx := context.Background()
	b, _ := gatedBed(t)
	alice, bob, carol := b.Client("alpha", "alice"), b.Client("alpha", "bob"), b.Client("alpha", "carol")
	if _, err := alice.SetTenantPolicy(ctx, api.TenantPolicy{MinDeletionWindowDays: 14, Approvals: []api.ApprovalRule{
		{Operation: "schedule-deletion", Required: 2, ExpiresAfter: "1h"},
		{Operation: "disable", Required: 2, ExpiresAfter: "1h"},
	}}); err != nil {
		t.Fatal(err)
	}
	k, err := alice.CreateKey(ctx, api.CreateKeyRequest{Alias: "payments"})
	if err != nil {
		t.Fatal(err)
	}
	k2, err := alice.CreateKey(ctx, api.CreateKeyRequest{Alias: "ledger"})
	if err != nil {
		t.Fatal(err)
	}

	// The tenant's minimum window: refused at once, no approval opened,
	// the refusal on the record.
	_, err = alice.ScheduleDeletion(ctx, api.ScheduleDeletionRequest{KeyID: "alias/payments", PendingWindowInDays: 7})
	wantCode(t, "window below the tenant minimum", err, kms.CodeValidation)
	if l, _ := alice.ListApprovals(ctx, ""); len(l.Approvals) != 0 {
		t.Fatalf("an approval opened for a refused deletion: %+v", l.Approvals)
	}
	refused := 0
	for _, e := range b.EventsOfType("alpha", events.TypeKeyDeletionScheduled) {
		if e.ErrorCode == string(kms.CodeValidation) && e.Data["keyId"] == k.KeyID {
			refused++
		}
	}
	if refused != 1 {
		t.Fatalf("%d refusal records of the short window, want 1", refused)
	}

	// schedule-deletion: pending, nothing changes, then two approvals run
	// it with the requested window and cancel-on-use.
	_, err = alice.ScheduleDeletion(ctx, api.ScheduleDeletionRequest{KeyID: "alias/payments", PendingWindowInDays: 21, CancelOnUse: true})
	id := pending(t, "schedule deletion", err)
	if m, _ := alice.DescribeKey(ctx, k.KeyID); m.PendingDeletion {
		t.Fatal("the key is pending deletion before approval")
	}
	a, err := alice.ShowApproval(ctx, id)
	if err != nil || a.Operation != "schedule-deletion" || a.Target != k.KeyID+";window=21d;cancelOnUse=true" {
		t.Fatalf("approval: %+v, %v", a, err)
	}
	_, err = alice.Approve(ctx, id, "")
	wantCode(t, "self-approval", err, kms.CodeAccessDenied)
	if _, err := bob.Approve(ctx, id, "CHG-7"); err != nil {
		t.Fatal(err)
	}
	_, err = bob.Approve(ctx, id, "")
	wantCode(t, "duplicate approver", err, kms.CodeConflict)
	if m, _ := alice.DescribeKey(ctx, k.KeyID); m.PendingDeletion {
		t.Fatal("one approval of two scheduled the deletion")
	}
	if _, err := carol.Approve(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	waitState(t, alice, id, kms.ApprovalCompleted)
	m, err := alice.DescribeKey(ctx, k.KeyID)
	if err != nil || !m.PendingDeletion || m.DeletionDate == nil {
		t.Fatalf("after approval: %+v, %v", m, err)
	}
	if d := m.DeletionDate.Sub(a.CreatedAt); d < 21*24*time.Hour-time.Hour || d > 21*24*time.Hour+time.Hour {
		t.Fatalf("deletion date %s is not 21 days after the request (%s)", m.DeletionDate, a.CreatedAt)
	}
	sched := 0
	for _, e := range b.EventsOfType("alpha", events.TypeKeyDeletionScheduled) {
		if e.ErrorCode == "" && e.Data["keyId"] == k.KeyID {
			sched++
			if e.Principal != "alice" || e.Data["cancelOnUse"] != true {
				t.Fatalf("deletion record: %+v", e)
			}
		}
	}
	if sched != 1 {
		t.Fatalf("%d deletion records, want 1", sched)
	}
	// The deletion timer runs: cancelling it works as for any deletion.
	if _, err := alice.CancelDeletion(ctx, k.KeyID); err != nil {
		t.Fatalf("cancel the approved deletion: %v", err)
	}

	// schedule-deletion denied: the key stays.
	_, err = alice.ScheduleDeletion(ctx, api.ScheduleDeletionRequest{KeyID: k2.KeyID, PendingWindowInDays: 30})
	id = pending(t, "second deletion", err)
	if _, err := bob.Deny(ctx, id, "still in use"); err != nil {
		t.Fatal(err)
	}
	waitState(t, alice, id, kms.ApprovalDenied)
	if m, _ := alice.DescribeKey(ctx, k2.KeyID); m.PendingDeletion {
		t.Fatal("a denied deletion was scheduled")
	}

	// disable (the CLI's `key disable`: keys.setstate to SUSPENDED).
	_, err = alice.SetKeyState(ctx, api.SetKeyStateRequest{KeyID: "alias/ledger", State: "SUSPENDED"})
	id = pending(t, "disable", err)
	if m, _ := alice.DescribeKey(ctx, k2.KeyID); m.KeyState != "ACTIVE" {
		t.Fatalf("key %s before approval", m.KeyState)
	}
	if a, err := alice.ShowApproval(ctx, id); err != nil || a.Operation != "disable" || a.Target != k2.KeyID {
		t.Fatalf("approval: %+v, %v", a, err)
	}
	if _, err := bob.Approve(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.Approve(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	waitState(t, alice, id, kms.ApprovalCompleted)
	if m, _ := alice.DescribeKey(ctx, k2.KeyID); m.KeyState != "SUSPENDED" {
		t.Fatalf("key %s after the approved disable", m.KeyState)
	}
	states := 0
	for _, e := range b.EventsOfType("alpha", events.TypeKeyStateChanged) {
		if e.ErrorCode == "" && e.Data["keyId"] == k2.KeyID && e.Data["to"] == "SUSPENDED" && e.Principal == "alice" {
			states++
		}
	}
	if states != 1 {
		t.Fatalf("%d state-change records, want 1", states)
	}
	// Already suspended: nothing to approve, the no-op answers at once.
	if _, err := alice.SetKeyState(ctx, api.SetKeyStateRequest{KeyID: k2.KeyID, State: "SUSPENDED"}); err != nil {
		t.Fatalf("disable of a suspended key: %v", err)
	}
	// Re-enabling is not guarded.
	if _, err := alice.SetKeyState(ctx, api.SetKeyStateRequest{KeyID: k2.KeyID, State: "ACTIVE"}); err != nil {
		t.Fatalf("enable: %v", err)
	}

	// disable denied: the key stays ACTIVE.
	_, err = alice.SetKeyState(ctx, api.SetKeyStateRequest{KeyID: k.KeyID, State: "SUSPENDED"})
	id = pending(t, "second disable", err)
	if _, err := carol.Deny(ctx, id, "no ticket"); err != nil {
		t.Fatal(err)
	}
	waitState(t, alice, id, kms.ApprovalDenied)
	if m, _ := alice.DescribeKey(ctx, k.KeyID); m.KeyState != "ACTIVE" {
		t.Fatalf("key %s after a denied disable", m.KeyState)
	}
	allValid(t, b)
}

// wrapForImport plays the customer: import parameters, then the material
// wrapped with Go's crypto.
func wrapForImport(t *testing.T, c *client.Client, keyID string, material []byte) api.ImportRequest {
	t.Helper()
	p, err := c.GetParametersForImport(context.Background(), api.ImportParamsRequest{KeyID: keyID, WrappingAlgorithm: "RSAES_OAEP_SHA_256"})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(p.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub.(*rsa.PublicKey), material, nil)
	if err != nil {
		t.Fatal(err)
	}
	return api.ImportRequest{KeyID: keyID, EncryptedKeyMaterial: wrapped, ImportToken: p.ImportToken}
}

// TestImportGateOverNATS: under an "import" rule, an import is refused
// with PendingApprovalException and imports nothing; asking again while
// pending answers with the same approval; once two approvers agreed, the
// requester's same import runs and consumes the permit, so the next
// import needs a new approval; a denied request never lets one through.
func TestImportGateOverNATS(t *testing.T) {
	ctx := context.Background()
	b, _ := gatedBed(t)
	alice, bob, carol := b.Client("alpha", "alice"), b.Client("alpha", "bob"), b.Client("alpha", "carol")
	if _, err := alice.SetTenantPolicy(ctx, api.TenantPolicy{Approvals: []api.ApprovalRule{{Operation: "import", Required: 2, ExpiresAfter: "1h"}}}); err != nil {
		t.Fatal(err)
	}
	k, err := alice.CreateKey(ctx, api.CreateKeyRequest{Origin: "EXTERNAL"})
	if err != nil {
		t.Fatal(err)
	}
	material := make([]byte, 32)
	rand.Read(material)
	req := wrapForImport(t, alice, k.KeyID, material)

	_, err = alice.ImportKeyMaterial(ctx, req)
	id := pending(t, "import", err)
	if m, _ := alice.DescribeKey(ctx, k.KeyID); m.KeyState != "PENDING_IMPORT" {
		t.Fatalf("key %s before approval", m.KeyState)
	}
	_, err = alice.ImportKeyMaterial(ctx, req)
	if again := pending(t, "import while pending", err); again != id {
		t.Fatalf("a second request opened %s besides %s", again, id)
	}
	if a, err := alice.ShowApproval(ctx, id); err != nil || a.Operation != "import" || a.Target != k.KeyID {
		t.Fatalf("approval: %+v, %v", a, err)
	}
	if _, err := bob.Approve(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.Approve(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	waitState(t, alice, id, kms.ApprovalCompleted)
	// Someone else cannot use alice's permit.
	_, err = bob.ImportKeyMaterial(ctx, req)
	other := pending(t, "bob's import on alice's permit", err)
	if other == id {
		t.Fatal("bob was answered with alice's approval")
	}
	res, err := alice.ImportKeyMaterial(ctx, req)
	if err != nil || res.KeyMetadata.KeyState != "ACTIVE" {
		t.Fatalf("the approved import: %+v, %v", res, err)
	}
	imported := 0
	for _, e := range b.EventsOfType("alpha", events.TypeKeyImported) {
		if e.ErrorCode == "" && e.Data["keyId"] == k.KeyID {
			imported++
		}
	}
	if imported != 1 {
		t.Fatalf("%d import records, want 1", imported)
	}
	// The permit is used up: a re-import needs approval again, and a
	// denial keeps it out.
	_, err = alice.ImportKeyMaterial(ctx, wrapForImport(t, alice, k.KeyID, material))
	id2 := pending(t, "re-import", err)
	if id2 == id {
		t.Fatal("the consumed permit was offered again")
	}
	if _, err := carol.Deny(ctx, id2, "no change ticket"); err != nil {
		t.Fatal(err)
	}
	waitState(t, alice, id2, kms.ApprovalDenied)
	_, err = alice.ImportKeyMaterial(ctx, wrapForImport(t, alice, k.KeyID, material))
	if id3 := pending(t, "import after a denial", err); id3 == id2 || id3 == id {
		t.Fatal("a denied or consumed approval let an import through")
	}
	allValid(t, b)
}
