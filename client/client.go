// Package client is the Go client of keyflow's NATS API, for applications
// and for the keyflow CLI.
//
//	c, err := client.Dial(ctx, client.Options{Server: "nats://127.0.0.1:4222", CredsFile: "admin.creds", Tenant: "default"})
//	ct, err := c.Encrypt(ctx, api.EncryptRequest{KeyID: "alias/app", Plaintext: secret})
//
// Every error a call returns for a refused request is an *Error with the
// server's stable code; transport failures are plain wrapped errors.
//
// Each principal receives its replies on its own inbox prefix, which its
// creds name; Dial reads it from CredsFile. An application that brings its
// own connection (Options.Conn) connects with InboxOption(creds).
//
// Every request is signed with the principal's own user key, the seed in
// its creds (api.RequestSigner): keyflow refuses unsigned requests. Dial
// reads the seed from CredsFile; with Options.Conn, pass Options.Creds.
//
// The examples show envelope encryption with a data key
// (Client.GenerateDataKey), signing and verifying (Client.Sign) and handling
// refusals by code (Error). They run against a real stack (SoftHSM,
// nats-server, the services) in `go test ./client/`, which checks their
// output; `go doc -http ./client` renders them.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/keyflow/keyflow/client/api"
)

// Options configure a client.
type Options struct {
	Server    string // NATS URL
	CredsFile string // the principal's creds file
	// Tenant is the tenant the creds belong to (see TenantFromCreds);
	// default "default".
	Tenant  string
	Timeout time.Duration // per request; default 30s
	Name    string        // connection name
	Conn    *nats.Conn    // use an existing connection instead of dialling
	// Creds are the creds file's contents, for a client given a Conn:
	// every request is signed with the user key they hold (see
	// api.RequestSigner), and keyflow refuses unsigned requests. Dial
	// reads them from CredsFile otherwise.
	Creds []byte
}

// Client calls keyflow over NATS.
type Client struct {
	nc      *nats.Conn
	own     bool
	tenant  string
	timeout time.Duration
	signer  *api.RequestSigner // nil: requests go unsigned (and are refused)
}

// Error is a refusal from keyflow: a stable code and a message.
type Error struct {
	Code      string
	Message   string
	RequestID string
	// ApprovalID is set on PendingApprovalException (the request waits
	// for approval), RetryAfter on ThrottlingException.
	ApprovalID string
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// ErrNoService is returned when no keyflow worker answers.
var ErrNoService = errors.New("no keyflow service is answering (is `keyflow dev` running, and are the creds for this tenant?)")

// Dial connects to keyflow.
func Dial(ctx context.Context, o Options) (*Client, error) {
	if o.Tenant == "" {
		o.Tenant = "default"
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	c := &Client{nc: o.Conn, tenant: o.Tenant, timeout: o.Timeout}
	creds := o.Creds
	if creds == nil && o.CredsFile != "" {
		b, err := os.ReadFile(o.CredsFile)
		if err != nil {
			return nil, fmt.Errorf("failed to read creds file: %w", err)
		}
		creds = b
	}
	if creds != nil {
		s, err := SignerFromCreds(creds)
		if err != nil {
			return nil, err
		}
		c.signer = s
	}
	if c.nc != nil {
		return c, nil
	}
	opts := []nats.Option{nats.Name(o.Name), nats.Timeout(5 * time.Second)}
	if o.CredsFile != "" {
		inbox, err := InboxOption(creds)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(o.CredsFile), inbox)
	}
	nc, err := nats.Connect(o.Server, opts...)
	if ce := credsRefused(err); ce != nil {
		return nil, ce
	}
	if err != nil {
		return nil, fmt.Errorf("failed to connect to %s: %w", o.Server, err)
	}
	c.nc, c.own = nc, true
	return c, nil
}

// TenantFromCreds reads the tenant keyflow wrote into a creds file's user
// JWT (the "keyflow_tenant" tag), so the CLI needs no --tenant flag.
func TenantFromCreds(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("failed to read creds file: %w", err)
	}
	tok, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return "", fmt.Errorf("failed to parse creds file: %w", err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return "", fmt.Errorf("failed to parse creds file: %w", err)
	}
	for _, t := range uc.Tags {
		if v, ok := cutPrefix(t, "keyflow_tenant:"); ok {
			return v, nil
		}
	}
	return "", errors.New("the creds file does not name a keyflow tenant")
}

