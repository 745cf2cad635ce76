package devstack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/server/common/authorization"
	"go.temporal.io/server/common/cluster"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/dynamicconfig"
	tlog "go.temporal.io/server/common/log"
	"go.temporal.io/server/common/membership/static"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/common/primitives"
	"go.temporal.io/server/schema/sqlite"
	"go.temporal.io/server/temporal"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

const (
	temporalDefaultListenAddr = "127.0.0.1:7233"
	temporalDefaultNamespace  = "keyflow"
	temporalDBFile            = "temporal.db"
	temporalLogFile           = "temporal.log"
	temporalClusterName       = "active"

	// temporalReadyTimeout bounds the wait for the frontend when the caller's
	// context has no deadline, so a wedged server cannot hang StartTemporal.
	temporalReadyTimeout = 60 * time.Second
	// temporalStopTimeout bounds Stop: the server's own per-service stop
	// timeout is 5 minutes, far too long for a dev stack.
	temporalStopTimeout = 30 * time.Second
)

// TemporalConfig configures the embedded Temporal server of the dev stack.
type TemporalConfig struct {
	DataDir    string // the SQLite file lives at DataDir/temporal.db; created if missing
	ListenAddr string // frontend gRPC address, e.g. "127.0.0.1:7233"; "127.0.0.1:0" picks a free port
	Namespace  string // default "keyflow"; created if missing (also on restarts — must be idempotent)
	LogFile    string // server logs go here (default DataDir/temporal.log), NOT stdout: the server is noisy
	// TLS is the mutual-TLS material (temporaltls.go). Nil generates the
	// dev set under DataDir/tls, and then ListenAddr must be loopback.
	TLS *TemporalTLS
	// ClientInterceptors go on every client NewClient dials (tracing).
	ClientInterceptors []interceptor.ClientInterceptor
}

// Temporal is a running embedded Temporal server (frontend, history,
// matching and worker services in this process) persisting to SQLite.
type Temporal struct {
	srv       temporal.Server
	hostPort  string
	namespace string
	tls       *tls.Config  // the client side of the frontend's mutual TLS
	tlsFiles  *TemporalTLS // the same, as files (the Web UI reads them)
	intercept []interceptor.ClientInterceptor
	logFile   *temporalLogWriter
	logger    *zap.Logger

	stopOnce sync.Once
	stopErr  error
}

