package awskms

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/sigv4"
)

const (
	contentType = "application/x-amz-json-1.1"
	targetPfx   = "TrentService."
	// maxBody bounds a request body: AWS's largest requests (a 32 KiB
	// key policy, 4 KiB of plaintext with a 4 KiB ciphertext, imported
	// key material) fit with room to spare.
	maxBody = 256 << 10
	// identityTTL is how long a gateway keeps an access key's identity
	// and secret in memory: a key disabled or deleted on another worker
	// stops working here within it (at once on this one).
	identityTTL = 10 * time.Second
	// OpRequest is the operation name of refusals recorded before an
	// AWS request maps onto a keyflow operation.
	OpRequest = "aws.request"
)

// Invoker runs a keyflow operation in process for an authenticated
// caller; rpc.Server.Invoke is the one implementation.
type Invoker interface {
	Invoke(ctx context.Context, c kms.Caller, op string, body []byte) (any, error)
}

// Options wires a Server.
type Options struct {
	KMS     *kms.Service
	Invoker Invoker
	// Region appears in ARNs and is the region clients sign for (any
	// region is accepted in signatures). Default: the deployment's
	// region (kms.Service.Region), so that its ARNs are the ones
	// MultiRegionConfiguration names; us-east-1 for a deployment without
	// one.
	Region string
	Logger *slog.Logger
	// Now is the clock of the SigV4 window; tests set it.
	Now func() time.Time
}

// Server is the AWS KMS API: an http.Handler, and optionally its own
// listener (Listen).
type Server struct {
	kms    *kms.Service
	inv    Invoker
	region string
	log    *slog.Logger
	now    func() time.Time
	sig    sigv4.Verifier

	mu    sync.Mutex
	ids   map[string]cachedIdentity
	httpS *http.Server
}

type cachedIdentity struct {
	id      *kms.AccessKeyIdentity
	expires time.Time
}

// New returns a Server.
func New(o Options) (*Server, error) {
	if o.KMS == nil || o.Invoker == nil {
		return nil, errors.New("awskms: KMS and Invoker are required")
	}
	if o.Region == "" {
		o.Region = o.KMS.Region() // a multi-region deployment's ARNs name its region
	}
	if o.Region == "" {
		o.Region = "us-east-1"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Server{kms: o.KMS, inv: o.Invoker, region: o.Region, log: o.Logger, now: o.Now,
		sig: sigv4.Verifier{Service: "kms", Window: sigv4.DefaultWindow}, ids: map[string]cachedIdentity{}}
	o.KMS.WatchAccessKeys(s)
	return s, nil
}

// Region is the region of the server's ARNs.
func (s *Server) Region() string { return s.region }

// ForgetAccessKey drops a cached access key (kms.AccessKeyWatcher).
func (s *Server) ForgetAccessKey(id string) {
	s.mu.Lock()
	if c, ok := s.ids[id]; ok {
		clear(c.id.Secret)
		delete(s.ids, id)
	}
	s.mu.Unlock()
}

// identity returns the identity of an access key, from the cache when it
// is fresh. An unknown key is (nil, nil).
func (s *Server) identity(ctx context.Context, id string) (*kms.AccessKeyIdentity, error) {
	now := s.now()
	s.mu.Lock()
	c, ok := s.ids[id]
	s.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.id, nil
	}
	ident, err := s.kms.AccessKeyIdentity(ctx, id)
	if kms.CodeOf(err) == kms.CodeNotFound {
		s.ForgetAccessKey(id)
		return nil, nil
	}
	if err != nil {
		s.ForgetAccessKey(id)
		return nil, err
	}
	s.mu.Lock()
	if len(s.ids) >= 4096 {
		s.ids = map[string]cachedIdentity{} // crude bound; the working set is small
	}
	s.ids[id] = cachedIdentity{id: ident, expires: now.Add(identityTTL)}
	s.mu.Unlock()
	return ident, nil
}

// awsError is an error as AWS names it.
type awsError struct {
	status int
	name   string
	msg    string
	// audited is true when the domain has already recorded the refusal
	// (an error it returned, renamed); the gateway records the others.
	audited bool
}

