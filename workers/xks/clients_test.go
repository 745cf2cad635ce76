package xks_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyflow/keyflow/workers/xks"
)

// TestCurlSigV4 sends the spec's Appendix D requests with curl's own SigV4
// signer (curl --aws-sigv4), a second independent implementation.
func TestCurlSigV4(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed (Debian: apt-get install curl); the AWS SDK signer tests still ran")
	}
	f := newFixture(t, nil)
	f.mu.Lock()
	f.now = time.Now() // curl signs with the wall clock
	f.mu.Unlock()
	dir := t.TempDir()
	run := func(cred xks.Credential, path, body string) (int, map[string]any) {
		t.Helper()
		file := filepath.Join(dir, "body.json")
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.CommandContext(t.Context(), curl, "--silent", "--insecure",
			"--aws-sigv4", "aws:amz:us-east-1:kms-xks-proxy", "--user", cred.AccessKeyID+":"+cred.SecretAccessKey,
			"-X", "POST", "-H", "Content-Type:application/json", "--data", "@"+file,
			"--write-out", "\n%{response_code}", f.ts.URL+path).Output()
		if err != nil {
			t.Fatalf("curl: %v", err)
		}
		s := string(out)
		i := strings.LastIndex(s, "\n")
		code, err := strconv.Atoi(strings.TrimSpace(s[i+1:]))
		if err != nil {
			t.Fatalf("curl output %q", s)
		}
		var m map[string]any
		_ = json.Unmarshal([]byte(s[:i]), &m)
		return code, m
	}
	code, m := run(f.cred, apiBase+"/keys/"+extKey+"/encrypt", `{
    "requestMetadata": {
        "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
        "kmsKeyArn": "arn:aws:kms:us-east-2:123456789012:/key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "kmsOperation": "GenerateDataKey",
        "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae"
    },
    "plaintext": "SGVsbG8gV29ybGQh",
    "encryptionAlgorithm": "AES_GCM"
}`)
	if code != http.StatusOK || m["ciphertext"] == nil || m["initializationVector"] == nil || m["authenticationTag"] == nil {
		t.Fatalf("curl encrypt: %d %v", code, m)
	}
	dec, _ := json.Marshal(map[string]any{
		"requestMetadata": meta("Decrypt", "r"), "encryptionAlgorithm": "AES_GCM", "ciphertext": m["ciphertext"],
		"ciphertextMetadata": m["ciphertextMetadata"], "initializationVector": m["initializationVector"], "authenticationTag": m["authenticationTag"],
	})
	if code, m := run(f.cred2, apiBase+"/keys/"+extKey+"/decrypt", string(dec)); code != http.StatusOK || m["plaintext"] != "SGVsbG8gV29ybGQh" {
		t.Fatalf("curl decrypt: %d %v", code, m)
	}
	health := `{"requestMetadata": {"kmsOperation": "KmsHealthCheck", "kmsRequestId": "1124f4d6-db54-4af4-ae30-c55a22a8abcd"}}`
	if code, m := run(f.cred, apiBase+"/health", health); code != http.StatusOK || m["xksProxyVendor"] != "keyflow" {
		t.Fatalf("curl health: %d %v", code, m)
	}
	bad := f.cred
	bad.SecretAccessKey = f.cred2.SecretAccessKey
	if code, m := run(bad, apiBase+"/health", health); code != http.StatusUnauthorized || m["errorName"] != "AuthenticationFailedException" {
		t.Fatalf("curl with a wrong secret: %d %v", code, m)
	}
}

// TestMTLS: with mTLS configured, only a client certificate from the
// configured CA with the configured subject CN completes the handshake.
func TestMTLS(t *testing.T) {
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test client CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	client := func(cn string, signer *x509.Certificate, signerKey *ecdsa.PrivateKey) tls.Certificate {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		if signer == nil {
			signer, signerKey = tmpl, k
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &k.PublicKey, signerKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
	}

	f := newFixture(t, func(c *xks.Config) {
		c.MTLS = &xks.MTLS{ClientCAFile: caFile, CommonNames: []string{"cks.kms.us-east-1.amazonaws.com"}}
	})
	serverCert, certPath, err := xks.SelfSignedCert(dir, []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	addr, err := f.srv.Listen("127.0.0.1:0", serverCert)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.srv.Close() })
	roots := x509.NewCertPool()
	pemBytes, _ := os.ReadFile(certPath)
	roots.AppendCertsFromPEM(pemBytes)
	get := func(certs ...tls.Certificate) error {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}, ForceAttemptHTTP2: true}}
		defer hc.CloseIdleConnections()
		res, err := hc.Get("https://" + addr.String() + "/ping")
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK || res.ProtoMajor != 2 {
			t.Fatalf("ping: %d over %s, want 200 over HTTP/2", res.StatusCode, res.Proto)
		}
		return nil
	}
	if err := get(client("cks.kms.us-east-1.amazonaws.com", caCert, caKey)); err != nil {
		t.Fatalf("AWS KMS's certificate was refused: %v", err)
	}
	if err := get(client("cks.kms.eu-west-1.amazonaws.com", caCert, caKey)); err == nil {
		t.Fatal("a certificate with another subject was accepted")
	}
	if err := get(client("cks.kms.us-east-1.amazonaws.com", nil, nil)); err == nil {
		t.Fatal("a certificate from another CA was accepted")
	}
	if err := get(); err == nil {
		t.Fatal("a client without a certificate was accepted")
	}
}
