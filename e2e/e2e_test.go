// Package e2e tests keyflow end to end through the real binary: TestMain
// builds cmd/keyflow once, each test runs `keyflow dev` as a subprocess on
// its own data directory and free ports, and drives it with the CLI exactly
// as a user would (environment variables, stdin, exit codes, stderr).
//
// The dev stack needs SoftHSM (Debian package softhsm2); without it
// `keyflow dev` exits with a message saying so, and the tests fail.
package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyflow/keyflow/kms"
)

// Deadlines. They are generous because CI machines are slow; the tests
// never assert on timing, they only log it.
const (
	readyTimeout = 2 * time.Minute  // `keyflow dev` up, first run included
	stopTimeout  = 60 * time.Second // SIGTERM to exit
	cliTimeout   = 2 * time.Minute  // one CLI command
)

// kfBin is the keyflow binary TestMain builds.
var kfBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "keyflow-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: failed to create a temp dir: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	kfBin = filepath.Join(dir, "keyflow")
	if runtime.GOOS == "windows" {
		kfBin += ".exe"
	}
	goTool, err := findGo()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	start := time.Now()
	build := exec.Command(goTool, "build", "-o", kfBin, "github.com/keyflow/keyflow/cmd/keyflow")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: failed to build the keyflow binary: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "e2e: built %s in %v\n", kfBin, time.Since(start).Round(time.Millisecond))
	return m.Run()
}

// findGo finds the go command: `go test` puts its own GOROOT/bin first on
// PATH; runtime.GOROOT is the fallback.
func findGo() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go") //nolint:staticcheck // fallback only
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("cannot find the go command on PATH or in GOROOT: %w", err)
	}
	return p, nil
}

// ---------------------------------------------------------------------------
// The dev stack as a subprocess.

// outputBuffer collects a subprocess's output and notices the ready line.
type outputBuffer struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	readyLine string
	ready     chan struct{} // closed once a full "keyflow ready" line arrived
}

func newOutputBuffer() *outputBuffer { return &outputBuffer{ready: make(chan struct{})} }

func (b *outputBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if b.readyLine == "" {
		s := b.buf.String()
		if i := strings.Index(s, "keyflow ready"); i >= 0 {
			if j := strings.IndexByte(s[i:], '\n'); j >= 0 {
				b.readyLine = s[i : i+j]
				close(b.ready)
			}
		}
	}
	return len(p), nil
}

func (b *outputBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *outputBuffer) Ready() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.readyLine
}

// stack is one running `keyflow dev`.
type stack struct {
	dir            string
	cmd            *exec.Cmd
	stdout, stderr *outputBuffer
	exited         chan struct{} // closed when the process has exited
	natsURL        string        // nats://127.0.0.1:P1, from the ready line
	temporalAddr   string        // 127.0.0.1:P2, from the ready line
	creds          string        // from the ready line
	startup        time.Duration
	stopSignal     os.Signal // SIGTERM unless a test sets it
	stopOnce       sync.Once
}

// startStack runs `keyflow dev` on dir (with extra flags) and waits for its
// ready line. Listen
// addresses "127.0.0.1:0" let the stack pick free ports; the ready line
// says which. The stack is stopped (and its clean exit asserted) when the
// test ends, unless the test stops it earlier.
func startStack(t *testing.T, dir, natsListen, temporalListen string, extra ...string) *stack {
	t.Helper()
	s := &stack{dir: dir, stdout: newOutputBuffer(), stderr: newOutputBuffer(), exited: make(chan struct{}), stopSignal: syscall.SIGTERM}
	s.cmd = exec.Command(kfBin, append([]string{"dev", "--data-dir", dir, "--nats-listen", natsListen, "--temporal-listen", temporalListen, "--ui-listen", "127.0.0.1:0"}, extra...)...)
	s.cmd.Env = cliEnv("", "")
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	killWithParent(s.cmd)
	start := time.Now()
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("failed to start keyflow dev: %v", err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() { s.stop(t) })

	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case <-s.stdout.ready:
	case <-s.exited:
		t.Fatalf("keyflow dev exited (%v) before it was ready\nstdout:\n%s\nstderr:\n%s", s.cmd.ProcessState, s.stdout, s.stderr)
	case <-timer.C:
		t.Fatalf("keyflow dev not ready within %v\nstdout:\n%s\nstderr:\n%s", readyTimeout, s.stdout, s.stderr)
	}
	s.startup = time.Since(start)

	line := s.stdout.Ready()
	fields := map[string]string{}
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok {
			fields[k] = v
		}
	}
	s.natsURL, s.temporalAddr, s.creds = fields["nats"], fields["temporal"], fields["creds"]
	if !strings.HasPrefix(s.natsURL, "nats://127.0.0.1:") || strings.HasSuffix(s.natsURL, ":0") {
		t.Fatalf("ready line has no usable nats URL: %q", line)
	}
	if !strings.HasPrefix(s.temporalAddr, "127.0.0.1:") || strings.HasSuffix(s.temporalAddr, ":0") {
		t.Fatalf("ready line has no usable temporal address: %q", line)
	}
	if s.creds != filepath.Join(dir, "admin.creds") {
		t.Errorf("ready line: creds=%q, want %q", s.creds, filepath.Join(dir, "admin.creds"))
	}
	if fields["tenant"] != "default" {
		t.Errorf("ready line: tenant=%q, want default", fields["tenant"])
	}
	t.Logf("keyflow dev ready in %v: %s", s.startup.Round(time.Millisecond), line)
	return s
}

