package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// TestXKSProxy drives the dev stack's AWS KMS XKS proxy over HTTPS as AWS
// KMS would (requests signed by the AWS SDK's SigV4 signer, trusting the
// generated certificate): health, metadata, encrypt, decrypt; the
// credentials file is 0600 and no secret reaches the output or the audit
// trail; after a restart the same credentials and key open the old
// ciphertext.
func TestXKSProxy(t *testing.T) {
	dir := t.TempDir()
	st := startStack(t, dir, "127.0.0.1:0", "127.0.0.1:0", "--xks-listen", "127.0.0.1:0")
	x := xksFromOutput(t, st)

	pt := []byte("a data key wrapped by AWS KMS under keyflow's key")
	aad := []byte("aws-kms-header")
	enc := x.call(t, "/keys/xks-demo/encrypt", map[string]any{
		"requestMetadata": x.meta("GenerateDataKey", "e2e-enc"), "plaintext": b64(pt),
		"additionalAuthenticatedData": b64(aad), "encryptionAlgorithm": "AES_GCM",
		"ciphertextDataIntegrityValueAlgorithm": "SHA_256",
	}, http.StatusOK)
	dec := map[string]any{
		"requestMetadata": x.meta("Decrypt", "e2e-dec"), "encryptionAlgorithm": "AES_GCM", "additionalAuthenticatedData": b64(aad),
		"ciphertext": enc["ciphertext"], "ciphertextMetadata": enc["ciphertextMetadata"],
		"initializationVector": enc["initializationVector"], "authenticationTag": enc["authenticationTag"],
	}
	if got := x.call(t, "/keys/xks-demo/decrypt", dec, http.StatusOK); got["plaintext"] != b64(pt) {
		t.Fatalf("decrypt returned %v", got)
	}
	if got := x.call(t, "/keys/xks-demo/metadata", map[string]any{"requestMetadata": x.meta("DescribeKey", "e2e-meta")}, http.StatusOK); got["keyStatus"] != "ENABLED" || got["keySpec"] != "AES_256" {
		t.Fatalf("metadata returned %v", got)
	}
	if got := x.call(t, "/health", map[string]any{"requestMetadata": map[string]any{"kmsOperation": "KmsHealthCheck", "kmsRequestId": "e2e-h"}}, http.StatusOK); got["xksProxyVendor"] != "keyflow" {
		t.Fatalf("health returned %v", got)
	}
	if got := x.call(t, "/keys/nope/encrypt", map[string]any{"requestMetadata": x.meta("Encrypt", "e2e-404"), "plaintext": b64(pt), "encryptionAlgorithm": "AES_GCM"}, http.StatusNotFound); got["errorName"] != "KeyNotFoundException" {
		t.Fatalf("unknown key returned %v", got)
	}
	res, err := x.client.Get(x.base + "/health")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET health: %d, want 405", res.StatusCode)
	}

	fileMode(t, x.configPath, 0o600)
	fileMode(t, filepath.Join(dir, "xks", "aws-console.json"), 0o600)
	fileMode(t, filepath.Join(dir, "xks", "xks-key.pem"), 0o600)
	raw, evs := auditTailXKS(t, st)
	secrets := []secret{{"XKS secret access key", []byte(x.secret)}, {"plaintext", pt}, {"plaintext (Base64)", []byte(b64(pt))}}
	scanForSecrets(t, "the audit trail", []byte(raw), secrets)
	scanForSecrets(t, "keyflow dev's output", []byte(st.stdout.String()+st.stderr.String()), secrets)
	if !hasEvent(evs, "io.keyflow.xks.encrypt.v1", "success", map[string]any{"kmsRequestId": "e2e-enc", "kmsOperation": "GenerateDataKey", "externalKeyId": "xks-demo", "plaintextBytes": len(pt)}) ||
		!hasEvent(evs, "io.keyflow.xks.decrypt.v1", "success", map[string]any{"kmsRequestId": "e2e-dec"}) ||
		!hasEvent(evs, "io.keyflow.xks.metadata.v1", "success", map[string]any{"keyStatus": "ENABLED"}) ||
		!hasEvent(evs, "io.keyflow.xks.health.v1", "success", map[string]any{"healthStatus": "ACTIVE"}) ||
		!hasEvent(evs, "io.keyflow.xks.encrypt.v1", "failure", map[string]any{"externalKeyId": "nope"}) {
		t.Fatalf("XKS audit events missing:\n%s", raw)
	}

	// Credential rotation without a restart: add a second pair, SIGHUP,
	// and the new pair works while the old one still does.
	rotated := x.withNewCredential(t)
	if err := st.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	health := map[string]any{"requestMetadata": map[string]any{"kmsOperation": "KmsHealthCheck", "kmsRequestId": "e2e-rot"}}
	if !waitFor(t, 30*time.Second, func() bool { return rotated.status(t, "/health", health) == http.StatusOK }) {
		t.Fatal("the added credential was not accepted after SIGHUP")
	}
	x.call(t, "/health", health, http.StatusOK)

	// Restart on the same directory: same credentials, same key.
	st.stop(t)
	st = startStack(t, dir, "127.0.0.1:0", "127.0.0.1:0", "--xks-listen", "127.0.0.1:0")
	x2 := xksFromOutput(t, st)
	if x2.akid != x.akid {
		t.Fatal("the XKS credentials changed across a restart")
	}
	if got := x2.call(t, "/keys/xks-demo/decrypt", dec, http.StatusOK); got["plaintext"] != b64(pt) {
		t.Fatalf("decrypt after a restart returned %v", got)
	}
}

