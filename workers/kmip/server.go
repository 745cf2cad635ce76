package kmip

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/kmip/ttlv"
)

// Roles resolves a principal's roles (and refuses an unknown one). In
// keyflow they come from the identity directory (workers/natsauth).
type Roles func(ctx context.Context, tenant, principal string) ([]string, error)

// Lifecycle keeps a key's durable lifecycle machinery (the Temporal
// timers and workflows) in line with the domain, as for the NATS admin
// service: KeyChanged after a key is created or re-keyed (activation and
// cryptoperiod timers, rotation schedule), ScheduleDeletion for Destroy.
type Lifecycle interface {
	KeyChanged(ctx context.Context, c kms.Caller, k *kms.Key) error
	ScheduleDeletion(ctx context.Context, c kms.Caller, k *kms.Key) (string, error)
}

// keyChanged tells Lifecycle about a new or re-keyed key. A failure leaves
// the key as it is (its state and refusals do not depend on the timers)
// and is logged; the operation still succeeds, as the key exists.
func (s *Server) keyChanged(ctx context.Context, c kms.Caller, k *kms.Key) {
	if s.o.Lifecycle == nil || k == nil {
		return
	}
	if err := s.o.Lifecycle.KeyChanged(ctx, c, k); err != nil {
		s.o.Logger.Error("kmip: lifecycle timers not started; retry with keyflow key set-rotation", "key", k.ResourceName(), "err", err)
	}
}

// Rotator runs a key's rotation to its end (in keyflow, the Temporal
// rotation workflow) and returns the new primary version.
type Rotator func(ctx context.Context, c kms.Caller, keyID string) (newVersion uint32, err error)

// Options wire a Server.
type Options struct {
	KMS *kms.Service
	// TLS must require and verify client certificates (CA.ServerTLS).
	TLS       *tls.Config
	Roles     Roles
	Lifecycle Lifecycle // nil: Destroy is refused
	Rotator   Rotator   // nil: Re-key is refused
	Logger    *slog.Logger
	Limits    ttlv.Limits // default ttlv.DefaultLimits
	// MaxConns bounds the connections served at once (default 256);
	// IdleTimeout closes a connection that sends nothing (default 2 min).
	MaxConns    int
	IdleTimeout time.Duration
}

