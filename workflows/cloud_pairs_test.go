package workflows_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	kmsapi "cloud.google.com/go/kms/apiv1"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awssdk "github.com/aws/aws-sdk-go-v2/service/kms"
	awstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"go.temporal.io/sdk/testsuite"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keyflow/keyflow/cloud"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/internal/cloudfake"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
	kfaws "github.com/keyflow/keyflow/workers/awskms"
	"github.com/keyflow/keyflow/workers/rpc"
	"github.com/keyflow/keyflow/workflows"
)

// pairCase is one exportable key pair spec and usage a provider takes.
type pairCase struct {
	spec  kms.KeySpec
	usage kms.KeyUsage
	alg   kms.SigningAlgorithm // for SIGN_VERIFY
	hash  crypto.Hash
}

var pairCases = []pairCase{
	{kms.SpecRSA3072, kms.UsageSignVerify, kms.SignRSAPKCS1SHA256, crypto.SHA256},
	{kms.SpecRSA3072, kms.UsageEncryptDecrypt, "", 0},
	{kms.SpecRSA4096, kms.UsageSignVerify, kms.SignRSAPKCS1SHA256, crypto.SHA256},
	{kms.SpecECCP256, kms.UsageSignVerify, kms.SignECDSASHA256, crypto.SHA256},
	{kms.SpecECCP384, kms.UsageSignVerify, kms.SignECDSASHA384, crypto.SHA384},
}

func digest(h crypto.Hash, msg []byte) []byte {
	if h == crypto.SHA384 {
		d := sha512.Sum384(msg)
		return d[:]
	}
	d := sha256.Sum256(msg)
	return d[:]
}

// samePair checks (test-only) that the private key a fake unwrapped is
// keyflow's key pair of that version: its public key is keyflow's.
func samePair(t *testing.T, b *testbed.Bed, keyID string, version uint32, material []byte) bool {
	t.Helper()
	priv, err := x509.ParsePKCS8PrivateKey(material)
	if err != nil {
		return false
	}
	got, _ := x509.MarshalPKIXPublicKey(priv.(crypto.Signer).Public())
	pub, err := b.KMS.GetPublicKey(context.Background(), alice, keyID, version)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(got, pub.PublicKeyDER)
}

func runCloudSync(t *testing.T, env func() *testsuite.TestWorkflowEnvironment, keyID, dest, step string) {
	t.Helper()
	e := env()
	e.ExecuteWorkflow(workflows.CloudSyncWorkflow, workflows.CloudSyncParams{Tenant: "alpha", KeyID: keyID, Principal: "alice", RequestID: "r1", Destinations: []string{dest}, Step: step})
	if err := e.GetWorkflowError(); err != nil {
		t.Fatalf("%s to %s: %v", step, dest, err)
	}
}

// distributePair creates an exportable key of tc, distributes it to dest
// and checks (test-only) that the material the fake unwrapped is
// keyflow's pair; it returns the key and its provider version.
func distributePair(t *testing.T, b *testbed.Bed, env func() *testsuite.TestWorkflowEnvironment, tc pairCase, dest string, material func(string) []byte) (*kms.Key, string) {
	t.Helper()
	ctx := context.Background()
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: tc.spec, Usage: tc.usage, Exportable: true})
	if err != nil {
		t.Fatal(err)
	}
	runCloudSync(t, env, k.ID, dest, workflows.CloudStepDistribute)
	ps, _ := b.KMS.CloudPlacements(ctx, alice, k.ID)
	if len(ps) != 1 || len(ps[0].Versions) != 1 {
		t.Fatalf("%s: placement %+v", tc.spec, ps)
	}
	v1 := ps[0].Versions[0].ProviderVersion
	if !samePair(t, b, k.ID, 1, material(v1)) {
		t.Fatalf("%s %s: the fake's unwrapped private key is not keyflow's", tc.spec, tc.usage)
	}
	return k, v1
}

