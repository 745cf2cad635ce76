package workflows_test

import (
	"context"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"go.temporal.io/sdk/testsuite"

	"github.com/keyflow/keyflow/cloud"
	"github.com/keyflow/keyflow/cloud/azurekv"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/cloudfake"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

type staticToken struct{}

func (staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "test-token", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func azureConnectTo(fake *cloudfake.Azure) workflows.CloudConnect {
	return func(_ context.Context, d *kms.CloudDestination) (cloud.Connector, error) {
		return azurekv.New(d.Settings["vaultURL"], staticToken{}, &azkeys.ClientOptions{
			ClientOptions:                        azcore.ClientOptions{Transport: fake.Client},
			DisableChallengeResourceVerification: true,
		})
	}
}

func TestCloudDistributeToAzureFake(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	fake := cloudfake.StartAzure(t)
	connect := azureConnectTo(fake)
	env := func() *testsuite.TestWorkflowEnvironment { return cloudEnv(b, connect) }
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Exportable: true})
	if err != nil {
		t.Fatal(err)
	}
	dest := kms.CloudDestination{Name: "azure-fake", Provider: kms.CloudAzure, Drift: kms.DriftReport, Settings: map[string]string{"vaultURL": fake.URL}}
	if _, err := b.KMS.AddCloudDestination(ctx, alice, dest); err != nil {
		t.Fatal(err)
	}
	sync := func(step string) { t.Helper(); runCloudSync(t, env, k.ID, "azure-fake", step) }
	sync(workflows.CloudStepDistribute)
	ps, _ := b.KMS.CloudPlacements(ctx, alice, k.ID)
	if len(ps) != 1 || len(ps[0].Versions) != 1 || ps[0].Resource != fake.URL+"/keys/keyflow-"+k.ID {
		t.Fatalf("placement %+v", ps)
	}
	if !sameMaterial(t, b, k.ID, fake.Material(ps[0].Versions[0].ProviderVersion)) {
		t.Fatal("the fake's unwrapped transfer blob is not keyflow's material")
	}
	e := env()
	e.ExecuteWorkflow(workflows.RotateKeyWorkflow, workflows.RotateKeyParams{Tenant: "alpha", KeyID: k.ID, Principal: "alice", RequestID: "r2"})
	if err := e.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	sync(workflows.CloudStepRotate)
	ps, _ = b.KMS.CloudPlacements(ctx, alice, k.ID)
	v2 := ps[0].Versions[1].ProviderVersion
	if !sameMaterial(t, b, k.ID, fake.Material(v2)) {
		t.Fatal("the rotated version's material differs")
	}
	// Every call carries the vault's x-ms-request-id.
	for _, ev := range b.EventsOfType("alpha", events.TypeCloudCall) {
		if ev.Data["providerRequestId"] == "" {
			t.Fatalf("a cloud.call record without the vault's request ID: %v", ev.Data)
		}
	}
	// Disabled behind keyflow's back: found and reported (report mode).
	fake.SetEnabled(v2, false)
	e = env()
	e.ExecuteWorkflow(workflows.CloudReconcileWorkflow, workflows.CloudReconcileParams{Tenant: "alpha", Principal: "reconciler", RequestID: "rec"})
	var res workflows.CloudReconcileResult
	if err := e.GetWorkflowResult(&res); err != nil || res.Drifts != 1 || res.Repaired != 0 {
		t.Fatalf("reconcile: %v %+v", err, res)
	}
	// Undistribute deletes the key in the vault.
	e = env()
	e.ExecuteWorkflow(workflows.CloudUndistributeWorkflow, workflows.CloudSyncParams{Tenant: "alpha", KeyID: k.ID, Principal: "alice", RequestID: "r3", Destinations: []string{"azure-fake"}})
	if err := e.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	c, _ := connect(ctx, &dest)
	if d, err := c.Describe(ctx, cloud.KeyRef{KeyID: k.ID}); err != nil || d.State != cloud.StateMissing {
		t.Fatalf("after undistribute: %v %+v", err, d)
	}
}

