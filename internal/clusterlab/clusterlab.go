// Package clusterlab starts keyflow as a cluster of separate processes on
// one machine: three nats-server processes (clustered, JetStream R3,
// operator mode with the full account resolver from `keyflow operator
// init`) and keyflow processes started with `keyflow serve --config`, each
// with a share of the roles:
//
//	crypto-1, crypto-2        crypto,admin
//	sealer-1, sealer-2        sealer (one active, one standby)
//	gateway                   gateway (the XKS proxy)
//	lifecycle-1, lifecycle-2  lifecycle
//
// The e2e cluster test (e2e/cluster) and `go tool task cluster`
// (e2e/cluster/cmd/keyflow-cluster) both use it, so what a person tries by
// hand is what the test proves. Temporal is given ([Temporal]): the caller
// starts it (PostgreSQL in the test, or a stand-in).
//
// Start a lab with [Build] then [Start]; every process is a [Proc] that can
// be killed with SIGKILL ([Proc.Kill]) and started again ([Proc.Restart]).
// Everything lives under Config.Dir; ports are picked free at start.
package clusterlab

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/workers/natsauth"
	"github.com/keyflow/keyflow/workers/xks"
)

// Temporal is the Temporal frontend the lifecycle and admin roles use.
type Temporal struct {
	Addr, Namespace           string
	CAFile, CertFile, KeyFile string
	// ServerName is the name in the server's certificate (default
	// "localhost" when CAFile is set).
	ServerName string
}

// Config configures a lab.
type Config struct {
	// Dir holds everything: the token, the ceremony, each server's store.
	Dir string
	// KeyflowBin and NATSBin are the binaries (see Build).
	KeyflowBin, NATSBin string
	Temporal            Temporal
	// Log receives one line per process event (start, kill, exit); the
	// processes' own output goes to Dir/logs/NAME.log.
	Log io.Writer
	// HSMModule is the PKCS#11 module (default SoftHSM's).
	HSMModule string
}

// Processes are the keyflow processes of a lab and their roles, in start
// order.
var Processes = []struct{ Name, Roles string }{
	{"crypto-1", "crypto,admin"},
	{"crypto-2", "crypto,admin"},
	{"sealer-1", "sealer"},
	{"sealer-2", "sealer"},
	{"lifecycle-1", "lifecycle"},
	{"lifecycle-2", "lifecycle"},
	{"gateway", "gateway"},
}

// Lab is a running cluster.
type Lab struct {
	cfg Config
	// NATS are the three servers; Keyflow the keyflow processes by name.
	NATS    []*Proc
	Keyflow map[string]*Proc
	// URLs of the NATS servers (client port).
	URLs []string
	// ConfigFile is keyflow.yaml; Ceremony what operator init wrote.
	ConfigFile string
	Ceremony   natsauth.OperatorFiles
	// SoftHSMConf is the token's SOFTHSM2_CONF.
	SoftHSMConf string
	// XKSURL is the gateway's XKS endpoint.
	XKSURL string
}

// DefaultHSMModule is Debian's SoftHSM module.
const DefaultHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

const (
	tokenLabel = "keyflow-lab"
	tokenPIN   = "lab-user-pin-4821"
)

// Build compiles keyflow and nats-server (from the module keyflow pins)
// into dir, from the module root moduleDir.
func Build(ctx context.Context, moduleDir, dir string) (keyflowBin, natsBin string, err error) {
	keyflowBin, natsBin = filepath.Join(dir, "keyflow"), filepath.Join(dir, "nats-server")
	for _, b := range []struct{ out, pkg string }{{keyflowBin, "./cmd/keyflow"}, {natsBin, "github.com/nats-io/nats-server/v2"}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.out, b.pkg)
		cmd.Dir = moduleDir
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("clusterlab: go build %s: %w\n%s", b.pkg, err, out)
		}
	}
	return keyflowBin, natsBin, nil
}

