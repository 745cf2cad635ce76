package sigv4_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/keyflow/keyflow/workers/sigv4"
)

// TestVerifyKinds signs requests with the real AWS SDK signer and checks
// that each failure reports its kind.
func TestVerifyKinds(t *testing.T) {
	const id, secret = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	body := `{"KeyId":"k"}`
	sign := func(service, sec string, at time.Time) *http.Request {
		r, _ := http.NewRequest(http.MethodPost, "http://kms.local/", strings.NewReader(body))
		r.Header.Set("X-Amz-Target", "TrentService.Encrypt")
		sum := sha256.Sum256([]byte(body))
		if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: id, SecretAccessKey: sec}, r, hex.EncodeToString(sum[:]), service, "eu-west-1", at); err != nil {
			t.Fatal(err)
		}
		return r
	}
	secretOf := func(k string) ([]byte, bool) { return []byte(secret), k == id }
	v := &sigv4.Verifier{Service: "kms"}
	cases := []struct {
		name string
		req  *http.Request
		body string
		want sigv4.Kind
	}{
		{"valid", sign("kms", secret, now), body, 0},
		{"4 minutes early", sign("kms", secret, now.Add(-4*time.Minute)), body, 0},
		{"no header", func() *http.Request { r := sign("kms", secret, now); r.Header.Del("Authorization"); return r }(), body, sigv4.Missing},
		{"other service", sign("s3", secret, now), body, sigv4.Malformed},
		{"expired", sign("kms", secret, now.Add(-6*time.Minute)), body, sigv4.Expired},
		{"wrong secret", sign("kms", "x"+secret[1:], now), body, sigv4.Mismatch},
		{"body changed", sign("kms", secret, now), `{"KeyId":"other"}`, sigv4.Mismatch},
		{"header changed", func() *http.Request {
			r := sign("kms", secret, now)
			r.Header.Set("X-Amz-Target", "TrentService.Decrypt")
			return r
		}(), body, sigv4.Mismatch},
	}
	for _, tc := range cases {
		a, err := v.Verify(tc.req, []byte(tc.body), now, secretOf)
		var se *sigv4.Error
		switch {
		case tc.want == 0 && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want == 0 && a.AccessKeyID != id:
			t.Errorf("%s: access key %q", tc.name, a.AccessKeyID)
		case tc.want != 0 && (!errors.As(err, &se) || se.Kind != tc.want):
			t.Errorf("%s: %v, want kind %d", tc.name, err, tc.want)
		}
	}
	unknown := func(string) ([]byte, bool) { return nil, false }
	var se *sigv4.Error
	if _, err := v.Verify(sign("kms", secret, now), []byte(body), now, unknown); !errors.As(err, &se) || se.Kind != sigv4.UnknownKey {
		t.Errorf("unknown key: %v", err)
	}
}