// A cancelled deletion in Key Vault: the scheduled deletion soft-deletes
// the key (DeleteKey), and keyflow's CancelDeletion recovers it
// (RecoverDeletedKey, cloud.Restorer): the key is back under its name,
// signs again with keyflow's key pair, and the placement is ENABLED with
// no error.
func TestCloudCancelledDeletionRecoversAzureKey(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	fake := cloudfake.StartAzure(t)
	env := func() *testsuite.TestWorkflowEnvironment { return cloudEnv(b, azureConnectTo(fake)) }
	if _, err := b.KMS.AddCloudDestination(ctx, alice, kms.CloudDestination{Name: "azure-fake", Provider: kms.CloudAzure, Drift: kms.DriftReport,
		Settings: map[string]string{"vaultURL": fake.URL}}); err != nil {
		t.Fatal(err)
	}
	tc := pairCases[0] // RSA_3072 SIGN_VERIFY
	k, v1 := distributePair(t, b, env, tc, "azure-fake", fake.Material)
	name := azurekv.KeyName(k.ID)
	az, err := azkeys.NewClient(fake.URL, staticToken{}, &azkeys.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: fake.Client}, DisableChallengeResourceVerification: true})
	if err != nil {
		t.Fatal(err)
	}
	kid := azkeys.ID(v1)
	msg := []byte("signed in Key Vault after the cancellation")
	sign := func() error {
		alg := azkeys.SignatureAlgorithmRS256
		r, err := az.Sign(ctx, name, kid.Version(), azkeys.SignParameters{Algorithm: &alg, Value: digest(tc.hash, msg)}, nil)
		if err != nil {
			return err
		}
		_, err = b.KMS.Verify(ctx, alice, kms.VerifyParams{KeyRef: k.ID, Message: msg, Algorithm: tc.alg, Signature: r.Result})
		return err
	}

	if _, err := b.KMS.ScheduleDeletion(ctx, alice, kms.ScheduleDeletionParams{KeyRef: k.ID, Window: 7 * kms.Day}); err != nil {
		t.Fatal(err)
	}
	runCloudSync(t, env, k.ID, "azure-fake", workflows.CloudStepScheduleDeletion)
	if !fake.Deleted(name) || sign() == nil {
		t.Fatal("after the scheduled deletion the key is not soft-deleted in the vault")
	}
	back, err := b.KMS.CancelDeletion(ctx, alice, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	runCloudSync(t, env, k.ID, "azure-fake", workflows.CloudStepSync)
	if back.State != kms.StateActive { // keyflow leaves a cancelled key disabled
		if _, err := b.KMS.SetState(ctx, alice, kms.SetStateParams{KeyRef: k.ID, To: kms.StateActive}); err != nil {
			t.Fatal(err)
		}
		runCloudSync(t, env, k.ID, "azure-fake", workflows.CloudStepEnable)
	}
	if fake.Deleted(name) {
		t.Fatal("the key is still soft-deleted after the cancellation")
	}
	if err := sign(); err != nil {
		t.Fatalf("the recovered key does not sign with keyflow's pair: %v", err)
	}
	ps, _ := b.KMS.CloudPlacements(ctx, alice, k.ID)
	if len(ps) != 1 || ps[0].State != kms.PlacementEnabled || ps[0].LastErrorCode != "" || ps[0].Pending != "" || len(ps[0].Versions) != 1 || ps[0].Versions[0].ProviderVersion != v1 {
		t.Fatalf("placement after the cancellation: %+v", ps)
	}
	recovered := 0
	for _, e := range b.EventsOfType("alpha", events.TypeCloudCall) {
		if e.Data["operation"] == "RecoverDeletedKey" && e.Data["providerRequestId"] != "" {
			recovered++
		}
	}
	if recovered != 1 {
		t.Fatalf("%d RecoverDeletedKey records, want 1", recovered)
	}
}