// ErrSharedInbox refuses creds issued before per-user reply inboxes.
var ErrSharedInbox = &Error{Code: "AccessDeniedException", Message: "these creds allow the shared reply inbox _INBOX.>, " +
	"through which any principal of the tenant could read other principals' replies; they were issued by an older keyflow " +
	"and the server revokes them. Reissue: for the dev stack's admin.creds, restart `keyflow dev` (it writes new ones); " +
	"for any other principal, a tenant admin runs `keyflow principal disable NAME` and `keyflow principal create NEWNAME --role ...`"}

// InboxOption reads the reply inbox prefix from a creds file's user JWT:
// keyflow confines each principal to _INBOX_<its public key>.>, and the
// connection must use that prefix (nats.CustomInboxPrefix) or its
// replies are refused. Creds without it are refused with ErrSharedInbox.
func InboxOption(creds []byte) (nats.Option, error) {
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return nil, fmt.Errorf("failed to parse creds file: %w", err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return nil, fmt.Errorf("failed to parse creds file: %w", err)
	}
	prefix := "_INBOX_" + uc.Subject
	for _, s := range uc.Sub.Allow {
		switch s {
		case prefix + ".>":
			return nats.CustomInboxPrefix(prefix), nil
		case "_INBOX.>":
			return nil, ErrSharedInbox
		}
	}
	// A user without an allow list (a keyflow-account user) keeps the
	// default inbox.
	return func(*nats.Options) error { return nil }, nil
}

// SignerFromCreds returns the request signer of a creds file: the user's
// NKEY seed, which signs every request (api.RequestSigner).
func SignerFromCreds(creds []byte) (*api.RequestSigner, error) {
	kp, err := jwt.ParseDecoratedNKey(creds)
	if err != nil {
		return nil, fmt.Errorf("failed to parse creds file: %w", err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("failed to parse creds file: %w", err)
	}
	defer clear(seed)
	return api.NewRequestSigner(seed)
}

// SignMsg signs a request message built by hand (msg.Data is the body,
// the Kf-Request-Id header is set first) with the creds' user key.
func SignMsg(creds []byte, msg *nats.Msg) error {
	s, err := SignerFromCreds(creds)
	if err != nil {
		return err
	}
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	for k, v := range s.Sign(msg.Subject, msg.Header.Get(api.HeaderRequestID), msg.Data, time.Now()) {
		msg.Header.Set(k, v)
	}
	return nil
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return "", false
}

// Close closes the connection if the client opened it.
func (c *Client) Close() {
	if c.own {
		c.nc.Close()
	}
}

// Tenant returns the tenant this client speaks for.
func (c *Client) Tenant() string { return c.tenant }

type requestIDKey struct{}

// WithRequestID returns a context under which calls send id as their
// request ID (the Kf-Request-Id header, at most 128 bytes), instead of a
// random one. The worker records it in the request's audit event (the
// requestid extension) and returns it in error replies, so an application
// can correlate its own logs with the audit trail. Use a new ID for each
// request.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// Call sends one request and decodes the reply into out.
func (c *Client) Call(ctx context.Context, op string, req, out any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("failed to encode request: %w", err)
	}
	return c.CallRaw(ctx, op, body, out)
}

// tracerName names the client's OpenTelemetry tracer.
const tracerName = "github.com/keyflow/keyflow/client"

