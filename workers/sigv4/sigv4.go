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
	"hash"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"
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
	for part := range strings.SplitSeq(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fail(Malformed, "malformed Authorization header")
		}
		switch k {
		case "Credential":
			var f [5]string
			n := 0
			for field := range strings.SplitSeq(v, "/") {
				if n < len(f) {
					f[n] = field
				}
				n++
			}
			if n != 5 || f[4] != "aws4_request" {
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
	var hasHost, hasDate bool
	for _, h := range a.SignedHeaders {
		hasHost = hasHost || h == "host"
		hasDate = hasDate || h == "x-amz-date"
	}
	if !hasHost || !hasDate || !sort.StringsAreSorted(a.SignedHeaders) {
		return a, fail(Malformed, "SignedHeaders must be sorted and include host and x-amz-date")
	}
	var payloadHex [2 * sha256.Size]byte
	payloadHash := sha256.Sum256(body)
	hex.Encode(payloadHex[:], payloadHash[:])
	if claimed := r.Header.Get("X-Amz-Content-Sha256"); claimed != "" && claimed != string(payloadHex[:]) {
		return a, fail(Mismatch, "X-Amz-Content-Sha256 does not match the body")
	}

	// The canonical request, written straight into its hash.
	st := statePool.Get().(*state)
	defer statePool.Put(st)
	st.buf = st.buf[:0]
	c := st.buf
	c = append(c, r.Method...)
	c = append(c, '\n')
	c = append(c, canonicalURI(r)...)
	c = append(c, '\n')
	if r.URL.RawQuery != "" {
		c = append(c, r.URL.Query().Encode()...) // sorted; empty for both APIs
	}
	c = append(c, '\n')
	for _, h := range a.SignedHeaders {
		c = append(c, h...)
		c = append(c, ':')
		switch {
		case h == "host":
			c = append(c, r.Host...)
		case h == "content-length" && r.Header.Get("Content-Length") == "" && r.ContentLength >= 0:
			// Go keeps the length out of the header map on some paths
			// (HTTP/2, requests built in process).
			c = strconv.AppendInt(c, r.ContentLength, 10)
		default:
			vals := r.Header[canonicalKey(h)]
			if len(vals) == 0 {
				st.buf = c
				return a, fail(Malformed, "signed header %q is missing", h)
			}
			for i, v := range vals {
				if i > 0 {
					c = append(c, ',')
				}
				c = appendTrimmed(c, v)
			}
		}
		c = append(c, '\n')
	}
	c = append(c, '\n')
	for i, h := range a.SignedHeaders {
		if i > 0 {
			c = append(c, ';')
		}
		c = append(c, h...)
	}
	c = append(c, '\n')
	c = append(c, payloadHex[:]...)
	canonHash := sha256.Sum256(c)

	// The string to sign.
	c = c[:0]
	c = append(c, Algorithm+"\n"...)
	c = append(c, amzDate...)
	c = append(c, '\n')
	c = append(c, a.Date...)
	c = append(c, '/')
	c = append(c, a.Region...)
	c = append(c, '/')
	c = append(c, a.Service...)
	c = append(c, "/aws4_request\n"...)
	c = hex.AppendEncode(c, canonHash[:])
	st.buf = c

	secret, ok := secretOf(a.AccessKeyID)
	if !ok {
		// The same work with a throwaway secret: an unknown access key
		// ID takes as long to refuse as a wrong signature.
		secret = []byte("keyflow-unknown-access-key-id")
	}
	want := v.keys.signingKey(secret, a.Date, a.Region, a.Service).sum(c, st.sum[:0])
	match := hmac.Equal(want, a.Signature)
	if !ok {
		return a, fail(UnknownKey, "unknown access key ID")
	}
	if !match {
		return a, fail(Mismatch, "signature mismatch")
	}
	return a, nil
}

// canonicalKeys remembers the canonical form (net/http's header map key)
// of signed header names, which arrive in lower case, so that a request
// does not allocate it again. It is bounded: names are the caller's.
var canonicalKeys struct {
	sync.RWMutex
	m map[string]string
}

func canonicalKey(h string) string {
	canonicalKeys.RLock()
	k, ok := canonicalKeys.m[h]
	canonicalKeys.RUnlock()
	if ok {
		return k
	}
	k = http.CanonicalHeaderKey(h)
	canonicalKeys.Lock()
	if canonicalKeys.m == nil {
		canonicalKeys.m = map[string]string{}
	}
	if len(canonicalKeys.m) < 256 {
		canonicalKeys.m[strings.Clone(h)] = k
	}
	canonicalKeys.Unlock()
	return k
}

// state is one verification's scratch space, reused across requests.
type state struct {
	buf []byte
	sum [sha256.Size]byte
}

var statePool = sync.Pool{New: func() any { return &state{buf: make([]byte, 0, 1024)} }}

// appendTrimmed appends a header value as SigV4 canonicalises it:
// leading and trailing spaces removed, inner runs of spaces one space
// (strings.Join(strings.Fields(v), " ")).
func appendTrimmed(c []byte, v string) []byte {
	space := false
	start := len(c)
	for i := 0; i < len(v); i++ {
		b := v[i]
		if b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\v' || b == '\f' {
			space = true
			continue
		}
		if b >= 0x80 { // non-ASCII (Unicode spaces): the exact rule
			return append(c[:start], strings.Join(strings.Fields(v), " ")...)
		}
		if space && len(c) > start {
			c = append(c, ' ')
		}
		space = false
		c = append(c, b)
	}
	return c
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
// request. Each cached key keeps its HMAC states for reuse. The cache is
// bounded.
type signingKeys struct {
	mu sync.Mutex
	m  map[[4]string]*signingKey
}

// signingKey is a derived key and a pool of HMAC-SHA256 states keyed
// with it.
type signingKey struct {
	macs sync.Pool // hash.Hash
}

func (k *signingKey) sum(data, out []byte) []byte {
	m := k.macs.Get().(hash.Hash)
	m.Reset()
	m.Write(data)
	out = m.Sum(out)
	k.macs.Put(m)
	return out
}

func (c *signingKeys) signingKey(secret []byte, date, region, service string) *signingKey {
	// The lookup does not keep the key, so it need not copy the secret.
	id := [4]string{unsafe.String(unsafe.SliceData(secret), len(secret)), date, region, service}
	c.mu.Lock()
	k, ok := c.m[id]
	c.mu.Unlock()
	if ok {
		return k
	}
	d := hmacSHA256([]byte("AWS4"+string(secret)), date)
	d = hmacSHA256(d, region)
	d = hmacSHA256(d, service)
	d = hmacSHA256(d, "aws4_request")
	k = &signingKey{}
	k.macs.New = func() any { return hmac.New(sha256.New, d) }
	id[0] = string(secret) // a copy, for the map to keep
	c.mu.Lock()
	if c.m == nil || len(c.m) >= 1024 {
		c.m = map[[4]string]*signingKey{} // crude bound; a day's working set is a few keys
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
