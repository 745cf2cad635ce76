// Package devstack runs all of keyflow in one process for development and
// for the end-to-end tests: an embedded nats-server with JetStream, an
// embedded Temporal server on SQLite, a SoftHSM token, and every worker
// (the crypto, admin and audit services and the Temporal lifecycle worker).
//
// Everything lives under one data directory, so a stack started again on
// the same directory comes back with its keys, versions, schedules, audit
// records and identities:
//
//	DIR/hsm/softhsm2.conf, DIR/hsm/tokens/   the SoftHSM token
//	DIR/hsm/pin                              the token's user PIN (0600)
//	DIR/hsm/so-pin                           the security officer's PIN (0600), for the root key ceremony
//	DIR/nats/identity.json                   operator and account keys (0600)
//	DIR/nats/jetstream/                      streams and KV buckets
//	DIR/nats/cursor.key                      seals audit tail cursors (0600)
//	DIR/temporal/temporal.db                 Temporal's SQLite database
//	DIR/admin.creds                          the default tenant's admin (0600)
//	DIR/auditor.creds                        read-only auditor/forwarder: audit verify/export/forward/checkpoint (0600)
//	DIR/operator.creds                       keyflow-account operator: stream administration, audit pubkeys (0600)
//	DIR/audit-pubkeys.json                   the audit sealer's public keys, for audit verify
//
// This is a composition root: it imports the adapters (workers, workflows)
// and wires them to the infrastructure, which is why it lives in deploy
// rather than in any of them.
package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"

	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/deploy/roles"
	"github.com/keyflow/keyflow/events/chain"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/hsm/pkcs11"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/natsauth"
	"github.com/keyflow/keyflow/workers/rpc"
	"github.com/keyflow/keyflow/workers/sealer"
)

// Defaults.
const (
	DefaultNATSListen     = "127.0.0.1:4222"
	DefaultTemporalListen = "127.0.0.1:7233"
	DefaultUIListen       = "127.0.0.1:8233" // the Temporal Web UI, where Temporal's own dev server has it
	DefaultTenant         = "default"
	DefaultPrincipal      = "admin"
	TokenLabel            = "keyflow"
	AdminCredsFile        = "admin.creds"
	OperatorCredsFile     = "operator.creds"
)

// Config configures a dev stack.
type Config struct {
	DataDir        string
	NATSListen     string // default 127.0.0.1:4222; "127.0.0.1:0" picks a port
	TemporalListen string // default 127.0.0.1:7233
	Logger         *slog.Logger
	// Workers is the request pool size of the NATS services (default 64).
	Workers int
	// AuditFailOpen lets operations proceed when their audit record
	// cannot be stored (see kms.Config.AuditFailOpen). Weaker; recorded.
	AuditFailOpen bool
	// Retention limits of the audit stream; zero means unlimited.
	AuditMaxAge   time.Duration
	AuditMaxBytes int64
	AuditMaxMsgs  int64
	// XKSListen, when set, serves the AWS KMS XKS proxy there (HTTPS,
	// self-signed); XKSConfig is its configuration (default: generated
	// under DIR/xks). See xks.go.
	XKSListen string
	XKSConfig string
	// AWSListen, when set, serves the AWS KMS API there (awskms.go).
	AWSListen string
	// KMIPListen, when set, serves KMIP there (mutual TLS, dev CA under
	// DIR/kmip). See kmip.go.
	KMIPListen string
	// SyncAlways makes JetStream fsync every write (audit records, keys)
	// before acknowledging it: an acknowledged record survives a power
	// loss, at a measured cost (README, Durability). Without it a kill -9
	// loses nothing, a power loss can lose the last records.
	SyncAlways bool
	// OpsListen, when set, serves /healthz, /readyz and /metrics there
	// (deploy/roles).
	OpsListen string
	// UIListen, when set, serves the Temporal Web UI there, a loopback
	// address only (ui.go): a dev view of the lifecycle workflows.
	UIListen string
	// Trace puts spans around the HSM calls and the Temporal SDK's tracing
	// interceptor on the Temporal clients; the caller installs the tracer
	// provider (roles.StartTracing or roles.InstallTracing).
	Trace bool
	// Region names this deployment for multi-region keys
	// (docs/multi-region.md); it is also its JetStream domain.
	Region string
	// LeafListen, with Region, accepts other regions' leaf-node links
	// there, and writes DIR/region-link.creds for them (region.go).
	LeafListen string
	// LinkTo and LinkCreds, with Region, link this deployment to another
	// one's LeafListen with that deployment's region-link.creds.
	LinkTo    string
	LinkCreds string
	// ReplicaSwitchTimeout bounds a rotation's wait for the replicas of a
	// multi-region key before it switches anyway and records the lagging
	// regions (0: workflows.DefaultReplicaSwitchTimeout, 5 min).
	ReplicaSwitchTimeout time.Duration
}

