package api

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nkeys"
	"github.com/nats-io/nuid"
)

// Request signatures.
//
// Every request a principal sends over NATS is signed with its own user
// key (the NKEY seed in its creds file, which only the principal holds):
// Ed25519 over a canonical string that binds the subject (tenant and
// operation), the request ID, a timestamp, a nonce and the SHA-256 of the
// body. The worker checks the signature against the user public key that
// the NATS server stamped into Nats-Request-Info, checks that keyflow
// issued that key to that tenant's principal with those roles, refuses a
// timestamp outside RequestSignatureWindow and a nonce it has already
// seen. Someone who can publish inside keyflow's own NATS account (and so
// write a Nats-Request-Info header of its own) cannot sign for a key it
// does not hold, so it cannot act as a tenant.
const (
	// HeaderDate is the signing time, Unix milliseconds in decimal.
	HeaderDate = "Kf-Date"
	// HeaderNonce is a value the client never reuses (a NUID).
	HeaderNonce = "Kf-Nonce"
	// HeaderSignature is the Ed25519 signature of the canonical string,
	// standard base64.
	HeaderSignature = "Kf-Signature"

	// RequestSignatureAlgorithm opens the canonical string.
	RequestSignatureAlgorithm = "KF1-ED25519"
	// RequestSignatureWindow is how far a request's time may be from the
	// worker's clock, either way (as AWS SigV4's five minutes).
	RequestSignatureWindow = 5 * time.Minute
)

// SignedRequest is what a request signature covers.
type SignedRequest struct {
	Subject   string
	RequestID string
	Date      string // HeaderDate
	Nonce     string // HeaderNonce
	Body      []byte
}

// CanonicalString is the string a request signature signs:
//
//	KF1-ED25519 \n subject \n request ID \n date \n nonce \n hex(SHA-256(body))
//
// No field may hold a newline (NATS subjects and header values cannot).
func (r SignedRequest) CanonicalString() []byte {
	sum := sha256.Sum256(r.Body)
	var b strings.Builder
	b.Grow(len(RequestSignatureAlgorithm) + len(r.Subject) + len(r.RequestID) + len(r.Date) + len(r.Nonce) + 2*len(sum) + 5)
	for _, f := range []string{RequestSignatureAlgorithm, r.Subject, r.RequestID, r.Date, r.Nonce} {
		b.WriteString(f)
		b.WriteByte('\n')
	}
	b.WriteString(hex.EncodeToString(sum[:]))
	return []byte(b.String())
}

// RequestSigner signs requests with a principal's user key. It is safe for
// concurrent use.
type RequestSigner struct {
	key    ed25519.PrivateKey
	public string // the user's public NKEY (U...)
}

// NewRequestSigner returns a signer for a user NKEY seed (SU...).
func NewRequestSigner(seed []byte) (*RequestSigner, error) {
	prefix, raw, err := nkeys.DecodeSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("failed to read the user seed: %w", err)
	}
	defer clear(raw)
	if prefix != nkeys.PrefixByteUser || len(raw) != ed25519.SeedSize {
		return nil, errors.New("the creds hold no user seed (SU...)")
	}
	key := ed25519.NewKeyFromSeed(raw)
	pub, err := nkeys.Encode(nkeys.PrefixByteUser, key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("failed to encode the user public key: %w", err)
	}
	return &RequestSigner{key: key, public: string(pub)}, nil
}

// PublicKey is the user's public NKEY.
func (s *RequestSigner) PublicKey() string { return s.public }

// Sign signs a request sent now and returns the headers to send with it
// (HeaderDate, HeaderNonce, HeaderSignature).
func (s *RequestSigner) Sign(subject, requestID string, body []byte, now time.Time) map[string]string {
	r := SignedRequest{Subject: subject, RequestID: requestID, Date: strconv.FormatInt(now.UnixMilli(), 10), Nonce: nuid.Next(), Body: body}
	sig := ed25519.Sign(s.key, r.CanonicalString())
	return map[string]string{HeaderDate: r.Date, HeaderNonce: r.Nonce, HeaderSignature: base64.StdEncoding.EncodeToString(sig)}
}

// Errors of VerifyRequestSignature, each a reason a request is refused.
var (
	ErrSignatureMissing   = errors.New("the request is not signed")
	ErrSignatureMalformed = errors.New("the request's signature headers are malformed")
	ErrSignatureExpired   = errors.New("the request's signing time is outside the allowed window")
	ErrSignatureInvalid   = errors.New("the request's signature does not verify with the caller's key")
)

// ParseUserKey decodes a user public NKEY (U...) for VerifyRequestSignature.
func ParseUserKey(user string) (ed25519.PublicKey, error) {
	raw, err := nkeys.Decode(nkeys.PrefixByteUser, []byte(user))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("not a user public key: %w", ErrSignatureMalformed)
	}
	return ed25519.PublicKey(raw), nil
}

// VerifyRequestSignature checks a request's signature (sig, standard
// base64) with the user's key, and that its date is within
// RequestSignatureWindow of now. It returns the signing time. It does not
// check the nonce for replays: that needs the verifier's memory.
func VerifyRequestSignature(key ed25519.PublicKey, r SignedRequest, sig string, now time.Time) (time.Time, error) {
	if r.Date == "" && r.Nonce == "" && sig == "" {
		return time.Time{}, ErrSignatureMissing
	}
	ms, err := strconv.ParseInt(r.Date, 10, 64)
	if err != nil || r.Nonce == "" || len(r.Nonce) > 64 || strings.ContainsAny(r.Subject+r.RequestID+r.Nonce, "\n") {
		return time.Time{}, ErrSignatureMalformed
	}
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || len(raw) != ed25519.SignatureSize {
		return time.Time{}, ErrSignatureMalformed
	}
	at := time.UnixMilli(ms)
	if d := now.Sub(at); d > RequestSignatureWindow || d < -RequestSignatureWindow {
		return at, ErrSignatureExpired
	}
	if !ed25519.Verify(key, r.CanonicalString(), raw) {
		return at, ErrSignatureInvalid
	}
	return at, nil
}
