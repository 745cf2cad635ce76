package awskms_test

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskmssdk "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/kms/keypolicy"
	"github.com/keyflow/keyflow/workers/awskms"
)

// TestSDKTagsAndDescription sets tags at creation and after, lists them
// with pagination, removes them, updates the description, and checks the
// refusals and the records (tag keys, never values).
func TestSDKTagsAndDescription(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	admin := f.client(t, "alpha", "ada", keypolicy.RoleKeyAdmin)
	app := f.client(t, "alpha", "app", keypolicy.RoleCryptoUser)
	beta := f.client(t, "beta", "bob", keypolicy.RoleKeyAdmin)

	k := must[*awskmssdk.CreateKeyOutput](t)(admin.CreateKey(ctx, &awskmssdk.CreateKeyInput{
		Description: aws.String("orders"),
		Tags:        []types.Tag{{TagKey: aws.String("team"), TagValue: aws.String("payments")}},
	}))
	keyID := k.KeyMetadata.KeyId
	must[*awskmssdk.TagResourceOutput](t)(admin.TagResource(ctx, &awskmssdk.TagResourceInput{KeyId: k.KeyMetadata.Arn, Tags: []types.Tag{
		{TagKey: aws.String("team"), TagValue: aws.String("ledger")}, // overwrites
		{TagKey: aws.String("env"), TagValue: aws.String("prod")},
		{TagKey: aws.String("cost-centre"), TagValue: aws.String("")},
	}}))
	lt := must[*awskmssdk.ListResourceTagsOutput](t)(admin.ListResourceTags(ctx, &awskmssdk.ListResourceTagsInput{KeyId: keyID, Limit: aws.Int32(2)}))
	if len(lt.Tags) != 2 || !lt.Truncated || lt.NextMarker == nil || *lt.Tags[0].TagKey != "team" || *lt.Tags[0].TagValue != "ledger" {
		t.Fatalf("first page: %+v truncated %v", lt.Tags, lt.Truncated)
	}
	lt2 := must[*awskmssdk.ListResourceTagsOutput](t)(admin.ListResourceTags(ctx, &awskmssdk.ListResourceTagsInput{KeyId: keyID, Marker: lt.NextMarker}))
	if len(lt2.Tags) != 1 || lt2.Truncated || *lt2.Tags[0].TagKey != "cost-centre" {
		t.Fatalf("second page: %+v", lt2.Tags)
	}
	must[*awskmssdk.UntagResourceOutput](t)(admin.UntagResource(ctx, &awskmssdk.UntagResourceInput{KeyId: keyID, TagKeys: []string{"env", "absent"}}))
	lt = must[*awskmssdk.ListResourceTagsOutput](t)(admin.ListResourceTags(ctx, &awskmssdk.ListResourceTagsInput{KeyId: keyID}))
	var names []string
	for _, tg := range lt.Tags {
		names = append(names, *tg.TagKey)
	}
	if strings.Join(names, ",") != "team,cost-centre" {
		t.Fatalf("after UntagResource: %v", names)
	}

	// Refusals: AWS's reserved prefix, a control character, too many tags,
	// a crypto user, another tenant's key.
	_, err := admin.TagResource(ctx, &awskmssdk.TagResourceInput{KeyId: keyID, Tags: []types.Tag{{TagKey: aws.String("aws:owner"), TagValue: aws.String("x")}}})
	wantCode(t, err, "ValidationException")
	_, err = admin.TagResource(ctx, &awskmssdk.TagResourceInput{KeyId: keyID, Tags: []types.Tag{{TagKey: aws.String("k"), TagValue: aws.String("a\x1b[31m")}}})
	wantCode(t, err, "ValidationException")
	many := make([]types.Tag, 49)
	for i := range many {
		many[i] = types.Tag{TagKey: aws.String("t" + strings.Repeat("x", i)), TagValue: aws.String("v")}
	}
	_, err = admin.TagResource(ctx, &awskmssdk.TagResourceInput{KeyId: keyID, Tags: many})
	wantCode(t, err, "LimitExceededException")
	_, err = app.TagResource(ctx, &awskmssdk.TagResourceInput{KeyId: keyID, Tags: []types.Tag{{TagKey: aws.String("k"), TagValue: aws.String("v")}}})
	wantCode(t, err, "AccessDeniedException")
	_, err = beta.ListResourceTags(ctx, &awskmssdk.ListResourceTagsInput{KeyId: keyID})
	wantCode(t, err, "NotFoundException")

	must[*awskmssdk.UpdateKeyDescriptionOutput](t)(admin.UpdateKeyDescription(ctx, &awskmssdk.UpdateKeyDescriptionInput{KeyId: keyID, Description: aws.String("orders, 2027")}))
	d := must[*awskmssdk.DescribeKeyOutput](t)(admin.DescribeKey(ctx, &awskmssdk.DescribeKeyInput{KeyId: keyID}))
	if *d.KeyMetadata.Description != "orders, 2027" {
		t.Fatalf("description %q", *d.KeyMetadata.Description)
	}
	_, err = admin.UpdateKeyDescription(ctx, &awskmssdk.UpdateKeyDescriptionInput{KeyId: keyID, Description: aws.String("bad\nline")})
	wantCode(t, err, "ValidationException")

	// Records: two successful tag changes and one untag, the refusals,
	// never a value.
	var ok, refused int
	for _, e := range f.bed.EventsOfType("alpha", events.TypeKeyTagsChanged) {
		if e.Outcome == events.OutcomeSuccess {
			ok++
		} else {
			refused++
		}
		for _, v := range []string{"payments", "ledger", "prod"} {
			if strings.Contains(string(e.Raw), v) {
				t.Errorf("a tags record holds the value %q", v)
			}
		}
	}
	if ok != 2 || refused != 3 {
		t.Errorf("%d successful and %d refused tag records, want 2 and 3", ok, refused)
	}
	if n := len(f.bed.EventsOfType("alpha", events.TypeKeyDescriptionChanged)); n != 2 {
		t.Errorf("%d description records, want 2", n)
	}
}