// Server is a KMIP 1.0-1.4 server over TTLV and mutual TLS.
type Server struct {
	o     Options
	sem   chan struct{}
	quota *admission

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// New returns a Server.
func New(o Options) (*Server, error) {
	if o.KMS == nil || o.TLS == nil || o.Roles == nil {
		return nil, errors.New("kmip: KMS, TLS and Roles are required")
	}
	if o.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, errors.New("kmip: the TLS configuration must require and verify client certificates")
	}
	if o.TLS.MinVersion < tls.VersionTLS12 {
		o.TLS = o.TLS.Clone()
		o.TLS.MinVersion = tls.VersionTLS12
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Limits.MaxMessage == 0 {
		o.Limits = ttlv.DefaultLimits
	}
	if o.MaxConns == 0 {
		o.MaxConns = 256
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 2 * time.Minute
	}
	return &Server{o: o, sem: make(chan struct{}, o.MaxConns), quota: newAdmission(o.KMS), conns: map[net.Conn]struct{}{}}, nil
}

// Listen serves on addr (":5696" by convention) until Close; it returns
// the bound address.
func (s *Server) Listen(addr string) (net.Addr, error) {
	ln, err := tls.Listen("tcp", addr, s.o.TLS)
	if err != nil {
		return nil, fmt.Errorf("kmip: failed to listen on %s: %w", addr, err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.serve(ln) }()
	return ln.Addr(), nil
}

// Close stops listening, closes every connection and waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.ln != nil {
		_ = s.ln.Close()
	}
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *Server) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		select {
		case s.sem <- struct{}{}:
		default:
			_ = c.Close() // over MaxConns
			continue
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.sem }()
			s.serveConn(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// identify maps the verified client certificate to a keyflow caller:
// Organization = tenant, CommonName = principal; roles from the directory.
func (s *Server) identify(ctx context.Context, st tls.ConnectionState) (kms.Caller, error) {
	if len(st.PeerCertificates) == 0 {
		return kms.Caller{}, errors.New("no client certificate")
	}
	sub := st.PeerCertificates[0].Subject
	if len(sub.Organization) != 1 || sub.CommonName == "" {
		return kms.Caller{}, errors.New("the client certificate must name one tenant (O) and a principal (CN)")
	}
	c := kms.Caller{Tenant: sub.Organization[0], Principal: sub.CommonName}
	if !kms.ValidTenant(c.Tenant) {
		return kms.Caller{}, fmt.Errorf("%q is not a tenant", c.Tenant)
	}
	roles, err := s.o.Roles(ctx, c.Tenant, c.Principal)
	if err != nil {
		return kms.Caller{}, err
	}
	c.Roles = roles
	return c, nil
}

// exportByDefault reports whether the client certificate carries
// ExportByDefaultOU.
func exportByDefault(st tls.ConnectionState) bool {
	return len(st.PeerCertificates) > 0 && slices.Contains(st.PeerCertificates[0].Subject.OrganizationalUnit, ExportByDefaultOU)
}

func (s *Server) serveConn(nc net.Conn) {
	defer nc.Close()
	ctx := context.Background()
	tc, ok := nc.(*tls.Conn)
	if !ok {
		return
	}
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.HandshakeContext(ctx); err != nil {
		return
	}
	caller, err := s.identify(ctx, tc.ConnectionState())
	if err != nil {
		s.o.Logger.Warn("kmip: client refused", "err", err)
		_ = s.o.KMS.Reject(ctx, kms.Caller{Tenant: "-", RequestID: uuid.NewString()}, "kmip.connect",
			&kms.Error{Code: kms.CodeAccessDenied, Message: "the client certificate does not name a keyflow principal"})
		return
	}
	conn := conn{c: caller, exportDefault: exportByDefault(tc.ConnectionState())}
	hdr := make([]byte, ttlv.HeaderLen)
	for {
		_ = tc.SetDeadline(time.Now().Add(s.o.IdleTimeout))
		if _, err := io.ReadFull(tc, hdr); err != nil {
			return
		}
		n, err := ttlv.MessageLen(hdr, s.o.Limits)
		if err != nil {
			s.refuse(ctx, tc, caller, err)
			return
		}
		msg := make([]byte, n)
		copy(msg, hdr)
		if _, err := io.ReadFull(tc, msg[ttlv.HeaderLen:]); err != nil {
			return
		}
		req, err := ttlv.Decode(msg, s.o.Limits)
		if err != nil {
			s.refuse(ctx, tc, caller, err)
			return
		}
		out := ttlv.Encode(s.handle(ctx, conn, req))
		if _, err := tc.Write(out); err != nil {
			return
		}
	}
}

// refuse answers a message that could not be decoded with one Invalid
// Message response, records it, and lets the caller close the connection
// (the stream can no longer be trusted to be in step).
func (s *Server) refuse(ctx context.Context, w io.Writer, c kms.Caller, cause error) {
	c.RequestID = uuid.NewString()
	_ = s.o.KMS.Reject(ctx, c, "kmip.message", &kms.Error{Code: kms.CodeValidation, Message: "malformed KMIP message"})
	resp := response(version{1, 0}, []ttlv.Item{failure(0, nil, &opError{reasonInvalidMessage, truncate(cause.Error())})})
	_, _ = w.Write(ttlv.Encode(resp))
}

type version struct{ major, minor int32 }

// supported are the protocol versions served, newest first.
var supported = []version{{1, 4}, {1, 3}, {1, 2}, {1, 1}, {1, 0}}

func response(v version, items []ttlv.Item) ttlv.Item {
	hdr := ttlv.Struct(tagResponseHeader,
		ttlv.Struct(tagProtocolVersion, ttlv.Int(tagProtocolVersionMajor, v.major), ttlv.Int(tagProtocolVersionMinor, v.minor)),
		ttlv.DateTime(tagTimeStamp, time.Now()),
		ttlv.Int(tagBatchCount, int32(len(items))))
	return ttlv.Struct(tagResponseMessage, append([]ttlv.Item{hdr}, items...)...)
}

// opError is a KMIP failure: a result reason and a message.
type opError struct {
	reason uint32
	msg    string
}

func (e *opError) Error() string { return e.msg }

func failure(op uint32, id []byte, e *opError) ttlv.Item {
	it := ttlv.Struct(tagBatchItem)
	if op != 0 {
		it.Items = append(it.Items, ttlv.Enum(tagOperation, op))
	}
	if id != nil {
		it.Items = append(it.Items, ttlv.Bytes(tagUniqueBatchItemID, id))
	}
	it.Items = append(it.Items, ttlv.Enum(tagResultStatus, statusOperationFailed), ttlv.Enum(tagResultReason, e.reason), ttlv.Text(tagResultMessage, e.msg))
	return it
}

func truncate(s string) string {
	if len(s) > 400 {
		return s[:400]
	}
	return s
}

// reasonFor maps a keyflow error to a KMIP result reason. The message is
// keyflow's public message (never key material or plaintext).
func reasonFor(err error) *opError {
	var oe *opError
	if errors.As(err, &oe) {
		return oe
	}
	msg := truncate(kms.PublicMessage(err))
	switch kms.CodeOf(err) {
	case kms.CodeNotFound:
		return &opError{reasonItemNotFound, msg}
	case kms.CodeAccessDenied:
		return &opError{reasonPermissionDenied, msg}
	case kms.CodeValidation, kms.CodeIncorrectKeyMaterial:
		return &opError{reasonInvalidField, msg}
	case kms.CodeInvalidState, kms.CodeDisabled, kms.CodeInvalidKeyUsage, kms.CodeAlreadyExists, kms.CodePendingApproval:
		return &opError{reasonIllegalOperation, msg}
	case kms.CodeInvalidCiphertext:
		return &opError{reasonCryptographicFailure, msg}
	case kms.CodeUnsupportedOperation:
		return &opError{reasonFeatureNotSupported, msg}
	default:
		return &opError{reasonGeneralFailure, msg}
	}
}

// maxBatch bounds the batch items of one request.
const maxBatch = 64

// handle answers one request message.
func (s *Server) handle(ctx context.Context, c conn, req ttlv.Item) ttlv.Item {
	v := version{1, 0}
	if req.Tag != tagRequestMessage || req.Type != ttlv.TypeStructure {
		return response(v, []ttlv.Item{failure(0, nil, &opError{reasonInvalidMessage, "not a KMIP Request Message"})})
	}
	h := req.Find(tagRequestHeader)
	pv := h.Find(tagProtocolVersion)
	major, ok1 := pv.IntOf(tagProtocolVersionMajor)
	minor, ok2 := pv.IntOf(tagProtocolVersionMinor)
	if !ok1 || !ok2 {
		return response(v, []ttlv.Item{failure(0, nil, &opError{reasonInvalidMessage, "the request header has no protocol version"})})
	}
	v = version{major, minor}
	if major != 1 || minor < 0 || minor > 4 {
		return response(version{1, 4}, []ttlv.Item{failure(0, nil, &opError{reasonInvalidMessage, fmt.Sprintf("protocol version %d.%d is not supported; this server speaks KMIP 1.0-1.4", major, minor)})})
	}
	items := req.All(tagBatchItem)
	if len(items) == 0 || len(items) > maxBatch {
		return response(v, []ttlv.Item{failure(0, nil, &opError{reasonInvalidMessage, fmt.Sprintf("a request carries 1 to %d batch items", maxBatch)})})
	}
	out := make([]ttlv.Item, 0, len(items))
	for _, bi := range items {
		out = append(out, s.batchItem(ctx, c, v, bi))
	}
	return response(v, out)
}

func (s *Server) batchItem(ctx context.Context, cn conn, v version, bi *ttlv.Item) ttlv.Item {
	c := cn.c
	c.RequestID = uuid.NewString()
	id, _ := bi.BytesOf(tagUniqueBatchItemID)
	op, ok := bi.EnumOf(tagOperation)
	if !ok {
		return failure(0, id, &opError{reasonInvalidMessage, "the batch item has no operation"})
	}
	h, ok := handlers[op]
	if !ok {
		err := &opError{reasonOperationNotSupported, fmt.Sprintf("operation 0x%02x is not supported by keyflow", op)}
		_ = s.o.KMS.Reject(ctx, c, "kmip.unsupported", &kms.Error{Code: kms.CodeUnsupportedOperation, Message: err.msg})
		return failure(op, id, err)
	}
	if release, err := s.quota.admit(ctx, c, h.name); err != nil {
		return failure(op, id, reasonFor(err))
	} else {
		defer release()
	}
	payload := bi.Find(tagRequestPayload)
	if payload == nil || payload.Type != ttlv.TypeStructure {
		payload = &ttlv.Item{Tag: tagRequestPayload, Type: ttlv.TypeStructure}
	}
	res, err := h.fn(s, ctx, call{c: c, v: v, op: h.name, exportDefault: cn.exportDefault}, payload)
	if err != nil {
		var oe *opError
		if errors.As(err, &oe) {
			// Refused by the adapter before any domain call: on the record.
			_ = s.o.KMS.Reject(ctx, c, h.name, &kms.Error{Code: kms.CodeValidation, Message: oe.msg})
		}
		return failure(op, id, reasonFor(err))
	}
	it := ttlv.Struct(tagBatchItem, ttlv.Enum(tagOperation, op))
	if id != nil {
		it.Items = append(it.Items, ttlv.Bytes(tagUniqueBatchItemID, id))
	}
	it.Items = append(it.Items, ttlv.Enum(tagResultStatus, statusSuccess))
	if res.Tag != 0 {
		it.Items = append(it.Items, res)
	}
	return it
}

// conn is what a connection's certificate established.
type conn struct {
	c             kms.Caller
	exportDefault bool // ExportByDefaultOU
}

// call is one operation's context.
type call struct {
	c             kms.Caller
	v             version
	op            string // the operation's row in kms's table, "kmip.<name>"
	exportDefault bool
}

// authorize runs kms.Authorize for the operation on the keys it names.
func (s *Server) authorize(ctx context.Context, cl call, op string, keyRefs ...string) error {
	targets := make([]kms.AccessTarget, 0, len(keyRefs))
	for _, r := range keyRefs {
		if r != "" {
			targets = append(targets, kms.AccessTarget{KeyRef: r})
		}
	}
	return s.o.KMS.Authorize(ctx, cl.c, kms.AuthorizeParams{Operation: op, Targets: targets})
}

// Directory is the part of the identity directory the server reads.
type Directory interface {
	Principals(ctx context.Context, tenant string) ([]kms.PrincipalInfo, error)
}

// DirectoryRoles resolves a certificate's principal in the identity
// directory (workers/natsauth in keyflow): an unknown or disabled principal
// is refused at the handshake.
func DirectoryRoles(dir Directory) Roles {
	return func(ctx context.Context, tenant, principal string) ([]string, error) {
		ps, err := dir.Principals(ctx, tenant)
		if err != nil {
			return nil, fmt.Errorf("kmip: failed to read the principals of %s: %w", tenant, err)
		}
		for _, p := range ps {
			if p.Name != principal {
				continue
			}
			if p.DisabledAt != nil {
				return nil, fmt.Errorf("kmip: principal %s/%s is disabled", tenant, principal)
			}
			out := make([]string, len(p.Roles))
			for i, r := range p.Roles {
				out[i] = string(r)
			}
			return out, nil
		}
		return nil, fmt.Errorf("kmip: %s/%s is not a principal", tenant, principal)
	}
}
