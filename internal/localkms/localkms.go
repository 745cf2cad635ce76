// Package localkms starts local-kms, the AWS KMS emulator
// (github.com/nsmithuk/local-kms), for tests: a real AWS-KMS-compatible
// server with its own key store, which keyflow's AWS connector talks to
// through the official SDK.
//
// The binary is the pinned Version. Start looks for it in
// $KEYFLOW_LOCALKMS_BIN, then in the repository's .bench/bin (the bench
// task installs it there), then in the user cache, and go-installs it
// into the cache when it finds none (the module is in go.sum's module
// cache after one download). A test that cannot get it is skipped with a
// message that says why.
package localkms

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Version is the pinned local-kms module version.
const Version = "v0.0.0-20260228092603-2a5e92d09ab6"

var (
	once   sync.Once
	binary string
	binErr error
)

// Binary returns the local-kms executable, installing it if needed.
func Binary() (string, error) {
	once.Do(func() {
		if p := os.Getenv("KEYFLOW_LOCALKMS_BIN"); p != "" {
			binary = p
			return
		}
		if root, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
			p := filepath.Join(filepath.Dir(string(trimNL(root))), ".bench", "bin", "local-kms")
			if _, err := os.Stat(p); err == nil {
				binary = p
				return
			}
		}
		cache, err := os.UserCacheDir()
		if err != nil {
			binErr = err
			return
		}
		dir := filepath.Join(cache, "keyflow", "local-kms-"+Version)
		p := filepath.Join(dir, "local-kms")
		if _, err := os.Stat(p); err == nil {
			binary = p
			return
		}
		cmd := exec.Command("go", "install", "github.com/nsmithuk/local-kms@"+Version)
		cmd.Env = append(os.Environ(), "GOBIN="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go install local-kms: %w\n%s", err, out)
			return
		}
		binary = p
	})
	return binary, binErr
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// Server is one running local-kms.
type Server struct {
	URL  string
	Port int
	cmd  *exec.Cmd
	dir  string
	bin  string
	t    testing.TB
}

// Start runs local-kms on a free loopback port with its data in a temp
// dir, and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Skipf("local-kms is not available: %v", err)
	}
	s := &Server{dir: t.TempDir(), bin: bin, t: t}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	s.URL = "http://127.0.0.1:" + strconv.Itoa(s.Port)
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Stop kills the server (a provider outage); Restart brings it back with
// the same data.
func (s *Server) Stop() {
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

// Restart starts the server again on the same port and data dir.
func (s *Server) Restart() {
	s.t.Helper()
	cmd := exec.Command(s.bin)
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(s.Port), "KMS_REGION=us-east-1",
		"KMS_ACCOUNT_ID=111122223333", "KMS_DATA_PATH="+s.dir)
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd = cmd
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		resp, err := http.Get(s.URL + "/")
		if err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("local-kms did not start on %s", s.URL)
}
