package temporalpg

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Namespace is the namespace StartTemporal registers by default.
const Namespace = "keyflow"

// TemporalConfig configures StartTemporal.
type TemporalConfig struct {
	// Postgres is where Temporal persists (two databases: temporal and
	// temporal_visibility).
	Postgres *Postgres
	// Dir holds the certificates, the server's configuration and its log
	// (temporal.log); it must exist.
	Dir string
	// Namespace is registered once the server is up (default "keyflow").
	Namespace string
	// Shards is the history shard count, fixed for the life of a
	// cluster (default 4; production clusters use 512 or more).
	Shards int
	// DevTuning applies the dev stack's latency tuning (DevTuning) as
	// dynamic configuration, to measure what it is worth; off, the
	// server runs Temporal's defaults.
	DevTuning bool
}

// DevTuning is the embedded dev server's tuning (deploy/devstack,
// temporalDynamicConfig) as a dynamic configuration file: eager workflow
// start and activities, the transfer queue polled up to 1000 times a
// second, and 1 s long polls for workflow results.
const DevTuning = `system.enableActivityEagerExecution:
  - value: true
system.enableEagerWorkflowStart:
  - value: true
history.transferProcessorMaxPollRPS:
  - value: 1000
history.longPollExpirationInterval:
  - value: 1s
`

// Temporal is a running Temporal server process.
type Temporal struct {
	// Addr is the frontend's gRPC address (127.0.0.1:port).
	Addr      string
	Namespace string
	// Certs are the files of its mutual TLS; clients use CAFile,
	// ClientCertFile and ClientKeyFile.
	Certs Certs
	// LogFile is the server's log.
	LogFile string

	cmd    *exec.Cmd
	exited chan struct{}
}

// ClientOptions are SDK options that reach the frontend with the client
// certificate (the logger discards the SDK's own logs).
func (t *Temporal) ClientOptions() (client.Options, error) {
	tc, err := ClientTLS(t.Certs.CAFile, t.Certs.ClientCertFile, t.Certs.ClientKeyFile, t.Certs.ServerName)
	if err != nil {
		return client.Options{}, err
	}
	return client.Options{
		HostPort: t.Addr, Namespace: t.Namespace,
		ConnectionOptions: client.ConnectionOptions{TLS: tc},
		Logger:            sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler)),
	}, nil
}

// ClientTLS is a client's TLS configuration from PEM files: the CA that
// signs the server, and a client certificate unless certFile is "".
func ClientTLS(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no certificate in " + caFile)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: serverName}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Tools are the paths of Temporal's server and SQL tool binaries.
type Tools struct{ Server, SQL string }

// BuildTools builds (or finds in the Go build cache) Temporal's server and
// SQL tool from the pinned module, through go.mod's tool directives. It
// runs the go command in the current directory, which must be inside the
// keyflow module.
func BuildTools(ctx context.Context) (Tools, error) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	path := func(tool string) (string, error) {
		out, err := exec.CommandContext(ctx, goCmd, "tool", "-n", tool).Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return "", fmt.Errorf("go tool -n %s: %w\n%s", tool, err, ee.Stderr)
			}
			return "", fmt.Errorf("go tool -n %s: %w", tool, err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	var t Tools
	if t.Server, err = path("go.temporal.io/server/cmd/server"); err != nil {
		return t, err
	}
	if t.SQL, err = path("go.temporal.io/server/cmd/tools/sql"); err != nil {
		return t, err
	}
	return t, nil
}

// SetupSchema creates Temporal's two databases and applies their schema
// with Temporal's SQL tool, as Temporal's documentation tells an operator
// to: create, setup-schema -v 0.0, update-schema with the schema embedded
// in the tool (postgresql/v12).
func SetupSchema(ctx context.Context, sqlTool string, pg *Postgres) error {
	for _, db := range []struct{ name, schema string }{
		{"temporal", "postgresql/v12/temporal"},
		{"temporal_visibility", "postgresql/v12/visibility"},
	} {
		base := []string{"--endpoint", pg.Host, "--port", strconv.Itoa(pg.Port), "--user", pg.User, "--password", pg.Password, "--plugin", "postgres12", "--db", db.name}
		for _, step := range [][]string{
			{"create"},
			{"setup-schema", "-v", "0.0"},
			{"update-schema", "--schema-name", db.schema},
		} {
			cmd := exec.CommandContext(ctx, sqlTool, append(base, step...)...)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("temporal-sql-tool %s on %s: %w\n%s", step[0], db.name, err, out)
			}
		}
	}
	return nil
}