// natsListen is the host:port the stack's NATS listens on.
func (s *stack) natsListen() string { return strings.TrimPrefix(s.natsURL, "nats://") }

// stop sends SIGTERM (or s.stopSignal) and asserts a clean exit: code 0
// and "keyflow stopped" printed. On timeout it kills the process and fails. Only the first call
// does anything.
func (s *stack) stop(t *testing.T) {
	t.Helper()
	s.stopOnce.Do(func() {
		start := time.Now()
		select {
		case <-s.exited:
			t.Errorf("keyflow dev had already exited (%v)\nstdout:\n%s\nstderr:\n%s", s.cmd.ProcessState, s.stdout, s.stderr)
			return
		default:
		}
		if err := s.cmd.Process.Signal(s.stopSignal); err != nil {
			t.Errorf("failed to send %v to keyflow dev: %v", s.stopSignal, err)
		}
		timer := time.NewTimer(stopTimeout)
		defer timer.Stop()
		select {
		case <-s.exited:
		case <-timer.C:
			_ = s.cmd.Process.Kill()
			<-s.exited
			t.Errorf("keyflow dev did not exit within %v of %v; killed it\nstdout:\n%s\nstderr:\n%s", stopTimeout, s.stopSignal, s.stdout, s.stderr)
			return
		}
		t.Logf("keyflow dev stopped by %v in %v", s.stopSignal, time.Since(start).Round(time.Millisecond))
		if code := s.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("keyflow dev exited with %v after %v, want 0\nstdout:\n%s\nstderr:\n%s", s.cmd.ProcessState, s.stopSignal, s.stdout, s.stderr)
		}
		if !strings.Contains(s.stdout.String(), "keyflow stopped") {
			t.Errorf("keyflow dev did not print \"keyflow stopped\"\nstdout:\n%s\nstderr:\n%s", s.stdout, s.stderr)
		}
		if e := s.stderr.String(); e != "" {
			t.Logf("keyflow dev stderr:\n%s", e)
		}
	})
}

// ---------------------------------------------------------------------------
// The CLI.

// cliEnv is the test process's environment with the keyflow variables
// replaced, so a developer's own settings cannot leak into the test.
func cliEnv(server, dataDir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "KEYFLOW_SERVER", "KEYFLOW_CREDS", "KEYFLOW_DATA_DIR":
			continue
		}
		env = append(env, kv)
	}
	if server != "" {
		env = append(env, "KEYFLOW_SERVER="+server)
	}
	if dataDir != "" {
		env = append(env, "KEYFLOW_DATA_DIR="+dataDir)
	}
	return env
}

type result struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("keyflow %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// runKF runs the keyflow binary with env and stdin and returns its output
// and exit code. A crypto verb without -o gets -o raw (rawByDefault).
func runKF(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	return runKFExact(t, env, stdin, rawByDefault(args)...)
}

// runKFExact is runKF with the arguments as given.
func runKFExact(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, kfBin, args...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		t.Fatalf("keyflow %s did not finish within %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), cliTimeout, r.stdout, r.stderr)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("failed to run keyflow %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// rawVerbs have a raw output form (-o raw: the bare base64, PEM or bytes);
// their default is JSON.
var rawVerbs = map[string]bool{"encrypt": true, "decrypt": true, "reencrypt": true, "sign": true, "verify": true,
	"mac": true, "verify-mac": true, "get-public-key": true, "random": true, "seal": true, "open": true,
	"decapsulate": true, "rewrap": true}

// rawByDefault adds -o raw to a crypto verb's arguments unless they name
// an output: most tests pipe the raw form, as scripts do. TestJSONByDefault
// covers the JSON default.
func rawByDefault(args []string) []string {
	verb := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" || a == "--output" || strings.HasPrefix(a, "--output=") || strings.HasPrefix(a, "-o="):
			return args
		case a == "--creds" || a == "--server" || a == "--data-dir" || a == "--timeout":
			i++ // its value
		case verb == "" && !strings.HasPrefix(a, "-"):
			verb = a
		case verb == "rewrap" && a == "status":
			return args
		}
	}
	if !rawVerbs[verb] {
		return args
	}
	return append(append([]string(nil), args...), "-o", "raw")
}

// kf runs a CLI command against the stack.
func (s *stack) kf(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runKF(t, cliEnv(s.natsURL, s.dir), stdin, args...)
}

// mustOK fails the test now unless r succeeded.
func mustOK(t *testing.T, r result) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("want exit 0, got %v", r)
	}
	return r
}

