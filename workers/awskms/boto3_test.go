package awskms_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/keyflow/keyflow/kms/keypolicy"
)

// boto3RoundTrip creates a key, encrypts and decrypts with a context.
// Debian's boto3 (1.26) predates the SDKs' automatic AWS_ENDPOINT_URL_KMS,
// so the script passes the variable on itself; newer boto3 reads it alone.
const boto3RoundTrip = `
import os, boto3, botocore.exceptions
kms = boto3.client("kms", endpoint_url=os.environ["AWS_ENDPOINT_URL_KMS"])
key = kms.create_key(Description="boto3")["KeyMetadata"]
assert key["KeyState"] == "Enabled", key
ct = kms.encrypt(KeyId=key["Arn"], Plaintext=b"from python", EncryptionContext={"lang": "py"})["CiphertextBlob"]
pt = kms.decrypt(CiphertextBlob=ct, EncryptionContext={"lang": "py"})["Plaintext"]
assert pt == b"from python", pt
try:
    kms.decrypt(CiphertextBlob=ct, EncryptionContext={"lang": "go"})
    raise SystemExit("decrypt with the wrong context succeeded")
except kms.exceptions.InvalidCiphertextException:
    pass
print("boto3 ok", key["KeyId"])
`

// TestBoto3RoundTrip drives Debian's python3-boto3 through
// AWS_ENDPOINT_URL_KMS.
func TestBoto3RoundTrip(t *testing.T) {
	py := needTool(t, "/usr/bin/python3", "python3")
	cmd := exec.Command(py, "-c", "import boto3")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	if err := cmd.Run(); err != nil {
		needTool(t, "/usr/lib/python3/dist-packages/boto3/__init__.py", "python3-boto3")
	}
	f := newFixture(t)
	id, secret := f.accessKey(t, "alpha", "py", keypolicy.RoleKeyAdmin, keypolicy.RoleCryptoUser)
	dir := t.TempDir()
	cmd = exec.Command(py, "-c", boto3RoundTrip)
	cmd.Env = []string{"HOME=" + dir, "PATH=/usr/bin:/bin", "AWS_ACCESS_KEY_ID=" + id, "AWS_SECRET_ACCESS_KEY=" + secret,
		"AWS_DEFAULT_REGION=us-east-1", "AWS_ENDPOINT_URL_KMS=" + f.url, "AWS_CONFIG_FILE=" + dir + "/none", "AWS_SHARED_CREDENTIALS_FILE=" + dir + "/none"}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "boto3 ok") {
		t.Fatalf("boto3: %v\n%s", err, out)
	}
}