type xksClient struct {
	base, configPath string
	akid, secret     string
	client           *http.Client
}

// xksFromOutput reads the "keyflow xks" line, the generated credentials
// and the certificate.
func xksFromOutput(t *testing.T, st *stack) *xksClient {
	t.Helper()
	fields := map[string]string{}
	for _, line := range strings.Split(st.stdout.String(), "\n") {
		if strings.HasPrefix(line, "keyflow xks ") {
			for _, f := range strings.Fields(line) {
				if k, v, ok := strings.Cut(f, "="); ok {
					fields[k] = v
				}
			}
		}
	}
	if !strings.HasPrefix(fields["endpoint"], "https://127.0.0.1:") || fields["path"] != "/keyflow-dev/kms/xks/v1" {
		t.Fatalf("no usable xks line in the output:\n%s", st.stdout)
	}
	var cfg struct {
		KeyStores []struct {
			Credentials []struct{ AccessKeyID, SecretAccessKey string } `json:"credentials"`
		} `json:"keyStores"`
	}
	b, err := os.ReadFile(fields["config"])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil || len(cfg.KeyStores) != 1 || len(cfg.KeyStores[0].Credentials) == 0 {
		t.Fatalf("unexpected XKS config: %v", err)
	}
	pemBytes, err := os.ReadFile(fields["cert"])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		t.Fatal("the XKS certificate is not PEM")
	}
	c := cfg.KeyStores[0].Credentials[0]
	return &xksClient{
		base: fields["endpoint"] + fields["path"], configPath: fields["config"], akid: c.AccessKeyID, secret: c.SecretAccessKey,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}},
	}
}

func (x *xksClient) meta(op, id string) map[string]any {
	return map[string]any{"awsPrincipalArn": "arn:aws:iam::111122223333:role/e2e", "kmsKeyArn": "arn:aws:kms:us-east-1:111122223333:key/e2e", "kmsOperation": op, "kmsRequestId": id}
}

// withNewCredential adds a generated credential pair to the proxy's
// configuration file and returns a client that signs with it.
func (x *xksClient) withNewCredential(t *testing.T) *xksClient {
	t.Helper()
	b, err := os.ReadFile(x.configPath)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	id := "ROTATEDACCESSKEYID234567AB"
	secret := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	ks := cfg["keyStores"].([]any)[0].(map[string]any)
	ks["credentials"] = append(ks["credentials"].([]any), map[string]any{"accessKeyId": id, "secretAccessKey": secret})
	if b, err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(x.configPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	n := *x
	n.akid, n.secret = id, secret
	return &n
}

func (x *xksClient) status(t *testing.T, path string, body any) int {
	t.Helper()
	res, err := x.client.Do(x.request(t, path, body))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

func (x *xksClient) request(t *testing.T, path string, body any) *http.Request {
	t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequest(http.MethodPost, x.base+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	sum := sha256.Sum256(b)
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: x.akid, SecretAccessKey: x.secret}, req, hex.EncodeToString(sum[:]), "kms-xks-proxy", "eu-west-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	return req
}

func (x *xksClient) call(t *testing.T, path string, body any, want int) map[string]any {
	t.Helper()
	res, err := x.client.Do(x.request(t, path, body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	if res.StatusCode != want {
		t.Fatalf("POST %s: %d %s, want %d", path, res.StatusCode, raw, want)
	}
	return out
}

// auditTailXKS reads the XKS events of the default tenant with the CLI.
func auditTailXKS(t *testing.T, st *stack) (string, []cloudEvent) {
	t.Helper()
	r := mustOK(t, st.kf(t, "", "audit", "tail", "--type", "io.keyflow.xks.*"))
	var evs []cloudEvent
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var e cloudEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit line is not JSON: %v\n%s", err, line)
		}
		evs = append(evs, e)
	}
	return r.stdout, evs
}
