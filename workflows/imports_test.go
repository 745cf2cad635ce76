package workflows_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"go.temporal.io/sdk/testsuite"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

// importMaterial imports fresh material into an EXTERNAL key, valid until
// validTo, playing the customer with Go's crypto.
func importMaterial(t *testing.T, b *testbed.Bed, keyID string, material []byte, validTo time.Time) *kms.ImportResult {
	t.Helper()
	ctx := context.Background()
	p, err := b.KMS.GetParametersForImport(ctx, alice, kms.GetImportParamsParams{KeyRef: keyID, Algorithm: kms.WrapRSAOAEPSHA256})
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
	res, err := b.KMS.ImportKeyMaterial(ctx, alice, kms.ImportParams{KeyRef: keyID, WrappedMaterial: wrapped, ImportToken: p.ImportToken, ValidTo: validTo})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestImportExpiryWorkflow: the durable timer runs to validTo (90 days,
// skipped), then the material is deleted and the key is PENDING_IMPORT,
// with one expiry event.
func TestImportExpiryWorkflow(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Origin: kms.OriginExternal})
	if err != nil {
		t.Fatal(err)
	}
	material := make([]byte, 32)
	rand.Read(material)
	env := newEnv(t, b)
	validTo := env.Now().Add(90 * 24 * time.Hour)
	res := importMaterial(t, b, k.ID, material, validTo)

	checked := false
	env.RegisterDelayedCallback(func() {
		got, err := b.KMS.DescribeKey(ctx, alice, k.ID)
		if err != nil || got.State != kms.StateActive {
			t.Errorf("a day before validTo: %v, state %v", err, got)
		}
		checked = true
	}, 89*24*time.Hour)
	env.ExecuteWorkflow(workflows.ImportExpiryWorkflow, workflows.ImportExpiryParams{Tenant: "alpha", KeyID: k.ID, ImportID: res.ImportID, ValidTo: validTo, Principal: "alice", RequestID: "r1"})
	if !env.IsWorkflowCompleted() || env.GetWorkflowError() != nil {
		t.Fatalf("workflow: %v", env.GetWorkflowError())
	}
	var out workflows.ImportExpiryResult
	if err := env.GetWorkflowResult(&out); err != nil || !out.Deleted {
		t.Fatalf("result %+v, %v", out, err)
	}
	if !checked || env.Now().Before(validTo) {
		t.Fatalf("the workflow finished at %s, before validTo %s", env.Now(), validTo)
	}
	got, err := b.KMS.DescribeKey(ctx, alice, k.ID)
	if err != nil || got.State != kms.StatePendingImport {
		t.Fatalf("after expiry: %v %+v", err, got)
	}
	if _, err := b.Store.GetMaterial(ctx, "alpha", k.ID, 1); !errors.Is(err, kms.ErrStoreNotFound) {
		t.Fatalf("material after expiry: %v", err)
	}
	evs := b.EventsOfType("alpha", events.TypeKeyImportExpired)
	if len(evs) != 1 || evs[0].Data["deleted"] != true || evs[0].Data["importId"] != res.ImportID || evs[0].Subject != k.ResourceName() {
		t.Fatalf("expiry events: %+v", evs)
	}

	// The activity run again (a retry after a lost reply) changes
	// nothing and re-emits the same event ID, which the stream drops.
	var suite testsuite.WorkflowTestSuite
	aenv := suite.NewTestActivityEnvironment()
	acts := &workflows.Activities{KMS: b.KMS}
	aenv.RegisterActivity(acts)
	v, err := aenv.ExecuteActivity(acts.ExpireImportedMaterial, workflows.ImportStep{Tenant: "alpha", KeyID: k.ID, ImportID: res.ImportID, Principal: "alice", RequestID: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	var again bool
	if err := v.Get(&again); err != nil || again {
		t.Fatalf("retried expiry: deleted %v, %v", again, err)
	}
	if n := len(b.EventsOfType("alpha", events.TypeKeyImportExpired)); n != 1 {
		t.Fatalf("%d expiry events after a retried activity, want 1", n)
	}
}

// TestImportExpiryOfAReplacedImport: material re-imported with a later
// validTo is not deleted by the first import's timer.
func TestImportExpiryOfAReplacedImport(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Origin: kms.OriginExternal})
	if err != nil {
		t.Fatal(err)
	}
	material := make([]byte, 32)
	rand.Read(material)
	env := newEnv(t, b)
	first := importMaterial(t, b, k.ID, material, env.Now().Add(24*time.Hour))
	second := importMaterial(t, b, k.ID, material, env.Now().Add(365*24*time.Hour))
	if !second.Reimport {
		t.Fatal("the second import of the same material is not a re-import")
	}
	env.ExecuteWorkflow(workflows.ImportExpiryWorkflow, workflows.ImportExpiryParams{Tenant: "alpha", KeyID: k.ID, ImportID: first.ImportID, ValidTo: env.Now().Add(24 * time.Hour)})
	var out workflows.ImportExpiryResult
	if err := env.GetWorkflowResult(&out); err != nil || out.Deleted {
		t.Fatalf("stale expiry: %+v, %v", out, err)
	}
	got, _ := b.KMS.DescribeKey(ctx, alice, k.ID)
	if got.State != kms.StateActive || got.Import.ImportID != second.ImportID {
		t.Fatalf("after a stale expiry: %+v", got)
	}
}
