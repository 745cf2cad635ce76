package workflows_test

import (
	"context"
	"crypto/subtle"
	"testing"

	"cloud.google.com/go/kms/apiv1/kmspb"
	"go.temporal.io/sdk/testsuite"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keyflow/keyflow/cloud"
	"github.com/keyflow/keyflow/cloud/gcpkms"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/cloudfake"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

// gcpConnect opens GCP destinations on the fake: the official client with
// its endpoint option, no TLS and no credentials.
func gcpConnect(ctx context.Context, d *kms.CloudDestination) (cloud.Connector, error) {
	return gcpkms.Open(ctx, gcpkms.Settings{Project: d.Settings["project"], Location: d.Settings["location"], KeyRing: d.Settings["keyRing"], Endpoint: d.Settings["endpoint"]},
		option.WithoutAuthentication(), option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
}

func gcpEnv(_ *testing.T, b *testbed.Bed) *testsuite.TestWorkflowEnvironment {
	return cloudEnv(b, gcpConnect)
}

// sameMaterial compares what the fake unwrapped with keyflow's material
// of the key's primary version (a test-only check: the key is exportable,
// so ExportKey releases it).
func sameMaterial(t *testing.T, b *testbed.Bed, keyID string, got []byte) bool {
	t.Helper()
	exp, err := b.KMS.ExportKey(context.Background(), alice, keyID)
	if err != nil {
		t.Fatal(err)
	}
	defer clear(exp.Material)
	return len(got) == 32 && subtle.ConstantTimeCompare(got, exp.Material) == 1
}

func TestCloudDistributeToGCPFake(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	fake := cloudfake.StartGCP(t)
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Exportable: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.AddCloudDestination(ctx, alice, kms.CloudDestination{Name: "gcp-fake", Provider: kms.CloudGCP, Drift: kms.DriftRepair,
		Settings: map[string]string{"project": "p1", "location": "europe-west1", "keyRing": "kr", "endpoint": fake.Addr}}); err != nil {
		t.Fatal(err)
	}
	sync := func(step string) {
		t.Helper()
		runCloudSync(t, func() *testsuite.TestWorkflowEnvironment { return gcpEnv(t, b) }, k.ID, "gcp-fake", step)
	}
	sync(workflows.CloudStepDistribute)
	ps, _ := b.KMS.CloudPlacements(ctx, alice, k.ID)
	if len(ps) != 1 || len(ps[0].Versions) != 1 || ps[0].Resource != "projects/p1/locations/europe-west1/keyRings/kr/cryptoKeys/keyflow-"+k.ID {
		t.Fatalf("placement %+v", ps)
	}
	if !sameMaterial(t, b, k.ID, fake.Material(ps[0].Versions[0].ProviderVersion)) {
		t.Fatal("the fake's unwrapped import is not keyflow's material")
	}

	env := gcpEnv(t, b)
	env.ExecuteWorkflow(workflows.RotateKeyWorkflow, workflows.RotateKeyParams{Tenant: "alpha", KeyID: k.ID, Principal: "alice", RequestID: "r2"})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	sync(workflows.CloudStepRotate)
	ps, _ = b.KMS.CloudPlacements(ctx, alice, k.ID)
	v2 := ps[0].Versions[1].ProviderVersion
	if !sameMaterial(t, b, k.ID, fake.Material(v2)) {
		t.Fatal("the rotated version's material differs")
	}
	if sameMaterial(t, b, k.ID, fake.Material(ps[0].Versions[0].ProviderVersion)) {
		t.Fatal("version 1 in the fake has version 2's material")
	}

	// Disabled in the console: the reconcile finds it and repairs it.
	fake.SetState(v2, kmspb.CryptoKeyVersion_DISABLED)
	env = gcpEnv(t, b)
	env.ExecuteWorkflow(workflows.CloudReconcileWorkflow, workflows.CloudReconcileParams{Tenant: "alpha", Principal: "reconciler", RequestID: "rec"})
	var res workflows.CloudReconcileResult
	if err := env.GetWorkflowResult(&res); err != nil || res.Drifts != 1 || res.Repaired != 1 {
		t.Fatalf("reconcile: %v %+v", err, res)
	}
	drifts := b.EventsOfType("alpha", events.TypeCloudDrift)
	if len(drifts) != 1 || drifts[0].Data["field"] != "state" || drifts[0].Data["provider"] != "DISABLED" {
		t.Fatalf("drift records %+v", drifts)
	}
	d, err := (func() (*cloud.Description, error) {
		c, err := gcpConnect(ctx, &kms.CloudDestination{Settings: map[string]string{"project": "p1", "location": "europe-west1", "keyRing": "kr", "endpoint": fake.Addr}})
		if err != nil {
			return nil, err
		}
		return c.Describe(ctx, cloud.KeyRef{KeyID: k.ID})
	})()
	if err != nil || d.State != cloud.StateEnabled || d.Primary != v2 {
		t.Fatalf("after the repair: %v %+v", err, d)
	}
}