// Stack is a running dev stack.
type Stack struct {
	cfg      Config
	NATS     *server.Server
	Temporal *Temporal
	Identity *natsauth.Identity
	KMS      *kms.Service
	HSM      *pkcs11.Token
	XKS      *XKSInfo  // nil unless Config.XKSListen
	AWS      *AWSInfo  // nil unless Config.AWSListen
	KMIP     *KMIPInfo // nil unless Config.KMIPListen

	// Node runs every role (deploy/roles).
	Node    *roles.Node
	Metrics *roles.Metrics
	OpsURL  string // the ops endpoints, when Config.OpsListen is set
	UIURL   string // the Temporal Web UI, when Config.UIListen is set

	tc client.Client

	xksConfigPath, xksCertPath, xksConsole string
	closers                                []func()
}

// NATSURL is the URL external clients use.
func (s *Stack) NATSURL() string { return s.NATS.ClientURL() }

// AdminCreds is the path of the default tenant's admin creds file.
func (s *Stack) AdminCreds() string { return filepath.Join(s.cfg.DataDir, AdminCredsFile) }

// Start brings the stack up. Call Stop to shut it down cleanly.
func Start(ctx context.Context, cfg Config) (st *Stack, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("devstack: a data directory is required")
	}
	if cfg.NATSListen == "" {
		cfg.NATSListen = DefaultNATSListen
	}
	if cfg.TemporalListen == "" {
		cfg.TemporalListen = DefaultTemporalListen
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.UIListen != "" {
		if err := checkUIListen(cfg.UIListen); err != nil {
			return nil, err
		}
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("failed to resolve data dir: %w", err)
	}
	cfg.DataDir = dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("failed to create %s: %w", dir, err)
	}
	release, err := lockDataDir(dir)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{filepath.Join(dir, "hsm", "tokens"), filepath.Join(dir, "nats"), filepath.Join(dir, "temporal")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			release()
			return nil, fmt.Errorf("failed to create %s: %w", d, err)
		}
	}
	st = &Stack{cfg: cfg}
	st.closers = append(st.closers, release) // closers run in reverse: the lock goes last
	defer func() {
		if err != nil {
			st.Stop()
			st = nil
		}
	}()
	st.Metrics = roles.NewMetrics()
	var traceHSM func(context.Context, string) (context.Context, func(error))
	var interceptors []interceptor.ClientInterceptor
	if cfg.Trace {
		traceHSM = roles.TraceHSM
		ti, err := roles.TemporalTracing()
		if err != nil {
			return st, err
		}
		interceptors = append(interceptors, ti)
	}
	if st.HSM, err = openToken(ctx, dir, st.Metrics.ObserveHSM, traceHSM); err != nil {
		return st, err
	}
	st.closers = append(st.closers, func() { _ = st.HSM.Close() })

	if st.Identity, err = natsauth.Load(filepath.Join(dir, "nats", "identity.json")); err != nil {
		return st, err
	}
	if _, err = st.Identity.AddTenant(DefaultTenant); err != nil {
		return st, err
	}
	st.Identity.SetPlatformTenant(DefaultTenant) // its tenant admins create tenants
	ncfg := natsserver.Config{
		StoreDir: filepath.Join(dir, "nats", "jetstream"), Listen: cfg.NATSListen, Identity: st.Identity, SyncAlways: cfg.SyncAlways,
	}
	if err := regionConfig(cfg, &ncfg); err != nil {
		return st, err
	}
	if st.NATS, err = natsserver.Start(ncfg); err != nil {
		return st, err
	}
	st.closers = append(st.closers, func() { st.NATS.Shutdown(); st.NATS.WaitForShutdown() })
	if err := st.writeLinkCreds(); err != nil {
		return st, err
	}

	// The operator provisions the audit streams (their retention policy)
	// and the auditor's durables; no worker may change them.
	policy := []jsaudit.Option{jsaudit.MaxAge(cfg.AuditMaxAge), jsaudit.MaxBytes(cfg.AuditMaxBytes), jsaudit.MaxMsgs(cfg.AuditMaxMsgs)}
	changes, err := st.provisionAudit(ctx, policy)
	if err != nil {
		return st, err
	}

	if st.Temporal, err = StartTemporal(ctx, TemporalConfig{
		DataDir: filepath.Join(dir, "temporal"), ListenAddr: cfg.TemporalListen, Namespace: "keyflow",
		ClientInterceptors: interceptors,
	}); err != nil {
		return st, err
	}
	st.closers = append(st.closers, func() { _ = st.Temporal.Stop() })
	if st.tc, err = st.Temporal.NewClient(ctx); err != nil {
		return st, err
	}
	st.closers = append(st.closers, st.tc.Close)

	cursorKey, err := readOrCreateKey(filepath.Join(dir, "nats", "cursor.key"), rpc.CursorKeySize)
	if err != nil {
		return st, err
	}
	// Every role, through the same composition `keyflow serve` uses.
	gateway, err := st.xksOptions()
	if err != nil {
		return st, err
	}
	if st.Node, err = roles.Start(ctx, roles.Infra{
		Connect: func(_ context.Context, r roles.Role, name string) (*nats.Conn, error) {
			if r == roles.Sealer {
				return st.connect(st.Identity.SealerCreds, name)
			}
			return st.connect(st.Identity.WorkerCreds, name)
		},
		HSM: st.HSM, Temporal: st.tc, Tenants: st.Identity, Logger: cfg.Logger, Metrics: st.Metrics,
	}, roles.Options{
		Roles: roles.All, Workers: cfg.Workers, AuditFailOpen: cfg.AuditFailOpen,
		AuditMaxAge: cfg.AuditMaxAge, AuditMaxBytes: cfg.AuditMaxBytes, AuditMaxMsgs: cfg.AuditMaxMsgs,
		AuditChanges: changes, CursorKey: cursorKey, Gateway: gateway, Region: cfg.Region,
		ReplicaSwitchTimeout: cfg.ReplicaSwitchTimeout,
	}); err != nil {
		return st, err
	}
	st.closers = append(st.closers, st.Node.Stop)
	st.KMS = st.Node.KMS
	st.setXKSInfo()
	if cfg.OpsListen != "" {
		addr, stop, err := roles.ServeOps(cfg.OpsListen, roles.OpsHandler(st.Node.Checks(), st.Metrics))
		if err != nil {
			return st, err
		}
		st.closers = append(st.closers, stop)
		st.OpsURL = "http://" + addr
	}
	if cfg.UIListen != "" {
		if err = st.startUI(cfg.UIListen); err != nil {
			return st, err
		}
	}
	if err = st.startAWS(ctx); err != nil {
		return st, err
	}
	if err = st.startKMIP(st.Node.Workflows, func(ctx context.Context, c kms.Caller, keyID string) (uint32, error) {
		res, err := st.Node.Rotate(ctx, c, keyID)
		if err != nil {
			return 0, err
		}
		return res.NewVersion, nil
	}); err != nil {
		return st, err
	}

	if err = st.writeAdminCreds(); err != nil {
		return st, err
	}
	if err = st.writeRoleCreds(); err != nil {
		return st, err
	}
	if err = writePubKeys(ctx, st.Node.Store, filepath.Join(dir, sealer.PubKeysFile)); err != nil {
		return st, err
	}
	return st, nil
}

