package workflows_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssdk "github.com/aws/aws-sdk-go-v2/service/kms"
	awstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/keyflow/keyflow/cloud/awskms"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

// crossSignOwn: a signature that beta makes through the AWS API with the
// alias verifies with alpha's public key of version (and with no other
// version's), and alpha's signature with that version verifies in beta.
func (l *liveCloud) crossSignOwn(o *ownAWS, alias string, version uint32, others ...uint32) {
	l.t.Helper()
	ctx := context.Background()
	msg := []byte("signed in beta")
	sig, err := o.app.Sign(ctx, &awssdk.SignInput{KeyId: aws.String(alias), Message: msg, SigningAlgorithm: awstypes.SigningAlgorithmSpecRsassaPkcs1V15Sha256})
	if err != nil {
		l.t.Fatal(err)
	}
	if _, err := l.b.KMS.Verify(ctx, alice, kms.VerifyParams{KeyRef: l.key.ID, KeyVersion: version, Message: msg, Algorithm: kms.SignRSAPKCS1SHA256, Signature: sig.Signature}); err != nil {
		l.t.Fatalf("alpha's version %d does not verify beta's signature: %v", version, err)
	}
	digest := sha256.Sum256(msg)
	for _, v := range others {
		pub, err := l.b.KMS.GetPublicKey(ctx, alice, l.key.ID, v)
		if err != nil {
			l.t.Fatal(err)
		}
		pk, err := x509.ParsePKIXPublicKey(pub.PublicKeyDER)
		if err != nil {
			l.t.Fatal(err)
		}
		if rsa.VerifyPKCS1v15(pk.(*rsa.PublicKey), crypto.SHA256, digest[:], sig.Signature) == nil {
			l.t.Fatalf("beta's alias still signs with version %d's key", v)
		}
	}
	mine, err := l.b.KMS.Sign(ctx, alice, kms.SignParams{KeyRef: l.key.ID, Message: []byte("signed in alpha"), Algorithm: kms.SignRSAPKCS1SHA256})
	if err != nil {
		l.t.Fatal(err)
	}
	ok, err := o.app.Verify(ctx, &awssdk.VerifyInput{KeyId: aws.String(alias), Message: []byte("signed in alpha"), Signature: mine.Signature,
		SigningAlgorithm: awstypes.SigningAlgorithmSpecRsassaPkcs1V15Sha256})
	if err != nil || !ok.SignatureValid {
		l.t.Fatalf("beta does not verify alpha's version %d signature: %v", version, err)
	}
}