// Start starts the three NATS servers, bootstraps the streams with three
// replicas, and starts every keyflow process, each ready (/readyz) before
// Start returns. On error, what started is stopped.
func Start(ctx context.Context, cfg Config) (l *Lab, err error) {
	if cfg.HSMModule == "" {
		cfg.HSMModule = DefaultHSMModule
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	l = &Lab{cfg: cfg, Keyflow: map[string]*Proc{}}
	defer func() {
		if err != nil {
			l.Stop()
		}
	}()
	for _, d := range []string{"logs", "hsm/tokens"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return l, err
		}
	}
	if err := l.initToken(ctx); err != nil {
		return l, err
	}
	if l.Ceremony, err = natsauth.InitOperator(natsauth.OperatorInit{Dir: filepath.Join(dir, "operator"), Tenants: []string{"default"}}); err != nil {
		return l, err
	}
	if err := l.startNATS(ctx); err != nil {
		return l, err
	}
	if err := l.WaitJetStream(ctx, 60*time.Second); err != nil {
		return l, err
	}
	if err := l.writeConfig(); err != nil {
		return l, err
	}
	boot := exec.CommandContext(ctx, cfg.KeyflowBin, "bootstrap", "--config", l.ConfigFile, "--creds", l.Ceremony.Creds["operator"])
	boot.Env = l.env()
	if out, err := boot.CombinedOutput(); err != nil {
		return l, fmt.Errorf("clusterlab: keyflow bootstrap: %w\n%s", err, out)
	}
	for _, p := range Processes {
		proc := l.keyflowProc(p.Name, p.Roles)
		l.Keyflow[p.Name] = proc
		if err := proc.Start(ctx); err != nil {
			return l, err
		}
	}
	return l, nil
}

// Connect connects to the lab's NATS servers with one of the ceremony's
// creds ("operator", "auditor", "default-admin", ...).
func (l *Lab) Connect(creds string, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.UserCredentials(l.Ceremony.Creds[creds]), nats.MaxReconnects(-1), nats.ReconnectWait(200 * time.Millisecond)}, opts...)
	return nats.Connect(strings.Join(l.URLs, ","), opts...)
}

