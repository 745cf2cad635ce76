package awskms_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskmssdk "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
	"github.com/keyflow/keyflow/workers/awskms"
)

// wantCode checks that err is the AWS error code.
func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v, want %s", err, code)
	}
	if ae.ErrorCode() != code {
		t.Fatalf("error code %s (%s), want %s", ae.ErrorCode(), ae.ErrorMessage(), code)
	}
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// TestSDKKeysAndCrypto drives keys and the data plane with the real AWS
// SDK for Go v2: a key admin creates and manages keys, an application
// (crypto user) uses them, by key ID, key ARN and alias.
func TestSDKKeysAndCrypto(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	admin := f.client(t, "alpha", "ada", keypolicy.RoleKeyAdmin)
	app := f.client(t, "alpha", "app", keypolicy.RoleCryptoUser)
	acct := awskms.AccountID("alpha")

	ck := must[*awskmssdk.CreateKeyOutput](t)(admin.CreateKey(ctx, &awskmssdk.CreateKeyInput{Description: aws.String("orders")}))
	md := ck.KeyMetadata
	if md.KeyState != types.KeyStateEnabled || !md.Enabled || md.KeySpec != types.KeySpecSymmetricDefault || md.KeyUsage != types.KeyUsageTypeEncryptDecrypt ||
		*md.AWSAccountId != acct || *md.Arn != "arn:aws:kms:us-east-1:"+acct+":key/"+*md.KeyId || md.CreationDate == nil || md.CreationDate.IsZero() ||
		*md.Description != "orders" || md.Origin != types.OriginTypeAwsKms {
		t.Fatalf("CreateKey metadata: %+v", md)
	}
	keyID, arn := *md.KeyId, *md.Arn
	for _, ref := range []string{keyID, arn} {
		d := must[*awskmssdk.DescribeKeyOutput](t)(admin.DescribeKey(ctx, &awskmssdk.DescribeKeyInput{KeyId: aws.String(ref)}))
		if *d.KeyMetadata.KeyId != keyID {
			t.Fatalf("DescribeKey(%s) = %s", ref, *d.KeyMetadata.KeyId)
		}
	}

	// Encrypt by ARN with a context; decrypt needs the same context.
	ec := map[string]string{"order": "42"}
	enc := must[*awskmssdk.EncryptOutput](t)(app.Encrypt(ctx, &awskmssdk.EncryptInput{KeyId: aws.String(arn), Plaintext: []byte("hello aws"), EncryptionContext: ec}))
	if *enc.KeyId != arn || enc.EncryptionAlgorithm != types.EncryptionAlgorithmSpecSymmetricDefault {
		t.Fatalf("Encrypt: %+v", enc)
	}
	dec := must[*awskmssdk.DecryptOutput](t)(app.Decrypt(ctx, &awskmssdk.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec}))
	if string(dec.Plaintext) != "hello aws" || *dec.KeyId != arn {
		t.Fatalf("Decrypt: %q %s", dec.Plaintext, *dec.KeyId)
	}
	_, err := app.Decrypt(ctx, &awskmssdk.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: map[string]string{"order": "43"}})
	wantCode(t, err, "InvalidCiphertextException")

	// Data keys.
	dk := must[*awskmssdk.GenerateDataKeyOutput](t)(app.GenerateDataKey(ctx, &awskmssdk.GenerateDataKeyInput{KeyId: aws.String(keyID), KeySpec: types.DataKeySpecAes256, EncryptionContext: ec}))
	if len(dk.Plaintext) != 32 {
		t.Fatalf("data key of %d bytes", len(dk.Plaintext))
	}
	back := must[*awskmssdk.DecryptOutput](t)(app.Decrypt(ctx, &awskmssdk.DecryptInput{CiphertextBlob: dk.CiphertextBlob, EncryptionContext: ec}))
	if !bytes.Equal(back.Plaintext, dk.Plaintext) {
		t.Fatal("the data key does not decrypt to itself")
	}
	dkw := must[*awskmssdk.GenerateDataKeyWithoutPlaintextOutput](t)(app.GenerateDataKeyWithoutPlaintext(ctx, &awskmssdk.GenerateDataKeyWithoutPlaintextInput{KeyId: aws.String(keyID), NumberOfBytes: aws.Int32(16)}))
	if len(dkw.CiphertextBlob) == 0 {
		t.Fatal("no ciphertext")
	}
	rnd := must[*awskmssdk.GenerateRandomOutput](t)(app.GenerateRandom(ctx, &awskmssdk.GenerateRandomInput{NumberOfBytes: aws.Int32(32)}))
	if len(rnd.Plaintext) != 32 {
		t.Fatalf("GenerateRandom: %d bytes", len(rnd.Plaintext))
	}

	// ReEncrypt to a second key.
	k2 := must[*awskmssdk.CreateKeyOutput](t)(admin.CreateKey(ctx, &awskmssdk.CreateKeyInput{}))
	re := must[*awskmssdk.ReEncryptOutput](t)(app.ReEncrypt(ctx, &awskmssdk.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ec,
		DestinationKeyId: k2.KeyMetadata.Arn, DestinationEncryptionContext: ec}))
	if *re.SourceKeyId != arn || *re.KeyId != *k2.KeyMetadata.Arn {
		t.Fatalf("ReEncrypt: %s -> %s", *re.SourceKeyId, *re.KeyId)
	}
	dec2 := must[*awskmssdk.DecryptOutput](t)(app.Decrypt(ctx, &awskmssdk.DecryptInput{CiphertextBlob: re.CiphertextBlob, EncryptionContext: ec}))
	if string(dec2.Plaintext) != "hello aws" {
		t.Fatal("re-encrypted ciphertext does not decrypt")
	}

	// Alias names and alias ARNs name keys too.
	ak, err := f.bed.KMS.CreateKey(ctx, kms.Caller{Tenant: "alpha", Principal: "ada"}, kms.CreateKeyParams{Alias: "payments"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"alias/payments", "arn:aws:kms:us-east-1:" + acct + ":alias/payments"} {
		e := must[*awskmssdk.EncryptOutput](t)(app.Encrypt(ctx, &awskmssdk.EncryptInput{KeyId: aws.String(ref), Plaintext: []byte("x")}))
		if !strings.HasSuffix(*e.KeyId, ak.ID) {
			t.Fatalf("Encrypt(%s) used %s", ref, *e.KeyId)
		}
	}
	al := must[*awskmssdk.ListAliasesOutput](t)(admin.ListAliases(ctx, &awskmssdk.ListAliasesInput{}))
	if len(al.Aliases) != 1 || *al.Aliases[0].AliasName != "alias/payments" || *al.Aliases[0].TargetKeyId != ak.ID {
		t.Fatalf("ListAliases: %+v", al.Aliases)
	}

	// ListKeys pages with Limit and Marker until Truncated is false.
	var seen []string
	var marker *string
	for pages := 0; ; pages++ {
		lk := must[*awskmssdk.ListKeysOutput](t)(admin.ListKeys(ctx, &awskmssdk.ListKeysInput{Limit: aws.Int32(1), Marker: marker}))
		for _, k := range lk.Keys {
			seen = append(seen, *k.KeyId)
		}
		if !lk.Truncated {
			break
		}
		marker = lk.NextMarker
		if pages > 10 {
			t.Fatal("ListKeys does not end")
		}
	}
	if len(seen) != 3 {
		t.Fatalf("ListKeys paged %d keys, want 3: %v", len(seen), seen)
	}
	_, err = admin.ListKeys(ctx, &awskmssdk.ListKeysInput{Marker: aws.String("bogus")})
	wantCode(t, err, "InvalidMarkerException")

	// Disable and enable.
	must[*awskmssdk.DisableKeyOutput](t)(admin.DisableKey(ctx, &awskmssdk.DisableKeyInput{KeyId: aws.String(keyID)}))
	d := must[*awskmssdk.DescribeKeyOutput](t)(admin.DescribeKey(ctx, &awskmssdk.DescribeKeyInput{KeyId: aws.String(keyID)}))
	if d.KeyMetadata.KeyState != types.KeyStateDisabled || d.KeyMetadata.Enabled {
		t.Fatalf("after DisableKey: %s", d.KeyMetadata.KeyState)
	}
	_, err = app.Encrypt(ctx, &awskmssdk.EncryptInput{KeyId: aws.String(keyID), Plaintext: []byte("x")})
	if err == nil {
		t.Fatal("a disabled key encrypted")
	}
	must[*awskmssdk.EnableKeyOutput](t)(admin.EnableKey(ctx, &awskmssdk.EnableKeyInput{KeyId: aws.String(keyID)}))
	must[*awskmssdk.EncryptOutput](t)(app.Encrypt(ctx, &awskmssdk.EncryptInput{KeyId: aws.String(keyID), Plaintext: []byte("x")}))

	// Rotation.
	must[*awskmssdk.EnableKeyRotationOutput](t)(admin.EnableKeyRotation(ctx, &awskmssdk.EnableKeyRotationInput{KeyId: aws.String(keyID), RotationPeriodInDays: aws.Int32(180)}))
	rs := must[*awskmssdk.GetKeyRotationStatusOutput](t)(admin.GetKeyRotationStatus(ctx, &awskmssdk.GetKeyRotationStatusInput{KeyId: aws.String(keyID)}))
	if !rs.KeyRotationEnabled || *rs.RotationPeriodInDays != 180 || rs.NextRotationDate == nil {
		t.Fatalf("GetKeyRotationStatus: %+v", rs)
	}
	must[*awskmssdk.RotateKeyOnDemandOutput](t)(admin.RotateKeyOnDemand(ctx, &awskmssdk.RotateKeyOnDemandInput{KeyId: aws.String(keyID)}))
	lr := must[*awskmssdk.ListKeyRotationsOutput](t)(admin.ListKeyRotations(ctx, &awskmssdk.ListKeyRotationsInput{KeyId: aws.String(keyID)}))
	if len(lr.Rotations) != 1 {
		t.Fatalf("ListKeyRotations: %d", len(lr.Rotations))
	}
	// The old ciphertext still decrypts after the rotation.
	must[*awskmssdk.DecryptOutput](t)(app.Decrypt(ctx, &awskmssdk.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec}))
	must[*awskmssdk.DisableKeyRotationOutput](t)(admin.DisableKeyRotation(ctx, &awskmssdk.DisableKeyRotationInput{KeyId: aws.String(keyID)}))

	// Deletion: pending deletion refuses use; cancel brings it back.
	sd := must[*awskmssdk.ScheduleKeyDeletionOutput](t)(admin.ScheduleKeyDeletion(ctx, &awskmssdk.ScheduleKeyDeletionInput{KeyId: aws.String(keyID), PendingWindowInDays: aws.Int32(7)}))
	if sd.KeyState != types.KeyStatePendingDeletion || *sd.PendingWindowInDays != 7 || sd.DeletionDate == nil {
		t.Fatalf("ScheduleKeyDeletion: %+v", sd)
	}
	_, err = app.Encrypt(ctx, &awskmssdk.EncryptInput{KeyId: aws.String(keyID), Plaintext: []byte("x")})
	wantCode(t, err, "KMSInvalidStateException")
	d = must[*awskmssdk.DescribeKeyOutput](t)(admin.DescribeKey(ctx, &awskmssdk.DescribeKeyInput{KeyId: aws.String(keyID)}))
	if d.KeyMetadata.KeyState != types.KeyStatePendingDeletion || d.KeyMetadata.DeletionDate == nil {
		t.Fatalf("DescribeKey after ScheduleKeyDeletion: %s", d.KeyMetadata.KeyState)
	}
	must[*awskmssdk.CancelKeyDeletionOutput](t)(admin.CancelKeyDeletion(ctx, &awskmssdk.CancelKeyDeletionInput{KeyId: aws.String(keyID)}))
	d = must[*awskmssdk.DescribeKeyOutput](t)(admin.DescribeKey(ctx, &awskmssdk.DescribeKeyInput{KeyId: aws.String(keyID)}))
	if d.KeyMetadata.KeyState == types.KeyStatePendingDeletion {
		t.Fatal("still pending deletion after CancelKeyDeletion")
	}

	// Roles still rule: the key admin may not decrypt, the app may not
	// create keys.
	_, err = admin.Decrypt(ctx, &awskmssdk.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec})
	wantCode(t, err, "AccessDeniedException")
	_, err = app.CreateKey(ctx, &awskmssdk.CreateKeyInput{})
	wantCode(t, err, "AccessDeniedException")

	// Exactly one audit record per operation, as on the NATS path: six
	// Encrypt calls, of which four succeeded (the disabled and the
	// pending-deletion key refused theirs), make six records.
	recs := f.bed.EventsOfType("alpha", events.TypeEncrypt)
	ok := 0
	for _, e := range recs {
		if e.Outcome == events.OutcomeSuccess {
			ok++
			if e.Principal != "app" {
				t.Errorf("encrypt record of principal %q, want app", e.Principal)
			}
		}
	}
	if len(recs) != 6 || ok != 4 {
		t.Errorf("%d encrypt records (%d successful), want 6 (4)", len(recs), ok)
	}
}

