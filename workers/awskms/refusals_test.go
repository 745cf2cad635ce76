package awskms_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awskmssdk "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
	"github.com/keyflow/keyflow/workers/awskms"
)

// raw sends a request signed by the real SDK signer at time at, and
// returns the status, the __type and the request ID.
func (f *fixture) raw(t *testing.T, id, secret, target string, body string, at time.Time) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.url+"/", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	if target != "" {
		req.Header.Set("X-Amz-Target", target)
	}
	if id != "" {
		sum := sha256Hex(body)
		err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: id, SecretAccessKey: secret}, req, sum, "kms", "us-east-1", at)
		if err != nil {
			t.Fatal(err)
		}
	}
	resp, err := f.hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		Type    string `json:"__type"`
		Message string `json:"message"`
	}
	_ = json.Unmarshal(b, &e)
	if resp.StatusCode != 200 && (e.Type == "" || e.Message == "" || resp.Header.Get("Content-Type") != "application/x-amz-json-1.1") {
		t.Fatalf("error reply %d %q is not AWS's shape", resp.StatusCode, b)
	}
	return resp.StatusCode, e.Type, resp.Header.Get("x-amzn-RequestId")
}

// TestRefusals checks each refusal: its AWS exception name, status 400,
// a request ID, and an audit record.
func TestRefusals(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	id, secret := f.accessKey(t, "alpha", "app", keypolicy.RoleCryptoUser, keypolicy.RoleKeyAdmin)
	now := time.Now()
	const describe = "TrentService.ListKeys"
	cases := []struct {
		name, id, secret, target string
		at                       time.Time
		want                     string
	}{
		{"valid", id, secret, describe, now, ""},
		{"no signature", "", "", describe, now, "MissingAuthenticationTokenException"},
		{"bad signature", id, strings.Repeat("x", 40), describe, now, "InvalidSignatureException"},
		{"unknown access key", "AKIAAAAAAAAAAAAAAAAA", secret, describe, now, "UnrecognizedClientException"},
		{"expired date", id, secret, describe, now.Add(-6 * time.Minute), "InvalidSignatureException"},
		{"future date", id, secret, describe, now.Add(6 * time.Minute), "InvalidSignatureException"},
		{"unknown operation", id, secret, "TrentService.MakeCoffee", now, "UnknownOperationException"},
		{"other service", id, secret, "DynamoDB_20120810.ListTables", now, "UnknownOperationException"},
		{"unsupported operation", id, secret, "TrentService.CreateCustomKeyStore", now, "UnsupportedOperationException"},
	}
	for _, tc := range cases {
		status, typ, reqID := f.raw(t, tc.id, tc.secret, tc.target, "{}", tc.at)
		if reqID == "" {
			t.Errorf("%s: no x-amzn-RequestId", tc.name)
		}
		if tc.want == "" {
			if status != 200 {
				t.Errorf("%s: %d %s", tc.name, status, typ)
			}
			continue
		}
		if status != 400 || typ != tc.want {
			t.Errorf("%s: %d %s, want 400 %s", tc.name, status, typ, tc.want)
		}
	}

	// Each refusal is recorded: under the access key's tenant once the key
	// was looked up (a wrong signature, an operation), under "-" when the
	// request failed before (no signature, an unknown key, a date outside
	// the window).
	rejected := func(tenant string) map[string]int {
		out := map[string]int{}
		for _, e := range f.bed.EventsOfType(tenant, events.TypeRequestRejected) {
			if e.Data["operation"] == awskms.OpRequest {
				out[e.ErrorCode]++
			}
		}
		return out
	}
	alpha, none := rejected("alpha"), rejected("-")
	if none["MissingAuthenticationTokenException"] != 1 || none["UnrecognizedClientException"] != 1 || none["InvalidSignatureException"] != 2 {
		t.Errorf("tenant-less refusals recorded: %v", none)
	}
	if alpha["InvalidSignatureException"] != 1 || alpha["UnknownOperationException"] != 2 || alpha["UnsupportedOperationException"] != 1 {
		t.Errorf("alpha's refusals recorded: %v", alpha)
	}

	// A disabled access key is refused at once, and recorded; a deleted
	// one is unknown.
	admin := kms.Caller{Tenant: "alpha", Principal: "root", Roles: []string{string(keypolicy.RoleTenantAdmin)}}
	if err := f.bed.KMS.DisableAccessKey(ctx, admin, id); err != nil {
		t.Fatal(err)
	}
	if _, typ, _ := f.raw(t, id, secret, describe, "{}", time.Now()); typ != "UnrecognizedClientException" {
		t.Errorf("disabled access key: %s", typ)
	}
	ks, err := f.bed.KMS.ListAccessKeys(ctx, admin)
	if err != nil || len(ks) != 1 || ks[0].DisabledAt == nil || ks[0].Principal != "app" {
		t.Fatalf("ListAccessKeys: %v %+v", err, ks)
	}
	if raw, _ := json.Marshal(ks); bytes.Contains(raw, []byte(secret)) {
		t.Fatal("the listing holds the secret")
	}
	if err := f.bed.KMS.DeleteAccessKey(ctx, admin, id); err != nil {
		t.Fatal(err)
	}
	if _, typ, _ := f.raw(t, id, secret, describe, "{}", time.Now()); typ != "UnrecognizedClientException" {
		t.Errorf("deleted access key: %s", typ)
	}
	// Another tenant cannot see, disable or delete alpha's access keys.
	id2, _ := f.accessKey(t, "alpha", "bob", keypolicy.RoleCryptoUser)
	other := kms.Caller{Tenant: "beta", Principal: "root", Roles: []string{string(keypolicy.RoleTenantAdmin)}}
	if err := f.bed.KMS.DisableAccessKey(ctx, other, id2); kms.CodeOf(err) != kms.CodeNotFound {
		t.Errorf("beta disabling alpha's access key: %v", err)
	}
}