// WaitJetStream waits until the cluster's JetStream answers (a meta
// leader is elected), as the operator's user sees it.
func (l *Lab) WaitJetStream(ctx context.Context, within time.Duration) error {
	nc, err := l.Connect("operator")
	if err != nil {
		return fmt.Errorf("clusterlab: connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.AccountInfo(actx)
		acancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("clusterlab: JetStream not ready: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// env is the environment of keyflow processes: the token's configuration.
func (l *Lab) env() []string {
	return append(os.Environ(), "SOFTHSM2_CONF="+l.SoftHSMConf)
}

// CLIEnv is the environment that points the keyflow CLI at the lab as the
// default tenant's admin.
func (l *Lab) CLIEnv() []string {
	return append(l.env(), "KEYFLOW_SERVER="+strings.Join(l.URLs, ","), "KEYFLOW_CREDS="+l.Ceremony.Creds["default-admin"])
}

// initToken provisions a SoftHSM token as an operator would, before keyflow
// sees it.
func (l *Lab) initToken(ctx context.Context) error {
	l.SoftHSMConf = filepath.Join(l.cfg.Dir, "hsm", "softhsm2.conf")
	text := "directories.tokendir = " + filepath.Join(l.cfg.Dir, "hsm", "tokens") + "\nobjectstore.backend = file\nlog.level = ERROR\n"
	if err := os.WriteFile(l.SoftHSMConf, []byte(text), 0o600); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "softhsm2-util", "--init-token", "--free", "--label", tokenLabel, "--so-pin", "lab-so-pin-1", "--pin", tokenPIN)
	cmd.Env = l.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("clusterlab: softhsm2-util (Debian package softhsm2): %w\n%s", err, out)
	}
	return os.WriteFile(filepath.Join(l.cfg.Dir, "hsm", "pin"), []byte(tokenPIN+"\n"), 0o600)
}

// freePorts reserves n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// startNATS writes each server's configuration (its ports, the routes to
// the other two, JetStream, and the ceremony's stanza) and starts them.
func (l *Lab) startNATS(ctx context.Context) error {
	ports, err := freePorts(6)
	if err != nil {
		return err
	}
	stanza, err := os.ReadFile(l.Ceremony.ServerConf)
	if err != nil {
		return err
	}
	var routes []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3+i]))
		l.URLs = append(l.URLs, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
	}
	for i := range 3 {
		name := fmt.Sprintf("nats-%d", i)
		nd := filepath.Join(l.cfg.Dir, name)
		if err := os.MkdirAll(nd, 0o700); err != nil {
			return err
		}
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
max_payload: 4MB
jetstream { store_dir: %q, max_memory_store: 256MB }
cluster {
  name: keyflow-lab
  listen: 127.0.0.1:%d
  routes: [%s]
}
%s`, name, ports[i], filepath.Join(nd, "js"), ports[3+i], strings.Join(routes, ", "), stanza)
		path := filepath.Join(nd, "nats.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			return err
		}
		p := &Proc{Name: name, bin: l.cfg.NATSBin, args: []string{"-c", path}, dir: nd, log: l.cfg.Log,
			logFile: filepath.Join(l.cfg.Dir, "logs", name+".log"), ready: tcpReady(fmt.Sprintf("127.0.0.1:%d", ports[i]))}
		l.NATS = append(l.NATS, p)
		if err := p.Start(ctx); err != nil {
			return err
		}
	}
	return nil
}

// writeConfig writes keyflow.yaml, the gateway's XKS files and the shared
// cursor key.
func (l *Lab) writeConfig() error {
	d := l.cfg.Dir
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(d, "cursor.key"), key, 0o600); err != nil {
		return err
	}
	cert, keyFile, err := selfSigned(filepath.Join(d, "xks"))
	if err != nil {
		return err
	}
	cred, err := xks.NewCredential()
	if err != nil {
		return err
	}
	xc := &xks.Config{KeyStores: []xks.KeyStore{{Tenant: "default", Credentials: []xks.Credential{cred}, Keys: map[string]xks.Key{}}}}
	xcPath := filepath.Join(d, "xks", "config.json")
	if err := xc.Save(xcPath); err != nil {
		return err
	}
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	xksListen := fmt.Sprintf("127.0.0.1:%d", ports[0])
	l.XKSURL = "https://" + xksListen
	t := l.cfg.Temporal
	tlsYAML := ""
	if t.CAFile != "" {
		sn := t.ServerName
		if sn == "" {
			sn = "localhost"
		}
		tlsYAML = fmt.Sprintf("  tls: {ca_file: %s, cert_file: %s, key_file: %s, server_name: %s}\n", t.CAFile, t.CertFile, t.KeyFile, sn)
	}
	c := l.Ceremony.Creds
	y := fmt.Sprintf(`# keyflow serve configuration of the local cluster (clusterlab).
log: {level: warn}
nats:
  urls: [%s]
  creds_file: %s
  role_creds: {sealer: %s}
  identity_file: %s
  replicas: 3
temporal:
  address: %s
  namespace: %s
%shsm:
  module: %s
  token_label: %s
  pin_file: %s
services:
  cursor_key_file: %s
gateway:
  xks: {listen: %q, config_file: %s, cert_file: %s, key_file: %s}
ops:
  listen: 127.0.0.1:0
`, strings.Join(l.URLs, ", "), c["worker"], c["sealer"], l.Ceremony.Identity, t.Addr, t.Namespace, tlsYAML,
		l.cfg.HSMModule, tokenLabel, filepath.Join(d, "hsm", "pin"), filepath.Join(d, "cursor.key"),
		xksListen, xcPath, cert, keyFile)
	l.ConfigFile = filepath.Join(d, "keyflow.yaml")
	return os.WriteFile(l.ConfigFile, []byte(y), 0o600)
}

// selfSigned writes a loopback certificate for the gateway.
func selfSigned(dir string) (certFile, keyFile string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "keyflow-lab"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return "", "", err
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "tls.pem"), filepath.Join(dir, "tls-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
}

// keyflowProc is `keyflow serve --config keyflow.yaml --roles ROLES`.
func (l *Lab) keyflowProc(name, roles string) *Proc {
	p := &Proc{Name: name, bin: l.cfg.KeyflowBin, args: []string{"serve", "--config", l.ConfigFile, "--roles", roles},
		dir: l.cfg.Dir, env: l.env(), log: l.cfg.Log, logFile: filepath.Join(l.cfg.Dir, "logs", name+".log")}
	p.ready = p.opsReady
	return p
}

// ServeProc is `keyflow serve ARGS...` outside a lab (the e2e region test
// runs two deployments): ready when its /readyz answers 200; its output
// goes to logFile.
func ServeProc(name, bin, dir, logFile string, env []string, log io.Writer, args ...string) *Proc {
	p := &Proc{Name: name, bin: bin, args: append([]string{"serve"}, args...), dir: dir, env: env, log: log, logFile: logFile}
	p.ready = p.opsReady
	return p
}

// NATSProc is `nats-server -c conf` outside a lab: ready when addr (its
// client listener) accepts connections.
func NATSProc(name, bin, conf, dir, logFile, addr string, log io.Writer) *Proc {
	return &Proc{Name: name, bin: bin, args: []string{"-c", conf}, dir: dir, log: log, logFile: logFile, ready: tcpReady(addr)}
}

// Stop stops every process (keyflow first, gracefully), and waits.
func (l *Lab) Stop() {
	if l == nil {
		return
	}
	var wg sync.WaitGroup
	for _, p := range l.Keyflow {
		wg.Go(p.Stop)
	}
	wg.Wait()
	for _, p := range l.NATS {
		wg.Go(p.Stop)
	}
	wg.Wait()
}

// Proc is one process of the lab.
type Proc struct {
	Name    string
	bin     string
	args    []string
	dir     string
	env     []string
	log     io.Writer
	logFile string
	ready   func(ctx context.Context) error

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	opsURL string
	// Starts counts the starts (1 after the first).
	Starts int
}

// Start starts the process and waits until it is ready (30 s at most).
func (p *Proc) Start(ctx context.Context) error {
	f, err := os.OpenFile(p.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Dir, cmd.Env, cmd.Stderr = p.dir, p.env, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		f.Close()
		return err
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("clusterlab: start %s: %w", p.Name, err)
	}
	exited := make(chan struct{})
	opsURL := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(f, line)
			if _, rest, ok := strings.Cut(line, " ops="); ok && strings.HasPrefix(line, "keyflow serving") {
				select {
				case opsURL <- strings.TrimPrefix(strings.Fields(rest)[0], "http://"):
				default:
				}
			}
		}
		_ = cmd.Wait()
		f.Close()
		close(exited)
	}()
	p.mu.Lock()
	p.cmd, p.exited, p.opsURL = cmd, exited, ""
	p.Starts++
	p.mu.Unlock()
	fmt.Fprintf(p.log, "clusterlab: started %s (pid %d)\n", p.Name, cmd.Process.Pid)
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if p.ready == nil {
		return nil
	}
	if p.bin != "" && strings.HasSuffix(p.bin, "keyflow") {
		select {
		case u := <-opsURL:
			p.mu.Lock()
			p.opsURL = u
			p.mu.Unlock()
		case <-exited:
			return fmt.Errorf("clusterlab: %s exited at start (see %s)", p.Name, p.logFile)
		case <-ctx.Done():
			return fmt.Errorf("clusterlab: %s did not start within 60s (see %s)", p.Name, p.logFile)
		}
	}
	if err := p.ready(ctx); err != nil {
		return fmt.Errorf("clusterlab: %s not ready: %w (see %s)", p.Name, err, p.logFile)
	}
	return nil
}

// OpsURL is the process's /healthz, /readyz and /metrics endpoint.
func (p *Proc) OpsURL() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.opsURL
}

// Pid of the running process (0 if none).
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Kill sends SIGKILL (no cleanup at all) and waits for the process to go.
func (p *Proc) Kill() {
	p.signal(syscall.SIGKILL)
}

// Stop sends SIGTERM and waits (SIGKILL after 20 s).
func (p *Proc) Stop() {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if exited == nil {
		return
	}
	p.signalNoWait(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		p.signal(syscall.SIGKILL)
	}
}

func (p *Proc) signalNoWait(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

func (p *Proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if exited == nil {
		return
	}
	p.signalNoWait(sig)
	<-exited
	fmt.Fprintf(p.log, "clusterlab: %s ended (%s)\n", p.Name, sig)
}

// Restart starts the process again after Kill or Stop.
func (p *Proc) Restart(ctx context.Context) error { return p.Start(ctx) }

// Alive reports whether the process runs.
func (p *Proc) Alive() bool {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if exited == nil {
		return false
	}
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// opsReady polls /readyz until it answers 200.
func (p *Proc) opsReady(ctx context.Context) error {
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.OpsURL()+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("/readyz %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tcpReady waits until addr accepts connections.
func tcpReady(addr string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s: %w", addr, err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}