// Exportable RSA and EC key pairs go to Cloud KMS as imported
// ASYMMETRIC_SIGN / ASYMMETRIC_DECRYPT versions: the fake unwraps each
// import (RSA_OAEP_3072_SHA256_AES_256 over PKCS#8) and the private key is
// keyflow's; a signature Cloud KMS makes (through the official client)
// verifies in keyflow, and a ciphertext for keyflow's public key decrypts
// in Cloud KMS and the reverse. A rotation adds a version with the new
// pair, and the reconcile sees no drift in keys that have no primary.
func TestCloudDistributeKeyPairsToGCPFake(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	fake := cloudfake.StartGCP(t)
	settings := map[string]string{"project": "p1", "location": "europe-west1", "keyRing": "kr", "endpoint": fake.Addr}
	if _, err := b.KMS.AddCloudDestination(ctx, alice, kms.CloudDestination{Name: "gcp-fake", Provider: kms.CloudGCP, Drift: kms.DriftReport, Settings: settings}); err != nil {
		t.Fatal(err)
	}
	env := func() *testsuite.TestWorkflowEnvironment { return cloudEnv(b, gcpConnect) }
	gc, err := kmsapi.NewKeyManagementClient(ctx, option.WithEndpoint(fake.Addr), option.WithoutAuthentication(), option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	msg := []byte("made in the provider with keyflow's key")
	var last *kms.Key
	for _, tc := range pairCases {
		k, v1 := distributePair(t, b, env, tc, "gcp-fake", fake.Material)
		if tc.usage == kms.UsageSignVerify {
			d := &kmspb.Digest{Digest: &kmspb.Digest_Sha256{Sha256: digest(tc.hash, msg)}}
			if tc.hash == crypto.SHA384 {
				d = &kmspb.Digest{Digest: &kmspb.Digest_Sha384{Sha384: digest(tc.hash, msg)}}
			}
			sig, err := gc.AsymmetricSign(ctx, &kmspb.AsymmetricSignRequest{Name: v1, Digest: d})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.KMS.Verify(ctx, alice, kms.VerifyParams{KeyRef: k.ID, Message: msg, Algorithm: tc.alg, Signature: sig.Signature}); err != nil {
				t.Fatalf("%s: keyflow does not verify Cloud KMS's signature: %v", tc.spec, err)
			}
			if _, err := b.KMS.Verify(ctx, alice, kms.VerifyParams{KeyRef: k.ID, Message: []byte("other"), Algorithm: tc.alg, Signature: sig.Signature}); err == nil {
				t.Fatalf("%s: a signature verified for another message", tc.spec)
			}
		} else {
			pk, err := gc.GetPublicKey(ctx, &kmspb.GetPublicKeyRequest{Name: v1})
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode([]byte(pk.Pem))
			gpub, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			ct, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, gpub.(*rsa.PublicKey), msg, nil)
			pt, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{KeyRef: k.ID, Ciphertext: ct, Algorithm: kms.EncRSAOAEPSHA256})
			if err != nil || !bytes.Equal(pt.Plaintext, msg) {
				t.Fatalf("keyflow does not decrypt for Cloud KMS's public key: %v", err)
			}
			kct, err := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: msg, Algorithm: kms.EncRSAOAEPSHA256})
			if err != nil {
				t.Fatal(err)
			}
			out, err := gc.AsymmetricDecrypt(ctx, &kmspb.AsymmetricDecryptRequest{Name: v1, Ciphertext: kct.Ciphertext})
			if err != nil || !bytes.Equal(out.Plaintext, msg) {
				t.Fatalf("Cloud KMS does not decrypt keyflow's ciphertext: %v", err)
			}
		}
		last = k
	}

	// Rotation: a new version with the new pair; nothing drifts.
	e := env()
	e.ExecuteWorkflow(workflows.RotateKeyWorkflow, workflows.RotateKeyParams{Tenant: "alpha", KeyID: last.ID, Principal: "alice", RequestID: "r2"})
	if err := e.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	runCloudSync(t, env, last.ID, "gcp-fake", workflows.CloudStepRotate)
	ps, _ := b.KMS.CloudPlacements(ctx, alice, last.ID)
	if len(ps[0].Versions) != 2 || !samePair(t, b, last.ID, 2, fake.Material(ps[0].Versions[1].ProviderVersion)) || samePair(t, b, last.ID, 2, fake.Material(ps[0].Versions[0].ProviderVersion)) {
		t.Fatalf("after the rotation: %+v", ps[0].Versions)
	}
	e = env()
	e.ExecuteWorkflow(workflows.CloudReconcileWorkflow, workflows.CloudReconcileParams{Tenant: "alpha", Principal: "reconciler", RequestID: "rec"})
	var res workflows.CloudReconcileResult
	if err := e.GetWorkflowResult(&res); err != nil || res.Drifts != 0 {
		t.Fatalf("reconcile of key pairs in sync: %v %+v", err, res)
	}
	fake.SetState(ps[0].Versions[1].ProviderVersion, kmspb.CryptoKeyVersion_DISABLED)
	e = env()
	e.ExecuteWorkflow(workflows.CloudReconcileWorkflow, workflows.CloudReconcileParams{Tenant: "alpha", Principal: "reconciler", RequestID: "rec2"})
	if err := e.GetWorkflowResult(&res); err != nil || res.Drifts != 1 {
		t.Fatalf("reconcile after a console change: %v %+v", err, res)
	}
	if d := b.EventsOfType("alpha", events.TypeCloudDrift); len(d) != 1 || d[0].Data["field"] != "state" {
		t.Fatalf("drift records %+v", d)
	}
}

