package awskms_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/keyflow/keyflow/cloud"
	"github.com/keyflow/keyflow/cloud/awskms"
	"github.com/keyflow/keyflow/internal/localkms"
)

// oaepWrapper wraps fixed material in Go, as a test stand-in for kms.
func oaepWrapper(t *testing.T, material []byte) cloud.Wrapper {
	return func(_ context.Context, w cloud.WrappingKey) ([]byte, error) {
		if w.Scheme != cloud.SchemeRSAOAEPSHA256 {
			t.Fatalf("scheme %s", w.Scheme)
		}
		pub, err := x509.ParsePKIXPublicKey(w.PublicKey)
		if err != nil {
			return nil, err
		}
		return rsa.EncryptOAEP(sha256.New(), rand.Reader, pub.(*rsa.PublicKey), material, nil)
	}
}

func sdk(url string) *kms.Client {
	return kms.New(kms.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(url), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""),
	})
}

// openLocalKMS opens a ciphertext blob of local-kms: 1 byte ARN length,
// the ARN, the backing-key version (4 bytes little-endian), a 12-byte
// nonce and AES-256-GCM; the AAD is the encryption context's sorted
// keys, each followed by its value (local-kms src/cmk/aes_encryption.go).
func openLocalKMS(t *testing.T, material, blob []byte) []byte {
	t.Helper()
	n := int(blob[0])
	body := blob[1+n+4:]
	if v := binary.LittleEndian.Uint32(blob[1+n:]); v != 0 {
		t.Fatalf("backing key version %d", v)
	}
	block, _ := aes.NewCipher(material)
	gcm, _ := cipher.NewGCM(block)
	pt, err := gcm.Open(nil, body[:12], body[12:], []byte("tenantalpha"))
	if err != nil {
		t.Fatalf("the provider's ciphertext does not open under the distributed material: %v", err)
	}
	return pt
}

func TestImportRotateDescribeAgainstLocalKMS(t *testing.T) {
	ctx := context.Background()
	srv := localkms.Start(t)
	c := sdk(srv.URL)
	conn := awskms.New(c)
	m1 := bytes.Repeat([]byte{1}, 32)
	j := &cloud.Journal{}
	jctx := cloud.WithJournal(ctx, j)
	res, err := conn.Import(jctx, cloud.ImportParams{KeyID: "k1", KeyVersion: 1, Spec: cloud.SpecAES256, Wrap: oaepWrapper(t, m1)})
	if err != nil {
		t.Fatal(err)
	}
	// Every provider request is noted (local-kms sends no request ID;
	// AWS does, in x-amzn-RequestId, and the note carries it then).
	ops := []string{}
	for _, call := range j.Calls() {
		ops = append(ops, call.Operation)
	}
	if want := "DescribeKey CreateKey CreateAlias GetParametersForImport ImportKeyMaterial DescribeKey CreateAlias"; strings.Join(ops, " ") != want {
		t.Fatalf("calls %v, want %s", ops, want)
	}
	// Idempotent: a second import of the same version finds the key.
	again, err := conn.Import(ctx, cloud.ImportParams{KeyID: "k1", KeyVersion: 1, Spec: cloud.SpecAES256, Wrap: func(context.Context, cloud.WrappingKey) ([]byte, error) {
		t.Fatal("a repeated import wrapped material again")
		return nil, nil
	}})
	if err != nil || again.ProviderVersion != res.ProviderVersion {
		t.Fatalf("repeat import: %v %+v vs %+v", err, again, res)
	}
	ec := map[string]string{"tenant": "alpha"}
	enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(res.Resource), Plaintext: []byte("hello"), EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	if got := openLocalKMS(t, m1, enc.CiphertextBlob); string(got) != "hello" {
		t.Fatalf("got %q", got)
	}

	m2 := bytes.Repeat([]byte{2}, 32)
	rot, err := conn.Rotate(ctx, cloud.RotateParams{Key: cloud.KeyRef{KeyID: "k1", Resource: res.Resource, Versions: []string{res.ProviderVersion}}, KeyVersion: 2, Spec: cloud.SpecAES256, Wrap: oaepWrapper(t, m2)})
	if err != nil {
		t.Fatal(err)
	}
	enc2, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(res.Resource), Plaintext: []byte("after"), EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	if got := openLocalKMS(t, m2, enc2.CiphertextBlob); string(got) != "after" {
		t.Fatalf("got %q", got)
	}
	if dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec}); err != nil || string(dec.Plaintext) != "hello" {
		t.Fatalf("old ciphertext after rotation: %v", err)
	}
	ref := cloud.KeyRef{KeyID: "k1", Resource: res.Resource, Versions: []string{res.ProviderVersion, rot.ProviderVersion}}
	if err := conn.Disable(ctx, ref); err != nil {
		t.Fatal(err)
	}
	d, err := conn.Describe(ctx, ref)
	if err != nil || d.State != cloud.StateDisabled || d.Primary != rot.ProviderVersion || len(d.Versions) != 2 {
		t.Fatalf("describe: %v %+v", err, d)
	}
	if err := conn.ScheduleDeletion(ctx, cloud.DeletionParams{Key: ref, Days: 7}); err != nil {
		t.Fatal(err)
	}
	d, err = conn.Describe(ctx, ref)
	if err != nil || d.State != cloud.StateMissing || d.Versions[rot.ProviderVersion] != cloud.StatePendingDeletion {
		t.Fatalf("describe after deletion: %v %+v", err, d)
	}
	if err := conn.ScheduleDeletion(ctx, cloud.DeletionParams{Key: ref, Days: 7}); err != nil {
		t.Fatalf("a repeated deletion: %v", err)
	}

	// keyflow cancels the deletion: the keys come back under their
	// aliases (AWS leaves them disabled, local-kms enabled; the sync then
	// sets keyflow's state), and a repeat changes nothing.
	rp := cloud.RestoreParams{Key: ref, KeyVersions: []uint32{1, 2}, Primary: rot.ProviderVersion}
	for range 2 {
		if err := conn.Restore(ctx, rp); err != nil {
			t.Fatal(err)
		}
	}
	d, err = conn.Describe(ctx, ref)
	back := func(s string) bool { return s == cloud.StateDisabled || s == cloud.StateEnabled }
	if err != nil || !back(d.State) || d.Primary != rot.ProviderVersion || !back(d.Versions[res.ProviderVersion]) {
		t.Fatalf("describe after the restore: %v %+v", err, d)
	}
	for v, arn := range map[uint32]string{1: res.ProviderVersion, 2: rot.ProviderVersion} {
		md, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(awskms.VersionAlias("k1", v))})
		if err != nil || aws.ToString(md.KeyMetadata.Arn) != arn {
			t.Fatalf("version alias %d after the restore: %v", v, err)
		}
	}
}