func (e *awsError) Error() string { return e.name + ": " + e.msg }

func clientError(name, format string, args ...any) *awsError {
	return &awsError{status: http.StatusBadRequest, name: name, msg: fmt.Sprintf(format, args...)}
}

// errorFor maps a keyflow error to AWS KMS's exception names.
func errorFor(err error) *awsError {
	var ae *awsError
	if errors.As(err, &ae) {
		return ae
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &awsError{status: http.StatusInternalServerError, name: "DependencyTimeoutException", msg: "the request timed out", audited: true}
	}
	code := kms.CodeOf(err)
	e := &awsError{status: http.StatusBadRequest, name: string(code), msg: kms.PublicMessage(err), audited: true}
	switch code {
	case kms.CodeInternal, kms.CodeAuditUnavailable, "":
		e.status, e.name = http.StatusInternalServerError, "KMSInternalException"
	case kms.CodeDependencyTimeout:
		e.status = http.StatusInternalServerError
	}
	return e
}

func (s *Server) writeError(w http.ResponseWriter, err error) {
	e := errorFor(err)
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("X-Amzn-ErrorType", e.name)
	w.WriteHeader(e.status)
	b, _ := json.Marshal(map[string]string{"__type": e.name, "message": e.msg})
	_, _ = w.Write(b)
}

// authError maps a SigV4 failure to AWS's exception.
func authError(err error) *awsError {
	var se *sigv4.Error
	if !errors.As(err, &se) {
		return clientError("UnrecognizedClientException", "The security token included in the request is invalid.")
	}
	switch se.Kind {
	case sigv4.Missing:
		return clientError("MissingAuthenticationTokenException", "Request is missing Authentication Token")
	case sigv4.Malformed:
		return clientError("IncompleteSignatureException", "The request signature is malformed or incomplete: %s", se.Reason)
	case sigv4.Expired:
		return clientError("InvalidSignatureException", "Signature expired: the request's X-Amz-Date is outside the 5 minute window of the server's clock")
	case sigv4.UnknownKey:
		return clientError("UnrecognizedClientException", "The security token included in the request is invalid.")
	default:
		return clientError("InvalidSignatureException", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")
	}
}

// ServeHTTP answers one AWS KMS API request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := uuid.NewString()
	// Header keys in canonical form already: set without re-canonicalising.
	w.Header()[hdrRequestID] = []string{reqID}
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		s.writeError(w, &awsError{status: http.StatusNotFound, name: "UnknownOperationException", msg: "the AWS KMS API is POST / with X-Amz-Target: TrentService.<Operation>"})
		return
	}
	ctx := r.Context()
	c := kms.Caller{Tenant: "-", RequestID: reqID}
	target := r.Header.Get("X-Amz-Target")
	opName, known := strings.CutPrefix(target, targetPfx)
	body, err := readBody(r)
	if err != nil || len(body) > maxBody {
		s.writeError(w, s.reject(ctx, c, opName, clientError("ValidationException", "the request body is unreadable or larger than %d bytes", maxBody)))
		return
	}

	// Authenticate first: an unauthenticated caller learns nothing, not
	// even which operations exist.
	var ident *kms.AccessKeyIdentity
	var lookupErr error
	auth, err := s.sig.Verify(r, body, s.now(), func(id string) ([]byte, bool) {
		ident, lookupErr = s.identity(ctx, id)
		if ident == nil {
			return nil, false
		}
		return ident.Secret, true
	})
	if err != nil {
		if ident != nil {
			c.Tenant, c.Principal = ident.Tenant, ident.Principal
		}
		var ae *awsError
		switch {
		case lookupErr != nil && errors.Is(lookupErr, kms.ErrAccessKeyDisabled):
			ae = clientError("UnrecognizedClientException", "The security token included in the request is invalid.")
		case lookupErr != nil:
			ae = errorFor(lookupErr)
		default:
			ae = authError(err)
		}
		s.log.Info("AWS KMS API request failed authentication", "accessKeyId", auth.AccessKeyID, "reason", err.Error())
		s.writeError(w, s.reject(ctx, c, opName, &awsError{status: ae.status, name: ae.name, msg: ae.msg + " (access key " + truncate(auth.AccessKeyID, 32) + ")"}))
		return
	}
	c.Tenant, c.Principal, c.Roles = ident.Tenant, ident.Principal, ident.Roles

	op, ok := operations[opName]
	switch {
	case !known || !ok && !unsupported[opName]:
		s.writeError(w, s.reject(ctx, c, opName, clientError("UnknownOperationException", "unknown operation %q", truncate(target, 64))))
		return
	case !ok:
		s.writeError(w, s.reject(ctx, c, opName, clientError("UnsupportedOperationException", "keyflow does not support the AWS KMS operation %s (see docs/aws-api.md)", opName)))
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, contentType) {
		s.writeError(w, s.reject(ctx, c, opName, clientError("ValidationException", "Content-Type must be %s", contentType)))
		return
	}
	if len(body) == 0 {
		body = []byte("{}")
	}
	out, err := op(s, ctx, c, body)
	if err != nil {
		// The domain recorded its own refusals; the gateway records those
		// it made itself (a malformed AWS request, an unsupported member).
		if e := errorFor(err); !e.audited {
			err = s.reject(ctx, c, opName, e)
		}
		s.writeError(w, err)
		return
	}
	b, err := json.Marshal(out)
	if err != nil {
		s.writeError(w, kms.ErrInternal)
		return
	}
	w.Header()["Content-Type"] = []string{contentType}
	_, _ = w.Write(b)
	clear(b) // it may hold plaintext
}

