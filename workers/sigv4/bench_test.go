package sigv4_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/keyflow/keyflow/workers/sigv4"
)

// BenchmarkVerify is the per-request cost of checking a signature as the
// AWS SDK for Go v2 makes it (an Encrypt request, 7 signed headers): the
// signing key cached, the canonical request, its hash, the HMAC.
func BenchmarkVerify(b *testing.B) {
	const id, secret = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	body := `{"KeyId":"0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b","Plaintext":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","EncryptionContext":{"bench":"aws"}}`
	r, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:4599/", strings.NewReader(body))
	r.Header.Set("X-Amz-Target", "TrentService.Encrypt")
	r.Header.Set("Content-Type", "application/x-amz-json-1.1")
	r.Header.Set("Amz-Sdk-Invocation-Id", "0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b")
	r.Header.Set("Amz-Sdk-Request", "attempt=1; max=1")
	r.ContentLength = int64(len(body))
	sum := sha256.Sum256([]byte(body))
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: id, SecretAccessKey: secret}, r, hex.EncodeToString(sum[:]), "kms", "us-east-1", now); err != nil {
		b.Fatal(err)
	}
	v := &sigv4.Verifier{Service: "kms"}
	secretOf := func(string) ([]byte, bool) { return []byte(secret), true }
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(r, []byte(body), now, secretOf); err != nil {
			b.Fatal(err)
		}
	}
}
