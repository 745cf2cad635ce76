// Package roles is keyflow's one composition of its roles: the code that
// turns a NATS connection, an HSM token and a Temporal client into running
// workers. `keyflow serve` runs any set of roles against external
// infrastructure; `keyflow dev` (deploy/devstack) starts the embedded
// infrastructure and then runs every role through this same package, so
// the two never drift apart.
//
// The roles:
//
//	crypto       the data-plane NATS services (encrypt, decrypt, data keys, signatures…)
//	admin        the control-plane NATS services (keys, policies, principals, tenants, approvals…)
//	lifecycle    the Temporal worker (rotation, deletion, archival, migration workflows)
//	sealer       the audit sealer (signed digests over the audit stream)
//	remediation  the compromise trigger (an audit subscriber that starts remediation)
//	gateway      the HTTP front (the XKS proxy today)
//
// Start a set with [Start], given [Infra] (how to reach NATS, the HSM and
// Temporal; the caller owns them) and [Options]. Each role connects to
// NATS with its own name through Infra.Connect, so a deployment can hand
// each role its own credentials. Every role but remediation needs the HSM;
// admin, lifecycle and remediation need Temporal.
//
// Operations: [OpsHandler] serves /healthz, /readyz (the [Node.Checks] of
// its roles) and /metrics ([Metrics]: request, HSM and audit series fed by
// hooks, and what the node's parts know read at scrape time, in
// nodemetrics.go); [StartTracing] installs OpenTelemetry for the process
// (tracing.go), and Dial then wires the HSM spans and the Temporal SDK's
// tracing interceptor. docs/observability.md lists every name.
//
// Rules: a role set never starts half-way (an error stops what started);
// the [Node] shuts down in reverse order of start, so the sealer seals
// what is pending before the audit connections close.
package roles

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/keyflow/keyflow/cloud"
	"github.com/keyflow/keyflow/cloud/connect"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/kvstore"
	"github.com/keyflow/keyflow/workers/rpc"
	"github.com/keyflow/keyflow/workers/sealer"
	"github.com/keyflow/keyflow/workers/xks"
	"github.com/keyflow/keyflow/workflows"
)

// Role is one of keyflow's roles.
type Role string

// The roles, in start order.
const (
	Crypto      Role = "crypto"
	Admin       Role = "admin"
	Lifecycle   Role = "lifecycle"
	Sealer      Role = "sealer"
	Remediation Role = "remediation"
	Gateway     Role = "gateway"
)

// All is every role, in start order.
var All = []Role{Crypto, Admin, Lifecycle, Sealer, Remediation, Gateway}

// Parse reads a comma-separated list of roles ("crypto,admin"; "all" is
// every role). Unknown and repeated roles are errors.
func Parse(list string) ([]Role, error) {
	var out []Role
	for f := range strings.SplitSeq(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if f == "all" {
			out = append(out, All...)
			continue
		}
		r := Role(f)
		if !slices.Contains(All, r) {
			return nil, fmt.Errorf("unknown role %q (roles: %s)", f, joinRoles(All))
		}
		if slices.Contains(out, r) {
			return nil, fmt.Errorf("role %q given twice", f)
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, errors.New("no roles given")
	}
	return out, nil
}

func joinRoles(rs []Role) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return strings.Join(s, ",")
}

// NeedsHSM reports whether the set uses the HSM (every role but
// remediation does: they hold a kms.Service).
func NeedsHSM(rs []Role) bool {
	return slices.ContainsFunc(rs, func(r Role) bool { return r != Remediation })
}

// NeedsTemporal reports whether the set uses Temporal.
func NeedsTemporal(rs []Role) bool {
	return slices.ContainsFunc(rs, func(r Role) bool { return r == Admin || r == Lifecycle || r == Remediation })
}

// Tenants resolves the NATS account a request came from to a tenant
// (natsauth.Identity is one, and also a kms.Directory for the admin role).
type Tenants = rpc.TenantResolver

