package temporalpg

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// PostgresBin is where Debian's postgresql-15 package installs its
// binaries; KEYFLOW_POSTGRES_BIN overrides it.
const PostgresBin = "/usr/lib/postgresql/15/bin"

// PostgresUser is the superuser initdb creates; Temporal connects as it.
const PostgresUser = "temporal"

// Postgres is a running PostgreSQL cluster on a loopback port.
type Postgres struct {
	Host     string // 127.0.0.1
	Port     int
	User     string
	Password string
	// Dir holds the cluster (data/), its socket and its log (postgres.log).
	Dir string

	cmd    *exec.Cmd
	exited chan struct{}
}

// Addr is host:port.
func (p *Postgres) Addr() string { return net.JoinHostPort(p.Host, strconv.Itoa(p.Port)) }

func postgresBin(name string) string {
	dir := os.Getenv("KEYFLOW_POSTGRES_BIN")
	if dir == "" {
		dir = PostgresBin
	}
	return filepath.Join(dir, name)
}

// runAs is the uid and gid PostgreSQL runs as: the caller's own, except
// as root (which PostgreSQL refuses), where it is the postgres system
// user the Debian package creates.
func runAs() (uid, gid int, err error) {
	if os.Geteuid() != 0 {
		return -1, -1, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return 0, 0, fmt.Errorf("PostgreSQL does not run as root, and there is no postgres user to run it as (Debian package postgresql): %w", err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, nil
}

// StartPostgres initdb's a new cluster in a fresh directory under parent
// ("" for the system's temp directory) and runs it on a free loopback
// port. Its log goes to Dir/postgres.log. Stop ends it and removes Dir.
func StartPostgres(ctx context.Context, parent string) (*Postgres, error) {
	if _, err := os.Stat(postgresBin("postgres")); err != nil {
		return nil, fmt.Errorf("PostgreSQL 15 is not installed (Debian package postgresql; ./.ci/install-deps): %w", err)
	}
	uid, gid, err := runAs()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(parent, "keyflow-pg-")
	if err != nil {
		return nil, err
	}
	p := &Postgres{Host: "127.0.0.1", User: PostgresUser, Password: rand.Text(), Dir: dir}
	ok := false
	defer func() {
		if !ok {
			p.Stop()
		}
	}()
	if uid >= 0 {
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(p.Password+"\n"), 0o600); err != nil {
		return nil, err
	}
	if uid >= 0 {
		if err := os.Chown(pwfile, uid, gid); err != nil {
			return nil, err
		}
	}
	initdb := exec.CommandContext(ctx, postgresBin("initdb"), "-D", filepath.Join(dir, "data"), "-U", p.User,
		"--pwfile", pwfile, "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
	initdb.Dir = dir
	child(initdb, uid, gid)
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb failed: %w\n%s", err, out)
	}
	_ = os.Remove(pwfile)

	// A free port can be taken between the probe and postgres's listen
	// (other tests run on this machine): try a few.
	var lastErr error
	for range 5 {
		ports, err := freePorts(1, 0)
		if err != nil {
			return nil, err
		}
		p.Port = ports[0]
		if lastErr = p.run(uid, gid); lastErr == nil {
			ok = true
			return p, nil
		}
	}
	return nil, lastErr
}

// run starts postgres on p.Port and waits until it accepts connections.
func (p *Postgres) run(uid, gid int) error {
	logPath := filepath.Join(p.Dir, "postgres.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(postgresBin("postgres"), "-D", filepath.Join(p.Dir, "data"),
		"-h", p.Host, "-p", strconv.Itoa(p.Port), "-k", p.Dir,
		// Temporal holds many connections (per service and store).
		"-c", "max_connections=200",
		// Throwaway clusters: durability is not what they test.
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	cmd.Dir = p.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	child(cmd, uid, gid)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("failed to start postgres: %w", err)
	}
	p.cmd = cmd
	p.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(p.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			p.cmd = nil
			return fmt.Errorf("postgres exited at start (see %s):\n%s", logPath, tail(logPath))
		default:
		}
		if exec.Command(postgresBin("pg_isready"), "-h", p.Host, "-p", strconv.Itoa(p.Port), "-U", p.User, "-t", "1").Run() == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.kill()
	return fmt.Errorf("postgres did not accept connections on %s within 60s (see %s)", p.Addr(), logPath)
}

// Stop shuts PostgreSQL down (fast shutdown: SIGINT) and removes its
// directory. It is safe to call more than once.
func (p *Postgres) Stop() {
	if p.cmd != nil {
		_ = p.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			p.kill()
		}
		p.cmd = nil
	}
	if p.Dir != "" {
		_ = os.RemoveAll(p.Dir)
		p.Dir = ""
	}
}

func (p *Postgres) kill() {
	if p.cmd != nil {
		_ = p.cmd.Process.Kill()
		<-p.exited
		p.cmd = nil
	}
}

// tail is the end of a log file, for error messages.
func tail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = "…" + s[len(s)-2000:]
	}
	return s
}
