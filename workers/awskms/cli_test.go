package awskms_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskmssdk "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/keyflow/keyflow/kms/keypolicy"
)

// needTool returns the path of a Debian tool, or skips the test when it
// is absent; in CI (CI set) its absence fails instead: .ci/install-deps
// installs it.
func needTool(t *testing.T, path, pkg string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing: .ci/install-deps installs the Debian package %s", path, pkg)
		}
		t.Skipf("%s is missing: apt-get install %s (CI fails instead of skipping)", path, pkg)
	}
	return path
}

// awsCLI runs the Debian AWS CLI v2 against the gateway with an access
// key, in a clean home (no user config), and returns its JSON output.
type awsCLI struct {
	t        *testing.T
	bin, url string
	env      []string
	dir      string
}

func (c *awsCLI) run(args ...string) map[string]any {
	c.t.Helper()
	cmd := exec.Command(c.bin, append([]string{"--endpoint-url", c.url, "--output", "json", "kms"}, args...)...)
	cmd.Env, cmd.Dir = c.env, c.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("aws kms %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	var m map[string]any
	if len(strings.TrimSpace(string(out))) > 0 {
		if err := json.Unmarshal(out, &m); err != nil {
			c.t.Fatalf("aws kms %s: not JSON: %s", args[0], out)
		}
	}
	return m
}

// fails runs a command that must fail with the AWS error code.
func (c *awsCLI) fails(code string, args ...string) {
	c.t.Helper()
	cmd := exec.Command(c.bin, append([]string{"--endpoint-url", c.url, "--output", "json", "kms"}, args...)...)
	cmd.Env, cmd.Dir = c.env, c.dir
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "("+code+")") {
		c.t.Fatalf("aws kms %s: %v, want %s\n%s", args[0], err, code, out)
	}
}

func (c *awsCLI) file(name string, b []byte) string {
	c.t.Helper()
	if err := os.WriteFile(filepath.Join(c.dir, name), b, 0o600); err != nil {
		c.t.Fatal(err)
	}
	return "fileb://" + name
}

