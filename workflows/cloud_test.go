package workflows_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awssdk "github.com/aws/aws-sdk-go-v2/service/kms"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"

	"github.com/keyflow/keyflow/cloud"
	"github.com/keyflow/keyflow/cloud/awskms"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/localkms"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/schemas"
	"github.com/keyflow/keyflow/workflows"
)

func awsSDK(endpoint string) *awssdk.Client {
	return awssdk.New(awssdk.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(endpoint), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""),
	})
}

// awsConnect opens AWS destinations on their endpoint setting with the
// emulator's static credentials (production uses awskms.Open and the
// SDK's chain).
func awsConnect(_ context.Context, d *kms.CloudDestination) (cloud.Connector, error) {
	return awskms.New(awsSDK(d.Settings["endpoint"])), nil
}

type cloudFixture struct {
	t   testing.TB
	b   *testbed.Bed
	srv *localkms.Server
	sdk *awssdk.Client
	key *kms.Key
}

func newCloudFixture(t testing.TB, drift, endpoint string) *cloudFixture {
	ctx := context.Background()
	f := &cloudFixture{t: t, b: testbed.New(t), srv: localkms.Start(t)}
	if endpoint == "" {
		endpoint = f.srv.URL
	}
	f.sdk = awsSDK(f.srv.URL)
	var err error
	if f.key, err = f.b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Exportable: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.b.KMS.AddCloudDestination(ctx, alice, kms.CloudDestination{Name: "aws-local", Provider: kms.CloudAWS, Drift: drift,
		Settings: map[string]string{"region": "us-east-1", "endpoint": endpoint}}); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *cloudFixture) env() *testsuite.TestWorkflowEnvironment { return cloudEnv(f.b, awsConnect) }

// cloudEnv is newEnv with cloud connectors.
func cloudEnv(b *testbed.Bed, connect workflows.CloudConnect) *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.SetWorkerOptions(worker.Options{DeadlockDetectionTimeout: time.Minute})
	env.SetTestTimeout(2 * time.Minute)
	workflows.Register(env, &workflows.Activities{KMS: b.KMS, CloudConnect: connect})
	voteMinter = b.KMS
	return env
}

func (f *cloudFixture) sync(step string) (*workflows.CloudSyncResult, error) {
	env := f.env()
	env.ExecuteWorkflow(workflows.CloudSyncWorkflow, workflows.CloudSyncParams{Tenant: "alpha", KeyID: f.key.ID, Principal: "alice", RequestID: "r1", Destinations: []string{"aws-local"}, Step: step})
	if err := env.GetWorkflowError(); err != nil {
		return nil, err
	}
	var res workflows.CloudSyncResult
	if err := env.GetWorkflowResult(&res); err != nil {
		return nil, err
	}
	return &res, nil
}

// keyflowGCM runs AES-GCM with the HSM object of a keyflow key version:
// the material stays in SoftHSM (unwrapped from its stored blob as a
// sensitive, non-extractable session object), exactly as keyflow's own
// crypto path loads it.
func (f *cloudFixture) keyflowGCM(version uint32, seal bool, nonce, in, aad []byte) ([]byte, error) {
	ctx := context.Background()
	m, err := f.b.Store.GetMaterial(ctx, "alpha", f.key.ID, version)
	if err != nil {
		f.t.Fatal(err)
	}
	root, err := f.b.HSM.EnsureRootKey(ctx, m.WrappedBy)
	if err != nil {
		f.t.Fatal(err)
	}
	h, err := f.b.HSM.UnwrapAESKey(ctx, root, m.Wrapped)
	if err != nil {
		f.t.Fatal(err)
	}
	defer f.b.HSM.DestroyKey(ctx, h)
	if seal {
		return f.b.HSM.EncryptGCM(ctx, h, nonce, in, aad)
	}
	return f.b.HSM.DecryptGCM(ctx, h, nonce, in, aad)
}

// local-kms's ciphertext blob (src/cmk/aes_encryption.go of the pinned
// version): 1 byte ARN length, the ARN, the backing-key index (uint32
// little-endian, always 0 for an imported key), a 12-byte nonce and
// AES-256-GCM output; the AAD is the encryption context's keys in sorted
// order, each followed by its value.
func splitLocalKMS(blob []byte) (arn string, nonce, sealed []byte) {
	n := int(blob[0])
	return string(blob[1 : 1+n]), blob[1+n+4 : 1+n+4+12], blob[1+n+4+12:]
}

