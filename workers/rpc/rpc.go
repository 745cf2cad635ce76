// Package rpc serves keyflow's NATS API: the crypto service (data plane) and
// the admin service (control plane), as nats.go micro services in queue
// groups, so any number of workers share the load.
//
// Each handler is thin. It establishes the caller from the server-stamped
// Nats-Request-Info header (never from the body), proven by the request's
// signature with that user's own key (reqsig.go), decodes the request
// strictly, calls the domain (package kms), and replies. micro runs one
// handler at a time per endpoint, so requests are handed to a bounded pool
// of goroutines through per-tenant queues served in turn, each bounded
// (see quota.go: per-tenant admission, quotas and fairness).
package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/natsauth"
)

// TenantResolver maps the account the NATS server vouched for to a tenant,
// and says whether keyflow issued a user key to a tenant's principal with
// given roles (natsauth.Identity is one).
type TenantResolver interface {
	TenantOf(account string) (string, error)
	IssuedUser(tenant, principal, userPub string, roles []string) bool
}

// Rotator runs a key rotation (the Temporal workflow, in production) and
// reports the versions, or that it is still running. The rotation records
// its own started and outcome records; a Rotator error that wraps
// ErrRotationNotStarted means nothing started, and the handler records the
// refusal instead.
type Rotator interface {
	Rotate(ctx context.Context, c kms.Caller, keyID string) (*RotateResult, error)
}

// ErrRotationNotStarted marks a Rotator error after which no rotation runs
// (another one of the key is running, or the start failed).
var ErrRotationNotStarted = errors.New("the rotation was not started")

// RotateResult is what a rotation reports: finished, or still running
// (Running, with the workflow's ID and nothing else).
type RotateResult struct {
	KeyID           string
	PreviousVersion uint32
	NewVersion      uint32
	WorkflowID      string
	Running         bool
	Rewrap          *api.RewrapCounts // the rewrap that followed, if any
}

// Config wires a Server.
type Config struct {
	Conn    *nats.Conn
	KMS     *kms.Service
	Tenants TenantResolver
	Rotator Rotator // nil: rotate answers KMSInternalException
	// Archiver runs archival and recovery (backup.go); nil: archive.*
	// answers KMSInternalException.
	Archiver Archiver
	Imports  ImportExpirer // nil: imports with a validTo are refused
	// Migrator runs migration campaigns (migrate.go); nil: the migrate
	// operations answer KMSInternalException.
	Migrator Migrator
	JS       jetstream.JetStream // for audit tail
	// CursorKey seals audit tail cursors (CursorKeySize bytes; see
	// cursor.go). Workers that share a tenant's requests must share it;
	// nil: a random key, so cursors are valid on this worker only.
	CursorKey []byte
	// Workers is the size of the handler pool (default 64).
	Workers int
	// MaxInFlightPerTenant bounds one tenant's requests queued for or
	// held by the pool (default 2×Workers); see quota.go.
	MaxInFlightPerTenant int
	// Timeout bounds each request (default 30s).
	Timeout time.Duration
	Logger  *slog.Logger
	Version string // service version, semver
	// Lifecycle runs the lifecycle timers and schedules (lifecycle.go);
	// nil: schedule-deletion answers KMSInternalException.
	Lifecycle Lifecycle
	// Cloud runs cloud distribution's workflows (cloud.go); nil: the
	// cloud.distribute, cloud.undistribute and probe requests answer
	// KMSInternalException.
	Cloud CloudWorkflows
	// Observe, when set, is told how every request handled by the pool
	// ended ("ok" or the error code) and how long it took (metrics).
	Observe func(op, outcome string, d time.Duration)
	// QuotaShares, when set, says how many processes share the tenants'
	// request-rate quotas (this one included); each admits 1/N of them
	// (quota.go). Nil: this process alone.
	QuotaShares func() int
	// Planes selects the services this server registers, so that a
	// process can serve only its role; zero serves both planes.
	Planes Planes
	// TestingUnsignedRequests accepts NATS requests without a request
	// signature (reqsig.go), as keyflow did before they existed. It exists
	// for the benchmark that measures what signatures cost; never set it
	// elsewhere: without signatures, anyone who can publish in keyflow's
	// own NATS account can act as any tenant.
	TestingUnsignedRequests bool
}