// StartTemporal starts the server and returns once its frontend answers
// requests for the namespace.
func StartTemporal(ctx context.Context, cfg TemporalConfig) (*Temporal, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("failed to start temporal: TemporalConfig.DataDir is required")
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = temporalDefaultListenAddr
	}
	if cfg.Namespace == "" {
		cfg.Namespace = temporalDefaultNamespace
	}
	if cfg.LogFile == "" {
		cfg.LogFile = filepath.Join(cfg.DataDir, temporalLogFile)
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("failed to resolve data dir %q: %w", cfg.DataDir, err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("failed to create data dir: %w", err)
	}

	addrs, err := temporalResolveAddrs(cfg.ListenAddr)
	if err != nil {
		return nil, err
	}
	if cfg.TLS == nil {
		if !net.ParseIP(addrs.frontendBindIP).IsLoopback() {
			return nil, fmt.Errorf("failed to start temporal: the dev stack's frontend listens on loopback only (ListenAddr %q); give operator certificates (TemporalConfig.TLS) to listen elsewhere", cfg.ListenAddr)
		}
		if cfg.TLS, err = DevTemporalTLS(filepath.Join(dataDir, "tls")); err != nil {
			return nil, err
		}
	}
	clientTLS, err := cfg.TLS.ClientConfig()
	if err != nil {
		return nil, err
	}

	f, err := os.OpenFile(cfg.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("failed to open temporal log file: %w", err)
	}
	logFile := &temporalLogWriter{f: f}
	zl := zap.New(
		zapcore.NewCore(zapcore.NewJSONEncoder(tlog.DefaultZapEncoderConfig), logFile, zap.InfoLevel),
		// The server calls logger.Fatal on e.g. a failed listen, which would
		// os.Exit the whole dev stack with the reason only in the log file.
		// Panicking instead lets us turn failures during start into errors.
		zap.WithFatalHook(zapcore.WriteThenPanic),
	)
	ownLog := true // until a *Temporal takes over closing the log file
	defer func() {
		if ownLog {
			_ = zl.Sync()
			_ = logFile.Close()
		}
	}()
	logger := tlog.NewZapLogger(zl)

	sqlCfg := &config.SQL{
		PluginName:   sqliteplugin.PluginName,
		DatabaseName: filepath.Join(dataDir, temporalDBFile),
		ConnectAttributes: map[string]string{
			"mode": "rwc",
			// The plugin turns every non-URI key into "_pragma=key=value", so
			// the keys must NOT carry the "_" prefix lite_server.go adds (that
			// yields unknown pragmas which SQLite silently ignores).
			"journal_mode": "wal",
			"synchronous":  "normal",
		},
	}
	if err := temporalEnsureSchema(sqlCfg); err != nil {
		return nil, err
	}

	nsCfg, err := sqlite.NewNamespaceConfig(temporalClusterName, cfg.Namespace, false, nil)
	if err != nil {
		return nil, fmt.Errorf("failed to build namespace config: %w", err)
	}
	// CreateNamespaces skips namespaces whose name already exists, so this is
	// safe on every restart.
	if err := sqlite.CreateNamespaces(sqlCfg, nsCfg); err != nil {
		return nil, fmt.Errorf("failed to create namespace %q: %w", cfg.Namespace, err)
	}

	serverCfg, hosts, err := temporalServerConfig(sqlCfg, addrs)
	if err != nil {
		return nil, err
	}
	serverCfg.Global.TLS = cfg.TLS.serverConfig()

	authorizer, err := authorization.GetAuthorizerFromConfig(&serverCfg.Global.Authorization)
	if err != nil {
		return nil, fmt.Errorf("failed to create authorizer: %w", err)
	}
	claimMapper, err := authorization.GetClaimMapperFromConfig(&serverCfg.Global.Authorization, logger)
	if err != nil {
		return nil, fmt.Errorf("failed to create claim mapper: %w", err)
	}

	var srv temporal.Server
	err = temporalRecoverFatal(func() error {
		var err error
		srv, err = temporal.NewServer(
			temporal.WithConfig(serverCfg),
			temporal.ForServices(temporal.DefaultServices),
			temporal.WithStaticHosts(hosts),
			temporal.WithLogger(logger),
			temporal.WithAuthorizer(authorizer),
			temporal.WithClaimMapper(func(*config.Config) authorization.ClaimMapper { return claimMapper }),
			temporal.WithDynamicConfigClient(temporalDynamicConfig),
		)
		if err != nil {
			return fmt.Errorf("failed to create temporal server: %w", err)
		}
		if err := srv.Start(); err != nil {
			return fmt.Errorf("failed to start temporal server: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w (see %s)", err, cfg.LogFile)
	}

	t := &Temporal{
		srv:       srv,
		hostPort:  addrs.dial,
		namespace: cfg.Namespace,
		tls:       clientTLS,
		tlsFiles:  cfg.TLS,
		intercept: cfg.ClientInterceptors,
		logFile:   logFile,
		logger:    zl,
	}
	ownLog = false
	if err := t.waitReady(ctx); err != nil {
		stopErr := t.Stop()
		return nil, errors.Join(fmt.Errorf("failed to wait for temporal frontend on %s: %w (see %s)", t.hostPort, err, cfg.LogFile), stopErr)
	}
	return t, nil
}

// HostPort is the frontend address clients dial, e.g. "127.0.0.1:7233".
func (t *Temporal) HostPort() string { return t.hostPort }

// Namespace is the namespace created at start.
func (t *Temporal) Namespace() string { return t.namespace }

// NewClient dials the frontend with the namespace set and SDK logging at
// Warn, because the SDK logs every worker start and stop at Info.
func (t *Temporal) NewClient(ctx context.Context) (client.Client, error) {
	c, err := client.DialContext(ctx, t.clientOptions())
	if err != nil {
		return nil, fmt.Errorf("failed to dial temporal at %s: %w", t.hostPort, err)
	}
	return c, nil
}

// Stop stops all services. It is safe to call more than once.
func (t *Temporal) Stop() error {
	t.stopOnce.Do(func() {
		done := make(chan error, 1)
		go func() {
			done <- temporalRecoverFatal(t.srv.Stop)
		}()
		select {
		case err := <-done:
			if err != nil {
				t.stopErr = fmt.Errorf("failed to stop temporal server: %w", err)
			}
		case <-time.After(temporalStopTimeout):
			// Leave the log file open: the server goroutines may still write.
			t.stopErr = fmt.Errorf("failed to stop temporal server: still running after %s", temporalStopTimeout)
			return
		}
		_ = t.logger.Sync()
		if err := t.logFile.Close(); err != nil && t.stopErr == nil {
			t.stopErr = fmt.Errorf("failed to close temporal log file: %w", err)
		}
	})
	return t.stopErr
}

func (t *Temporal) clientOptions() client.Options {
	return client.Options{
		HostPort:          t.hostPort,
		Namespace:         t.namespace,
		ConnectionOptions: client.ConnectionOptions{TLS: t.tls},
		Interceptors:      t.intercept,
		Logger: sdklog.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{
			Level: slog.LevelWarn,
		}))),
	}
}