// expectFailure checks an exit code and the one-line error on stderr,
// "keyflow: <errCode>: <message>", and that nothing went to stdout.
func expectFailure(t *testing.T, r result, code int, errCode string) {
	t.Helper()
	if r.code != code {
		t.Errorf("want exit %d (%s), got %v", code, errCode, r)
		return
	}
	line := strings.TrimSuffix(r.stderr, "\n")
	if strings.Contains(line, "\n") || !strings.HasPrefix(line, "keyflow: "+errCode+": ") || len(line) <= len("keyflow: "+errCode+": ") {
		t.Errorf("want one stderr line \"keyflow: %s: <message>\", got %v", errCode, r)
	}
	if r.stdout != "" {
		t.Errorf("want nothing on stdout on failure, got %v", r)
	}
}

// decodeJSON decodes a command's stdout into v.
func decodeJSON(t *testing.T, r result, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("stdout is not the expected JSON: %v\n%v", err, r)
	}
}

// The JSON shapes the CLI prints, written from the documented field names
// rather than imported, so a renamed field fails here.
type keyVersion struct {
	Version   int    `json:"version"`
	State     string `json:"state"`
	Algorithm string `json:"algorithm"`
}

type keyMetadata struct {
	KeyID          string       `json:"keyId"`
	Alias          string       `json:"alias"`
	Description    string       `json:"description"`
	KeyState       string       `json:"keyState"`
	PrimaryVersion int          `json:"primaryVersion"`
	Versions       []keyVersion `json:"versions"`
}

type keyList struct {
	Keys []keyMetadata `json:"keys"`
}

type rotateResult struct {
	KeyID           string `json:"keyId"`
	PreviousVersion int    `json:"previousVersion"`
	NewVersion      int    `json:"newVersion"`
	WorkflowID      string `json:"workflowId"`
}

type dataKey struct {
	KeyID          string `json:"keyId"`
	Plaintext      []byte `json:"plaintext"`
	CiphertextBlob []byte `json:"ciphertextBlob"`
}

// cloudEvent is an audit record as `keyflow audit tail` prints it.
type cloudEvent struct {
	SpecVersion string          `json:"specversion"`
	ID          string          `json:"id"`
	Source      string          `json:"source"`
	Type        string          `json:"type"`
	Subject     string          `json:"subject"`
	Time        time.Time       `json:"time"`
	Tenant      string          `json:"tenant"`
	Principal   string          `json:"principal"`
	Outcome     string          `json:"outcome"`
	RequestID   string          `json:"requestid"`
	ErrorCode   string          `json:"errorcode"`
	Data        json.RawMessage `json:"data"`
}

// auditTail runs `keyflow audit tail` and checks every line: a CloudEvent
// 1.0 with an ID, a type, a source and a time, tenant "default", principal
// "admin", an outcome. The IDs are unique.
func auditTail(t *testing.T, s *stack) (raw string, evs []cloudEvent) {
	t.Helper()
	r := mustOK(t, s.kf(t, "", "audit", "tail"))
	seen := map[string]bool{}
	for i, line := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
		var e cloudEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit line %d is not JSON: %v\n%s", i+1, err, line)
		}
		if e.SpecVersion != "1.0" || e.ID == "" || e.Type == "" || e.Source == "" || e.Time.IsZero() {
			t.Errorf("audit line %d is not a complete CloudEvent 1.0: %s", i+1, line)
		}
		if e.Tenant != "default" || e.Principal != "admin" {
			t.Errorf("audit line %d: tenant %q principal %q, want default admin: %s", i+1, e.Tenant, e.Principal, line)
		}
		if e.Outcome != "success" && e.Outcome != "failure" {
			t.Errorf("audit line %d: outcome %q, want success or failure: %s", i+1, e.Outcome, line)
		}
		if seen[e.ID] {
			t.Errorf("audit line %d: duplicate event ID %s", i+1, e.ID)
		}
		seen[e.ID] = true
		evs = append(evs, e)
	}
	return r.stdout, evs
}