// StartTemporal applies the schema, writes the certificates and the
// server's configuration into cfg.Dir, runs the server and registers the
// namespace. It returns once a client with the client certificate can use
// the namespace.
func StartTemporal(ctx context.Context, tools Tools, cfg TemporalConfig) (_ *Temporal, err error) {
	if cfg.Namespace == "" {
		cfg.Namespace = Namespace
	}
	if cfg.Shards == 0 {
		cfg.Shards = 4
	}
	if err := SetupSchema(ctx, tools.SQL, cfg.Postgres); err != nil {
		return nil, err
	}
	certs, err := WriteCerts(filepath.Join(cfg.Dir, "tls"))
	if err != nil {
		return nil, err
	}
	// A port taken between the probe and the server's listen makes the
	// server exit at start: try again on others.
	var lastErr error
	for range 3 {
		var t *Temporal
		if t, lastErr = runServer(ctx, tools.Server, cfg, certs); lastErr == nil {
			if err := t.register(ctx); err != nil {
				t.Stop()
				return nil, err
			}
			return t, nil
		}
	}
	return nil, lastErr
}

func runServer(ctx context.Context, bin string, cfg TemporalConfig, certs Certs) (*Temporal, error) {
	ports, err := freePorts(8, 0)
	if err != nil {
		return nil, err
	}
	// Membership ports are stored as PostgreSQL smallints (cluster_membership
	// .rpc_port): they must be below 32768, under Linux's ephemeral range.
	low, err := freePorts(4, 32768)
	if err != nil {
		return nil, err
	}
	for i, p := range low {
		ports[2*i+1] = p
	}
	pg := cfg.Postgres
	v := map[string]any{
		"Shards": cfg.Shards, "PGHost": pg.Host, "PGPort": pg.Port, "PGUser": pg.User, "PGPassword": pg.Password,
		"Certs": certs, "Ports": ports, "Frontend": net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])),
	}
	if cfg.DevTuning {
		v["DynamicConfig"] = filepath.Join(cfg.Dir, "dynamicconfig.yaml")
		if err := os.WriteFile(v["DynamicConfig"].(string), []byte(DevTuning), 0o600); err != nil {
			return nil, err
		}
	}
	var b strings.Builder
	if err := serverConfig.Execute(&b, v); err != nil {
		return nil, err
	}
	cfgFile := filepath.Join(cfg.Dir, "temporal.yaml")
	if err := os.WriteFile(cfgFile, []byte(b.String()), 0o600); err != nil {
		return nil, err
	}
	t := &Temporal{Addr: v["Frontend"].(string), Namespace: cfg.Namespace, Certs: certs, LogFile: filepath.Join(cfg.Dir, "temporal.log")}
	logf, err := os.OpenFile(t.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--config-file", cfgFile, "--allow-no-auth", "start")
	cmd.Dir = cfg.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	child(cmd, -1, -1)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("failed to start the Temporal server: %w", err)
	}
	t.cmd, t.exited = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(t.exited) }()
	if err := t.waitHealthy(ctx); err != nil {
		t.Stop()
		return nil, err
	}
	return t, nil
}

// waitHealthy polls the frontend's health check over mutual TLS.
func (t *Temporal) waitHealthy(ctx context.Context) error {
	opts, err := t.ClientOptions()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-t.exited:
			return fmt.Errorf("the Temporal server exited at start (see %s):\n%s", t.LogFile, tail(t.LogFile))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		lastErr = func() error {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			c, err := client.DialContext(cctx, opts)
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.CheckHealth(cctx, &client.CheckHealthRequest{})
			return err
		}()
		if lastErr == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the Temporal frontend at %s was not healthy within 2m: %w (see %s)", t.Addr, lastErr, t.LogFile)
}