// Infra is what the roles run on. The caller opens and closes it.
type Infra struct {
	// Connect opens a NATS connection for one role; name says which
	// connection it is (keyflow-worker, keyflow-audit, keyflow-sealer…),
	// so that a deployment can give each role its own credentials.
	Connect func(ctx context.Context, role Role, name string) (*nats.Conn, error)
	// JetStream opens JetStream on a connection (the domain, and the
	// replicas of the streams and buckets the roles create); nil means
	// jetstream.New.
	JetStream func(*nats.Conn) (jetstream.JetStream, error)
	// HSM holds the root key; required unless the set is remediation only.
	HSM hsm.Backend
	// Temporal is required for admin, lifecycle and remediation.
	Temporal client.Client
	// Tenants is required for crypto and admin.
	Tenants Tenants
	Logger  *slog.Logger
	// Metrics, when set, counts requests and times audit records (and
	// HSM operations, when the token was opened with its ObserveHSM).
	Metrics *Metrics
}

// Options configures the roles.
type Options struct {
	Roles []Role
	// Workers is the request pool size of the NATS services (default 64).
	Workers int
	// AuditFailOpen lets operations proceed when their audit record
	// cannot be stored (see kms.Config.AuditFailOpen). Weaker; recorded.
	AuditFailOpen bool
	// Retention limits of the audit stream; zero means unlimited.
	AuditMaxAge   time.Duration
	AuditMaxBytes int64
	AuditMaxMsgs  int64
	// AuditChanges are the audit stream changes the operator just made
	// (jsaudit.Provision), recorded in the trail once attached.
	AuditChanges []jsaudit.StreamChange
	// CursorKey seals audit tail cursors; processes that share tenants'
	// requests must share it (rpc.Config.CursorKey; nil: random).
	CursorKey []byte
	// AuditConns is the number of connections audit records are spread
	// over (default jsaudit.DefaultConns).
	AuditConns int
	// SealerLease runs the sealer active/standby across processes, with
	// a lease of this TTL in a NATS KV bucket (sealer.StartStandby; about
	// 5 s); zero runs it alone, as the dev stack does.
	SealerLease time.Duration
	// ShareQuotas makes the processes serving crypto or admin share the
	// tenants' rate quotas (members.go) instead of each admitting the
	// whole quota, as the dev stack's one process does.
	ShareQuotas bool
	// Gateway configures the gateway role.
	Gateway GatewayOptions
	// SealerMaxLag is the most audit records the sealer may leave unsealed
	// while the sealer role reports ready (/readyz); default
	// DefaultSealerMaxLag.
	SealerMaxLag uint64
	// Region names this deployment for multi-region keys
	// (docs/multi-region.md): the lifecycle role then answers the region
	// link (package region) and replicates the keys whose primary is here.
	Region string
	// ReplicaSwitchTimeout bounds a rotation's wait for the replicas of a
	// multi-region key (0: workflows.DefaultReplicaSwitchTimeout).
	ReplicaSwitchTimeout time.Duration
}

// DefaultSealerMaxLag is Options.SealerMaxLag's default: about ten
// seconds of the single-process dev stack's encrypt rate.
const DefaultSealerMaxLag = 100_000

// GatewayOptions configures the gateway role's XKS proxy.
type GatewayOptions struct {
	// XKSListen is where the XKS proxy listens (HTTPS); empty: no proxy.
	XKSListen string
	// XKSConfig is the proxy's configuration file (see workers/xks).
	XKSConfig string
	// XKSCert is the proxy's TLS certificate.
	XKSCert tls.Certificate
	// Model is what the proxy reports as its HSM (GetHealthStatus).
	Model string
	// Prepare, when set, runs once the KMS is up and before the proxy
	// configuration is read (the dev stack writes a default one).
	Prepare func(ctx context.Context, k *kms.Service) error
}

// Node is a running set of roles.
type Node struct {
	Roles []Role
	// KMS is the domain service the roles share; nil for remediation
	// alone.
	KMS *kms.Service
	// XKS is the gateway's XKS proxy, nil unless it runs.
	XKS *xks.Server
	// XKSAddr is where the proxy listens.
	XKSAddr string
	// Conn is the node's main NATS connection (stores, services).
	Conn *nats.Conn
	// Store is the key store on JetStream KV; nil for remediation alone.
	Store kms.Store
	// RPC is the crypto and admin services, nil unless either runs; the
	// AWS KMS API invokes them in process.
	RPC *rpc.Server
	// Workflows starts and signals the lifecycle workflows; nil without
	// Temporal.
	Workflows *workflows.Client
	// Standby is the sealer when it runs active/standby (Options.SealerLease).
	Standby *sealer.Standby

	infra   Infra
	opts    Options
	cancel  context.CancelFunc
	closers []func()
	members *members // with Options.ShareQuotas

	sealerJS   jetstream.JetStream // the sealer's, for its lag
	sealerRead atomic.Uint64       // records the sealer read (sealer.Config.Read)
}