// TestTenantIsolation checks that one tenant's access key reaches only
// its own keys, whatever the reference (ID, its ARN, a forged ARN of the
// caller's own account).
func TestTenantIsolation(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	alphaAdmin := f.client(t, "alpha", "ada", keypolicy.RoleKeyAdmin)
	beta := f.client(t, "beta", "eve", keypolicy.RoleCryptoUser, keypolicy.RoleKeyAdmin)
	k := must[*awskmssdk.CreateKeyOutput](t)(alphaAdmin.CreateKey(ctx, &awskmssdk.CreateKeyInput{}))
	if awskms.AccountID("alpha") == awskms.AccountID("beta") {
		t.Fatal("two tenants share an account ID")
	}
	forged := "arn:aws:kms:us-east-1:" + awskms.AccountID("beta") + ":key/" + *k.KeyMetadata.KeyId
	for _, ref := range []string{*k.KeyMetadata.KeyId, *k.KeyMetadata.Arn, forged} {
		_, err := beta.Encrypt(ctx, &awskmssdk.EncryptInput{KeyId: aws.String(ref), Plaintext: []byte("x")})
		wantCode(t, err, "NotFoundException")
		_, err = beta.DescribeKey(ctx, &awskmssdk.DescribeKeyInput{KeyId: aws.String(ref)})
		wantCode(t, err, "NotFoundException")
	}
	lk := must[*awskmssdk.ListKeysOutput](t)(beta.ListKeys(ctx, &awskmssdk.ListKeysInput{}))
	if len(lk.Keys) != 0 {
		t.Fatalf("beta lists %d keys", len(lk.Keys))
	}
}

// TestEveryAWSOperationIsClassified keeps the operation table complete:
// every operation of AWS KMS's model (API 2014-11-01) is served or
// answers UnsupportedOperationException, never UnknownOperationException,
// and docs/aws-api.md names each.
func TestEveryAWSOperationIsClassified(t *testing.T) {
	model := strings.Fields(`CancelKeyDeletion ConnectCustomKeyStore CreateAlias CreateCustomKeyStore CreateGrant CreateKey
		Decrypt DeleteAlias DeleteCustomKeyStore DeleteImportedKeyMaterial DeriveSharedSecret DescribeCustomKeyStores
		DescribeKey DisableKey DisableKeyRotation DisconnectCustomKeyStore EnableKey EnableKeyRotation Encrypt
		GenerateDataKey GenerateDataKeyPair GenerateDataKeyPairWithoutPlaintext GenerateDataKeyWithoutPlaintext
		GenerateMac GenerateRandom GetKeyPolicy GetKeyRotationStatus GetParametersForImport GetPublicKey
		ImportKeyMaterial ListAliases ListGrants ListKeyPolicies ListKeyRotations ListKeys ListResourceTags
		ListRetirableGrants PutKeyPolicy ReEncrypt ReplicateKey RetireGrant RevokeGrant RotateKeyOnDemand
		ScheduleKeyDeletion Sign TagResource UntagResource UpdateAlias UpdateCustomKeyStore UpdateKeyDescription
		UpdatePrimaryRegion Verify VerifyMac`)
	served, refused := awskms.Operations()
	known := map[string]bool{}
	for _, op := range append(served, refused...) {
		if known[op] {
			t.Errorf("%s is both served and refused", op)
		}
		known[op] = true
	}
	doc, err := os.ReadFile("../../docs/aws-api.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range model {
		if !known[op] {
			t.Errorf("AWS operation %s is neither served nor refused as unsupported", op)
		}
		if !strings.Contains(string(doc), "| "+op+" |") {
			t.Errorf("docs/aws-api.md has no row for %s", op)
		}
	}
	if len(known) != len(model) {
		t.Errorf("%d operations classified, the model has %d", len(known), len(model))
	}
}