func packLocalKMS(arn string, nonce, sealed []byte) []byte {
	out := append([]byte{byte(len(arn))}, arn...)
	out = binary.LittleEndian.AppendUint32(out, 0)
	return append(append(out, nonce...), sealed...)
}

var cloudEC = map[string]string{"purpose": "multicloud", "app": "billing"}

const cloudAAD = "appbillingpurposemulticloud"

// crossCheck: a ciphertext local-kms makes under the distributed key
// opens in keyflow's HSM with the version's own key object, and one
// keyflow's HSM makes opens in local-kms.
func (f *cloudFixture) crossCheck(alias string, version uint32) {
	f.t.Helper()
	ctx := context.Background()
	enc, err := f.sdk.Encrypt(ctx, &awssdk.EncryptInput{KeyId: aws.String(alias), Plaintext: []byte("from the provider"), EncryptionContext: cloudEC})
	if err != nil {
		f.t.Fatal(err)
	}
	arn, nonce, sealed := splitLocalKMS(enc.CiphertextBlob)
	pt, err := f.keyflowGCM(version, false, nonce, sealed, []byte(cloudAAD))
	if err != nil || string(pt) != "from the provider" {
		f.t.Fatalf("keyflow version %d does not open the provider's ciphertext: %v", version, err)
	}
	nonce = make([]byte, 12)
	rand.Read(nonce)
	sealed, err = f.keyflowGCM(version, true, nonce, []byte("from keyflow"), []byte(cloudAAD))
	if err != nil {
		f.t.Fatal(err)
	}
	dec, err := f.sdk.Decrypt(ctx, &awssdk.DecryptInput{CiphertextBlob: packLocalKMS(arn, nonce, sealed), EncryptionContext: cloudEC})
	if err != nil || string(dec.Plaintext) != "from keyflow" {
		f.t.Fatalf("the provider does not open keyflow version %d's ciphertext: %v", version, err)
	}
}

