// Package sigv4 verifies AWS Signature Version 4 on incoming HTTP
// requests, for the gateways that speak AWS protocols: the XKS proxy
// (service kms-xks-proxy, workers/xks) and the AWS KMS JSON API (service
// kms, workers/awskms).
//
// A Verifier recomputes the signature with the secret that the access key
// ID names and compares in constant time. It checks the algorithm, the
// credential scope (service, region present, date equal to X-Amz-Date),
// the clock window, that host and x-amz-date are signed, and the payload
// hash. Every failure is an *Error whose Kind says what failed, so a
// gateway can choose how much to tell the caller (the XKS spec: nothing;
// AWS KMS: the exception name); Reason is for the server's log only.
package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// Algorithm is the only signing algorithm accepted.
	Algorithm     = "AWS4-HMAC-SHA256"
	amzDateFormat = "20060102T150405Z"
	// DefaultWindow is how far X-Amz-Date may be from the server's clock,
	// either way: AWS's own five minutes.
	DefaultWindow = 5 * time.Minute
)

// Kind is what an authentication failure was.
type Kind int

const (
	// Missing: no Authorization header at all.
	Missing Kind = iota + 1
	// Malformed: an Authorization header, scope or date that cannot be
	// read, a wrong service, unsigned host or x-amz-date.
	Malformed
	// Expired: X-Amz-Date is outside the window.
	Expired
	// UnknownKey: no secret for the access key ID.
	UnknownKey
	// Mismatch: the signature (or the payload hash) does not match.
	Mismatch
)

// Error is every authentication failure.
type Error struct {
	Kind   Kind
	Reason string // for the server-side log; never echo request content
}

func (e *Error) Error() string { return "authentication failed: " + e.Reason }

func fail(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Reason: fmt.Sprintf(format, args...)}
}

// Auth is what an Authorization header claims.
type Auth struct {
	AccessKeyID, Date, Region, Service string
	SignedHeaders                      []string
	Signature                          []byte
}

// ParseAuthorization reads
// "AWS4-HMAC-SHA256 Credential=AKID/20221009/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date, Signature=hex".
func ParseAuthorization(h string) (*Auth, error) {
	if h == "" {
		return nil, fail(Missing, "no Authorization header")
	}
	rest, ok := strings.CutPrefix(h, Algorithm+" ")
	if !ok {
		return nil, fail(Malformed, "the Authorization header is not %s", Algorithm)
	}
	var a Auth
	var haveCred, haveSigned, haveSig bool
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fail(Malformed, "malformed Authorization header")
		}
		switch k {
		case "Credential":
			f := strings.Split(v, "/")
			if len(f) != 5 || f[4] != "aws4_request" {
				return nil, fail(Malformed, "malformed credential scope")
			}
			a.AccessKeyID, a.Date, a.Region, a.Service = f[0], f[1], f[2], f[3]
			haveCred = true
		case "SignedHeaders":
			a.SignedHeaders = strings.Split(v, ";")
			haveSigned = true
		case "Signature":
			sig, err := hex.DecodeString(v)
			if err != nil || len(sig) != sha256.Size {
				return nil, fail(Malformed, "malformed signature")
			}
			a.Signature = sig
			haveSig = true
		}
	}
	if !haveCred || !haveSigned || !haveSig {
		return nil, fail(Malformed, "the Authorization header lacks Credential, SignedHeaders or Signature")
	}
	return &a, nil
}

// Verifier checks signatures for one service. Its zero value is not
// usable; set Service. It caches derived signing keys and is safe for
// concurrent use.
type Verifier struct {
	Service string
	// Window is the clock window (default DefaultWindow).
	Window time.Duration
	keys   signingKeys
}

