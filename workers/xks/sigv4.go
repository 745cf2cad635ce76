package xks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// SigV4 verification as the XKS spec's Appendix A describes it: the
// service is kms-xks-proxy, the region is whatever AWS KMS signed with
// (the region it calls from), and the signed headers include host and
// x-amz-date. The proxy recomputes the signature with the secret that the
// access key ID names and compares in constant time.

const (
	sigV4Algorithm = "AWS4-HMAC-SHA256"
	sigV4Service   = "kms-xks-proxy"
	amzDateFormat  = "20060102T150405Z"
)

// errAuth is every authentication failure; the reason is only for the
// server-side log, and the caller learns nothing of which check failed.
type errAuth struct{ reason string }

func (e *errAuth) Error() string { return "authentication failed: " + e.reason }

func authFail(format string, args ...any) error { return &errAuth{fmt.Sprintf(format, args...)} }

// sigV4Auth is what an Authorization header claims.
type sigV4Auth struct {
	accessKeyID, date, region, service string
	signedHeaders                      []string
	signature                          []byte
}

// parseAuthorization reads
// "AWS4-HMAC-SHA256 Credential=AKID/20221009/us-east-1/kms-xks-proxy/aws4_request, SignedHeaders=host;x-amz-date, Signature=hex".
func parseAuthorization(h string) (*sigV4Auth, error) {
	rest, ok := strings.CutPrefix(h, sigV4Algorithm+" ")
	if !ok {
		return nil, authFail("the Authorization header is not %s", sigV4Algorithm)
	}
	var a sigV4Auth
	var haveCred, haveSigned, haveSig bool
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, authFail("malformed Authorization header")
		}
		switch k {
		case "Credential":
			f := strings.Split(v, "/")
			if len(f) != 5 || f[4] != "aws4_request" {
				return nil, authFail("malformed credential scope")
			}
			a.accessKeyID, a.date, a.region, a.service = f[0], f[1], f[2], f[3]
			haveCred = true
		case "SignedHeaders":
			a.signedHeaders = strings.Split(v, ";")
			haveSigned = true
		case "Signature":
			sig, err := hex.DecodeString(v)
			if err != nil || len(sig) != sha256.Size {
				return nil, authFail("malformed signature")
			}
			a.signature = sig
			haveSig = true
		}
	}
	if !haveCred || !haveSigned || !haveSig {
		return nil, authFail("the Authorization header lacks Credential, SignedHeaders or Signature")
	}
	return &a, nil
}

// verifySigV4 authenticates r (whose body has been read into body) and
// returns the access key ID. secretOf returns the secret of an access key
// ID, or false.
func verifySigV4(r *http.Request, body []byte, now time.Time, skew time.Duration, keys *signingKeys, secretOf func(string) ([]byte, bool)) (string, error) {
	a, err := parseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		return "", err
	}
	if a.service != sigV4Service {
		return a.accessKeyID, authFail("signed for service %q, not %s", a.service, sigV4Service)
	}
	if a.region == "" {
		return a.accessKeyID, authFail("the credential scope has no region")
	}
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse(amzDateFormat, amzDate)
	if err != nil {
		return a.accessKeyID, authFail("missing or malformed X-Amz-Date")
	}
	if d := now.Sub(t); d > skew || d < -skew {
		return a.accessKeyID, authFail("X-Amz-Date is %s away from the proxy's clock (window %s)", d.Round(time.Second), skew)
	}
	if a.date != amzDate[:8] {
		return a.accessKeyID, authFail("the credential scope date does not match X-Amz-Date")
	}
	signed := map[string]bool{}
	for _, h := range a.signedHeaders {
		signed[h] = true
	}
	if !signed["host"] || !signed["x-amz-date"] || !sort.StringsAreSorted(a.signedHeaders) {
		return a.accessKeyID, authFail("SignedHeaders must be sorted and include host and x-amz-date")
	}
	payloadHash := sha256.Sum256(body)
	payloadHex := hex.EncodeToString(payloadHash[:])
	if claimed := r.Header.Get("X-Amz-Content-Sha256"); claimed != "" && claimed != payloadHex {
		return a.accessKeyID, authFail("X-Amz-Content-Sha256 does not match the body")
	}

	var canon strings.Builder
	canon.WriteString(r.Method + "\n")
	canon.WriteString(canonicalURI(r) + "\n")
	canon.WriteString(r.URL.Query().Encode() + "\n") // sorted; empty for XKS
	for _, h := range a.signedHeaders {
		var v string
		if h == "host" {
			v = r.Host
		} else {
			vals := r.Header.Values(h)
			if len(vals) == 0 {
				return a.accessKeyID, authFail("signed header %q is missing", h)
			}
			for i := range vals {
				vals[i] = strings.Join(strings.Fields(vals[i]), " ")
			}
			v = strings.Join(vals, ",")
		}
		canon.WriteString(h + ":" + v + "\n")
	}
	canon.WriteString("\n" + strings.Join(a.signedHeaders, ";") + "\n" + payloadHex)
	canonHash := sha256.Sum256([]byte(canon.String()))
	scope := a.date + "/" + a.region + "/" + a.service + "/aws4_request"
	toSign := sigV4Algorithm + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(canonHash[:])

	secret, ok := secretOf(a.accessKeyID)
	if !ok {
		// The same work with a throwaway secret: an unknown access key
		// ID takes as long to refuse as a wrong signature.
		secret = []byte("keyflow-unknown-access-key-id")
	}
	want := hmacSHA256(keys.signingKey(secret, a.date, a.region, a.service), toSign)
	if !hmac.Equal(want, a.signature) || !ok {
		return a.accessKeyID, authFail("signature mismatch or unknown access key ID")
	}
	return a.accessKeyID, nil
}

// signingKeys caches derived SigV4 signing keys: a key depends only on the
// secret, the date, the region and the service, so the four HMACs that
// derive it run once a day per credential and region instead of on every
// request. The cache belongs to one configuration (a reload drops it) and
// is bounded.
type signingKeys struct {
	mu sync.Mutex
	m  map[[4]string][]byte
}

func (c *signingKeys) signingKey(secret []byte, date, region, service string) []byte {
	id := [4]string{string(secret), date, region, service}
	c.mu.Lock()
	k, ok := c.m[id]
	c.mu.Unlock()
	if ok {
		return k
	}
	k = hmacSHA256([]byte("AWS4"+string(secret)), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	k = hmacSHA256(k, "aws4_request")
	c.mu.Lock()
	if c.m == nil || len(c.m) >= 256 {
		c.m = map[[4]string][]byte{} // crude bound; a day's working set is a few keys
	}
	c.m[id] = k
	c.mu.Unlock()
	return k
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// canonicalURI is the path as AWS signers canonicalise it for services
// other than S3: each segment URI-encoded once more. The router has
// already refused any path with characters outside A-Za-z0-9/._-, for
// which that encoding is the identity.
func canonicalURI(r *http.Request) string {
	p := r.URL.EscapedPath()
	if p == "" {
		return "/"
	}
	return p
}