// register registers the namespace (an operator's `temporal operator
// namespace create`) and waits until the frontend serves it.
func (t *Temporal) register(ctx context.Context) error {
	opts, err := t.ClientOptions()
	if err != nil {
		return err
	}
	nc, err := client.NewNamespaceClient(opts)
	if err != nil {
		return err
	}
	defer nc.Close()
	err = nc.Register(ctx, &workflowservice.RegisterNamespaceRequest{
		Namespace: t.Namespace, WorkflowExecutionRetentionPeriod: durationpb.New(24 * time.Hour),
	})
	var exists *serviceerror.NamespaceAlreadyExists
	if err != nil && !errors.As(err, &exists) {
		return fmt.Errorf("failed to register namespace %q: %w", t.Namespace, err)
	}
	c, err := client.DialContext(ctx, opts)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := c.DescribeWorkflowExecution(ctx, "keyflow-namespace-probe", "")
		var nf *serviceerror.NotFound
		if errors.As(err, &nf) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("namespace %q not served within 1m: %w", t.Namespace, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Kill SIGKILLs the server (no cleanup).
func (t *Temporal) Kill() {
	if t.cmd != nil {
		_ = t.cmd.Process.Kill()
		<-t.exited
		t.cmd = nil
	}
}

// Stop stops the server (SIGTERM, then SIGKILL after 30 s). Safe to call
// more than once.
func (t *Temporal) Stop() {
	if t.cmd == nil {
		return
	}
	_ = t.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-t.exited:
		t.cmd = nil
	case <-time.After(30 * time.Second):
		t.Kill()
	}
}

// freePorts finds n free loopback ports, holding each open until all are
// chosen so that none is handed out twice: the kernel's choice, or with
// below > 0, random ones under it.
func freePorts(n, below int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			return nil, fmt.Errorf("no free loopback port below %d", below)
		}
		p := 0
		if below > 0 {
			p = 10000 + mrand.IntN(below-10000)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			if below > 0 {
				continue
			}
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// serverConfig is the server's configuration file: PostgreSQL for
// persistence and visibility, mutual TLS on the frontend and between the
// services (the server certificate both ways), the system worker with the
// client certificate, every port on loopback, Temporal's production
// defaults otherwise (no dynamic configuration).
var serverConfig = template.Must(template.New("temporal.yaml").Parse(`log:
  stdout: true
  level: warn
persistence:
  defaultStore: postgres-default
  visibilityStore: postgres-visibility
  numHistoryShards: {{.Shards}}
  datastores:
    postgres-default:
      sql:
        pluginName: postgres12
        databaseName: temporal
        connectAddr: "{{.PGHost}}:{{.PGPort}}"
        connectProtocol: tcp
        user: "{{.PGUser}}"
        password: "{{.PGPassword}}"
        maxConns: 20
        maxIdleConns: 20
        maxConnLifetime: 1h
    postgres-visibility:
      sql:
        pluginName: postgres12
        databaseName: temporal_visibility
        connectAddr: "{{.PGHost}}:{{.PGPort}}"
        connectProtocol: tcp
        user: "{{.PGUser}}"
        password: "{{.PGPassword}}"
        maxConns: 4
        maxIdleConns: 4
        maxConnLifetime: 1h
global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: 127.0.0.1
  tls:
    internode:
      server: &server
        certFile: "{{.Certs.ServerCertFile}}"
        keyFile: "{{.Certs.ServerKeyFile}}"
        requireClientAuth: true
        clientCaFiles: ["{{.Certs.CAFile}}"]
      client: &client
        serverName: "{{.Certs.ServerName}}"
        rootCaFiles: ["{{.Certs.CAFile}}"]
    frontend:
      server: *server
      client: *client
    systemWorker:
      certFile: "{{.Certs.ClientCertFile}}"
      keyFile: "{{.Certs.ClientKeyFile}}"
      client: *client
services:
  frontend:
    rpc: {grpcPort: {{index .Ports 0}}, membershipPort: {{index .Ports 1}}, bindOnIP: 127.0.0.1}
  history:
    rpc: {grpcPort: {{index .Ports 2}}, membershipPort: {{index .Ports 3}}, bindOnIP: 127.0.0.1}
  matching:
    rpc: {grpcPort: {{index .Ports 4}}, membershipPort: {{index .Ports 5}}, bindOnIP: 127.0.0.1}
  worker:
    rpc: {grpcPort: {{index .Ports 6}}, membershipPort: {{index .Ports 7}}, bindOnIP: 127.0.0.1}
clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: active
  currentClusterName: active
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: frontend
      rpcAddress: "{{.Frontend}}"
dcRedirectionPolicy:
  policy: noop
archival:
  history: {state: disabled}
  visibility: {state: disabled}
namespaceDefaults:
  archival:
    history: {state: disabled}
    visibility: {state: disabled}
publicClient:
  hostPort: "{{.Frontend}}"
{{- with .DynamicConfig}}
dynamicConfigClient:
  filepath: "{{.}}"
  pollInterval: 10s
{{- end}}
`))