// hasEvent reports whether evs has an event of type typ with the outcome
// and whose data has every field of want (compared as JSON).
func hasEvent(evs []cloudEvent, typ, outcome string, want map[string]any) bool {
	for _, e := range evs {
		if e.Type != typ || e.Outcome != outcome {
			continue
		}
		var data map[string]any
		_ = json.Unmarshal(e.Data, &data)
		match := true
		for k, v := range want {
			got, _ := json.Marshal(data[k])
			exp, _ := json.Marshal(v)
			if !bytes.Equal(got, exp) {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

// secret is a value that must never appear in logs, events or files.
type secret struct {
	name  string
	value []byte
}

// scanForSecrets fails if text contains any of the secrets.
func scanForSecrets(t *testing.T, where string, text []byte, secrets []secret) {
	t.Helper()
	for _, s := range secrets {
		if len(s.value) > 0 && bytes.Contains(text, s.value) {
			t.Errorf("%s contains the %s", where, s.name)
		}
	}
}

func fileMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Errorf("failed to stat %s: %v", path, err)
		return
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s has mode %v, want %v", path, got, want)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

// ---------------------------------------------------------------------------
// The tests.

// TestCLIWithoutStack covers what works without a running stack.
func TestCLIWithoutStack(t *testing.T) {
	env := cliEnv("", t.TempDir())
	for _, args := range [][]string{{"--help"}, {"key", "--help"}, {"encrypt", "--help"}, {"dev", "--help"}, {"audit", "tail", "--help"}} {
		r := runKF(t, env, "", args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("want exit 0 and a usage text, got %v", r)
		}
	}
	if r := runKF(t, env, "", "--help"); !strings.Contains(r.stdout, "dev") || !strings.Contains(r.stdout, "encrypt") {
		t.Errorf("keyflow --help does not list the commands:\n%s", r.stdout)
	}
	if r := runKF(t, env, "", "key", "--help"); !strings.Contains(r.stdout, "rotate") || !strings.Contains(r.stdout, "create") {
		t.Errorf("keyflow key --help does not list the subcommands:\n%s", r.stdout)
	}
	// A mistyped command is bad usage, so a typo in a script fails.
	expectFailure(t, runKF(t, env, "", "no-such-command"), 2, "UsageError")
	expectFailure(t, runKF(t, env, "", "key", "no-such-command"), 2, "UsageError")
	expectFailure(t, runKF(t, env, "", "key", "list", "--no-such-flag"), 2, "UsageError")
	expectFailure(t, runKF(t, env, "", "key", "describe"), 2, "UsageError")
	expectFailure(t, runKF(t, env, "", "encrypt"), 2, "UsageError")
	// Standard CLI behaviour: --version, suggestions, stray arguments, and
	// input checked before any connection.
	if r := runKF(t, env, "", "--version"); r.code != 0 || !strings.HasPrefix(r.stdout, "keyflow version ") {
		t.Errorf("keyflow --version: %v", r)
	}
	if r := runKF(t, env, "", "ky", "list"); r.code != 2 || !strings.Contains(r.stderr, "did you mean key?") {
		t.Errorf("a typo gets no suggestion: %v", r)
	}
	expectFailure(t, runKF(t, env, "", "decrypt", "card.b64"), 2, "UsageError")
	expectFailure(t, runKF(t, env, "", "decrypt"), 2, "UsageError") // empty stdin, refused before connecting
	if r := runKF(t, env, "", "key", "set-policy", "k", "--file", "missing.json"); r.code != 2 || !strings.Contains(r.stderr, "--file") {
		t.Errorf("set-policy --file missing.json does not name --file: %v", r)
	}
	expectFailure(t, runKF(t, env, "", "key", "list", "-o", "raw"), 2, "UsageError")
	// No stack and no creds: the creds are what is missing.
	expectFailure(t, runKF(t, env, "", "key", "list"), 6, "NoCredentials")
}

// TestEndToEnd drives one stack through the whole key lifecycle, stops it,
// starts it again on the same data directory, and checks that nothing was
// lost and that no secret leaked into the audit trail, the logs or the
// files.
func TestEndToEnd(t *testing.T) {
	dir := t.TempDir()
	st := startStack(t, dir, "127.0.0.1:0", "127.0.0.1:0")
	stacks := []*stack{st}

	const plaintext = "e2e-secret-plaintext-91c2"
	var (
		keyID    string
		ct1      string // base64 ciphertext under version 1
		ct2      string // base64 ciphertext under version 2
		dk       dataKey
		pin      []byte
		events1  []cloudEvent
		auditRaw strings.Builder
	)
	must := func(ok bool) {
		t.Helper()
		if !ok {
			t.FailNow()
		}
	}

	must(t.Run("Files", func(t *testing.T) {
		var err error
		if pin, err = os.ReadFile(filepath.Join(dir, "hsm", "pin")); err != nil {
			t.Fatalf("failed to read the HSM PIN: %v", err)
		}
		pin = bytes.TrimSpace(pin)
		if len(pin) < 8 {
			t.Fatalf("the HSM PIN is %d bytes, want a generated PIN", len(pin))
		}
		fileMode(t, filepath.Join(dir, "hsm", "pin"), 0o600)
		fileMode(t, filepath.Join(dir, "admin.creds"), 0o600)
	}))

	must(t.Run("CreateKey", func(t *testing.T) {
		var k keyMetadata
		decodeJSON(t, mustOK(t, st.kf(t, "", "key", "create", "--alias", "app", "--description", "d")), &k)
		if k.KeyID == "" || k.KeyState != "ACTIVE" || k.PrimaryVersion != 1 || k.Alias != "app" || k.Description != "d" || len(k.Versions) != 1 {
			t.Fatalf("key create: got %+v, want an ACTIVE key app with primary version 1", k)
		}
		keyID = k.KeyID
		expectFailure(t, st.kf(t, "", "key", "create", "--alias", "app"), 1, "AlreadyExistsException")
	}))

	t.Run("DescribeAndList", func(t *testing.T) {
		for _, ref := range []string{"app", keyID} {
			var k keyMetadata
			decodeJSON(t, mustOK(t, st.kf(t, "", "key", "describe", ref)), &k)
			if k.KeyID != keyID || k.Alias != "app" || k.KeyState != "ACTIVE" || k.PrimaryVersion != 1 {
				t.Errorf("key describe %s: got %+v", ref, k)
			}
		}
		expectFailure(t, st.kf(t, "", "key", "describe", "nope"), 1, "NotFoundException")

		var l keyList
		decodeJSON(t, mustOK(t, st.kf(t, "", "key", "list")), &l)
		if len(l.Keys) != 1 || l.Keys[0].KeyID != keyID || l.Keys[0].Alias != "app" {
			t.Errorf("key list: got %+v, want the one key app", l)
		}
		r := mustOK(t, st.kf(t, "", "key", "list", "-o", "table"))
		if !strings.Contains(r.stdout, "app") || !strings.Contains(r.stdout, keyID) || !strings.Contains(r.stdout, "ACTIVE") {
			t.Errorf("key list -o table does not show the key:\n%s", r.stdout)
		}
		expectFailure(t, st.kf(t, "", "key", "list", "--output", "yaml"), 2, "UsageError")
	})

	must(t.Run("EncryptDecrypt", func(t *testing.T) {
		r := mustOK(t, st.kf(t, plaintext, "encrypt", "--key", "app", "--context", "a=b"))
		ct1 = strings.TrimSpace(r.stdout)
		raw, err := base64.StdEncoding.DecodeString(ct1)
		if err != nil {
			t.Fatalf("encrypt output is not base64: %v\n%v", err, r)
		}
		if bytes.Contains(raw, []byte(plaintext)) {
			t.Fatalf("the ciphertext contains the plaintext")
		}
		if id, v, err := kms.EnvelopeKeyID(raw); err != nil || id != keyID || v != 1 {
			t.Errorf("ciphertext header: key %q version %d err %v, want %s version 1", id, v, err, keyID)
		}
		if got := mustOK(t, st.kf(t, ct1, "decrypt", "--context", "a=b")).stdout; got != plaintext {
			t.Fatalf("decrypt: got %q, want %q", got, plaintext)
		}
		if got := mustOK(t, st.kf(t, ct1+"\n", "decrypt", "--key", "app", "--context", "a=b")).stdout; got != plaintext {
			t.Errorf("decrypt --key app: got %q, want %q", got, plaintext)
		}
	}))

	t.Run("DecryptRefusals", func(t *testing.T) {
		raw, _ := base64.StdEncoding.DecodeString(ct1)
		tampered := bytes.Clone(raw)
		tampered[len(tampered)-1] ^= 1
		for name, c := range map[string]struct {
			stdin string
			args  []string
		}{
			"wrong context":    {ct1, []string{"--context", "a=c"}},
			"missing context":  {ct1, nil},
			"extra context":    {ct1, []string{"--context", "a=b", "--context", "x=y"}},
			"truncated tag":    {b64(raw[:len(raw)-1]), []string{"--context", "a=b"}},
			"truncated header": {b64(raw[:15]), []string{"--context", "a=b"}},
			"tampered":         {b64(tampered), []string{"--context", "a=b"}},
		} {
			t.Run(name, func(t *testing.T) {
				expectFailure(t, st.kf(t, c.stdin, append([]string{"decrypt"}, c.args...)...), 1, "InvalidCiphertextException")
			})
		}
		expectFailure(t, st.kf(t, "this is not base64!", "decrypt", "--context", "a=b"), 2, "UsageError")
		expectFailure(t, st.kf(t, "", "decrypt", "--context", "a=b"), 2, "UsageError")               // empty input, refused before a request
		expectFailure(t, st.kf(t, ct1[:len(ct1)-1], "decrypt", "--context", "a=b"), 2, "UsageError") // a cut that breaks the base64
		expectFailure(t, st.kf(t, ct1, "decrypt", "--context", "novalue"), 2, "UsageError")
	})

	t.Run("EncryptRefusals", func(t *testing.T) {
		expectFailure(t, st.kf(t, "", "encrypt", "--key", "app"), 1, "ValidationException")
		expectFailure(t, st.kf(t, "x", "encrypt", "--key", "no-such-key"), 1, "NotFoundException")
		expectFailure(t, st.kf(t, "x", "encrypt", "--key", "00000000-0000-0000-0000-000000000000"), 1, "NotFoundException")
		expectFailure(t, st.kf(t, "x", "encrypt"), 2, "UsageError")
		expectFailure(t, st.kf(t, "x", "encrypt", "--key", "app", "--output", "yaml"), 2, "UsageError")
	})

	must(t.Run("DataKey", func(t *testing.T) {
		decodeJSON(t, mustOK(t, st.kf(t, "", "datakey", "--key", "app")), &dk)
		if dk.KeyID != keyID || len(dk.Plaintext) != 32 || len(dk.CiphertextBlob) == 0 {
			t.Fatalf("datakey: got keyId %q, %d plaintext bytes, %d ciphertext bytes; want %s, 32, some", dk.KeyID, len(dk.Plaintext), len(dk.CiphertextBlob), keyID)
		}
		if bytes.Contains(dk.CiphertextBlob, dk.Plaintext) {
			t.Fatalf("the data key's ciphertext contains its plaintext")
		}
		got := mustOK(t, st.kf(t, b64(dk.CiphertextBlob), "decrypt")).stdout
		if got != string(dk.Plaintext) {
			t.Fatalf("decrypting the data key's ciphertextBlob did not give its plaintext")
		}
		var dk16 dataKey
		decodeJSON(t, mustOK(t, st.kf(t, "", "datakey", "--key", "app", "--bytes", "16", "--context", "purpose=e2e")), &dk16)
		if len(dk16.Plaintext) != 16 {
			t.Errorf("datakey --bytes 16: got %d bytes", len(dk16.Plaintext))
		}
		expectFailure(t, st.kf(t, b64(dk16.CiphertextBlob), "decrypt"), 1, "InvalidCiphertextException")
		// The CLI checks the documented range 1-1024 itself.
		expectFailure(t, st.kf(t, "", "datakey", "--key", "app", "--bytes", "1025"), 2, "UsageError")
		expectFailure(t, st.kf(t, "", "datakey", "--key", "app", "--bytes", "0"), 2, "UsageError")
		if got := mustOK(t, st.kf(t, b64(dk16.CiphertextBlob), "decrypt", "--context", "purpose=e2e")).stdout; got != string(dk16.Plaintext) {
			t.Errorf("decrypting the 16-byte data key with its context did not give its plaintext")
		}
	}))

	must(t.Run("Rotate", func(t *testing.T) {
		start := time.Now()
		var rr rotateResult
		decodeJSON(t, mustOK(t, st.kf(t, "", "key", "rotate", "app")), &rr)
		t.Logf("key rotate took %v", time.Since(start).Round(time.Millisecond))
		if rr.KeyID != keyID || rr.PreviousVersion != 1 || rr.NewVersion != 2 || rr.WorkflowID == "" {
			t.Fatalf("key rotate: got %+v, want %s 1 -> 2 with a workflow ID", rr, keyID)
		}
		var k keyMetadata
		decodeJSON(t, mustOK(t, st.kf(t, "", "key", "describe", "app")), &k)
		if k.PrimaryVersion != 2 || len(k.Versions) != 2 || k.KeyState != "ACTIVE" {
			t.Fatalf("after rotation: got %+v, want primary version 2 of 2", k)
		}
		if got := mustOK(t, st.kf(t, ct1, "decrypt", "--context", "a=b")).stdout; got != plaintext {
			t.Errorf("the version-1 ciphertext no longer decrypts after rotation: got %q", got)
		}
		ct2 = strings.TrimSpace(mustOK(t, st.kf(t, plaintext, "encrypt", "--key", "app", "--context", "a=b")).stdout)
		raw, err := base64.StdEncoding.DecodeString(ct2)
		if err != nil {
			t.Fatalf("encrypt output is not base64: %v", err)
		}
		if id, v, err := kms.EnvelopeKeyID(raw); err != nil || id != keyID || v != 2 {
			t.Errorf("ciphertext after rotation: key %q version %d err %v, want %s version 2", id, v, err, keyID)
		}
		if got := mustOK(t, st.kf(t, ct2, "decrypt", "--context", "a=b")).stdout; got != plaintext {
			t.Errorf("the version-2 ciphertext does not decrypt: got %q", got)
		}
		expectFailure(t, st.kf(t, "", "key", "rotate", "nope"), 1, "NotFoundException")
	}))

	t.Run("Audit", func(t *testing.T) {
		raw, evs := auditTail(t, st)
		auditRaw.WriteString(raw)
		events1 = evs
		t.Logf("%d audit events", len(evs))
		for _, c := range []struct {
			typ, outcome string
			data         map[string]any
		}{
			{"io.keyflow.key.created.v1", "success", map[string]any{"keyId": keyID, "alias": "app", "version": 1}},
			{"io.keyflow.crypto.encrypt.v1", "success", map[string]any{"keyVersion": 1}},
			{"io.keyflow.crypto.encrypt.v1", "success", map[string]any{"keyVersion": 2}},
			{"io.keyflow.crypto.encrypt.v1", "failure", nil},
			{"io.keyflow.crypto.decrypt.v1", "success", map[string]any{"keyVersion": 1}},
			{"io.keyflow.crypto.decrypt.v1", "success", map[string]any{"keyVersion": 2}},
			{"io.keyflow.crypto.decrypt.v1", "failure", nil},
			{"io.keyflow.crypto.datakey.v1", "success", map[string]any{"numberOfBytes": 32}},
			{"io.keyflow.key.rotated.v1", "success", map[string]any{"keyId": keyID, "previousVersion": 1, "version": 2}},
			{"io.keyflow.key.version.created.v1", "success", map[string]any{"keyId": keyID, "version": 2}},
		} {
			if !hasEvent(evs, c.typ, c.outcome, c.data) {
				t.Errorf("no %s event with outcome %s and data %v", c.typ, c.outcome, c.data)
			}
		}
		wantSubject := "kf:default:key/" + keyID
		for _, e := range evs {
			if e.Type == "io.keyflow.key.rotated.v1" && e.Subject != wantSubject {
				t.Errorf("rotated event subject %q, want %q", e.Subject, wantSubject)
			}
		}
	})

	// `audit tail --limit` and `--follow`: a follower sees a key created
	// after it started, and SIGINT ends it with exit 0.
	t.Run("AuditFollow", func(t *testing.T) {
		if len(events1) == 0 {
			t.Skip("the audit trail was not read")
		}
		r := mustOK(t, st.kf(t, "", "audit", "tail", "--limit", "3"))
		if n := strings.Count(r.stdout, "\n"); n != 3 {
			t.Errorf("audit tail --limit 3 printed %d lines", n)
		}

		out := newOutputBuffer()
		cmd := exec.Command(kfBin, "audit", "tail", "--follow")
		cmd.Env = cliEnv(st.natsURL, st.dir)
		cmd.Stdout, cmd.Stderr = out, out
		killWithParent(cmd)
		if err := cmd.Start(); err != nil {
			t.Fatalf("failed to start audit tail --follow: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		defer func() {
			select {
			case <-exited:
			default:
				_ = cmd.Process.Kill()
				<-exited
			}
		}()
		// The backlog first: the first event of the trail.
		if !waitFor(t, 30*time.Second, func() bool { return strings.Contains(out.String(), events1[0].ID) }) {
			t.Fatalf("audit tail --follow did not print the backlog:\n%s", out)
		}
		t.Logf("audit tail --follow printed the backlog")
		mustOK(t, st.kf(t, "", "key", "create", "--alias", "followed", "--description", "created while following"))
		created := time.Now()
		if !waitFor(t, 30*time.Second, func() bool { return strings.Contains(out.String(), `"alias":"followed"`) }) {
			t.Fatalf("audit tail --follow did not print the new key's event:\n%s", out)
		}
		t.Logf("audit tail --follow printed the new event %v after it was created", time.Since(created).Round(time.Millisecond))
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatalf("failed to interrupt audit tail --follow: %v", err)
		}
		interrupted := time.Now()
		select {
		case <-exited:
			t.Logf("audit tail --follow exited %v after SIGINT", time.Since(interrupted).Round(time.Millisecond))
		case <-time.After(stopTimeout):
			t.Fatalf("audit tail --follow did not exit within %v of SIGINT", stopTimeout)
		}
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("audit tail --follow exited %v after SIGINT, want 0; output:\n%s", cmd.ProcessState, out)
		}
		for i, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
			if !json.Valid([]byte(line)) {
				t.Errorf("audit tail --follow line %d is not JSON: %q", i+1, line)
			}
		}
		auditRaw.WriteString(out.String())
	})

	// Stop, check that the CLI now reports the stack unreachable, and start
	// again on the same directory and the same ports. The new stack belongs
	// to the whole test, so it is started here rather than in a subtest.
	must(t.Run("Stop", func(t *testing.T) {
		st.stop(t)
		if t.Failed() {
			t.FailNow()
		}
		expectFailure(t, st.kf(t, "", "key", "list"), 3, "Unreachable")
		expectFailure(t, st.kf(t, plaintext, "encrypt", "--key", "app"), 3, "Unreachable")
	}))
	old := st
	st = startStack(t, dir, old.natsListen(), old.temporalAddr)
	st.stopSignal = os.Interrupt // the second run is stopped as Ctrl-C would
	stacks = append(stacks, st)
	t.Logf("restart: keyflow dev ready again in %v", st.startup.Round(time.Millisecond))
	t.Run("Restart", func(t *testing.T) {
		if st.natsURL != old.natsURL || st.temporalAddr != old.temporalAddr {
			t.Errorf("restarted on %s %s, want the same ports %s %s", st.natsURL, st.temporalAddr, old.natsURL, old.temporalAddr)
		}
		if got, err := os.ReadFile(filepath.Join(dir, "hsm", "pin")); err != nil || !bytes.Equal(bytes.TrimSpace(got), pin) {
			t.Errorf("the HSM PIN file changed across the restart (err %v)", err)
		}
		fileMode(t, filepath.Join(dir, "hsm", "pin"), 0o600)
		fileMode(t, filepath.Join(dir, "admin.creds"), 0o600)
	})

	t.Run("AfterRestart", func(t *testing.T) {
		var k keyMetadata
		decodeJSON(t, mustOK(t, st.kf(t, "", "key", "describe", "app")), &k)
		if k.KeyID != keyID || k.PrimaryVersion != 2 || len(k.Versions) != 2 || k.KeyState != "ACTIVE" {
			t.Errorf("after restart: got %+v, want %s at primary version 2 of 2", k, keyID)
		}
		for i, ct := range []string{ct1, ct2} {
			if got := mustOK(t, st.kf(t, ct, "decrypt", "--context", "a=b")).stdout; got != plaintext {
				t.Errorf("after restart the version-%d ciphertext decrypts to %q", i+1, got)
			}
		}
		if got := mustOK(t, st.kf(t, b64(dk.CiphertextBlob), "decrypt")).stdout; got != string(dk.Plaintext) {
			t.Errorf("after restart the data key does not decrypt to its plaintext")
		}
		expectFailure(t, st.kf(t, ct1, "decrypt", "--context", "a=c"), 1, "InvalidCiphertextException")

		start := time.Now()
		var rr rotateResult
		decodeJSON(t, mustOK(t, st.kf(t, "", "key", "rotate", "app")), &rr)
		t.Logf("key rotate after restart took %v", time.Since(start).Round(time.Millisecond))
		if rr.KeyID != keyID || rr.PreviousVersion != 2 || rr.NewVersion != 3 {
			t.Errorf("second rotation: got %+v, want 2 -> 3", rr)
		}
		decodeJSON(t, mustOK(t, st.kf(t, "", "key", "describe", keyID)), &k)
		if k.PrimaryVersion != 3 || len(k.Versions) != 3 {
			t.Errorf("after the second rotation: got %+v, want primary version 3 of 3", k)
		}
		ct3 := strings.TrimSpace(mustOK(t, st.kf(t, plaintext, "encrypt", "--key", "app", "--context", "a=b")).stdout)
		if raw, err := base64.StdEncoding.DecodeString(ct3); err != nil {
			t.Errorf("encrypt output is not base64: %v", err)
		} else if _, v, err := kms.EnvelopeKeyID(raw); err != nil || v != 3 {
			t.Errorf("ciphertext after the second rotation: version %d err %v, want 3", v, err)
		}
		if got := mustOK(t, st.kf(t, ct3, "decrypt", "--context", "a=b")).stdout; got != plaintext {
			t.Errorf("the version-3 ciphertext decrypts to %q", got)
		}
		for i, ct := range []string{ct1, ct2} {
			if got := mustOK(t, st.kf(t, ct, "decrypt", "--context", "a=b")).stdout; got != plaintext {
				t.Errorf("after the second rotation the version-%d ciphertext decrypts to %q", i+1, got)
			}
		}

		raw, evs := auditTail(t, st)
		auditRaw.WriteString(raw)
		t.Logf("%d audit events after the restart (%d before)", len(evs), len(events1))
		// Append-only: the earlier tail is a prefix of this one.
		if len(evs) <= len(events1) {
			t.Errorf("audit tail has %d events after the restart, want more than the %d before", len(evs), len(events1))
		}
		ids := make([]string, len(evs))
		for i, e := range evs {
			ids[i] = e.ID
		}
		for i, e := range events1 {
			if !slices.Contains(ids, e.ID) {
				t.Errorf("audit event %s (%s) from before the restart is gone", e.ID, e.Type)
			} else if i >= len(ids) || ids[i] != e.ID {
				t.Errorf("audit event %s (%s) moved from position %d", e.ID, e.Type, i)
			}
		}
		later := evs[min(len(events1), len(evs)):]
		if !hasEvent(later, "io.keyflow.key.rotated.v1", "success", map[string]any{"keyId": keyID, "previousVersion": 2, "version": 3}) {
			t.Errorf("no key.rotated event 2 -> 3 after the restart")
		}
		if !hasEvent(later, "io.keyflow.crypto.decrypt.v1", "failure", nil) || !hasEvent(later, "io.keyflow.crypto.decrypt.v1", "success", map[string]any{"keyVersion": 1}) {
			t.Errorf("the decryptions after the restart are not all audited")
		}
	})

	st.stop(t)

	// Secrets must appear in no audit record, no log line and no file of
	// the data directory (but the PIN file itself).
	t.Run("SecretScan", func(t *testing.T) {
		secrets := []secret{
			{"plaintext", []byte(plaintext)},
			{"plaintext (base64)", []byte(b64([]byte(plaintext)))},
			{"plaintext (base64, unpadded)", []byte(base64.RawStdEncoding.EncodeToString([]byte(plaintext)))},
			{"plaintext (hex)", []byte(hex.EncodeToString([]byte(plaintext)))},
			{"data key", dk.Plaintext},
			{"data key (base64)", []byte(b64(dk.Plaintext))},
			{"data key (base64, unpadded)", []byte(base64.RawStdEncoding.EncodeToString(dk.Plaintext))},
			{"data key (hex)", []byte(hex.EncodeToString(dk.Plaintext))},
			{"HSM PIN", pin},
		}
		scanForSecrets(t, "the audit trail", []byte(auditRaw.String()), secrets)
		for i, s := range stacks {
			scanForSecrets(t, fmt.Sprintf("the stdout of keyflow dev run %d", i+1), []byte(s.stdout.String()), secrets)
			scanForSecrets(t, fmt.Sprintf("the stderr of keyflow dev run %d", i+1), []byte(s.stderr.String()), secrets)
		}
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || path == filepath.Join(dir, "hsm", "pin") {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			scanForSecrets(t, "data file "+strings.TrimPrefix(path, dir+string(filepath.Separator)), b, secrets)
			return nil
		})
		if err != nil {
			t.Errorf("failed to scan the data directory: %v", err)
		}
	})
}