// Stop shuts everything down in reverse order of start.
func (s *Stack) Stop() {
	if s == nil {
		return
	}
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// writeAdminCreds writes the default tenant admin's creds once; later starts
// keep the file (and its key) so a user's copy keeps working.
func (s *Stack) writeAdminCreds() error {
	path := s.AdminCreds()
	if b, err := os.ReadFile(path); err == nil && natsauth.CredsHaveRoles(b) && natsauth.CredsOwnInbox(b) {
		return nil // creds from before roles or per-user inboxes existed are reissued
	}
	creds, err := s.Identity.UserCreds(DefaultTenant, DefaultPrincipal)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		return fmt.Errorf("failed to write admin creds: %w", err)
	}
	return nil
}

// openToken sets up the SoftHSM token under dir on first use and opens it.
// The PIN is generated, kept in a 0600 file, and never printed.
func openToken(ctx context.Context, dir string, observe func(string, time.Duration, error), trace func(context.Context, string) (context.Context, func(error))) (*pkcs11.Token, error) {
	conf := filepath.Join(dir, "hsm", "softhsm2.conf")
	tokens := filepath.Join(dir, "hsm", "tokens")
	confText := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(conf, []byte(confText), 0o600); err != nil {
		return nil, fmt.Errorf("failed to write SoftHSM config: %w", err)
	}
	// SoftHSM reads its config at C_Initialize, once per process.
	if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
		return nil, fmt.Errorf("failed to set SOFTHSM2_CONF: %w", err)
	}
	module := pkcs11.DefaultModule()
	if _, err := os.Stat(module); err != nil {
		return nil, fmt.Errorf("SoftHSM is not installed (%s missing): run `sudo apt-get install -y softhsm2`, or set KEYFLOW_PKCS11_MODULE", module)
	}
	pinPath := filepath.Join(dir, "hsm", "pin")
	pin, err := os.ReadFile(pinPath)
	if errors.Is(err, os.ErrNotExist) {
		userPIN, soPIN := randomPIN(), randomPIN()
		if err := pkcs11.InitToken(ctx, module, TokenLabel, soPIN, userPIN); err != nil {
			return nil, fmt.Errorf("failed to initialise the SoftHSM token: %w", err)
		}
		if err := os.WriteFile(pinPath, []byte(userPIN), 0o600); err != nil {
			return nil, fmt.Errorf("failed to write the PIN file: %w", err)
		}
		// The SO PIN is kept for the root key ceremony (token.go).
		if err := os.WriteFile(soPINPath(dir), []byte(soPIN), 0o600); err != nil {
			return nil, fmt.Errorf("failed to write the SO PIN file: %w", err)
		}
		pin = []byte(userPIN)
	} else if err != nil {
		return nil, fmt.Errorf("failed to read the PIN file: %w", err)
	}
	tok, err := pkcs11.Open(ctx, pkcs11.Config{Module: module, TokenLabel: TokenLabel, PIN: strings.TrimSpace(string(pin)), Observe: observe, Trace: trace})
	if err != nil {
		return nil, fmt.Errorf("failed to open the SoftHSM token: %w", err)
	}
	return tok, nil
}

