package cluster

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/workers/natsauth"
)

// lifecycleRig is what the Temporal tests run keyflow on: an in-process
// NATS server in operator mode with keyflow's accounts, a SoftHSM token
// provisioned with softhsm2-util as an operator would, a keyflow.yaml
// whose temporal section names the endpoint's address, namespace and
// certificate files, and the keyflow binary, whose `serve` processes
// share all of it.
type lifecycleRig struct {
	dir        string
	bin        string
	natsURL    string
	config     string // keyflow.yaml
	adminCreds string
	env        []string // SOFTHSM2_CONF for the keyflow processes
}

const (
	rigTokenLabel = "cluster-temporal"
	rigUserPIN    = "5417-user-pin"
)

func startLifecycleRig(t testing.TB, ep temporalEndpoint) *lifecycleRig {
	t.Helper()
	dir := t.TempDir()
	r := &lifecycleRig{dir: dir, config: filepath.Join(dir, "keyflow.yaml"), adminCreds: filepath.Join(dir, "admin.creds")}
	write := func(name string, b []byte) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	if err := os.MkdirAll(filepath.Join(dir, "tokens"), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := write("softhsm2.conf", []byte("directories.tokendir = "+filepath.Join(dir, "tokens")+"\nobjectstore.backend = file\nlog.level = ERROR\n"))
	r.env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
	init := exec.Command("softhsm2-util", "--init-token", "--free", "--label", rigTokenLabel, "--so-pin", "so-secret-2", "--pin", rigUserPIN)
	init.Env = r.env
	if out, err := init.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util (Debian package softhsm2): %v\n%s", err, out)
	}

	id, err := natsauth.Load(filepath.Join(dir, "identity.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := id.AddTenant("default"); err != nil {
		t.Fatal(err)
	}
	ns, err := natsserver.Start(natsserver.Config{StoreDir: filepath.Join(dir, "js"), Listen: "127.0.0.1:0", Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	r.natsURL = ns.ClientURL()
	worker, err := id.ServiceCreds("keyflow-worker")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := id.UserCreds("default", "admin")
	if err != nil {
		t.Fatal(err)
	}
	write("admin.creds", admin)
	write("keyflow.yaml", fmt.Appendf(nil, `nats:
  urls: [%s]
  creds_file: %s
  identity_file: %s
  replicas: 1
temporal:
  address: %s
  namespace: %s
  tls:
    ca_file: %s
    cert_file: %s
    key_file: %s
hsm:
  token_label: %s
  pin_file: %s
ops:
  listen: 127.0.0.1:0
log:
  level: warn
`, r.natsURL, write("worker.creds", worker), filepath.Join(dir, "identity.json"),
		ep.Addr, ep.Namespace, ep.CAFile, ep.CertFile, ep.KeyFile,
		rigTokenLabel, write("pin", []byte(rigUserPIN+"\n"))))

	r.bin = buildKeyflowForRig(t)
	boot := exec.Command(r.bin, "bootstrap", "--config", r.config)
	boot.Env = r.env
	if out, err := boot.CombinedOutput(); err != nil {
		t.Fatalf("keyflow bootstrap: %v\n%s", err, out)
	}
	return r
}

var (
	rigBinOnce sync.Once
	rigBin     string
	rigBinErr  error
)

// buildKeyflowForRig builds cmd/keyflow once per test binary, to a path
// that stays put between runs (named after this checkout), so that go
// build finds it up to date and does not link it again (a minute on a
// busy machine).
func buildKeyflowForRig(t testing.TB) string {
	t.Helper()
	rigBinOnce.Do(func() {
		wd, _ := os.Getwd()
		sum := sha256.Sum256([]byte(wd))
		rigBin = filepath.Join(os.TempDir(), "keyflow-e2e-cluster-"+hex.EncodeToString(sum[:6]), "keyflow")
		goCmd, err := exec.LookPath("go")
		if err != nil {
			goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		out, err := exec.Command(goCmd, "build", "-o", rigBin, "github.com/keyflow/keyflow/cmd/keyflow").CombinedOutput()
		if err != nil {
			rigBinErr = fmt.Errorf("go build cmd/keyflow: %w\n%s", err, out)
		}
	})
	if rigBinErr != nil {
		t.Fatal(rigBinErr)
	}
	return rigBin
}

// rigProc is one `keyflow serve` process.
type rigProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	stderr *os.File
}

// serve runs `keyflow serve --roles roles` and waits for its ready line.
func (r *lifecycleRig) serve(t testing.TB, roles string) *rigProc {
	t.Helper()
	cmd := exec.Command(r.bin, "serve", "--config", r.config, "--roles", roles)
	cmd.Env = r.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	errf, err := os.CreateTemp(r.dir, "serve-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = errf
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &rigProc{cmd: cmd, exited: make(chan struct{}), stderr: errf}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sent := false
		for sc.Scan() {
			if !sent && strings.HasPrefix(sc.Text(), "keyflow serving") {
				ready <- true
				sent = true
			}
		}
		if !sent {
			ready <- false
		}
	}()
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.stop() })
	select {
	case ok := <-ready:
		if !ok {
			<-p.exited
			b, _ := os.ReadFile(errf.Name())
			t.Fatalf("keyflow serve --roles %s exited before ready:\n%s", roles, b)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("keyflow serve --roles %s not ready within 2m", roles)
	}
	return p
}

// serveFails runs `keyflow serve --roles roles`, which must exit at
// start, and returns what it printed.
func (r *lifecycleRig) serveFails(t testing.TB, roles string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, "serve", "--config", r.config, "--roles", roles)
	cmd.Env = r.env
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("keyflow serve --roles %s still running after 2m:\n%s", roles, out)
	}
	return string(out), err
}

// kill SIGKILLs the process (no cleanup at all) and waits for it to go.
func (p *rigProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// stop asks the process to stop (SIGTERM), then kills it.
func (p *rigProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.kill()
	}
	_ = p.stderr.Close()
}

// client dials NATS as the default tenant's admin.
func (r *lifecycleRig) client(t testing.TB) *client.Client {
	t.Helper()
	cl, err := client.Dial(context.Background(), client.Options{Server: r.natsURL, CredsFile: r.adminCreds, Timeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}