// TestSDKCreateGrant creates grants through the API, uses one, lists the
// ones a principal can retire and retires it as that principal.
func TestSDKCreateGrant(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	admin := f.client(t, "alpha", "ada", keypolicy.RoleKeyAdmin)
	app := f.client(t, "alpha", "app", keypolicy.RoleCryptoUser)
	ops := f.client(t, "alpha", "ops", keypolicy.RoleCryptoUser)
	k := must[*awskmssdk.CreateKeyOutput](t)(admin.CreateKey(ctx, &awskmssdk.CreateKeyInput{}))
	keyID := k.KeyMetadata.KeyId
	// A key policy that lets nobody but grantees use the key.
	must[*awskmssdk.PutKeyPolicyOutput](t)(admin.PutKeyPolicy(ctx, &awskmssdk.PutKeyPolicyInput{KeyId: keyID, PolicyName: aws.String("default"),
		Policy: aws.String(`{"version":"2026-11-01","statements":[{"sid":"admins","effect":"Allow","principals":["ada"],"operations":["DescribeKey","CreateGrant","ListGrants","RevokeGrant"]}]}`)}))
	_, err := app.Encrypt(ctx, &awskmssdk.EncryptInput{KeyId: keyID, Plaintext: []byte("x")})
	wantCode(t, err, "AccessDeniedException")

	acct := awskms.AccountID("alpha")
	g := must[*awskmssdk.CreateGrantOutput](t)(admin.CreateGrant(ctx, &awskmssdk.CreateGrantInput{
		KeyId: keyID, GranteePrincipal: aws.String("arn:aws:iam::" + acct + ":role/app"), RetiringPrincipal: aws.String("ops"),
		Operations:  []types.GrantOperation{types.GrantOperationEncrypt, types.GrantOperationDecrypt},
		Constraints: &types.GrantConstraints{EncryptionContextSubset: map[string]string{"order": "42"}},
	}))
	if g.GrantId == nil || g.GrantToken == nil {
		t.Fatalf("CreateGrant: %+v", g)
	}
	_, err = app.Encrypt(ctx, &awskmssdk.EncryptInput{KeyId: keyID, Plaintext: []byte("x")})
	wantCode(t, err, "AccessDeniedException") // the constraint wants order=42
	e := must[*awskmssdk.EncryptOutput](t)(app.Encrypt(ctx, &awskmssdk.EncryptInput{KeyId: keyID, Plaintext: []byte("x"), EncryptionContext: map[string]string{"order": "42"}, GrantTokens: []string{*g.GrantToken}}))
	if len(e.CiphertextBlob) == 0 {
		t.Fatal("no ciphertext through the grant")
	}
	// Another account's ARN, and an unknown operation, are refused.
	_, err = admin.CreateGrant(ctx, &awskmssdk.CreateGrantInput{KeyId: keyID, GranteePrincipal: aws.String("arn:aws:iam::111122223333:role/app"), Operations: []types.GrantOperation{types.GrantOperationDecrypt}})
	wantCode(t, err, "ValidationException")
	_, err = admin.CreateGrant(ctx, &awskmssdk.CreateGrantInput{KeyId: keyID, GranteePrincipal: aws.String("s3.amazonaws.com"), Operations: []types.GrantOperation{types.GrantOperationDecrypt}})
	wantCode(t, err, "ValidationException")
	_, err = admin.CreateGrant(ctx, &awskmssdk.CreateGrantInput{KeyId: keyID, GranteePrincipal: aws.String("app"), Operations: []types.GrantOperation{"Dance"}})
	wantCode(t, err, "ValidationException")

	lr := must[*awskmssdk.ListRetirableGrantsOutput](t)(ops.ListRetirableGrants(ctx, &awskmssdk.ListRetirableGrantsInput{RetiringPrincipal: aws.String("ops")}))
	if len(lr.Grants) != 1 || *lr.Grants[0].GrantId != *g.GrantId || *lr.Grants[0].GranteePrincipal != "app" {
		t.Fatalf("ListRetirableGrants: %+v", lr.Grants)
	}
	// app may not list what ops can retire.
	_, err = app.ListRetirableGrants(ctx, &awskmssdk.ListRetirableGrantsInput{RetiringPrincipal: aws.String("ops")})
	wantCode(t, err, "AccessDeniedException")
	must[*awskmssdk.RetireGrantOutput](t)(ops.RetireGrant(ctx, &awskmssdk.RetireGrantInput{KeyId: keyID, GrantId: g.GrantId}))
	_, err = app.Encrypt(ctx, &awskmssdk.EncryptInput{KeyId: keyID, Plaintext: []byte("x"), EncryptionContext: map[string]string{"order": "42"}})
	wantCode(t, err, "AccessDeniedException")
	lr = must[*awskmssdk.ListRetirableGrantsOutput](t)(ops.ListRetirableGrants(ctx, &awskmssdk.ListRetirableGrantsInput{RetiringPrincipal: aws.String("ops")}))
	if len(lr.Grants) != 0 {
		t.Fatalf("%d retirable grants after RetireGrant", len(lr.Grants))
	}
	if n := len(f.bed.EventsOfType("alpha", events.TypeGrantListedRetirable)); n != 3 {
		t.Errorf("%d retirable-grant listing records, want 3", n)
	}
}