// QuotaShares is how many processes share the tenants' quotas (1 without
// Options.ShareQuotas).
func (n *Node) QuotaShares() int {
	if n.members == nil {
		return 1
	}
	return n.members.Count()
}

// Has reports whether the node runs role r.
func (n *Node) Has(r Role) bool { return slices.Contains(n.Roles, r) }

// Start starts the roles. Call Stop to shut them down cleanly.
func Start(ctx context.Context, in Infra, o Options) (n *Node, err error) {
	if len(o.Roles) == 0 {
		return nil, errors.New("roles: no roles to run")
	}
	if in.Connect == nil {
		return nil, errors.New("roles: Infra.Connect is required")
	}
	if in.JetStream == nil {
		in.JetStream = func(nc *nats.Conn) (jetstream.JetStream, error) { return jetstream.New(nc) }
	}
	if in.Logger == nil {
		in.Logger = slog.Default()
	}
	if NeedsHSM(o.Roles) && in.HSM == nil {
		return nil, errors.New("roles: the roles need an HSM")
	}
	if NeedsTemporal(o.Roles) && in.Temporal == nil {
		return nil, errors.New("roles: the roles need Temporal")
	}
	n = &Node{Roles: o.Roles, infra: in, opts: o}
	if (n.Has(Crypto) || n.Has(Admin)) && in.Tenants == nil {
		return nil, errors.New("roles: crypto and admin need a tenant resolver")
	}
	defer func() {
		if err != nil {
			n.Stop()
			n = nil
		}
	}()
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.cancel = cancel

	if n.Conn, err = n.connect(ctx, n.workerRole(), "keyflow-worker"); err != nil {
		return n, err
	}
	js, err := in.JetStream(n.Conn)
	if err != nil {
		return n, fmt.Errorf("failed to open JetStream: %w", err)
	}
	if err = checkRegionDomain(ctx, js, o.Region); err != nil {
		return n, err
	}
	if NeedsHSM(o.Roles) {
		if err = n.startKMS(ctx, runCtx, js); err != nil {
			return n, err
		}
	}
	var wc *workflows.Client
	if in.Temporal != nil {
		wc = &workflows.Client{Temporal: in.Temporal}
		n.Workflows = wc
		if n.KMS != nil {
			// Signals that change security state carry a token the KMS
			// mints (workflows/optoken.go); remediation alone sends none.
			wc.Tokens = n.KMS
			wc.Clouds = n.KMS // key changes start their cloud sync
			n.KMS.SetApprovalEngine(&workflows.ApprovalEngine{Temporal: in.Temporal, Tokens: n.KMS})
		}
	}
	if n.Has(Sealer) {
		if err = n.startSealer(ctx); err != nil {
			return n, err
		}
	}
	if n.Has(Lifecycle) {
		w := worker.New(in.Temporal, workflows.TaskQueue, worker.Options{Interceptors: in.Metrics.WorkerInterceptors()})
		acts := &workflows.Activities{KMS: n.KMS, Temporal: in.Temporal, CloudConnect: cloudConnect, ReplicaSwitchTimeout: o.ReplicaSwitchTimeout}
		if err = n.startRegion(acts, o.Region); err != nil {
			return n, err
		}
		workflows.Register(w, acts)
		if err = w.Start(); err != nil {
			return n, fmt.Errorf("failed to start the lifecycle worker: %w", err)
		}
		n.closers = append(n.closers, w.Stop)
	}
	if n.Has(Crypto) || n.Has(Admin) {
		if err = n.startServices(js, wc); err != nil {
			return n, err
		}
	}
	if n.Has(Remediation) {
		if err = n.startRemediation(ctx, js, wc); err != nil {
			return n, err
		}
	}
	if n.Has(Gateway) {
		if err = n.startGateway(ctx); err != nil {
			return n, err
		}
	}
	if in.Metrics != nil {
		in.Metrics.watch(n, n.sealerJS, &n.sealerRead)
	}
	return n, nil
}

