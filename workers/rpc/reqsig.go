package rpc

import (
	"crypto/ed25519"
	"errors"
	"hash/maphash"
	"sync"
	"time"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/natsauth"
)

// Request signatures on the NATS transport (client/api: RequestSigner).
//
// The server stamps Nats-Request-Info only where a request crosses a
// tenant's service import. Inside keyflow's own account nothing stamps or
// strips it, so a full keyflow-account credential could name any tenant,
// principal and roles. The worker therefore also wants proof from the
// caller: each request is signed by the user key the header names, and
// that key must be one keyflow issued to that principal with those roles.
// In-process callers (the AWS, KMIP and XKS gateways, Server.Invoke) have
// authenticated their caller themselves and do not come through here.

// Refusal codes of request signatures, AWS SigV4's names: stable, and
// recorded as the errorcode of io.keyflow.request.rejected.v1, where
// audit verify finds them (events/chain: forged-request, unsigned-request).
const (
	CodeMissingSignature    kms.Code = "MissingAuthenticationTokenException"
	CodeIncompleteSignature kms.Code = "IncompleteSignatureException"
	CodeInvalidSignature    kms.Code = "InvalidSignatureException"
	CodeUnrecognizedClient  kms.Code = "UnrecognizedClientException"
)

const signHelp = " Requests must be signed with the principal's own user key (the seed in its creds file): " +
	"the keyflow Go client and CLI do it when given the creds (client.Options.CredsFile or Creds); see docs/security-model.md."

// signatureError maps a verification failure to the refusal.
func signatureError(err error) *kms.Error {
	switch {
	case errors.Is(err, api.ErrSignatureMissing):
		return &kms.Error{Code: CodeMissingSignature, Message: "the request is not signed." + signHelp}
	case errors.Is(err, api.ErrSignatureMalformed):
		return &kms.Error{Code: CodeIncompleteSignature, Message: "the request's signature headers (" + api.HeaderDate + ", " + api.HeaderNonce + ", " + api.HeaderSignature + ") are malformed." + signHelp}
	case errors.Is(err, api.ErrSignatureExpired):
		return &kms.Error{Code: CodeInvalidSignature, Message: "signature expired: the request's signing time is more than " + api.RequestSignatureWindow.String() + " from the worker's clock (check the client's clock)"}
	case errors.Is(err, errReplayed):
		return &kms.Error{Code: CodeInvalidSignature, Message: "the request's nonce was already used: a signed request is accepted once"}
	}
	return &kms.Error{Code: CodeInvalidSignature, Message: "the request's signature does not verify with the caller's user key." + signHelp}
}

var errReplayed = errors.New("replayed nonce")

// requestVerifier checks request signatures. It keeps the decoded public
// keys of recent callers (public, so nothing secret is cached) and the
// nonces seen within the signature window.
type requestVerifier struct {
	now    func() time.Time
	keys   sync.Map // user public NKEY → ed25519.PublicKey
	nKeys  int      // approximate size of keys, bounded
	keysMu sync.Mutex
	nonces nonceSet
}

func newRequestVerifier() *requestVerifier {
	v := &requestVerifier{now: time.Now}
	v.nonces.init(2 * api.RequestSignatureWindow)
	return v
}

// maxCachedKeys bounds the decoded-key cache; past it, it starts over.
const maxCachedKeys = 1 << 16

func (v *requestVerifier) key(user string) (ed25519.PublicKey, error) {
	if k, ok := v.keys.Load(user); ok {
		return k.(ed25519.PublicKey), nil
	}
	k, err := api.ParseUserKey(user)
	if err != nil {
		return nil, err
	}
	v.keysMu.Lock()
	if v.nKeys >= maxCachedKeys {
		v.keys.Clear()
		v.nKeys = 0
	}
	v.nKeys++
	v.keysMu.Unlock()
	v.keys.Store(user, k)
	return k, nil
}

// check verifies one request: the headers' signature by ri.User, issued
// by keyflow to the caller, and a nonce not seen before.
func (s *Server) checkSignature(hdr func(string) string, subject string, body []byte, ri natsauth.RequestInfo, tenant string) error {
	v := s.sigs
	r := api.SignedRequest{Subject: subject, RequestID: hdr(api.HeaderRequestID), Date: hdr(api.HeaderDate), Nonce: hdr(api.HeaderNonce), Body: body}
	// Who the header says this is must be someone keyflow issued: a
	// genuine header (stamped by the server on a tenant's import) always
	// is, so a mismatch is someone writing the header by hand.
	if ri.NameTag == "" || !s.cfg.Tenants.IssuedUser(tenant, ri.NameTag, ri.User, ri.Roles()) {
		return &kms.Error{Code: CodeUnrecognizedClient, Message: "the caller's user key, principal and roles are not ones keyflow issued to this tenant"}
	}
	key, err := v.key(ri.User)
	if err != nil {
		return signatureError(err)
	}
	now := v.now()
	_, err = api.VerifyRequestSignature(key, r, hdr(api.HeaderSignature), now)
	if err != nil {
		return signatureError(err)
	}
	if !v.nonces.add(ri.User+"\x00"+r.Nonce, now) {
		return signatureError(errReplayed)
	}
	return nil
}

// nonceSet remembers the nonces of accepted requests for at least span (a
// request older than the window is refused by its date anyway). It keeps
// two generations of 64-bit keyed hashes, each covering span: about 10
// bytes per request, so a worker serving 3,000 requests a second holds
// about 36 MB at most. A hash collision refuses a genuine request
// (probability about n²/2⁶⁴); the client retries with a new nonce.
type nonceSet struct {
	mu        sync.Mutex
	seed      maphash.Seed
	span      time.Duration
	cur, prev map[uint64]struct{}
	started   time.Time // of cur
}

func (n *nonceSet) init(span time.Duration) {
	n.seed = maphash.MakeSeed()
	n.span = span
	n.cur, n.prev = map[uint64]struct{}{}, map[uint64]struct{}{}
}

// add records a nonce; false if it was seen already.
func (n *nonceSet) add(nonce string, now time.Time) bool {
	h := maphash.String(n.seed, nonce)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.started.IsZero() {
		n.started = now
	}
	if now.Sub(n.started) >= n.span {
		n.prev, n.cur, n.started = n.cur, map[uint64]struct{}{}, now
	}
	if _, ok := n.cur[h]; ok {
		return false
	}
	if _, ok := n.prev[h]; ok {
		return false
	}
	n.cur[h] = struct{}{}
	return true
}
