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
//	DIR/temporal/temporal.db                 Temporal's SQLite database
//	DIR/admin.creds                          the default tenant's admin (0600)
//	DIR/auditor.creds                        keyflow-account auditor: audit verify/export/forward (0600)
//
// This is a composition root: it imports the adapters (workers, workflows)
// and wires them to the infrastructure, which is why it lives in deploy
// rather than in any of them.
package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.temporal.io/sdk/client"

	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/deploy/roles"
	"github.com/keyflow/keyflow/hsm/pkcs11"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/natsauth"
	"github.com/keyflow/keyflow/workers/sealer"
)

// Defaults.
const (
	DefaultNATSListen     = "127.0.0.1:4222"
	DefaultTemporalListen = "127.0.0.1:7233"
	DefaultTenant         = "default"
	DefaultPrincipal      = "admin"
	TokenLabel            = "keyflow"
	AdminCredsFile        = "admin.creds"
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
	// SyncAlways makes JetStream fsync every write (audit records, keys)
	// before acknowledging it: an acknowledged record survives a power
	// loss, at a measured cost (README, Durability). Without it a kill -9
	// loses nothing, a power loss can lose the last records.
	SyncAlways bool
	// OpsListen, when set, serves /healthz, /readyz and /metrics there
	// (deploy/roles).
	OpsListen string
}

// Stack is a running dev stack.
type Stack struct {
	cfg      Config
	NATS     *server.Server
	Temporal *Temporal
	Identity *natsauth.Identity
	KMS      *kms.Service
	HSM      *pkcs11.Token
	XKS      *XKSInfo // nil unless Config.XKSListen

	// Node runs every role (deploy/roles).
	Node    *roles.Node
	Metrics *roles.Metrics
	OpsURL  string // the ops endpoints, when Config.OpsListen is set

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
	if st.HSM, err = openToken(ctx, dir, st.Metrics.ObserveHSM); err != nil {
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
	if st.NATS, err = natsserver.Start(natsserver.Config{
		StoreDir: filepath.Join(dir, "nats", "jetstream"), Listen: cfg.NATSListen, Identity: st.Identity, SyncAlways: cfg.SyncAlways,
	}); err != nil {
		return st, err
	}
	st.closers = append(st.closers, func() { st.NATS.Shutdown(); st.NATS.WaitForShutdown() })

	if st.Temporal, err = StartTemporal(ctx, TemporalConfig{
		DataDir: filepath.Join(dir, "temporal"), ListenAddr: cfg.TemporalListen, Namespace: "keyflow",
	}); err != nil {
		return st, err
	}
	st.closers = append(st.closers, func() { _ = st.Temporal.Stop() })
	if st.tc, err = st.Temporal.NewClient(ctx); err != nil {
		return st, err
	}
	st.closers = append(st.closers, st.tc.Close)

	// Every role, through the same composition `keyflow serve` uses.
	gateway, err := st.xksOptions()
	if err != nil {
		return st, err
	}
	if st.Node, err = roles.Start(ctx, roles.Infra{
		Connect: func(_ context.Context, _ roles.Role, name string) (*nats.Conn, error) {
			return natsserver.ConnectService(st.NATS, st.Identity, name)
		},
		HSM: st.HSM, Temporal: st.tc, Tenants: st.Identity, Logger: cfg.Logger, Metrics: st.Metrics,
	}, roles.Options{
		Roles: roles.All, Workers: cfg.Workers, AuditFailOpen: cfg.AuditFailOpen,
		AuditMaxAge: cfg.AuditMaxAge, AuditMaxBytes: cfg.AuditMaxBytes, AuditMaxMsgs: cfg.AuditMaxMsgs,
		Gateway: gateway,
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

	if err = st.writeAdminCreds(); err != nil {
		return st, err
	}
	if err = st.writeAuditorCreds(); err != nil {
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
	if b, err := os.ReadFile(path); err == nil && natsauth.CredsHaveRoles(b) {
		return nil // creds from before roles existed are reissued
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
func openToken(ctx context.Context, dir string, observe func(string, time.Duration, error)) (*pkcs11.Token, error) {
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
	tok, err := pkcs11.Open(ctx, pkcs11.Config{Module: module, TokenLabel: TokenLabel, PIN: strings.TrimSpace(string(pin)), Observe: observe})
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

// writeAuditorCreds writes the creds of a keyflow-account user for the
// operator and auditor commands (audit verify, export, forward), which read
// the whole stream. Tenants never get these.
func (s *Stack) writeAuditorCreds() error {
	path := filepath.Join(s.cfg.DataDir, sealer.AuditorCredsFile)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	creds, err := s.Identity.ServiceCreds("auditor")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		return fmt.Errorf("failed to write auditor creds: %w", err)
	}
	return nil
}