// Planes is a set of service planes.
type Planes uint8

// The data plane is the crypto and data-key endpoints (the crypto role);
// the control plane is every other endpoint (the admin role).
const (
	DataPlane Planes = 1 << iota
	ControlPlane
)

// planeOf says which plane an endpoint group belongs to.
func planeOf(group string) Planes {
	if group == "crypto" || group == "datakeys" {
		return DataPlane
	}
	return ControlPlane
}

// Server is a running set of keyflow services.
type Server struct {
	cfg      Config
	queue    *fairQueue    // per-tenant queues served round-robin (quota.go)
	done     chan struct{} // closed by Stop
	base     context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	services []micro.Service
	stopOnce sync.Once
	limits   *limiter               // per-tenant admission (quota.go)
	cursors  *cursors               // audit tail cursors (cursor.go)
	ops      map[string]handlerFunc // "<group>.<op>" → handler, for Invoke
	sigs     *requestVerifier       // request signatures (reqsig.go)
}

type job struct {
	op      string
	req     micro.Request
	fn      handlerFunc
	release func() // frees the tenant's in-flight slot
}

// handlerFunc handles one decoded request for an established caller.
type handlerFunc func(ctx context.Context, c kms.Caller, body []byte) (any, error)

// Start registers the services and starts the pool.
func Start(cfg Config) (*Server, error) {
	if cfg.Conn == nil || cfg.KMS == nil || cfg.Tenants == nil {
		return nil, errors.New("rpc: Conn, KMS and Tenants are required")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 64
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Version == "" {
		cfg.Version = "0.1.0"
	}
	cur, err := newCursors(cfg.CursorKey)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, done: make(chan struct{}), cursors: cur, ops: map[string]handlerFunc{}, sigs: newRequestVerifier()}
	s.base, s.cancel = context.WithCancel(context.Background())
	s.startQuotas()
	for range cfg.Workers {
		s.wg.Add(1)
		go s.loop()
	}
	groups := []struct {
		name  string
		group string
		ops   map[string]handlerFunc
	}{
		{"keyflow-crypto", "crypto", map[string]handlerFunc{
			"encrypt": s.encrypt, "decrypt": s.decrypt, "datakey": s.dataKey,
			"sign": s.sign, "verify": s.verify, "mac": s.generateMac, "verifymac": s.verifyMac,
			"publickey": s.getPublicKey, "random": s.random, "reencrypt": s.reEncrypt, "datakeypair": s.dataKeyPair,
			"batchencrypt": s.batchEncrypt, "batchdecrypt": s.batchDecrypt, "batchdatakey": s.batchDataKey,
			"seal": s.seal, "open": s.open, "encapsulate": s.encapsulate, "decapsulate": s.decapsulate,
			"rewrap": s.rewrap,
		}},
		{"keyflow-datakeys", "datakeys", map[string]handlerFunc{
			"register": s.registerDataKey, "get": s.getDataKey, "list": s.listDataKeys, "deregister": s.deregisterDataKey,
		}},
		{"keyflow-migrate", "migrate", map[string]handlerFunc{
			"start": s.migrateStart, "status": s.migrateStatus,
			"pause":    s.migrateControl(kms.ControlPause, api.OpMigratePause),
			"resume":   s.migrateControl(kms.ControlResume, api.OpMigrateResume),
			"rollback": s.migrateControl(kms.ControlRollback, api.OpMigrateRollback),
			"approve":  s.migrateControl(kms.ControlApprove, api.OpMigrateApprove),
		}},
		{"keyflow-admin", "keys", map[string]handlerFunc{
			"create": s.createKey, "describe": s.describeKey, "list": s.listKeys, "rotate": s.rotateKey,
			"inventory": s.inventory, "importparams": s.importParams, "import": s.importKey, "deleteimport": s.deleteImport,
			"setstate": s.setKeyState, "scheduledeletion": s.scheduleDeletion, "canceldeletion": s.cancelDeletion,
			"compromise": s.compromise, "setrotation": s.setRotation,
			"rewrapstatus": s.rewrapStatus, "retireversion": s.retireVersion,
			"replicate": s.replicateKey, "updateprimaryregion": s.updatePrimaryRegion, "replicadeletion": s.replicaDeletion,
			"cancelreplicadeletion": s.cancelReplicaDeletion,
		}},
		{"keyflow-audit", "audit", map[string]handlerFunc{
			"tail": s.auditTail,
		}},
		{"keyflow-backup", "backup", s.backupOps()},
		{"keyflow-archive", "archive", s.archiveOps()},
		{"keyflow-approvals", "approvals", s.approvalOps()},
		{"keyflow-tenantpolicy", "tenantpolicy", s.tenantPolicyOps()},
		{"keyflow-cloud", "cloud", s.cloudOps()},
	}
	groups = append(groups, s.identityGroups()...)
	for _, g := range groups {
		if cfg.Planes != 0 && cfg.Planes&planeOf(g.group) == 0 {
			continue
		}
		svc, err := micro.AddService(cfg.Conn, micro.Config{
			Name: g.name, Version: cfg.Version, QueueGroup: g.name,
			Description: "keyflow " + g.group + " API",
		})
		if err != nil {
			s.Stop()
			return nil, fmt.Errorf("failed to start service %s: %w", g.name, err)
		}
		s.services = append(s.services, svc)
		grp := svc.AddGroup("kf." + api.Version + ".*." + g.group)
		for name, fn := range g.ops {
			op := g.group + "." + name
			s.ops[op] = fn
			if err := grp.AddEndpoint(name, s.dispatch(op, fn)); err != nil {
				s.Stop()
				return nil, fmt.Errorf("failed to add endpoint %s: %w", op, err)
			}
		}
	}
	// Subscriptions must reach the server before anyone sends, or early
	// requests see "no responders".
	if err := cfg.Conn.Flush(); err != nil {
		s.Stop()
		return nil, fmt.Errorf("failed to flush subscriptions: %w", err)
	}
	return s, nil
}

