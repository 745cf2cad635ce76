package sigv4

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/keyflow/keyflow/internal/fuzzseed"
)

// FuzzSigV4: a request signed by the AWS SDK verifies; with its
// Authorization header or X-Amz-Date replaced, it verifies only if the
// replacement claims the very same credential scope, signed headers and
// signature (so no second spelling of a header authenticates anything
// else), every refusal is the one authentication error, and a header that
// parses re-renders to one that parses the same.
func FuzzSigV4(f *testing.F) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	secret := "fuzz-secret-access-key"
	body := []byte(`{"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::111122223333:role/app","kmsOperation":"Decrypt","kmsRequestId":"r"},"encryptionAlgorithm":"AES_GCM"}`)
	signed := func() *http.Request {
		r, err := http.NewRequest(http.MethodPost, "https://xks.example/keystores/ks1/kms/xks/v1/keys/xks-demo/decrypt", bytes.NewReader(body))
		if err != nil {
			f.Fatal(err)
		}
		r.Header.Set("Content-Type", "application/json")
		sum := sha256.Sum256(body)
		if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: "AKIDFUZZ", SecretAccessKey: secret}, r, hex.EncodeToString(sum[:]), "xks", "us-east-1", now); err != nil {
			f.Fatal(err)
		}
		return r
	}
	genuine := signed()
	auth, date := genuine.Header.Get("Authorization"), genuine.Header.Get("X-Amz-Date")
	want, err := ParseAuthorization(auth)
	if err != nil {
		f.Fatal(err)
	}
	secretOf := func(id string) ([]byte, bool) { return []byte(secret), id == "AKIDFUZZ" }
	fuzzseed.Add(f, auth, date)
	fuzzseed.Add(f, strings.ReplaceAll(auth, ", ", ","), date)
	fuzzseed.Add(f, strings.Replace(auth, "Signature=", "Signature=00", 1), date)
	fuzzseed.Add(f, auth+", Signature="+strings.Repeat("0", 64), date)
	fuzzseed.Add(f, strings.Replace(auth, "us-east-1", "us-west-2", 1), date)
	fuzzseed.Add(f, strings.Replace(auth, "host;", "", 1), date)
	fuzzseed.Add(f, auth, "20261127T115959Z")
	fuzzseed.Add(f, auth, "20261127T120000+0000")
	fuzzseed.Add(f, "AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request, SignedHeaders=, Signature="+strings.Repeat("ab", 32), date)
	v := &Verifier{Service: "xks"}
	f.Fuzz(func(t *testing.T, h, amzDate string) {
		a, perr := ParseAuthorization(h)
		if perr != nil {
			var e *Error
			if !errors.As(perr, &e) {
				t.Fatalf("parse refusal %v is not the authentication error", perr)
			}
		} else {
			again := Algorithm + " Credential=" + strings.Join([]string{a.AccessKeyID, a.Date, a.Region, a.Service, "aws4_request"}, "/") +
				", SignedHeaders=" + strings.Join(a.SignedHeaders, ";") + ", Signature=" + hex.EncodeToString(a.Signature)
			if a2, err := ParseAuthorization(again); err != nil || !reflect.DeepEqual(a, a2) {
				t.Fatalf("%q re-rendered as %q parses to %+v (%v), not %+v", h, again, a2, err, a)
			}
		}
		r := signed()
		r.Header.Set("Authorization", h)
		r.Header.Set("X-Amz-Date", amzDate)
		_, err := v.Verify(r, body, now, secretOf)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("refusal %v is not the authentication error", err)
			}
			return
		}
		if perr != nil || !reflect.DeepEqual(a, want) || amzDate != date {
			t.Fatalf("verified with Authorization %q and X-Amz-Date %q", h, amzDate)
		}
	})
}