// waitReady polls until the frontend serves DescribeNamespace for our
// namespace, which needs persistence and the namespace registry up, not just
// an open port.
func (t *Temporal) waitReady(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, temporalReadyTimeout)
		defer cancel()
	}
	opts := t.clientOptions()
	// Dial failures are expected while the server comes up; keep them out of stderr.
	opts.Logger = sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))

	ticker := time.NewTicker(50 * time.Millisecond)
	defer ticker.Stop()
	var lastErr error
	for {
		if lastErr = t.probe(ctx, opts); lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), lastErr)
		case <-ticker.C:
		}
	}
}

func (t *Temporal) probe(ctx context.Context, opts client.Options) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := client.DialContext(ctx, opts)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
		return err
	}
	_, err = c.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: t.namespace})
	return err
}

// temporalEnsureSchema creates the database with its schema if the file does
// not exist yet. The schema is written to a side file and renamed into place
// so a crash during setup cannot leave a half-initialised temporal.db that
// every later start would trip over.
func temporalEnsureSchema(sqlCfg *config.SQL) error {
	dbPath := sqlCfg.DatabaseName
	if _, err := os.Stat(dbPath); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("failed to stat temporal database: %w", err)
	}

	tmpPath := dbPath + ".setup"
	if err := os.Remove(tmpPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("failed to remove stale temporal database: %w", err)
	}
	// Rollback-journal mode for the setup file: once a transaction commits,
	// everything is in the main file, so renaming it is safe even though the
	// plugin's connection pool keeps the connection open for the process
	// lifetime. In WAL mode data could still sit in the -wal file.
	setupCfg := *sqlCfg
	setupCfg.DatabaseName = tmpPath
	setupCfg.ConnectAttributes = map[string]string{"mode": "rwc"}
	if err := sqlite.SetupSchema(&setupCfg); err != nil {
		return fmt.Errorf("failed to set up temporal schema: %w", err)
	}
	if err := os.Rename(tmpPath, dbPath); err != nil {
		return fmt.Errorf("failed to move temporal database into place: %w", err)
	}
	return nil
}

type temporalAddrs struct {
	frontendBindIP string // what the frontend listens on, as given in ListenAddr
	internalIP     string // where the other services listen and what membership broadcasts
	frontendPort   int
	dial           string // host:port for clients
}

func temporalResolveAddrs(listenAddr string) (temporalAddrs, error) {
	host, portStr, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return temporalAddrs{}, fmt.Errorf("failed to parse ListenAddr %q: %w", listenAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return temporalAddrs{}, fmt.Errorf("failed to parse ListenAddr %q: invalid port", listenAddr)
	}
	switch host {
	case "":
		host = "0.0.0.0"
	case "localhost":
		host = "127.0.0.1"
	}
	ip := net.ParseIP(host)
	if ip == nil {
		// The server's BindOnIP only accepts IP literals.
		return temporalAddrs{}, fmt.Errorf("failed to parse ListenAddr %q: host must be an IP address or localhost", listenAddr)
	}
	a := temporalAddrs{frontendBindIP: ip.String(), internalIP: ip.String()}
	if ip.IsUnspecified() {
		// Internal services need not be reachable from outside; clients on
		// this machine reach a wildcard-bound frontend via loopback.
		a.internalIP = "127.0.0.1"
	}

	// Listen once ourselves: the server reports a failed listen via
	// logger.Fatal, so a taken port is best caught here with a clear error.
	l, err := net.Listen("tcp", net.JoinHostPort(a.frontendBindIP, strconv.Itoa(port)))
	if err != nil {
		return temporalAddrs{}, fmt.Errorf("failed to listen on %s: %w", listenAddr, err)
	}
	a.frontendPort = l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return temporalAddrs{}, fmt.Errorf("failed to release %s: %w", listenAddr, err)
	}
	a.dial = net.JoinHostPort(a.internalIP, strconv.Itoa(a.frontendPort))
	return a, nil
}