// Stop stops taking requests, cancels long waits (audit tail --follow),
// lets the pool finish what it holds and waits for it.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		for _, svc := range s.services {
			_ = svc.Stop()
		}
		close(s.done)
		s.cancel()
		s.wg.Wait()
	})
}

var errShuttingDown = &kms.Error{Code: kms.CodeInternal, Message: "the worker is shutting down; retry"}

func (s *Server) dispatch(op string, fn handlerFunc) micro.Handler {
	return micro.HandlerFunc(func(r micro.Request) {
		// A tenant over its quota is answered at once, never queued;
		// the others queue per tenant, and the pool serves the tenants
		// in turn, so one tenant's backlog never delays another's.
		tenant, release, err := s.admit(op, r)
		if err != nil {
			if s.cfg.Observe != nil {
				s.cfg.Observe(op, outcome(err), 0) // answered at once
			}
			s.replyError(r, requestIDOf(err), err)
			return
		}
		if !s.queue.push(tenant, job{op: op, req: r, fn: fn, release: release}) {
			release()
			s.replyError(r, "", errShuttingDown)
		}
	})
}

func (s *Server) loop() {
	defer s.wg.Done()
	for {
		// After Stop, pop still hands out what was queued, then ends.
		j, ok := s.queue.pop()
		if !ok {
			return
		}
		s.serve(j)
	}
}