func b64d(t *testing.T, v any) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(v.(string))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAWSCLITour drives the real AWS CLI v2 (Debian awscli) through
// --endpoint-url on the tour of docs/aws-api.md.
func TestAWSCLITour(t *testing.T) {
	bin := needTool(t, "/usr/bin/aws", "awscli")
	openssl := needTool(t, "/usr/bin/openssl", "openssl")
	f := newFixture(t)
	id, secret := f.accessKey(t, "alpha", "cli", keypolicy.RoleKeyAdmin, keypolicy.RoleCryptoUser)
	dir := t.TempDir()
	c := &awsCLI{t: t, bin: bin, url: f.url, dir: dir, env: []string{
		"HOME=" + dir, "PATH=/usr/bin:/bin", "AWS_ACCESS_KEY_ID=" + id, "AWS_SECRET_ACCESS_KEY=" + secret,
		"AWS_DEFAULT_REGION=us-east-1", "AWS_PAGER=", "AWS_CONFIG_FILE=" + filepath.Join(dir, "none"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "none"),
	}}

	key := c.run("create-key", "--description", "cli tour")["KeyMetadata"].(map[string]any)
	keyID, arn := key["KeyId"].(string), key["Arn"].(string)
	if key["KeyState"] != "Enabled" || !strings.HasPrefix(arn, "arn:aws:kms:us-east-1:") {
		t.Fatalf("create-key: %v", key)
	}
	c.run("create-alias", "--alias-name", "alias/tour", "--target-key-id", keyID)
	if al := c.run("list-aliases")["Aliases"].([]any); len(al) != 1 || al[0].(map[string]any)["TargetKeyId"] != keyID {
		t.Fatalf("list-aliases: %v", al)
	}

	enc := c.run("encrypt", "--key-id", "alias/tour", "--plaintext", c.file("pt", []byte("tour secret")), "--encryption-context", "app=tour")
	dec := c.run("decrypt", "--ciphertext-blob", c.file("ct", b64d(t, enc["CiphertextBlob"])), "--encryption-context", "app=tour")
	if string(b64d(t, dec["Plaintext"])) != "tour secret" {
		t.Fatalf("decrypt: %v", dec)
	}
	c.fails("InvalidCiphertextException", "decrypt", "--ciphertext-blob", "fileb://ct", "--encryption-context", "app=other")
	dk := c.run("generate-data-key", "--key-id", keyID, "--key-spec", "AES_256")
	if len(b64d(t, dk["Plaintext"])) != 32 {
		t.Fatalf("generate-data-key: %v", dk)
	}

	// Sign and verify with ECC and ML-DSA, and check the ECC signature
	// with openssl against the public key.
	for _, tc := range []struct{ spec, alg string }{{"ECC_NIST_P256", "ECDSA_SHA_256"}, {"ML_DSA_65", "ML_DSA_SHAKE_256"}} {
		k := c.run("create-key", "--key-spec", tc.spec, "--key-usage", "SIGN_VERIFY")["KeyMetadata"].(map[string]any)
		sig := c.run("sign", "--key-id", k["KeyId"].(string), "--message", c.file("msg", []byte("signed on the tour")), "--signing-algorithm", tc.alg)
		c.file("sig", b64d(t, sig["Signature"]))
		v := c.run("verify", "--key-id", k["KeyId"].(string), "--message", "fileb://msg", "--signature", "fileb://sig", "--signing-algorithm", tc.alg)
		if v["SignatureValid"] != true {
			t.Fatalf("verify %s: %v", tc.spec, v)
		}
		if tc.spec == "ECC_NIST_P256" {
			pub := c.run("get-public-key", "--key-id", k["KeyId"].(string))
			c.file("pub.der", b64d(t, pub["PublicKey"]))
			out, err := exec.Command(openssl, "dgst", "-sha256", "-verify", filepath.Join(dir, "pub.der"), "-keyform", "DER",
				"-signature", filepath.Join(dir, "sig"), filepath.Join(dir, "msg")).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "Verified OK") {
				t.Fatalf("openssl does not verify the ECDSA signature: %v %s", err, out)
			}
		}
	}

	c.run("enable-key-rotation", "--key-id", keyID)
	if st := c.run("get-key-rotation-status", "--key-id", keyID); st["KeyRotationEnabled"] != true {
		t.Fatalf("get-key-rotation-status: %v", st)
	}
	// Debian's CLI (2.9.19) predates rotate-key-on-demand; the SDK sends it.
	sdk := f.sdk(id, secret)
	if _, err := sdk.RotateKeyOnDemand(context.Background(), &awskmssdk.RotateKeyOnDemandInput{KeyId: aws.String(keyID)}); err != nil {
		t.Fatal(err)
	}
	// The ciphertext from before the rotation still decrypts.
	c.run("decrypt", "--ciphertext-blob", "fileb://ct", "--encryption-context", "app=tour")

	// BYOK with openssl: wrap 32 random bytes under the wrapping key.
	ext := c.run("create-key", "--origin", "EXTERNAL")["KeyMetadata"].(map[string]any)
	if ext["KeyState"] != "PendingImport" {
		t.Fatalf("external key: %v", ext)
	}
	p := c.run("get-parameters-for-import", "--key-id", ext["KeyId"].(string), "--wrapping-algorithm", "RSAES_OAEP_SHA_256", "--wrapping-key-spec", "RSA_3072")
	c.file("wrapping.der", b64d(t, p["PublicKey"]))
	c.file("token", b64d(t, p["ImportToken"]))
	for _, args := range [][]string{
		{"rand", "-out", "material", "32"},
		{"pkeyutl", "-encrypt", "-pubin", "-keyform", "DER", "-inkey", "wrapping.der", "-in", "material", "-out", "wrapped",
			"-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256"},
	} {
		cmd := exec.Command(openssl, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v %s", args[0], err, out)
		}
	}
	c.run("import-key-material", "--key-id", ext["KeyId"].(string), "--import-token", "fileb://token",
		"--encrypted-key-material", "fileb://wrapped", "--expiration-model", "KEY_MATERIAL_DOES_NOT_EXPIRE")
	if st := c.run("describe-key", "--key-id", ext["KeyId"].(string))["KeyMetadata"].(map[string]any); st["KeyState"] != "Enabled" {
		t.Fatalf("after import-key-material: %v", st)
	}
	c.run("encrypt", "--key-id", ext["KeyId"].(string), "--plaintext", "fileb://pt")

	// list-keys pages: the CLI follows NextMarker itself with
	// --page-size, and stops at --max-items.
	all := c.run("list-keys", "--page-size", "1")["Keys"].([]any)
	if len(all) != 4 {
		t.Fatalf("list-keys --page-size 1: %d keys, want 4", len(all))
	}
	first := c.run("list-keys", "--max-items", "2", "--page-size", "1")
	if len(first["Keys"].([]any)) != 2 || first["NextToken"] == nil {
		t.Fatalf("list-keys --max-items 2: %v", first)
	}

	sd := c.run("schedule-key-deletion", "--key-id", keyID, "--pending-window-in-days", "7")
	if sd["KeyState"] != "PendingDeletion" {
		t.Fatalf("schedule-key-deletion: %v", sd)
	}
	c.fails("KMSInvalidStateException", "encrypt", "--key-id", keyID, "--plaintext", "fileb://pt")
	// A wrong secret is refused by name.
	bad := *c
	bad.env = append(append([]string{}, c.env...), "AWS_SECRET_ACCESS_KEY="+strings.Repeat("x", 40))
	bad.fails("InvalidSignatureException", "list-keys")
}