// workerRole is the role whose creds the node's key store and audit
// publisher connect with: the first role that is not the sealer. The
// sealer's creds may publish digests but no audit records, and a
// sealer-only process still records its own key operations (creating its
// signing keys), which is a worker's right (natsauth.WorkerCreds).
func (n *Node) workerRole() Role {
	for _, r := range n.Roles {
		if r != Sealer {
			return r
		}
	}
	return Crypto
}

// connect opens a connection for a role and closes it (drained) on Stop.
func (n *Node) connect(ctx context.Context, r Role, name string) (*nats.Conn, error) {
	nc, err := n.infra.Connect(ctx, r, name)
	if err != nil {
		return nil, err
	}
	n.closers = append(n.closers, func() { Drain(nc) })
	return nc, nil
}

// startKMS opens the key store, the audit publisher and the domain service.
func (n *Node) startKMS(ctx, runCtx context.Context, js jetstream.JetStream) error {
	store, err := kvstore.Open(ctx, js)
	if err != nil {
		return err
	}
	// Audit records go out on their own connections, so that replies and
	// audit publishes do not queue behind each other (about +10% at load).
	auditConn, err := n.connect(ctx, n.workerRole(), "keyflow-audit")
	if err != nil {
		return err
	}
	auditJS, err := n.infra.JetStream(auditConn)
	if err != nil {
		return fmt.Errorf("failed to open JetStream: %w", err)
	}
	o := n.opts
	// The audit streams are the operator's (keyflow bootstrap, or the dev
	// stack at start); workers attach, and refuse to serve while their
	// retention differs from the policy (events/jsaudit, policy.go).
	host, _ := os.Hostname()
	source := "/keyflow/worker/" + host
	publisher, err := jsaudit.Attach(ctx, auditJS, source, jsaudit.MaxAge(o.AuditMaxAge), jsaudit.MaxBytes(o.AuditMaxBytes), jsaudit.MaxMsgs(o.AuditMaxMsgs))
	if err != nil {
		return err
	}
	conns := o.AuditConns
	if conns <= 0 {
		conns = jsaudit.DefaultConns
	}
	extra, err := publisher.Spread(conns)
	if err != nil {
		return err
	}
	for _, c := range extra {
		n.closers = append(n.closers, func() { Drain(c) })
	}
	var audit events.Sink = publisher
	if m := n.infra.Metrics; m != nil {
		audit = m.Audit(publisher)
	}
	gov, err := kvstore.OpenGovernance(runCtx, js)
	if err != nil {
		return err
	}
	n.Store = store
	if n.KMS, err = kms.New(ctx, kms.Config{
		HSM: n.infra.HSM, Store: store, Audit: audit, Logger: n.infra.Logger, Governance: gov,
		Source: source, AuditFailOpen: o.AuditFailOpen, Region: o.Region,
	}); err != nil {
		return err
	}
	n.closers = append(n.closers, n.KMS.Close)
	// Only now, with the record key kms.New gave the publisher, so that
	// these records are authenticated like every other (the sealer flags
	// any record without one as forged).
	if len(o.AuditChanges) > 0 {
		if err := publisher.RecordChanges(ctx, o.AuditChanges); err != nil {
			return err
		}
	}
	publisher.Watch(runCtx, 0)
	if err = store.WatchKeys(runCtx, n.KMS); err != nil {
		return err
	}
	return store.WatchAuthz(runCtx, n.KMS)
}