// CallRaw sends a raw body (used by tests to send malformed requests).
//
// Tracing: each call is a client span, "keyflow <op>", of the tracer
// provider and under the span of ctx, and its trace context travels in
// the request's headers (traceparent, with the global propagator), so the
// worker's and the HSM's spans join the caller's trace. Both come from
// OpenTelemetry's globals (otel.SetTracerProvider,
// otel.SetTextMapPropagator with propagation.TraceContext): an
// application that sets neither pays for a no-op span and sends no header.
func (c *Client) CallRaw(ctx context.Context, op string, body []byte, out any) (err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	ctx, span := otel.Tracer(tracerName).Start(ctx, "keyflow "+op, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("rpc.system", "keyflow"), attribute.String("rpc.method", op), attribute.String("keyflow.tenant", c.tenant)))
	defer func() {
		var ke *Error
		switch {
		case errors.As(err, &ke):
			span.SetAttributes(attribute.String("keyflow.error_code", ke.Code))
			span.SetStatus(codes.Error, ke.Code)
		case err != nil:
			span.SetStatus(codes.Error, "transport")
		}
		span.End()
	}()
	msg := nats.NewMsg(api.Subject(c.tenant, op))
	msg.Data = body
	reqID, _ := ctx.Value(requestIDKey{}).(string)
	if reqID == "" {
		reqID = nuid.Next()
	}
	msg.Header.Set(api.HeaderRequestID, reqID)
	otel.GetTextMapPropagator().Inject(ctx, api.TraceCarrier(msg.Header))
	if c.signer != nil {
		for k, v := range c.signer.Sign(msg.Subject, reqID, body, time.Now()) {
			msg.Header.Set(k, v)
		}
	}
	reply, err := c.nc.RequestMsgWithContext(ctx, msg)
	if errors.Is(err, nats.ErrNoResponders) {
		return ErrNoService
	}
	if err != nil {
		// The server drops a publish the principal may not make and tells
		// the connection asynchronously; report that instead of a bare
		// timeout.
		if last := c.nc.LastError(); last != nil && errors.Is(last, nats.ErrPermissionViolation) {
			return &Error{Code: "AccessDeniedException", Message: "this principal may not call " + op + " for tenant " + c.tenant + " (" + last.Error() + ")"}
		}
		return fmt.Errorf("failed to call %s: %w", op, err)
	}
	if code := reply.Header.Get(api.HeaderErrorCode); code != "" {
		var er api.ErrorReply
		if json.Unmarshal(reply.Data, &er) == nil && er.Error.Code != "" {
			return &Error{Code: er.Error.Code, Message: er.Error.Message, RequestID: er.Error.RequestID,
				ApprovalID: er.Error.ApprovalID, RetryAfter: time.Duration(er.Error.RetryAfterMillis) * time.Millisecond}
		}
		return &Error{Code: code, Message: reply.Header.Get(api.HeaderError)}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(reply.Data, out); err != nil {
		return fmt.Errorf("failed to decode reply of %s: %w", op, err)
	}
	return nil
}

// Encrypt encrypts under a key.
func (c *Client) Encrypt(ctx context.Context, r api.EncryptRequest) (*api.EncryptReply, error) {
	var out api.EncryptReply
	return &out, c.Call(ctx, api.OpEncrypt, r, &out)
}

// Decrypt decrypts a ciphertext.
func (c *Client) Decrypt(ctx context.Context, r api.DecryptRequest) (*api.DecryptReply, error) {
	var out api.DecryptReply
	return &out, c.Call(ctx, api.OpDecrypt, r, &out)
}

// GenerateDataKey returns a data key in plaintext and encrypted.
func (c *Client) GenerateDataKey(ctx context.Context, r api.DataKeyRequest) (*api.DataKeyReply, error) {
	var out api.DataKeyReply
	return &out, c.Call(ctx, api.OpDataKey, r, &out)
}

// CreateKey creates a key.
func (c *Client) CreateKey(ctx context.Context, r api.CreateKeyRequest) (*api.KeyMetadata, error) {
	var out api.KeyMetadata
	return &out, c.Call(ctx, api.OpKeyCreate, r, &out)
}

// DescribeKey describes a key.
func (c *Client) DescribeKey(ctx context.Context, keyID string) (*api.KeyMetadata, error) {
	var out api.KeyMetadata
	return &out, c.Call(ctx, api.OpKeyDescribe, api.KeyRequest{KeyID: keyID}, &out)
}

// ListKeys lists the tenant's keys.
func (c *Client) ListKeys(ctx context.Context) (*api.ListKeysReply, error) {
	var out api.ListKeysReply
	return &out, c.Call(ctx, api.OpKeyList, struct{}{}, &out)
}

// RotateKey rotates a key and waits for the rotation to finish.
func (c *Client) RotateKey(ctx context.Context, keyID string) (*api.RotateKeyReply, error) {
	var out api.RotateKeyReply
	return &out, c.Call(ctx, api.OpKeyRotate, api.KeyRequest{KeyID: keyID}, &out)
}

// AuditTail reads a page of the tenant's audit events.
func (c *Client) AuditTail(ctx context.Context, r api.AuditTailRequest) (*api.AuditTailReply, error) {
	var out api.AuditTailReply
	return &out, c.Call(ctx, api.OpAuditTail, r, &out)
}