// The refusals of key pairs: a pair that is not exportable never reaches
// the provider (AccessDenied, a rejected record), and a spec the provider
// does not take (an RSA key to an AWS table narrowed to AES-256, as
// before AWS took key pairs) is refused before any call to it.
func TestCloudDistributeKeyPairRefusals(t *testing.T) {
	ctx := context.Background()
	f := newCloudFixture(t, kms.DriftReport, "")
	gfake := cloudfake.StartGCP(t)
	if _, err := f.b.KMS.AddCloudDestination(ctx, alice, kms.CloudDestination{Name: "gcp-fake", Provider: kms.CloudGCP,
		Settings: map[string]string{"project": "p1", "location": "l", "keyRing": "kr", "endpoint": gfake.Addr}}); err != nil {
		t.Fatal(err)
	}
	plain, err := f.b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: kms.SpecECCP256, Usage: kms.UsageSignVerify})
	if err != nil {
		t.Fatal(err)
	}
	e := cloudEnv(f.b, gcpConnect)
	e.ExecuteWorkflow(workflows.CloudSyncWorkflow, workflows.CloudSyncParams{Tenant: "alpha", KeyID: plain.ID, Principal: "alice", RequestID: "r1", Destinations: []string{"gcp-fake"}, Step: workflows.CloudStepDistribute})
	if err := e.GetWorkflowError(); err == nil || !strings.Contains(err.Error(), "exportable") {
		t.Fatalf("distribute a non-exportable key pair: %v", err)
	}
	if m := gfake.Material("projects/p1/locations/l/keyRings/kr/cryptoKeys/keyflow-" + plain.ID + "/cryptoKeyVersions/1"); m != nil {
		t.Fatal("the provider got a non-exportable key")
	}

	rsaKey, err := f.b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: kms.SpecRSA3072, Usage: kms.UsageSignVerify, Exportable: true})
	if err != nil {
		t.Fatal(err)
	}
	f.key = rsaKey
	awsAccepts := cloud.Accepts[cloud.ProviderAWS]
	cloud.Accepts[cloud.ProviderAWS] = []string{cloud.SpecAES256}
	defer func() { cloud.Accepts[cloud.ProviderAWS] = awsAccepts }()
	if _, err := f.sync(workflows.CloudStepDistribute); err == nil || !strings.Contains(err.Error(), "RSA_3072_SIGN") {
		t.Fatalf("distribute an RSA key to AWS: %v", err)
	}
	if calls := f.b.EventsOfType("alpha", events.TypeCloudCall); len(calls) != 0 {
		t.Fatalf("%d provider calls for refused distributions, want none", len(calls))
	}
	if ps, _ := f.b.KMS.CloudPlacements(ctx, alice, ""); len(ps) != 0 {
		t.Fatalf("refused distributions left placements: %+v", ps)
	}
	var codes []string
	for _, r := range f.b.EventsOfType("alpha", events.TypeRequestRejected) {
		codes = append(codes, r.ErrorCode)
	}
	if len(codes) != 2 || codes[0] != string(kms.CodeAccessDenied) || codes[1] != string(kms.CodeUnsupportedOperation) {
		t.Fatalf("rejected records %v, want [AccessDenied UnsupportedOperation]", codes)
	}
	if wraps := f.b.EventsOfType("alpha", events.TypeCloudMaterialWrapped); len(wraps) != 0 {
		t.Fatalf("material was wrapped for a refused distribution: %d records", len(wraps))
	}
}