func TestCloudDistributeAndRotateToLocalKMS(t *testing.T) {
	ctx := context.Background()
	f := newCloudFixture(t, kms.DriftReport, "")
	start := time.Now()
	res, err := f.sync(workflows.CloudStepDistribute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("distribute one key to local-kms: %v", time.Since(start))
	alias := awskms.PrimaryAlias(f.key.ID)
	if len(res.Destinations) != 1 || res.Destinations[0].Resource != alias || res.Destinations[0].KeyVersion != 1 || res.Destinations[0].State != kms.PlacementEnabled {
		t.Fatalf("result %+v", res)
	}
	f.crossCheck(alias, 1)

	// Rotate in keyflow, then propagate: the provider's next ciphertexts
	// use version 2's material, and version 1's object no longer opens them.
	env := f.env()
	env.ExecuteWorkflow(workflows.RotateKeyWorkflow, workflows.RotateKeyParams{Tenant: "alpha", KeyID: f.key.ID, Principal: "alice", RequestID: "r2"})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if _, err := f.sync(workflows.CloudStepRotate); err != nil {
		t.Fatal(err)
	}
	t.Logf("propagate one rotation to local-kms: %v", time.Since(start))
	f.crossCheck(alias, 2)
	enc, err := f.sdk.Encrypt(ctx, &awssdk.EncryptInput{KeyId: aws.String(alias), Plaintext: []byte("x"), EncryptionContext: cloudEC})
	if err != nil {
		t.Fatal(err)
	}
	_, nonce, sealed := splitLocalKMS(enc.CiphertextBlob)
	if _, err := f.keyflowGCM(1, false, nonce, sealed, []byte(cloudAAD)); err == nil {
		t.Fatal("after the rotation the provider still encrypts under version 1's material")
	}

	// Where the key lives.
	ps, err := f.b.KMS.CloudPlacements(ctx, alice, f.key.ID)
	if err != nil || len(ps) != 1 || len(ps[0].Versions) != 2 || ps[0].Resource != alias || ps[0].LastSync.IsZero() || ps[0].Pending != "" {
		t.Fatalf("placements %v %+v", err, ps)
	}

	inv, err := f.b.KMS.Inventory(ctx, alice, kms.InventoryParams{})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range inv.Keys {
		if it.ID == f.key.ID && (len(it.Clouds) != 1 || it.Clouds[0].Destination != "aws-local" || it.Clouds[0].Resource != alias) {
			t.Fatalf("inventory of the distributed key: %+v", it.Clouds)
		}
	}

	// Disable and enable propagate.
	if _, err := f.b.KMS.SetState(ctx, alice, kms.SetStateParams{KeyRef: f.key.ID, To: kms.StateSuspended}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sync(workflows.CloudStepDisable); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sdk.Encrypt(ctx, &awssdk.EncryptInput{KeyId: aws.String(alias), Plaintext: []byte("x")}); err == nil {
		t.Fatal("the provider still encrypts under a disabled key")
	}
	if _, err := f.b.KMS.SetState(ctx, alice, kms.SetStateParams{KeyRef: f.key.ID, To: kms.StateActive}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sync(workflows.CloudStepEnable); err != nil {
		t.Fatal(err)
	}
	f.crossCheck(alias, 2)

	// Undistribute: the provider's keys are pending deletion, keyflow's key
	// is untouched, and the placement is gone.
	env = f.env()
	env.ExecuteWorkflow(workflows.CloudUndistributeWorkflow, workflows.CloudSyncParams{Tenant: "alpha", KeyID: f.key.ID, Principal: "alice", RequestID: "r3", Destinations: []string{"aws-local"}})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	for _, v := range ps[0].Versions {
		md, err := f.sdk.DescribeKey(ctx, &awssdk.DescribeKeyInput{KeyId: aws.String(v.ProviderVersion)})
		if err != nil || md.KeyMetadata.KeyState != "PendingDeletion" {
			t.Fatalf("version %d in the provider after undistribute: %v", v.KeyVersion, err)
		}
	}
	if ps, _ := f.b.KMS.CloudPlacements(ctx, alice, f.key.ID); len(ps) != 0 {
		t.Fatalf("placements after undistribute: %+v", ps)
	}
	if _, err := f.b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: f.key.ID, Plaintext: []byte("still mine")}); err != nil {
		t.Fatalf("keyflow's key after undistribute: %v", err)
	}

	// Every provider request is a record, and no record holds material.
	calls := f.b.EventsOfType("alpha", events.TypeCloudCall)
	if len(calls) < 10 {
		t.Fatalf("%d cloud.call records", len(calls))
	}
	if n := len(f.b.EventsOfType("alpha", events.TypeCloudMaterialWrapped)); n != 2 {
		t.Fatalf("%d material.wrapped records, want 2 (distribute, rotate)", n)
	}
	f.assertNoMaterial()
	validateEvents(t, f.b, events.TypeCloudDestinationAdded, events.TypeCloudCall, events.TypeCloudMaterialWrapped, events.TypeCloudPlacementChanged)
}

// validateEvents checks every stored record of the tenant against its
// schema, and that each of want was among them.
func validateEvents(t *testing.T, b *testbed.Bed, want ...string) {
	t.Helper()
	seen := map[string]bool{}
	for _, e := range b.Events("alpha") {
		if err := schemas.ValidateEvent(e.Raw); err != nil {
			t.Errorf("%s: %v", e.Type, err)
		}
		seen[e.Type] = true
	}
	for _, typ := range want {
		if !seen[typ] {
			t.Errorf("no %s record", typ)
		}
	}
}

// assertNoMaterial scans every audit record for each version's material,
// raw, hex and base64.
func (f *cloudFixture) assertNoMaterial() {
	f.t.Helper()
	ctx := context.Background()
	k, _ := f.b.KMS.DescribeKey(ctx, alice, f.key.ID)
	var secrets [][]byte
	for _, v := range k.Versions {
		m, _ := f.b.Store.GetMaterial(ctx, "alpha", k.ID, v.Number)
		root, _ := f.b.HSM.EnsureRootKey(ctx, m.WrappedBy)
		raw, err := f.b.HSM.UnwrapSecret(ctx, root, m.Export)
		if err != nil {
			f.t.Fatal(err)
		}
		secrets = append(secrets, raw, []byte(hex.EncodeToString(raw)), []byte(base64.StdEncoding.EncodeToString(raw)))
	}
	for _, e := range f.b.Events("alpha") {
		b := e.Raw
		for _, s := range secrets {
			if bytes.Contains(b, s) {
				f.t.Fatalf("an audit record holds key material: %s", e.Type)
			}
		}
	}
}

func (f *cloudFixture) reconcile() *workflows.CloudReconcileResult {
	f.t.Helper()
	env := f.env()
	env.ExecuteWorkflow(workflows.CloudReconcileWorkflow, workflows.CloudReconcileParams{Tenant: "alpha", Principal: "reconciler", RequestID: "rec"})
	if err := env.GetWorkflowError(); err != nil {
		f.t.Fatal(err)
	}
	var res workflows.CloudReconcileResult
	if err := env.GetWorkflowResult(&res); err != nil {
		f.t.Fatal(err)
	}
	return &res
}

func driftData(_ *testing.T, e testbed.AuditEvent) map[string]any { return e.Data }

func TestCloudReconcileFindsAndRepairsDrift(t *testing.T) {
	ctx := context.Background()
	f := newCloudFixture(t, kms.DriftReport, "")
	if _, err := f.sync(workflows.CloudStepDistribute); err != nil {
		t.Fatal(err)
	}
	if r := f.reconcile(); r.Checked != 1 || r.Drifts != 0 {
		t.Fatalf("reconcile in sync: %+v", r)
	}
	// Behind keyflow's back: disable the key in the provider.
	alias := awskms.PrimaryAlias(f.key.ID)
	ps, _ := f.b.KMS.CloudPlacements(ctx, alice, f.key.ID)
	if _, err := f.sdk.DisableKey(ctx, &awssdk.DisableKeyInput{KeyId: aws.String(ps[0].Versions[0].ProviderVersion)}); err != nil {
		t.Fatal(err)
	}
	if r := f.reconcile(); r.Drifts != 1 || r.Repaired != 0 {
		t.Fatalf("reconcile after a console change, report mode: %+v", r)
	}
	drifts := f.b.EventsOfType("alpha", events.TypeCloudDrift)
	if len(drifts) != 1 {
		t.Fatalf("%d drift records", len(drifts))
	}
	if d := driftData(t, drifts[0]); d["field"] != "state" || d["keyflow"] != "ENABLED" || d["provider"] != "DISABLED" || d["repaired"] != false {
		t.Fatalf("drift record %v", d)
	}
	if _, err := f.sdk.Encrypt(ctx, &awssdk.EncryptInput{KeyId: aws.String(alias), Plaintext: []byte("x")}); err == nil {
		t.Fatal("report mode changed the provider")
	}
	// Repair mode puts the provider back.
	if _, err := f.b.KMS.AddCloudDestination(ctx, alice, kms.CloudDestination{Name: "aws-local", Provider: kms.CloudAWS, Drift: kms.DriftRepair,
		Settings: map[string]string{"region": "us-east-1", "endpoint": f.srv.URL}}); err != nil {
		t.Fatal(err)
	}
	if r := f.reconcile(); r.Drifts != 1 || r.Repaired != 1 {
		t.Fatalf("reconcile, repair mode: %+v", r)
	}
	drifts = f.b.EventsOfType("alpha", events.TypeCloudDrift)
	if d := driftData(t, drifts[len(drifts)-1]); d["field"] != "state" || d["repaired"] != true {
		t.Fatalf("drift record %v", d)
	}
	f.crossCheck(alias, 1)
	if r := f.reconcile(); r.Drifts != 0 {
		t.Fatalf("reconcile after the repair: %+v", r)
	}
	// The alias moved behind keyflow's back is a "primary" drift, repaired
	// by moving it back.
	other, err := f.sdk.CreateKey(ctx, &awssdk.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.sdk.UpdateAlias(ctx, &awssdk.UpdateAliasInput{AliasName: aws.String(alias), TargetKeyId: other.KeyMetadata.KeyId}); err != nil {
		t.Fatal(err)
	}
	if r := f.reconcile(); r.Drifts != 1 || r.Repaired != 1 {
		t.Fatalf("reconcile after an alias move: %+v", r)
	}
	drifts = f.b.EventsOfType("alpha", events.TypeCloudDrift)
	if d := driftData(t, drifts[len(drifts)-1]); d["field"] != "primary" {
		t.Fatalf("drift record %v", d)
	}
	f.crossCheck(alias, 1)
	validateEvents(t, f.b, events.TypeCloudDrift, events.TypeCloudCall)
}

func TestCloudRotationRetriesWhileProviderIsDown(t *testing.T) {
	ctx := context.Background()
	f := newCloudFixture(t, kms.DriftReport, "")
	if _, err := f.sync(workflows.CloudStepDistribute); err != nil {
		t.Fatal(err)
	}
	env := f.env()
	env.ExecuteWorkflow(workflows.RotateKeyWorkflow, workflows.RotateKeyParams{Tenant: "alpha", KeyID: f.key.ID, Principal: "alice", RequestID: "r2"})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	f.srv.Stop()
	env = f.env()
	var attempts atomic.Int32
	env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, _ converter.EncodedValues) {
		if info.ActivityType.Name != "CloudSync" {
			return
		}
		if attempts.Add(1) == 4 {
			// The placement says what failed while the provider was away.
			ps, _ := f.b.KMS.CloudPlacements(ctx, alice, f.key.ID)
			if len(ps) != 1 || ps[0].LastErrorCode != cloud.CodeUnavailable || ps[0].Pending != workflows.CloudStepRotate {
				t.Errorf("placement while the provider is down: %+v", ps)
			}
			f.srv.Restart()
		}
	})
	env.ExecuteWorkflow(workflows.CloudSyncWorkflow, workflows.CloudSyncParams{Tenant: "alpha", KeyID: f.key.ID, Principal: "alice", RequestID: "r3", Destinations: []string{"aws-local"}, Step: workflows.CloudStepRotate})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if n := attempts.Load(); n != 4 {
		t.Fatalf("%d attempts, want 4 (3 while down)", n)
	}
	f.crossCheck(awskms.PrimaryAlias(f.key.ID), 2)
	ps, _ := f.b.KMS.CloudPlacements(ctx, alice, f.key.ID)
	if ps[0].LastErrorCode != "" || ps[0].Pending != "" {
		t.Fatalf("placement after recovery: %+v", ps[0])
	}
	failed := 0
	for _, e := range f.b.EventsOfType("alpha", events.TypeCloudCall) {
		if e.Outcome == events.OutcomeFailure && e.Data["providerErrorCode"] == cloud.CodeUnavailable {
			failed++
		}
	}
	if failed != 3 {
		t.Fatalf("%d cloud.call records of an unavailable provider, want 3", failed)
	}
}

