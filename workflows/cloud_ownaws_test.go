package workflows_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awssdk "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/keyflow/keyflow/cloud"
	"github.com/keyflow/keyflow/cloud/awskms"
	"github.com/keyflow/keyflow/cloud/connect"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
	awsgw "github.com/keyflow/keyflow/workers/awskms"
)

// ownAWS is keyflow's own AWS KMS API (workers/awskms) as a cloud
// destination: tenant beta of the same deployment plays the provider.
type ownAWS struct {
	url string
	app *awssdk.Client // beta's application, a crypto user
}

// accessKey issues an access key to a new principal of tenant with roles,
// as `keyflow access-key create` does.
func accessKey(t testing.TB, b *testbed.Bed, tenant, principal string, roles ...keypolicy.Role) (string, string) {
	t.Helper()
	b.PrincipalCreds(tenant, principal, roles...)
	admin := kms.Caller{Tenant: tenant, Principal: "root", Roles: []string{string(keypolicy.RoleTenantAdmin)}}
	k, secret, err := b.KMS.CreateAccessKey(context.Background(), admin, b.Identity, principal)
	if err != nil {
		t.Fatal(err)
	}
	return k.ID, secret
}

// startOwnAWS starts the gateway in process over l's rpc workers and
// registers it for tenant alpha as the AWS destination "keyflow-beta",
// with beta's access key in a shared credentials file (the setting
// credentialsFile), opened by the production connector (cloud/connect).
func startOwnAWS(t *testing.T, l *liveCloud) *ownAWS {
	t.Helper()
	gw, err := awsgw.New(awsgw.Options{KMS: l.b.KMS, Invoker: l.rpc,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(gw)
	t.Cleanup(hs.Close)
	id, secret := accessKey(t, l.b, "beta", "keyflow-alpha", keypolicy.RoleKeyAdmin)
	creds := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(creds, fmt.Appendf(nil, "[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", id, secret), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := l.b.KMS.AddCloudDestination(context.Background(), alice, kms.CloudDestination{Name: "keyflow-beta", Provider: kms.CloudAWS, Drift: kms.DriftReport,
		Settings: map[string]string{"region": "us-east-1", "endpoint": hs.URL, "credentialsFile": creds, "wrappingKeySpec": "RSA_3072", "aliases": awskms.AliasesPrimaryOnly}}); err != nil {
		t.Fatal(err)
	}
	appID, appSecret := accessKey(t, l.b, "beta", "beta-app", keypolicy.RoleCryptoUser)
	app := awssdk.New(awssdk.Options{Region: "us-east-1", BaseEndpoint: aws.String(hs.URL), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(appID, appSecret, "")})
	return &ownAWS{url: hs.URL, app: app}
}

// productionConnect opens destinations as the lifecycle worker does.
func productionConnect(ctx context.Context, d *kms.CloudDestination) (cloud.Connector, error) {
	return connect.Open(ctx, d.Provider, d.Settings)
}

// keyflow's ciphertext envelope, format version 1 (kms/envelope.go): 1
// byte format, 1 byte algorithm, 1 byte key-ID length L, the key ID, the
// version (uint32 big-endian), a 12-byte IV, then AES-256-GCM output. The
// AAD is length-prefixed: "keyflow/aad/v1", the header (the bytes before
// the IV), the tenant, the number of context pairs (uint32) and each
// sorted key and its value.
func splitEnvelope(blob []byte) (header, iv, sealed []byte) {
	l := int(blob[2])
	h := 3 + l + 4
	return blob[:h], blob[h : h+12], blob[h+12:]
}

func envelopeHeader(keyID string, version uint32) []byte {
	h := append([]byte{0x01, 0x01, byte(len(keyID))}, keyID...)
	return binary.BigEndian.AppendUint32(h, version)
}

func envelopeAAD(header []byte, tenant string, ec map[string]string) []byte {
	lp := func(dst, b []byte) []byte { return append(binary.BigEndian.AppendUint32(dst, uint32(len(b))), b...) }
	keys := make([]string, 0, len(ec))
	for k := range ec {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := lp(nil, []byte("keyflow/aad/v1"))
	out = lp(out, header)
	out = lp(out, []byte(tenant))
	out = binary.BigEndian.AppendUint32(out, uint32(len(keys)))
	for _, k := range keys {
		out = lp(lp(out, []byte(k)), []byte(ec[k]))
	}
	return out
}

// crossCheckOwn: a ciphertext that beta makes through the AWS API with
// the distributed key opens with alpha's HSM object of that key version,
// and one sealed with alpha's object, packaged for beta's key, decrypts
// through beta's AWS API.
func (l *liveCloud) crossCheckOwn(o *ownAWS, alias string, version uint32) {
	l.t.Helper()
	ctx := context.Background()
	enc, err := o.app.Encrypt(ctx, &awssdk.EncryptInput{KeyId: aws.String(alias), Plaintext: []byte("from beta"), EncryptionContext: cloudEC})
	if err != nil {
		l.t.Fatal(err)
	}
	betaKey, betaVersion, err := kms.EnvelopeKeyID(enc.CiphertextBlob)
	if err != nil {
		l.t.Fatal(err)
	}
	header, iv, sealed := splitEnvelope(enc.CiphertextBlob)
	pt, err := l.keyflowGCM(version, false, iv, sealed, envelopeAAD(header, "beta", cloudEC))
	if err != nil || string(pt) != "from beta" {
		l.t.Fatalf("alpha's version %d does not open beta's ciphertext: %v", version, err)
	}
	header = envelopeHeader(betaKey, betaVersion)
	iv = make([]byte, 12)
	rand.Read(iv)
	sealed, err = l.keyflowGCM(version, true, iv, []byte("from alpha"), envelopeAAD(header, "beta", cloudEC))
	if err != nil {
		l.t.Fatal(err)
	}
	dec, err := o.app.Decrypt(ctx, &awssdk.DecryptInput{CiphertextBlob: append(append(header, iv...), sealed...), EncryptionContext: cloudEC})
	if err != nil || string(dec.Plaintext) != "from alpha" {
		l.t.Fatalf("beta does not open alpha's version %d ciphertext: %v", version, err)
	}
}

// TestCloudDistributeToKeyflowsOwnAWSAPI distributes a key of tenant
// alpha into tenant beta through keyflow's own AWS-compatible API, on
// the real aws-sdk-go-v2 path of cloud/awskms (CreateKey of origin
// EXTERNAL, GetParametersForImport with RSAES_OAEP_SHA_256 on RSA_2048,
// ImportKeyMaterial, aliases), with beta's SigV4 access key. Beta's
// ciphertexts open in alpha with the same key version and the reverse;
// after a rotation in alpha, which propagates by itself, beta's next
// ciphertexts use the new material.
func TestCloudDistributeToKeyflowsOwnAWSAPI(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Exportable: true})
	if err != nil {
		t.Fatal(err)
	}
	l := newLiveCloud(t, &cloudFixture{t: t, b: b, key: k}, productionConnect)
	o := startOwnAWS(t, l)
	l.distribute("keyflow-beta")
	alias := awskms.PrimaryAlias(k.ID)
	p := l.waitPlacement("the distribution to beta", atVersion(1, kms.PlacementEnabled))
	md, err := o.app.DescribeKey(ctx, &awssdk.DescribeKeyInput{KeyId: aws.String(p.Versions[0].ProviderVersion)})
	if err != nil || md.KeyMetadata.Origin != "EXTERNAL" || md.KeyMetadata.KeyState != "Enabled" {
		t.Fatalf("beta's copy: %v %+v", err, md)
	}
	l.crossCheckOwn(o, alias, 1)

	// Rotate in alpha over NATS; the new version reaches beta by itself.
	if _, err := b.Client("alpha", "alice").RotateKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	p = l.waitPlacement("the rotation in beta", atVersion(2, kms.PlacementEnabled))
	if p.Versions[0].ProviderVersion == p.Versions[1].ProviderVersion {
		t.Fatalf("one AWS key for two versions: %+v", p.Versions)
	}
	l.crossCheckOwn(o, alias, 2)
	enc, err := o.app.Encrypt(ctx, &awssdk.EncryptInput{KeyId: aws.String(alias), Plaintext: []byte("x"), EncryptionContext: cloudEC})
	if err != nil {
		t.Fatal(err)
	}
	header, iv, sealed := splitEnvelope(enc.CiphertextBlob)
	if _, err := l.keyflowGCM(1, false, iv, sealed, envelopeAAD(header, "beta", cloudEC)); err == nil {
		t.Fatal("after the rotation beta still encrypts under version 1's material")
	}

	// Beta's own trail has the imports; alpha's has every call, with the
	// gateway's request IDs.
	if n := len(b.EventsOfType("beta", events.TypeKeyImported)); n != 2 {
		t.Fatalf("%d key.imported records in beta, want 2", n)
	}
	withID := 0
	for _, e := range b.EventsOfType("alpha", events.TypeCloudCall) {
		if e.Data["destination"] == "keyflow-beta" && e.Data["providerRequestId"] != nil && e.Data["providerRequestId"] != "" {
			withID++
		}
	}
	if withID == 0 {
		t.Fatal("no cloud.call record carries the gateway's request ID")
	}
	l.assertNoMaterial()
}