// Exportable RSA and EC key pairs go to Key Vault as RSA-HSM and EC-HSM
// BYOK imports: the fake unwraps the transfer blob (CKM_RSA_AES_KEY_WRAP
// over PKCS#8) and the private key is keyflow's; a signature Key Vault
// makes (through azkeys) verifies in keyflow, and RSA-OAEP-256 works both
// ways.
func TestCloudDistributeKeyPairsToAzureFake(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	fake := cloudfake.StartAzure(t)
	connect := azureConnectTo(fake)
	env := func() *testsuite.TestWorkflowEnvironment { return cloudEnv(b, connect) }
	if _, err := b.KMS.AddCloudDestination(ctx, alice, kms.CloudDestination{Name: "azure-fake", Provider: kms.CloudAzure, Settings: map[string]string{"vaultURL": fake.URL}}); err != nil {
		t.Fatal(err)
	}
	az, err := azkeys.NewClient(fake.URL, staticToken{}, &azkeys.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: fake.Client}, DisableChallengeResourceVerification: true})
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("made in the provider with keyflow's key")
	for _, tc := range pairCases {
		k, v1 := distributePair(t, b, env, tc, "azure-fake", fake.Material)
		kid := azkeys.ID(v1)
		if tc.usage == kms.UsageSignVerify {
			alg := map[kms.SigningAlgorithm]azkeys.SignatureAlgorithm{kms.SignRSAPKCS1SHA256: azkeys.SignatureAlgorithmRS256, kms.SignECDSASHA256: azkeys.SignatureAlgorithmES256, kms.SignECDSASHA384: azkeys.SignatureAlgorithmES384}[tc.alg]
			r, err := az.Sign(ctx, kid.Name(), kid.Version(), azkeys.SignParameters{Algorithm: &alg, Value: digest(tc.hash, msg)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			sig := r.Result
			if tc.alg != kms.SignRSAPKCS1SHA256 { // Key Vault's ECDSA signatures are r||s; keyflow's DER
				if sig, err = hsm.ECDSASigToDER(sig); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := b.KMS.Verify(ctx, alice, kms.VerifyParams{KeyRef: k.ID, Message: msg, Algorithm: tc.alg, Signature: sig}); err != nil {
				t.Fatalf("%s: keyflow does not verify Key Vault's signature: %v", tc.spec, err)
			}
			continue
		}
		kb, err := az.GetKey(ctx, kid.Name(), kid.Version(), nil)
		if err != nil {
			t.Fatal(err)
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(kb.Key.N), E: int(new(big.Int).SetBytes(kb.Key.E).Int64())}
		ct, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, msg, nil)
		pt, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{KeyRef: k.ID, Ciphertext: ct, Algorithm: kms.EncRSAOAEPSHA256})
		if err != nil || !bytes.Equal(pt.Plaintext, msg) {
			t.Fatalf("keyflow does not decrypt for Key Vault's public key: %v", err)
		}
		kct, err := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: msg, Algorithm: kms.EncRSAOAEPSHA256})
		if err != nil {
			t.Fatal(err)
		}
		oaep := azkeys.EncryptionAlgorithmRSAOAEP256
		out, err := az.Decrypt(ctx, kid.Name(), kid.Version(), azkeys.KeyOperationParameters{Algorithm: &oaep, Value: kct.Ciphertext}, nil)
		if err != nil || !bytes.Equal(out.Result, msg) {
			t.Fatalf("Key Vault does not decrypt keyflow's ciphertext: %v", err)
		}
	}
}