// startSealer chains KF_AUDIT into signed digests (KF_AUDIT_DIGESTS), on a
// connection of its own. Closers run in reverse, so it stops (and seals
// what is pending) before the KMS and the audit connections close.
func (n *Node) startSealer(ctx context.Context) error {
	conn, err := n.connect(ctx, Sealer, "keyflow-sealer")
	if err != nil {
		return err
	}
	js, err := n.infra.JetStream(conn)
	if err != nil {
		return fmt.Errorf("failed to open JetStream: %w", err)
	}
	n.sealerJS = js
	cfg := sealer.Config{JS: js, KMS: n.KMS, Logger: n.infra.Logger, Read: &n.sealerRead}
	if ttl := n.opts.SealerLease; ttl > 0 {
		host, _ := os.Hostname()
		s, err := sealer.StartStandby(ctx, cfg, fmt.Sprintf("%s/%d", host, os.Getpid()), ttl)
		if err != nil {
			return err
		}
		n.Standby = s
		n.closers = append(n.closers, s.Stop)
		return nil
	}
	s, err := sealer.Start(ctx, cfg)
	if err != nil {
		return err
	}
	n.closers = append(n.closers, s.Stop)
	return nil
}

// startServices registers the NATS services of the crypto and admin roles.
func (n *Node) startServices(js jetstream.JetStream, wc *workflows.Client) error {
	cfg := rpc.Config{
		Conn: n.Conn, KMS: n.KMS, Tenants: n.infra.Tenants, JS: js, Logger: n.infra.Logger,
		Workers: n.opts.Workers, CursorKey: n.opts.CursorKey,
	}
	if m := n.infra.Metrics; m != nil {
		cfg.Observe = m.ObserveRequest
	}
	if n.opts.ShareQuotas {
		m, leave, err := joinMembers(context.Background(), js)
		if err != nil {
			return err
		}
		n.closers = append(n.closers, leave)
		cfg.QuotaShares = m.Count
		n.members = m
	}
	if n.Has(Crypto) {
		cfg.Planes |= rpc.DataPlane
	}
	if n.Has(Admin) {
		cfg.Planes |= rpc.ControlPlane
		log := n.infra.Logger
		cfg.Rotator, cfg.Lifecycle = rotator{wc, log}, wc
		cfg.Archiver, cfg.Imports, cfg.Migrator = archiver{wc, log}, importExpirer{wc}, migrator{wc, log}
		if wc != nil {
			cfg.Cloud = wc // docs/multi-cloud.md
		}
	}
	srv, err := rpc.Start(cfg)
	if err != nil {
		return err
	}
	n.RPC = srv
	n.closers = append(n.closers, srv.Stop)
	return nil
}

// startGateway starts the HTTP front: the XKS proxy, when configured.
func (n *Node) startGateway(ctx context.Context) error {
	g := n.opts.Gateway
	if g.XKSListen == "" {
		return nil
	}
	if g.Prepare != nil {
		if err := g.Prepare(ctx, n.KMS); err != nil {
			return err
		}
	}
	cfg, err := xks.LoadConfig(g.XKSConfig)
	if err != nil {
		return err
	}
	srv, err := xks.New(xks.Options{KMS: n.KMS, Config: cfg, Logger: n.infra.Logger, Model: g.Model})
	if err != nil {
		return err
	}
	addr, err := srv.Listen(g.XKSListen, g.XKSCert)
	if err != nil {
		return err
	}
	n.closers = append(n.closers, func() { _ = srv.Close() })
	n.XKS, n.XKSAddr = srv, addr.String()
	return nil
}

// Rotate runs a key's rotation workflow to completion, as the admin
// role's rotate does (for other protocol adapters, such as KMIP).
func (n *Node) Rotate(ctx context.Context, c kms.Caller, keyID string) (*rpc.RotateResult, error) {
	if n.Workflows == nil {
		return nil, errors.New("roles: rotation needs Temporal")
	}
	return rotator{n.Workflows, n.infra.Logger}.Rotate(ctx, c, keyID)
}

// Stop shuts the roles down in reverse order of start.
func (n *Node) Stop() {
	if n == nil {
		return
	}
	if n.cancel != nil {
		n.cancel()
	}
	for i := len(n.closers) - 1; i >= 0; i-- {
		n.closers[i]()
	}
	n.closers = nil
}

// Drain drains a connection and waits (bounded) until it is closed, so the
// server is not shut down under it (which makes nats.go print errors).
func Drain(nc *nats.Conn) {
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for !nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	nc.Close()
}

// cloudConnect opens cloud destinations for the lifecycle worker
// (docs/multi-cloud.md).
func cloudConnect(ctx context.Context, d *kms.CloudDestination) (cloud.Connector, error) {
	return connect.Open(ctx, d.Provider, d.Settings)
}