// TestCloudDistributeKeyPairsToKeyflowsOwnAWSAPI distributes exportable
// key pairs of tenant alpha into tenant beta through keyflow's own
// AWS-compatible API, on the production AWS connector: an RSA_3072
// signing key becomes an EXTERNAL RSA_3072 SIGN_VERIFY key in beta, its
// PKCS#8 imported under RSA_AES_KEY_WRAP_SHA_256; signatures cross both
// ways, and after a rotation in alpha the alias signs with version 2's
// key. A P-256 key fails at the provider (keyflow's API imports no EC
// private keys), and the provider's error is on the placement and in
// the audit trail.
func TestCloudDistributeKeyPairsToKeyflowsOwnAWSAPI(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: kms.SpecRSA3072, Usage: kms.UsageSignVerify, Exportable: true})
	if err != nil {
		t.Fatal(err)
	}
	l := newLiveCloud(t, &cloudFixture{t: t, b: b, key: k}, productionConnect)
	o := startOwnAWS(t, l)
	l.distribute("keyflow-beta")
	alias := awskms.PrimaryAlias(k.ID)
	p := l.waitPlacement("the distribution to beta", atVersion(1, kms.PlacementEnabled))
	md, err := o.app.DescribeKey(ctx, &awssdk.DescribeKeyInput{KeyId: aws.String(alias)})
	if err != nil || md.KeyMetadata.Origin != awstypes.OriginTypeExternal || md.KeyMetadata.KeySpec != awstypes.KeySpecRsa3072 ||
		md.KeyMetadata.KeyUsage != awstypes.KeyUsageTypeSignVerify || aws.ToString(md.KeyMetadata.Arn) != p.Versions[0].ProviderVersion {
		t.Fatalf("beta's copy: %v %+v", err, md)
	}
	got, err := o.app.GetPublicKey(ctx, &awssdk.GetPublicKeyInput{KeyId: aws.String(alias)})
	want, err2 := b.KMS.GetPublicKey(ctx, alice, k.ID, 1)
	if err != nil || err2 != nil || !bytes.Equal(got.PublicKey, want.PublicKeyDER) {
		t.Fatalf("beta's key is not alpha's key pair: %v %v", err, err2)
	}
	l.crossSignOwn(o, alias, 1)

	if _, err := b.Client("alpha", "alice").RotateKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	p = l.waitPlacement("the rotation in beta", atVersion(2, kms.PlacementEnabled))
	if len(p.Versions) != 2 || p.Versions[0].ProviderVersion == p.Versions[1].ProviderVersion {
		t.Fatalf("versions in beta: %+v", p.Versions)
	}
	l.crossSignOwn(o, alias, 2, 1)
	l.assertNoMaterial()

	// P-256: the connector asks for it, keyflow's API refuses it.
	ec, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: kms.SpecECCP256, Usage: kms.UsageSignVerify, Exportable: true})
	if err != nil {
		t.Fatal(err)
	}
	l.key = ec
	id, err := l.wc.StartCloudSync(ctx, workflows.CloudSyncParams{Tenant: "alpha", KeyID: ec.ID, Principal: "alice", RequestID: "dist-ec", Destinations: []string{"keyflow-beta"}, Step: workflows.CloudStepDistribute})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.tc.GetWorkflow(ctx, id, "").Get(ctx, nil); err == nil || !strings.Contains(err.Error(), "UnsupportedOperationException") {
		t.Fatalf("distribute a P-256 key to keyflow's AWS API: %v", err)
	}
	p = l.waitPlacement("the recorded refusal", func(p *kms.CloudPlacement) bool {
		return p.LastErrorCode == "UnsupportedOperationException" && p.Pending == workflows.CloudStepDistribute
	})
	refused := 0
	for _, e := range b.EventsOfType("alpha", events.TypeCloudCall) {
		if d := driftData(t, e); d["keyId"] == ec.ID && d["providerErrorCode"] == "UnsupportedOperationException" {
			refused++
		}
	}
	if refused == 0 {
		t.Fatalf("no cloud.call record of the refused P-256 import; placement %+v", p)
	}
}

// local-kms imports 32-byte symmetric keys only: an RSA key pair that
// cloud.Accepts lets through to AWS fails at local-kms, and the
// provider's refusal is on the placement and in the audit trail.
func TestCloudKeyPairToLocalKMSFailsAtTheProvider(t *testing.T) {
	ctx := context.Background()
	f := newCloudFixture(t, kms.DriftReport, "")
	k, err := f.b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: kms.SpecRSA3072, Usage: kms.UsageSignVerify, Exportable: true})
	if err != nil {
		t.Fatal(err)
	}
	f.key = k
	// local-kms refuses CreateKey of an EXTERNAL RSA key.
	if _, err = f.sync(workflows.CloudStepDistribute); err == nil || !strings.Contains(err.Error(), "CreateKey refused: ValidationException") {
		t.Fatalf("distribute an RSA key pair to local-kms: %v", err)
	}
	ps, _ := f.b.KMS.CloudPlacements(ctx, alice, k.ID)
	if len(ps) != 1 || ps[0].LastErrorCode != "ValidationException" || ps[0].Pending != workflows.CloudStepDistribute {
		t.Fatalf("placement after the refusal: %+v", ps)
	}
	refused := 0
	for _, e := range f.b.EventsOfType("alpha", events.TypeCloudCall) {
		if d := driftData(t, e); d["keyId"] == k.ID && d["operation"] == "CreateKey" && d["providerErrorCode"] == "ValidationException" {
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("no cloud.call record of local-kms's refusal")
	}
}