// quotaProxy stands in front of local-kms and refuses CreateKey as AWS
// does when the account's key quota is used up.
func quotaProxy(t *testing.T, target string) string {
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".CreateKey") {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/x-amz-json-1.1")
			w.Header().Set("X-Amzn-Requestid", "quota-req-1")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"__type":"LimitExceededException","message":"You have reached the limit of customer managed keys"}`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestCloudQuotaRefusalIsRecordedAndVisible(t *testing.T) {
	ctx := context.Background()
	f := newCloudFixture(t, kms.DriftReport, "")
	proxy := quotaProxy(t, f.srv.URL)
	if _, err := f.b.KMS.AddCloudDestination(ctx, alice, kms.CloudDestination{Name: "aws-local", Provider: kms.CloudAWS,
		Settings: map[string]string{"region": "us-east-1", "endpoint": proxy}}); err != nil {
		t.Fatal(err)
	}
	_, err := f.sync(workflows.CloudStepDistribute)
	if err == nil || !strings.Contains(err.Error(), "LimitExceededException") {
		t.Fatalf("distribute over quota: %v", err)
	}
	ps, _ := f.b.KMS.CloudPlacements(ctx, alice, f.key.ID)
	if len(ps) != 1 || ps[0].LastErrorCode != "LimitExceededException" || ps[0].Pending != workflows.CloudStepDistribute {
		t.Fatalf("placement after the refusal: %+v", ps)
	}
	var refused []map[string]any
	for _, e := range f.b.EventsOfType("alpha", events.TypeCloudCall) {
		if d := driftData(t, e); d["providerErrorCode"] == "LimitExceededException" {
			refused = append(refused, d)
		}
	}
	if len(refused) != 1 || refused[0]["providerRequestId"] != "quota-req-1" || refused[0]["operation"] != "CreateKey" {
		t.Fatalf("refusal records %v", refused)
	}
}

func TestCloudDistributeRefusesNonExportableKey(t *testing.T) {
	ctx := context.Background()
	f := newCloudFixture(t, kms.DriftReport, "")
	k, err := f.b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	if err != nil {
		t.Fatal(err)
	}
	f.key = k
	if _, err := f.sync(workflows.CloudStepDistribute); err == nil || !strings.Contains(err.Error(), "exportable") {
		t.Fatalf("distribute a non-exportable key: %v", err)
	}
	out, err := f.sdk.ListAliases(ctx, &awssdk.ListAliasesInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range out.Aliases {
		if strings.Contains(aws.ToString(a.AliasName), k.ID) {
			t.Fatalf("the provider got a key for a refused distribution: %s", aws.ToString(a.AliasName))
		}
	}
}