func randomPIN() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// drain drains a connection and waits (bounded) until it is closed.
func drain(nc *nats.Conn) { roles.Drain(nc) }

// connect connects in-process with creds of one of keyflow's NATS roles
// (natsauth: WorkerCreds, SealerCreds, OperatorCreds).
func (s *Stack) connect(issue func(string) ([]byte, error), name string) (*nats.Conn, error) {
	creds, err := issue(name)
	if err != nil {
		return nil, err
	}
	return natsserver.Connect(s.NATS, creds, name)
}

// provisionAudit creates or updates the audit streams to the configured
// retention and the auditor's durables, as the operator, and returns what
// it changed (recorded once a publisher is attached).
func (s *Stack) provisionAudit(ctx context.Context, policy []jsaudit.Option) ([]jsaudit.StreamChange, error) {
	nc, err := s.connect(s.Identity.OperatorCreds, "keyflow-operator")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("failed to open JetStream: %w", err)
	}
	return jsaudit.Provision(ctx, js, natsauth.AuditorDurable, policy...)
}

// writeRoleCreds writes the read-only auditor's creds (audit verify,
// export, forward, checkpoint) and the operator's (stream administration,
// audit pubkeys). Tenants never get these. Creds from before the roles
// existed (a full keyflow-account user as auditor.creds) are reissued.
func (s *Stack) writeRoleCreds() error {
	for _, f := range []struct {
		file  string
		issue func(string) ([]byte, error)
		name  string
	}{{sealer.AuditorCredsFile, s.Identity.AuditorCreds, "auditor"}, {OperatorCredsFile, s.Identity.OperatorCreds, "operator"}} {
		path := filepath.Join(s.cfg.DataDir, f.file)
		if b, err := os.ReadFile(path); err == nil && natsauth.CredsRestricted(b) {
			continue
		}
		creds, err := f.issue(f.name)
		if err != nil {
			return err
		}
		if err := os.WriteFile(path, creds, 0o600); err != nil {
			return fmt.Errorf("failed to write %s: %w", f.file, err)
		}
	}
	return nil
}

// writePubKeys writes the sealer's public keys (every version), from the
// key store, for `keyflow audit verify` run with the read-only auditor
// creds, which cannot read the key store.
func writePubKeys(ctx context.Context, store kms.Store, path string) error {
	keys, err := sealer.StoredPublicKeys(ctx, store)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(struct {
		Keys []chain.PublicKey `json:"keys"`
	}{keys}, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode the sealer keys: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return nil
}

// readOrCreateKey reads a random key of n bytes kept in a 0600 file,
// creating it on first use.
func readOrCreateKey(path string, n int) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil && len(b) == n {
		return b, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("failed to read %s: %w", path, err)
	}
	b = make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("failed to generate %s: %w", path, err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("failed to write %s: %w", path, err)
	}
	return b, nil
}