// Verify authenticates r, whose body has been read into body, at time
// now, and returns the parsed Authorization (its AccessKeyID also on
// failure, when it could be read). secretOf returns the secret of an
// access key ID, or false.
func (v *Verifier) Verify(r *http.Request, body []byte, now time.Time, secretOf func(accessKeyID string) ([]byte, bool)) (*Auth, error) {
	a, err := ParseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		return &Auth{}, err
	}
	if a.Service != v.Service {
		return a, fail(Malformed, "signed for service %q, not %s", a.Service, v.Service)
	}
	if a.Region == "" {
		return a, fail(Malformed, "the credential scope has no region")
	}
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse(amzDateFormat, amzDate)
	if err != nil {
		return a, fail(Malformed, "missing or malformed X-Amz-Date")
	}
	window := v.Window
	if window == 0 {
		window = DefaultWindow
	}
	if d := now.Sub(t); d > window || d < -window {
		return a, fail(Expired, "X-Amz-Date is %s away from the server's clock (window %s)", d.Round(time.Second), window)
	}
	if a.Date != amzDate[:8] {
		return a, fail(Malformed, "the credential scope date does not match X-Amz-Date")
	}
	signed := map[string]bool{}
	for _, h := range a.SignedHeaders {
		signed[h] = true
	}
	if !signed["host"] || !signed["x-amz-date"] || !sort.StringsAreSorted(a.SignedHeaders) {
		return a, fail(Malformed, "SignedHeaders must be sorted and include host and x-amz-date")
	}
	payloadHash := sha256.Sum256(body)
	payloadHex := hex.EncodeToString(payloadHash[:])
	if claimed := r.Header.Get("X-Amz-Content-Sha256"); claimed != "" && claimed != payloadHex {
		return a, fail(Mismatch, "X-Amz-Content-Sha256 does not match the body")
	}

	var canon strings.Builder
	canon.Grow(256 + 64*len(a.SignedHeaders))
	canon.WriteString(r.Method + "\n")
	canon.WriteString(canonicalURI(r) + "\n")
	canon.WriteString(r.URL.Query().Encode() + "\n") // sorted; empty for both APIs
	for _, h := range a.SignedHeaders {
		var val string
		if h == "host" {
			val = r.Host
		} else if h == "content-length" && r.Header.Get("Content-Length") == "" && r.ContentLength >= 0 {
			// Go keeps the length out of the header map on some paths
			// (HTTP/2, requests built in process).
			val = strconv.FormatInt(r.ContentLength, 10)
		} else {
			vals := r.Header.Values(h)
			if len(vals) == 0 {
				return a, fail(Malformed, "signed header %q is missing", h)
			}
			if len(vals) == 1 {
				val = strings.Join(strings.Fields(vals[0]), " ")
			} else {
				trimmed := make([]string, len(vals))
				for i := range vals {
					trimmed[i] = strings.Join(strings.Fields(vals[i]), " ")
				}
				val = strings.Join(trimmed, ",")
			}
		}
		canon.WriteString(h + ":" + val + "\n")
	}
	canon.WriteString("\n" + strings.Join(a.SignedHeaders, ";") + "\n" + payloadHex)
	canonHash := sha256.Sum256([]byte(canon.String()))
	scope := a.Date + "/" + a.Region + "/" + a.Service + "/aws4_request"
	toSign := Algorithm + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(canonHash[:])

	secret, ok := secretOf(a.AccessKeyID)
	if !ok {
		// The same work with a throwaway secret: an unknown access key
		// ID takes as long to refuse as a wrong signature.
		secret = []byte("keyflow-unknown-access-key-id")
	}
	want := hmacSHA256(v.keys.signingKey(secret, a.Date, a.Region, a.Service), toSign)
	match := hmac.Equal(want, a.Signature)
	if !ok {
		return a, fail(UnknownKey, "unknown access key ID")
	}
	if !match {
		return a, fail(Mismatch, "signature mismatch")
	}
	return a, nil
}

// Reset forgets the cached signing keys (after a credential change).
func (v *Verifier) Reset() {
	v.keys.mu.Lock()
	v.keys.m = nil
	v.keys.mu.Unlock()
}

// signingKeys caches derived SigV4 signing keys: a key depends only on the
// secret, the date, the region and the service, so the four HMACs that
// derive it run once a day per credential and region instead of on every
// request. The cache is bounded.
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
	if c.m == nil || len(c.m) >= 1024 {
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
// other than S3: each segment URI-encoded once more. Both gateways refuse
// paths with characters outside A-Za-z0-9/._- before they get here, and
// for those that encoding is the identity.
func canonicalURI(r *http.Request) string {
	p := r.URL.EscapedPath()
	if p == "" {
		return "/"
	}
	return p
}