// With the primary-only alias layout (KMSs with one alias per key) the
// version's key is found again through the primary alias and its
// description, so repeated steps make no second key.
func TestPrimaryOnlyAliasesAgainstLocalKMS(t *testing.T) {
	ctx := context.Background()
	srv := localkms.Start(t)
	c := sdk(srv.URL)
	conn, err := awskms.New(c).WithAliases(awskms.AliasesPrimaryOnly)
	if err != nil {
		t.Fatal(err)
	}
	j := &cloud.Journal{}
	res, err := conn.Import(cloud.WithJournal(ctx, j), cloud.ImportParams{KeyID: "k2", KeyVersion: 1, Spec: cloud.SpecAES256, Wrap: oaepWrapper(t, bytes.Repeat([]byte{1}, 32))})
	if err != nil {
		t.Fatal(err)
	}
	ops := []string{}
	for _, call := range j.Calls() {
		ops = append(ops, call.Operation)
	}
	if want := "DescribeKey CreateKey GetParametersForImport ImportKeyMaterial DescribeKey CreateAlias"; strings.Join(ops, " ") != want {
		t.Fatalf("calls %v, want %s", ops, want)
	}
	noWrap := func(context.Context, cloud.WrappingKey) ([]byte, error) {
		t.Fatal("a repeated step wrapped material again")
		return nil, nil
	}
	again, err := conn.Import(ctx, cloud.ImportParams{KeyID: "k2", KeyVersion: 1, Spec: cloud.SpecAES256, Wrap: noWrap})
	if err != nil || again.ProviderVersion != res.ProviderVersion {
		t.Fatalf("repeat import: %v %+v vs %+v", err, again, res)
	}
	ref := cloud.KeyRef{KeyID: "k2", Resource: res.Resource, Versions: []string{res.ProviderVersion}}
	rot, err := conn.Rotate(ctx, cloud.RotateParams{Key: ref, KeyVersion: 2, Spec: cloud.SpecAES256, Wrap: oaepWrapper(t, bytes.Repeat([]byte{2}, 32))})
	if err != nil || rot.ProviderVersion == res.ProviderVersion {
		t.Fatalf("rotate: %v %+v", err, rot)
	}
	if again, err := conn.Rotate(ctx, cloud.RotateParams{Key: ref, KeyVersion: 2, Spec: cloud.SpecAES256, Wrap: noWrap}); err != nil || again.ProviderVersion != rot.ProviderVersion {
		t.Fatalf("repeat rotate: %v %+v", err, again)
	}
	aliases, err := c.ListAliases(ctx, &kms.ListAliasesInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range aliases.Aliases {
		if strings.HasPrefix(aws.ToString(a.AliasName), "alias/keyflow/k2/") {
			t.Fatalf("a version alias in the primary-only layout: %s", aws.ToString(a.AliasName))
		}
	}
}

func TestSettingsRefuseUnknownValues(t *testing.T) {
	if _, err := awskms.New(sdk("http://127.0.0.1:1")).WithWrappingKeySpec("RSA_1024"); err == nil {
		t.Fatal("RSA_1024 wrapping key accepted")
	}
	if _, err := awskms.New(sdk("http://127.0.0.1:1")).WithAliases("none"); err == nil {
		t.Fatal("an unknown alias layout accepted")
	}
}

func TestProviderDownIsRetryable(t *testing.T) {
	srv := localkms.Start(t)
	srv.Stop()
	_, err := awskms.New(sdk(srv.URL)).Describe(context.Background(), cloud.KeyRef{KeyID: "k1"})
	e, ok := cloud.AsError(err)
	if !ok || !e.Retryable || e.Code != cloud.CodeUnavailable {
		t.Fatalf("got %v", err)
	}
}