// TestSDKSignMacPublicKey signs and verifies with ECC and ML-DSA
// (ML_DSA_SHAKE_256) keys and MACs with an HMAC key.
func TestSDKSignMacPublicKey(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	admin := f.client(t, "alpha", "ada", keypolicy.RoleKeyAdmin)
	app := f.client(t, "alpha", "app", keypolicy.RoleCryptoUser)
	msg := []byte("signed by keyflow through the AWS API")

	ecc := must[*awskmssdk.CreateKeyOutput](t)(admin.CreateKey(ctx, &awskmssdk.CreateKeyInput{KeySpec: types.KeySpecEccNistP256, KeyUsage: types.KeyUsageTypeSignVerify}))
	if got := ecc.KeyMetadata.SigningAlgorithms; len(got) != 1 || got[0] != types.SigningAlgorithmSpecEcdsaSha256 {
		t.Fatalf("SigningAlgorithms %v", got)
	}
	sig := must[*awskmssdk.SignOutput](t)(app.Sign(ctx, &awskmssdk.SignInput{KeyId: ecc.KeyMetadata.KeyId, Message: msg, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256}))
	pub := must[*awskmssdk.GetPublicKeyOutput](t)(app.GetPublicKey(ctx, &awskmssdk.GetPublicKeyInput{KeyId: ecc.KeyMetadata.KeyId}))
	pk, err := x509.ParsePKIXPublicKey(pub.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(msg)
	if !ecdsa.VerifyASN1(pk.(*ecdsa.PublicKey), digest[:], sig.Signature) {
		t.Fatal("the ECDSA signature does not verify with the public key")
	}
	v := must[*awskmssdk.VerifyOutput](t)(app.Verify(ctx, &awskmssdk.VerifyInput{KeyId: ecc.KeyMetadata.Arn, Message: msg, Signature: sig.Signature, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256}))
	if !v.SignatureValid {
		t.Fatal("Verify: not valid")
	}
	_, err = app.Verify(ctx, &awskmssdk.VerifyInput{KeyId: ecc.KeyMetadata.Arn, Message: []byte("other"), Signature: sig.Signature, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
	wantCode(t, err, "KMSInvalidSignatureException")

	mldsa := must[*awskmssdk.CreateKeyOutput](t)(admin.CreateKey(ctx, &awskmssdk.CreateKeyInput{KeySpec: types.KeySpecMlDsa65, KeyUsage: types.KeyUsageTypeSignVerify}))
	ms := must[*awskmssdk.SignOutput](t)(app.Sign(ctx, &awskmssdk.SignInput{KeyId: mldsa.KeyMetadata.KeyId, Message: msg, SigningAlgorithm: types.SigningAlgorithmSpecMlDsaShake256}))
	if ms.SigningAlgorithm != types.SigningAlgorithmSpecMlDsaShake256 || len(ms.Signature) != 3309 {
		t.Fatalf("ML-DSA-65 signature: %s, %d bytes", ms.SigningAlgorithm, len(ms.Signature))
	}
	mv := must[*awskmssdk.VerifyOutput](t)(app.Verify(ctx, &awskmssdk.VerifyInput{KeyId: mldsa.KeyMetadata.KeyId, Message: msg, Signature: ms.Signature, SigningAlgorithm: types.SigningAlgorithmSpecMlDsaShake256}))
	if !mv.SignatureValid {
		t.Fatal("ML-DSA Verify: not valid")
	}

	hm := must[*awskmssdk.CreateKeyOutput](t)(admin.CreateKey(ctx, &awskmssdk.CreateKeyInput{KeySpec: types.KeySpecHmac256, KeyUsage: types.KeyUsageTypeGenerateVerifyMac}))
	mac := must[*awskmssdk.GenerateMacOutput](t)(app.GenerateMac(ctx, &awskmssdk.GenerateMacInput{KeyId: hm.KeyMetadata.KeyId, Message: msg, MacAlgorithm: types.MacAlgorithmSpecHmacSha256}))
	vm := must[*awskmssdk.VerifyMacOutput](t)(app.VerifyMac(ctx, &awskmssdk.VerifyMacInput{KeyId: hm.KeyMetadata.KeyId, Message: msg, Mac: mac.Mac, MacAlgorithm: types.MacAlgorithmSpecHmacSha256}))
	if !vm.MacValid {
		t.Fatal("VerifyMac: not valid")
	}
	_, err = app.VerifyMac(ctx, &awskmssdk.VerifyMacInput{KeyId: hm.KeyMetadata.KeyId, Message: []byte("other"), Mac: mac.Mac, MacAlgorithm: types.MacAlgorithmSpecHmacSha256})
	wantCode(t, err, "KMSInvalidMacException")
}

// TestSDKImport brings key material in (BYOK) as AWS documents it:
// GetParametersForImport, RSA-OAEP-SHA-256 wrapping, ImportKeyMaterial.
func TestSDKImport(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	admin := f.client(t, "alpha", "ada", keypolicy.RoleKeyAdmin)
	app := f.client(t, "alpha", "app", keypolicy.RoleCryptoUser)

	ck := must[*awskmssdk.CreateKeyOutput](t)(admin.CreateKey(ctx, &awskmssdk.CreateKeyInput{Origin: types.OriginTypeExternal}))
	if ck.KeyMetadata.KeyState != types.KeyStatePendingImport || ck.KeyMetadata.Origin != types.OriginTypeExternal {
		t.Fatalf("external key: %s %s", ck.KeyMetadata.KeyState, ck.KeyMetadata.Origin)
	}
	p := must[*awskmssdk.GetParametersForImportOutput](t)(admin.GetParametersForImport(ctx, &awskmssdk.GetParametersForImportInput{KeyId: ck.KeyMetadata.KeyId,
		WrappingAlgorithm: types.AlgorithmSpecRsaesOaepSha256, WrappingKeySpec: types.WrappingKeySpecRsa3072}))
	if p.ParametersValidTo == nil || len(p.ImportToken) == 0 {
		t.Fatalf("GetParametersForImport: %+v", p)
	}
	pk, err := x509.ParsePKIXPublicKey(p.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	material := make([]byte, 32)
	_, _ = rand.Read(material)
	wrapped, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pk.(*rsa.PublicKey), material, nil)
	if err != nil {
		t.Fatal(err)
	}
	must[*awskmssdk.ImportKeyMaterialOutput](t)(admin.ImportKeyMaterial(ctx, &awskmssdk.ImportKeyMaterialInput{KeyId: ck.KeyMetadata.KeyId, ImportToken: p.ImportToken,
		EncryptedKeyMaterial: wrapped, ExpirationModel: types.ExpirationModelTypeKeyMaterialDoesNotExpire}))
	d := must[*awskmssdk.DescribeKeyOutput](t)(admin.DescribeKey(ctx, &awskmssdk.DescribeKeyInput{KeyId: ck.KeyMetadata.KeyId}))
	if d.KeyMetadata.KeyState != types.KeyStateEnabled {
		t.Fatalf("after import: %s", d.KeyMetadata.KeyState)
	}
	enc := must[*awskmssdk.EncryptOutput](t)(app.Encrypt(ctx, &awskmssdk.EncryptInput{KeyId: ck.KeyMetadata.KeyId, Plaintext: []byte("byok")}))
	dec := must[*awskmssdk.DecryptOutput](t)(app.Decrypt(ctx, &awskmssdk.DecryptInput{CiphertextBlob: enc.CiphertextBlob}))
	if string(dec.Plaintext) != "byok" {
		t.Fatal("imported key does not round trip")
	}
	must[*awskmssdk.DeleteImportedKeyMaterialOutput](t)(admin.DeleteImportedKeyMaterial(ctx, &awskmssdk.DeleteImportedKeyMaterialInput{KeyId: ck.KeyMetadata.KeyId}))
	d = must[*awskmssdk.DescribeKeyOutput](t)(admin.DescribeKey(ctx, &awskmssdk.DescribeKeyInput{KeyId: ck.KeyMetadata.KeyId}))
	if d.KeyMetadata.KeyState != types.KeyStatePendingImport {
		t.Fatalf("after DeleteImportedKeyMaterial: %s", d.KeyMetadata.KeyState)
	}
}

// TestSDKPairsPoliciesGrants covers data key pairs, key policies and
// grants.
func TestSDKPairsPoliciesGrants(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	admin := f.client(t, "alpha", "ada", keypolicy.RoleKeyAdmin)
	app := f.client(t, "alpha", "app", keypolicy.RoleCryptoUser)
	k := must[*awskmssdk.CreateKeyOutput](t)(admin.CreateKey(ctx, &awskmssdk.CreateKeyInput{}))
	keyID := k.KeyMetadata.KeyId

	pair := must[*awskmssdk.GenerateDataKeyPairOutput](t)(app.GenerateDataKeyPair(ctx, &awskmssdk.GenerateDataKeyPairInput{KeyId: keyID, KeyPairSpec: types.DataKeyPairSpecEccNistP256}))
	if _, err := x509.ParsePKIXPublicKey(pair.PublicKey); err != nil || len(pair.PrivateKeyPlaintext) == 0 || pair.KeyPairSpec != types.DataKeyPairSpecEccNistP256 {
		t.Fatalf("GenerateDataKeyPair: %v %+v", err, pair)
	}
	priv := must[*awskmssdk.DecryptOutput](t)(app.Decrypt(ctx, &awskmssdk.DecryptInput{CiphertextBlob: pair.PrivateKeyCiphertextBlob}))
	if !bytes.Equal(priv.Plaintext, pair.PrivateKeyPlaintext) {
		t.Fatal("the private key does not decrypt to itself")
	}
	pw := must[*awskmssdk.GenerateDataKeyPairWithoutPlaintextOutput](t)(app.GenerateDataKeyPairWithoutPlaintext(ctx, &awskmssdk.GenerateDataKeyPairWithoutPlaintextInput{KeyId: keyID, KeyPairSpec: types.DataKeyPairSpecRsa3072}))
	if len(pw.PrivateKeyCiphertextBlob) == 0 || len(pw.PublicKey) == 0 {
		t.Fatal("GenerateDataKeyPairWithoutPlaintext: empty")
	}

	pol := must[*awskmssdk.GetKeyPolicyOutput](t)(admin.GetKeyPolicy(ctx, &awskmssdk.GetKeyPolicyInput{KeyId: keyID}))
	if !strings.Contains(*pol.Policy, "keyflow-default") {
		t.Fatalf("default policy: %s", *pol.Policy)
	}
	lp := must[*awskmssdk.ListKeyPoliciesOutput](t)(admin.ListKeyPolicies(ctx, &awskmssdk.ListKeyPoliciesInput{KeyId: keyID}))
	if len(lp.PolicyNames) != 1 || lp.PolicyNames[0] != "default" {
		t.Fatalf("ListKeyPolicies: %v", lp.PolicyNames)
	}
	_, err := admin.PutKeyPolicy(ctx, &awskmssdk.PutKeyPolicyInput{KeyId: keyID, Policy: aws.String(`{"not":"a keyflow policy"}`)})
	wantCode(t, err, "MalformedPolicyDocumentException")

	// A grant made with keyflow's CLI shows, and is revoked, here.
	g, err := f.bed.KMS.CreateGrant(ctx, kms.Caller{Tenant: "alpha", Principal: "ada", Roles: []string{string(keypolicy.RoleKeyAdmin)}},
		kms.CreateGrantParams{KeyRef: *keyID, Grantee: "app", Operations: []keypolicy.Action{"Decrypt"}})
	if err != nil {
		t.Fatal(err)
	}
	lg := must[*awskmssdk.ListGrantsOutput](t)(admin.ListGrants(ctx, &awskmssdk.ListGrantsInput{KeyId: keyID}))
	if len(lg.Grants) != 1 || *lg.Grants[0].GrantId != g.ID || *lg.Grants[0].GranteePrincipal != "app" {
		t.Fatalf("ListGrants: %+v", lg.Grants)
	}
	must[*awskmssdk.RevokeGrantOutput](t)(admin.RevokeGrant(ctx, &awskmssdk.RevokeGrantInput{KeyId: keyID, GrantId: aws.String(g.ID)}))
	lg = must[*awskmssdk.ListGrantsOutput](t)(admin.ListGrants(ctx, &awskmssdk.ListGrantsInput{KeyId: keyID}))
	if len(lg.Grants) != 0 {
		t.Fatalf("%d grants after RevokeGrant", len(lg.Grants))
	}
}

// TestSDKAliases creates, moves and deletes aliases.
func TestSDKAliases(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	admin := f.client(t, "alpha", "ada", keypolicy.RoleKeyAdmin)
	app := f.client(t, "alpha", "app", keypolicy.RoleCryptoUser)
	k1 := must[*awskmssdk.CreateKeyOutput](t)(admin.CreateKey(ctx, &awskmssdk.CreateKeyInput{}))
	k2 := must[*awskmssdk.CreateKeyOutput](t)(admin.CreateKey(ctx, &awskmssdk.CreateKeyInput{}))
	must[*awskmssdk.CreateAliasOutput](t)(admin.CreateAlias(ctx, &awskmssdk.CreateAliasInput{AliasName: aws.String("alias/orders"), TargetKeyId: k1.KeyMetadata.Arn}))
	e := must[*awskmssdk.EncryptOutput](t)(app.Encrypt(ctx, &awskmssdk.EncryptInput{KeyId: aws.String("alias/orders"), Plaintext: []byte("x")}))
	if *e.KeyId != *k1.KeyMetadata.Arn {
		t.Fatalf("alias/orders names %s", *e.KeyId)
	}
	_, err := admin.CreateAlias(ctx, &awskmssdk.CreateAliasInput{AliasName: aws.String("alias/orders"), TargetKeyId: k2.KeyMetadata.KeyId})
	wantCode(t, err, "AlreadyExistsException")
	_, err = admin.CreateAlias(ctx, &awskmssdk.CreateAliasInput{AliasName: aws.String("alias/aws/s3"), TargetKeyId: k2.KeyMetadata.KeyId})
	wantCode(t, err, "NotAuthorizedException")
	must[*awskmssdk.UpdateAliasOutput](t)(admin.UpdateAlias(ctx, &awskmssdk.UpdateAliasInput{AliasName: aws.String("alias/orders"), TargetKeyId: k2.KeyMetadata.KeyId}))
	e = must[*awskmssdk.EncryptOutput](t)(app.Encrypt(ctx, &awskmssdk.EncryptInput{KeyId: aws.String("alias/orders"), Plaintext: []byte("x")}))
	if *e.KeyId != *k2.KeyMetadata.Arn {
		t.Fatalf("after UpdateAlias, alias/orders names %s", *e.KeyId)
	}
	al := must[*awskmssdk.ListAliasesOutput](t)(admin.ListAliases(ctx, &awskmssdk.ListAliasesInput{}))
	if len(al.Aliases) != 1 || *al.Aliases[0].TargetKeyId != *k2.KeyMetadata.KeyId {
		t.Fatalf("ListAliases: %+v", al.Aliases)
	}
	must[*awskmssdk.DeleteAliasOutput](t)(admin.DeleteAlias(ctx, &awskmssdk.DeleteAliasInput{AliasName: aws.String("alias/orders")}))
	_, err = app.Encrypt(ctx, &awskmssdk.EncryptInput{KeyId: aws.String("alias/orders"), Plaintext: []byte("x")})
	wantCode(t, err, "NotFoundException")
	_, err = app.CreateAlias(ctx, &awskmssdk.CreateAliasInput{AliasName: aws.String("alias/mine"), TargetKeyId: k1.KeyMetadata.KeyId})
	wantCode(t, err, "AccessDeniedException")
	// The domain records create, the refused create, update and delete;
	// the gateway records its own refusal of alias/aws/; the app's
	// attempt is an access denial.
	if n := len(f.bed.EventsOfType("alpha", events.TypeKeyAliasChanged)); n != 4 {
		t.Errorf("%d alias records, want 4", n)
	}
	reserved := 0
	for _, e := range f.bed.EventsOfType("alpha", events.TypeRequestRejected) {
		if e.ErrorCode == "NotAuthorizedException" && e.Data["operation"] == awskms.OpRequest {
			reserved++
		}
	}
	if reserved != 1 {
		t.Errorf("%d records of the alias/aws/ refusal, want 1", reserved)
	}
}