func (s *Server) serve(j job) {
	defer j.release()
	ctx, cancel := context.WithTimeout(s.base, s.cfg.Timeout)
	defer cancel()
	reqID := j.req.Headers().Get(api.HeaderRequestID)
	if reqID == "" || len(reqID) > 128 {
		reqID = nuid.Next()
	}
	start := time.Now()
	var failed error
	if s.cfg.Observe != nil {
		defer func() { s.cfg.Observe(j.op, outcome(failed), time.Since(start)) }()
	}
	// The caller's trace context (traceparent) comes in the headers; the
	// request's span is its child, and the HSM call's span (through ctx)
	// the request's.
	ctx = otel.GetTextMapPropagator().Extract(ctx, api.TraceCarrier(j.req.Headers()))
	ctx, span := otel.Tracer(tracerName).Start(ctx, "keyflow.worker "+j.op, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("rpc.system", "keyflow"), attribute.String("rpc.method", j.op), attribute.String("keyflow.request_id", reqID)))
	defer func() {
		if failed != nil {
			span.SetStatus(codes.Error, outcome(failed))
			span.SetAttributes(attribute.String("keyflow.error_code", outcome(failed)))
		}
		span.End()
	}()
	reply := func(err error) {
		failed = err
		s.replyError(j.req, reqID, err)
	}
	defer func() {
		// A bug in one handler must not take the worker down.
		if p := recover(); p != nil {
			s.cfg.Logger.Error("handler panic", "op", j.op, "request", reqID, "panic", fmt.Sprint(p))
			reply(kms.ErrInternal)
		}
	}()
	c, err := s.caller(j.req, reqID)
	if err != nil {
		reply(s.cfg.KMS.Reject(ctx, c, j.op, err))
		return
	}
	if err := s.authorize(ctx, j.op, c, j.req.Data()); err != nil {
		reply(err)
		return
	}
	out, err := j.fn(ctx, c, j.req.Data())
	if err != nil {
		reply(err)
		return
	}
	b, err := json.Marshal(out)
	if err != nil {
		reply(kms.ErrInternal)
		return
	}
	if err := s.publishReply(j.req, reqID, b, nil); err != nil {
		s.cfg.Logger.Warn("failed to reply", "op", j.op, "err", err)
	}
	// The reply may hold plaintext; the NATS client copied it already.
	clear(b)
}

// tracerName names the worker's OpenTelemetry tracer (the global
// provider's; a no-op until a process sets one).
const tracerName = "github.com/keyflow/keyflow/workers/rpc"

// outcome is how a request ended, for Config.Observe: "ok" or the
// error's stable code.
func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	return string(kms.CodeOf(err))
}

// caller establishes who is asking from the server-vouched identity. The
// tenant in the subject must be the caller's own, and the request must be
// signed by the user key the identity names (reqsig.go).
func (s *Server) caller(r micro.Request, reqID string) (kms.Caller, error) {
	c := kms.Caller{RequestID: reqID}
	parts := strings.Split(r.Subject(), ".")
	if len(parts) < 4 {
		return c, &kms.Error{Code: kms.CodeValidation, Message: "malformed subject"}
	}
	subjectTenant := parts[2]
	ri, err := natsauth.ParseRequestInfo(r.Headers().Get(natsauth.RequestInfoHeader))
	if err != nil {
		c.Tenant = subjectTenant
		return c, &kms.Error{Code: kms.CodeAccessDenied, Message: "the request did not come through a tenant account"}
	}
	tenant, err := s.cfg.Tenants.TenantOf(ri.Account)
	if err != nil {
		c.Tenant = subjectTenant
		return c, &kms.Error{Code: kms.CodeAccessDenied, Message: "the caller's account is not a keyflow tenant"}
	}
	c.Tenant = tenant
	c.Principal = ri.Principal()
	c.Roles = ri.Roles()
	if subjectTenant != tenant {
		return c, &kms.Error{Code: kms.CodeAccessDenied, Message: "the subject names another tenant"}
	}
	if !s.cfg.TestingUnsignedRequests {
		if err := s.checkSignature(r.Headers().Get, r.Subject(), r.Data(), ri, tenant); err != nil {
			return c, err
		}
	}
	return c, nil
}

func (s *Server) replyError(r micro.Request, reqID string, err error) {
	body := api.ErrorReply{Error: api.ErrorBody{
		Code: string(kms.CodeOf(err)), Message: kms.PublicMessage(err), RequestID: reqID,
		ApprovalID: kms.PendingApprovalID(err), RetryAfterMillis: kms.RetryAfterOf(err).Milliseconds(),
	}}
	b, _ := json.Marshal(body)
	hdr := nats.Header{}
	governanceHeaders(hdr, body.Error)
	hdr.Set(api.HeaderErrorCode, body.Error.Code)
	hdr.Set(api.HeaderError, body.Error.Message)
	if rerr := s.publishReply(r, reqID, b, hdr); rerr != nil {
		s.cfg.Logger.Warn("failed to reply", "err", rerr)
	}
}