func temporalServerConfig(sqlCfg *config.SQL, addrs temporalAddrs) (*config.Config, map[primitives.ServiceName]static.Hosts, error) {
	// gRPC ports for history, matching and worker.
	ports, err := temporalFreePorts(addrs.internalIP, 3)
	if err != nil {
		return nil, nil, err
	}
	service := func(bindIP string, grpcPort int) config.Service {
		return config.Service{RPC: config.RPC{GRPCPort: grpcPort, BindOnIP: bindIP}}
	}
	internal := func(port int) string { return net.JoinHostPort(addrs.internalIP, strconv.Itoa(port)) }
	// Static membership instead of ringpop: this is always a single node, and
	// ringpop bootstraps from the previous run's rows in cluster_membership,
	// which made the matching service's ring join time out (30 s+) after a
	// quick restart, failing every task queue call with "Not enough hosts".
	hosts := map[primitives.ServiceName]static.Hosts{
		primitives.FrontendService: static.SingleLocalHost(addrs.dial),
		primitives.HistoryService:  static.SingleLocalHost(internal(ports[0])),
		primitives.MatchingService: static.SingleLocalHost(internal(ports[1])),
		primitives.WorkerService:   static.SingleLocalHost(internal(ports[2])),
	}

	cfg := &config.Config{}
	cfg.Global.Membership = config.Membership{
		MaxJoinDuration:  30 * time.Second,
		BroadcastAddress: addrs.internalIP,
	}
	// Global.Metrics nil selects the no-op metrics handler (no listener);
	// PProf.Port 0 leaves pprof off.
	cfg.Persistence = config.Persistence{
		DefaultStore:     sqliteplugin.PluginName,
		VisibilityStore:  sqliteplugin.PluginName,
		NumHistoryShards: 1,
		DataStores: map[string]config.DataStore{
			sqliteplugin.PluginName: {SQL: sqlCfg},
		},
	}
	cfg.ClusterMetadata = &cluster.Config{
		EnableGlobalNamespace:    false,
		FailoverVersionIncrement: 10,
		MasterClusterName:        temporalClusterName,
		CurrentClusterName:       temporalClusterName,
		ClusterInformation: map[string]cluster.ClusterInformation{
			temporalClusterName: {
				Enabled:                true,
				InitialFailoverVersion: 1,
				RPCAddress:             addrs.dial,
			},
		},
	}
	cfg.DCRedirectionPolicy = config.DCRedirectionPolicy{Policy: "noop"}
	cfg.Services = map[string]config.Service{
		string(primitives.FrontendService): service(addrs.frontendBindIP, addrs.frontendPort),
		string(primitives.HistoryService):  service(addrs.internalIP, ports[0]),
		string(primitives.MatchingService): service(addrs.internalIP, ports[1]),
		string(primitives.WorkerService):   service(addrs.internalIP, ports[2]),
	}
	cfg.Archival = config.Archival{
		History:    config.HistoryArchival{State: "disabled"},
		Visibility: config.VisibilityArchival{State: "disabled"},
	}
	// The worker service's SDK client dials this; the server panics at start
	// without it (see lite_server.go).
	cfg.PublicClient = config.PublicClient{HostPort: addrs.dial}
	cfg.NamespaceDefaults = config.NamespaceDefaults{
		Archival: config.ArchivalNamespaceDefaults{
			History:    config.HistoryArchivalNamespaceDefaults{State: "disabled"},
			Visibility: config.VisibilityArchivalNamespaceDefaults{State: "disabled"},
		},
	}
	return cfg, hosts, nil
}

// temporalFreePorts holds all listeners open until every port is chosen, so
// the kernel cannot hand out the same port twice.
func temporalFreePorts(ip string, n int) ([]int, error) {
	ports := make([]int, 0, n)
	listeners := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return nil, fmt.Errorf("failed to find a free port on %s: %w", ip, err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// temporalRecoverFatal runs fn, turning a panic (which is what logger.Fatal
// becomes with our fatal hook) into an error.
func temporalRecoverFatal(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("temporal server panicked: %v", r)
		}
	}()
	return fn()
}

// temporalLogWriter drops writes once closed: some server goroutines outlive
// Stop and keep logging, and zap would report each failed write on stderr.
type temporalLogWriter struct {
	mu     sync.Mutex
	f      *os.File
	closed bool
}

func (w *temporalLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return len(p), nil
	}
	return w.f.Write(p)
}

func (w *temporalLogWriter) Sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	return w.f.Sync()
}

func (w *temporalLogWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	return w.f.Close()
}

// temporalDynamicConfig tunes the single-process server for latency. A
// lifecycle workflow is a short chain of activities, so what dominates is
// the hand-off between steps:
//   - eager execution: an activity task comes back in the response that
//     scheduled it (and a workflow's first task in the start response, for
//     a client that asks) instead of through a task-queue poll;
//   - the history service's transfer queue, which dispatches each new
//     workflow task, polls at most 20 times a second by default (a 50 ms
//     step on an idle stack); 1000 makes the hand-off immediate;
//   - a client waiting for a workflow's result long-polls the history
//     service, which sometimes misses the close notification on this
//     single-process SQLite stack and then answers only when the poll
//     expires (20 s by default). The SDK polls again at once, so a 1 s
//     expiry bounds that stall without a busy loop.
var temporalDynamicConfig = dynamicconfig.StaticClient{
	dynamicconfig.EnableActivityEagerExecution.Key():      true,
	dynamicconfig.EnableEagerWorkflowStart.Key():          true,
	dynamicconfig.TransferProcessorMaxPollRPS.Key():       1000,
	dynamicconfig.HistoryLongPollExpirationInterval.Key(): time.Second,
}