// keyflowAWS starts keyflow's own AWS KMS API over the bed (NATS services
// and the gateway on a loopback port), as a second tenant's KMS: a
// that imports RSA private keys for real. It returns an SDK client
// factory with the tenant's access key.
func keyflowAWS(t *testing.T, b *testbed.Bed, tenant string) func() *awssdk.Client {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	srv, err := rpc.Start(rpc.Config{Conn: b.Conn, KMS: b.KMS, Tenants: b.Identity, JS: b.JS, Workers: 4, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	gw, err := kfaws.New(kfaws.Options{KMS: b.KMS, Invoker: srv, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(gw)
	t.Cleanup(hs.Close)
	b.PrincipalCreds(tenant, "cloudsync", keypolicy.RoleKeyAdmin, keypolicy.RoleCryptoUser)
	admin := kms.Caller{Tenant: tenant, Principal: "root", Roles: []string{string(keypolicy.RoleTenantAdmin)}}
	ak, secret, err := b.KMS.CreateAccessKey(context.Background(), admin, b.Identity, "cloudsync")
	if err != nil {
		t.Fatal(err)
	}
	sdk := func() *awssdk.Client {
		return awssdk.New(awssdk.Options{Region: "us-east-1", BaseEndpoint: aws.String(hs.URL), HTTPClient: hs.Client(), RetryMaxAttempts: 1,
			Credentials: credentials.NewStaticCredentialsProvider(ak.ID, secret, "")})
	}
	return sdk
}

// What keyflow would send AWS for an RSA key pair — its PKCS#8 under
// RSA_AES_KEY_WRAP_SHA_256 for an RSA_4096 wrapping key from
// GetParametersForImport — imports into a real AWS-compatible KMS
// (keyflow's own AWS API, a second tenant, which unwraps it in its HSM):
// the imported key's public key is keyflow's, and its signatures verify
// in keyflow. TestCloudDistributeKeyPairsToKeyflowsOwnAWSAPI does the
// same through the AWS connector and the distribution workflow.
func TestCloudRSAMaterialImportsIntoAWSAPI(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	p := keyflowAWS(t, b, "beta")()
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: kms.SpecRSA3072, Usage: kms.UsageSignVerify, Exportable: true})
	if err != nil {
		t.Fatal(err)
	}
	ck, err := p.CreateKey(ctx, &awssdk.CreateKeyInput{Origin: awstypes.OriginTypeExternal, KeySpec: awstypes.KeySpecRsa3072, KeyUsage: awstypes.KeyUsageTypeSignVerify})
	if err != nil {
		t.Fatal(err)
	}
	params, err := p.GetParametersForImport(ctx, &awssdk.GetParametersForImportInput{KeyId: ck.KeyMetadata.KeyId,
		WrappingAlgorithm: awstypes.AlgorithmSpecRsaAesKeyWrapSha256, WrappingKeySpec: awstypes.WrappingKeySpecRsa4096})
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := b.KMS.WrapForCloud(ctx, alice, kms.WrapForCloudParams{KeyID: k.ID, Version: 1, Destination: "aws", Scheme: kms.WrapRSAAESSHA256, PublicKey: params.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.ImportKeyMaterial(ctx, &awssdk.ImportKeyMaterialInput{KeyId: ck.KeyMetadata.KeyId, ImportToken: params.ImportToken, EncryptedKeyMaterial: wrapped,
		ExpirationModel: awstypes.ExpirationModelTypeKeyMaterialDoesNotExpire}); err != nil {
		t.Fatal(err)
	}
	got, err := p.GetPublicKey(ctx, &awssdk.GetPublicKeyInput{KeyId: ck.KeyMetadata.KeyId})
	if err != nil {
		t.Fatal(err)
	}
	want, err := b.KMS.GetPublicKey(ctx, alice, k.ID, 1)
	if err != nil || !bytes.Equal(got.PublicKey, want.PublicKeyDER) {
		t.Fatalf("the imported key is not keyflow's key pair: %v", err)
	}
	msg := []byte("signed in the provider")
	sig, err := p.Sign(ctx, &awssdk.SignInput{KeyId: ck.KeyMetadata.KeyId, Message: msg, SigningAlgorithm: awstypes.SigningAlgorithmSpecRsassaPkcs1V15Sha256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.Verify(ctx, alice, kms.VerifyParams{KeyRef: k.ID, Message: msg, Algorithm: kms.SignRSAPKCS1SHA256, Signature: sig.Signature}); err != nil {
		t.Fatalf("keyflow does not verify the provider's signature: %v", err)
	}
}