// publishReply answers a request on the connection directly. The pool must
// not use r.Respond or r.Error: they record the outcome in the request,
// which micro reads on its own goroutine once the handler has returned
// (that is, while the pool may still be writing it), a data race. The
// reply carries micro's error headers, so clients see no difference; the
// micro endpoint stats do not count errors (they never could, with a pool).
func (s *Server) publishReply(r micro.Request, reqID string, data []byte, hdr nats.Header) error {
	if r.Reply() == "" {
		return nil // a publish, not a request: nobody to answer
	}
	if hdr == nil {
		hdr = nats.Header{}
	}
	hdr.Set(api.HeaderRequestID, reqID)
	return s.cfg.Conn.PublishMsg(&nats.Msg{Subject: r.Reply(), Header: hdr, Data: data})
}

// decode parses a request strictly: unknown fields and trailing data are
// refused, so a typo in a field name is an error and not a silent default.
func decode(body []byte, v any) error {
	if err := decodeBody(body, v); err != nil {
		return err
	}
	if hasNested(body) { // decode.go
		if err := checkNestedKeys(body, reflect.TypeOf(v)); err != nil {
			return err
		}
	}
	return checkDates(v, time.Now())
}

// decodeBody is the strict JSON decoding of a request: an object (an
// empty body is {}), valid UTF-8 (encoding/json would turn every invalid
// byte into U+FFFD, so that "a\xff" and "a\xfe" became one encryption
// context), known, case-exact and unique field names, no trailing data.
func decodeBody(body []byte, v any) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		body = []byte("{}")
	} else if trimmed[0] != '{' && json.Valid(trimmed) { // null, [], "x": well-formed, but not a request
		return &kms.Error{Code: kms.CodeValidation, Message: "malformed request: the body must be a JSON object"}
	}
	if !utf8.Valid(body) {
		return &kms.Error{Code: kms.CodeValidation, Message: "malformed request: the body is not valid UTF-8"}
	}
	if handled, err := decodeSinglePass(body, v); handled { // decode.go
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &kms.Error{Code: kms.CodeValidation, Message: "malformed request: " + jsonProblem(err)}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) { // More() misses a stray '}' or ']'
		return &kms.Error{Code: kms.CodeValidation, Message: "malformed request: trailing data after the JSON object"}
	}
	return checkFieldNames(body, v)
}

// fieldNames caches the JSON names of each request type.
var fieldNames sync.Map // reflect.Type -> map[string]bool

// checkFieldNames refuses what encoding/json lets through: top-level keys
// that match a field only case-insensitively ("KEYID"), and duplicate keys
// (where the last one silently wins).
func checkFieldNames(body []byte, v any) error {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	names, ok := fieldNames.Load(t)
	if !ok {
		m := map[string]bool{}
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" {
				name = f.Name
			}
			m[name] = true
		}
		names, _ = fieldNames.LoadOrStore(t, m)
	}
	known := names.(map[string]bool)
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil // not an object: Decode already judged it
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		key, _ := tok.(string)
		if !known[key] {
			return &kms.Error{Code: kms.CodeValidation, Message: fmt.Sprintf("malformed request: unknown field %q (field names are case-sensitive)", truncateName(key))}
		}
		if seen[key] {
			return &kms.Error{Code: kms.CodeValidation, Message: fmt.Sprintf("malformed request: field %q appears twice", key)}
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return nil
}

func truncateName(s string) string {
	if len(s) > 64 {
		return strings.ToValidUTF8(s[:64], "") + "…"
	}
	return strings.ToValidUTF8(s, "")
}

// jsonProblem describes a decoding error without echoing request content
// (which may be plaintext).
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q has the wrong type (want %s)", te.Field, te.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return strings.TrimPrefix(err.Error(), "json: ")
	case strings.Contains(err.Error(), "illegal base64"):
		return "a binary field is not valid base64"
	default:
		return "invalid JSON"
	}
}