// hdrRequestID is the canonical key of the request ID header.
var hdrRequestID = http.CanonicalHeaderKey("x-amzn-RequestId")

// readBody reads a request body of at most maxBody+1 bytes, in one
// allocation when the client sent Content-Length (the SDKs do).
func readBody(r *http.Request) ([]byte, error) {
	if n := r.ContentLength; n >= 0 && n <= maxBody {
		body := make([]byte, n)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			return nil, err
		}
		// A body longer than it said is refused like an oversized one.
		var extra [1]byte
		if m, _ := r.Body.Read(extra[:]); m > 0 {
			return nil, errors.New("the body is longer than its Content-Length")
		}
		return body, nil
	}
	return io.ReadAll(io.LimitReader(r.Body, maxBody+1))
}

// reject records a request refused before it reached a keyflow
// operation, and returns the AWS error to answer.
func (s *Server) reject(ctx context.Context, c kms.Caller, awsOp string, ae *awsError) error {
	_ = s.kms.Reject(ctx, c, OpRequest, &kms.Error{Code: kms.Code(ae.name), Message: truncate(awsOp, 64) + ": " + ae.msg})
	return ae
}

func truncate(s string, n int) string {
	if len(s) > n {
		return strings.ToValidUTF8(s[:n], "") + "…"
	}
	return strings.ToValidUTF8(s, "")
}

// Listen serves on addr: HTTPS with cert, or plain HTTP when cert is nil,
// which only a loopback address may do (development). It returns the
// bound address.
func (s *Server) Listen(addr string, cert *tls.Certificate) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on %s: %w", addr, err)
	}
	if cert == nil {
		tcp, _ := ln.Addr().(*net.TCPAddr)
		if tcp == nil || !tcp.IP.IsLoopback() {
			_ = ln.Close()
			return nil, fmt.Errorf("awskms: plain HTTP is only allowed on a loopback address, not %s; give a certificate", addr)
		}
	}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second}
	if cert != nil {
		hs.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*cert}}
		ln = tls.NewListener(ln, hs.TLSConfig)
	}
	s.mu.Lock()
	s.httpS = hs
	s.mu.Unlock()
	go func() { _ = hs.Serve(ln) }()
	return ln.Addr(), nil
}

// Close stops the listener.
func (s *Server) Close() error {
	s.mu.Lock()
	hs := s.httpS
	s.mu.Unlock()
	if hs == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return hs.Shutdown(ctx)
}
