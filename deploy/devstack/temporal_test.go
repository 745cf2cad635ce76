package devstack

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

const temporalTestTaskQueue = "devstack-test"

func temporalTestGreetActivity(_ context.Context, name string) (string, error) {
	return "hello, " + name, nil
}

func temporalTestGreetWorkflow(ctx workflow.Context, name string) (string, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 10 * time.Second})
	var out string
	err := workflow.ExecuteActivity(ctx, temporalTestGreetActivity, name).Get(ctx, &out)
	return out, err
}

func startTestTemporal(t *testing.T, dataDir string) *Temporal {
	t.Helper()
	return startTestTemporalOn(t, dataDir, "127.0.0.1:0")
}

func startTestTemporalOn(t *testing.T, dataDir, listenAddr string) *Temporal {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	tmp, err := StartTemporal(ctx, TemporalConfig{DataDir: dataDir, ListenAddr: listenAddr})
	if err != nil {
		t.Fatalf("StartTemporal: %v", err)
	}
	t.Logf("temporal started on %s in %s", tmp.HostPort(), time.Since(start))
	t.Cleanup(func() {
		if err := tmp.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return tmp
}

// runGreet starts a worker, runs the workflow under id and returns its run ID.
func runGreet(t *testing.T, tmp *Temporal, id, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	c, err := tmp.NewClient(ctx)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	defer c.Close()
	w := worker.New(c, temporalTestTaskQueue, worker.Options{})
	w.RegisterWorkflow(temporalTestGreetWorkflow)
	w.RegisterActivity(temporalTestGreetActivity)
	if err := w.Start(); err != nil {
		t.Fatalf("worker start: %v", err)
	}
	defer w.Stop()

	var firstRunID string
	for i := range 2 {
		wid := id
		if i > 0 {
			wid = id + "-warm"
		}
		start := time.Now()
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: wid, TaskQueue: temporalTestTaskQueue}, temporalTestGreetWorkflow, name)
		if err != nil {
			t.Fatalf("ExecuteWorkflow: %v", err)
		}
		var got string
		if err := run.Get(ctx, &got); err != nil {
			t.Fatalf("workflow result: %v", err)
		}
		if want := "hello, " + name; got != want {
			t.Fatalf("workflow result = %q, want %q", got, want)
		}
		// The first run includes worker poller warm-up; the second is the steady state.
		t.Logf("workflow+activity round trip (run %d): %s", i+1, time.Since(start))
		if i == 0 {
			firstRunID = run.GetRunID()
		}
	}
	return firstRunID
}

func TestTemporalStateSurvivesRestart(t *testing.T) {
	dataDir := t.TempDir()

	first := startTestTemporal(t, dataDir)
	if first.Namespace() != "keyflow" {
		t.Fatalf("Namespace() = %q, want default %q", first.Namespace(), "keyflow")
	}
	runID := runGreet(t, first, "devstack-restart-1", "first")
	if err := first.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}

	if fi, err := os.Stat(filepath.Join(dataDir, "temporal.log")); err != nil || fi.Size() == 0 {
		t.Fatalf("expected a non-empty temporal.log in the data dir (err=%v)", err)
	}
	assertJournalModeWAL(t, filepath.Join(dataDir, "temporal.db"))

	second := startTestTemporal(t, dataDir)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c, err := second.NewClient(ctx)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	defer c.Close()
	desc, err := c.DescribeWorkflowExecution(ctx, "devstack-restart-1", runID)
	if err != nil {
		t.Fatalf("DescribeWorkflowExecution after restart: %v", err)
	}
	if st := desc.GetWorkflowExecutionInfo().GetStatus(); st != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
		t.Fatalf("workflow status after restart = %v, want COMPLETED", st)
	}

	runGreet(t, second, "devstack-restart-2", "second")
}

// assertJournalModeWAL checks the pragma really reached SQLite: WAL mode is
// persistent in the file, so a fresh connection reports it.
func assertJournalModeWAL(t *testing.T, dbPath string) {
	t.Helper()
	// The "sqlite" driver is registered by the Temporal SQLite plugin (modernc.org/sqlite).
	db, err := sql.Open("sqlite", "file:"+dbPath+"?mode=ro")
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	defer db.Close()
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatalf("PRAGMA journal_mode: %v", err)
	}
	if !strings.EqualFold(mode, "wal") {
		t.Fatalf("journal_mode = %q, want wal", mode)
	}
}

const temporalChildDirEnv = "DEVSTACK_TEMPORAL_CHILD_DATA_DIR"

// TestTemporalChildProcess is not a test: TestTemporalAcrossProcesses runs
// the test binary with it to host the server in a separate process.
func TestTemporalChildProcess(t *testing.T) {
	dataDir := os.Getenv(temporalChildDirEnv)
	if dataDir == "" {
		t.Skip("helper for TestTemporalAcrossProcesses")
	}
	tmp, err := StartTemporal(t.Context(), TemporalConfig{DataDir: dataDir, ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("StartTemporal: %v", err)
	}
	fmt.Printf("DEVSTACK_HOSTPORT=%s\n", tmp.HostPort())
	// Serve until the parent closes stdin (or kills us).
	_, _ = io.Copy(io.Discard, os.Stdin)
	if err := tmp.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

// TestTemporalAcrossProcesses is the dev stack's real life: the server runs in
// one process, workers and clients in another, and the server process dies
// without a clean Stop (SIGKILL) before the next one takes over the data dir.
func TestTemporalAcrossProcesses(t *testing.T) {
	dataDir := t.TempDir()

	cmd := exec.Command(os.Args[0], "-test.run=^TestTemporalChildProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), temporalChildDirEnv+"="+dataDir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	hostPortCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if hp, ok := strings.CutPrefix(sc.Text(), "DEVSTACK_HOSTPORT="); ok {
				hostPortCh <- hp
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	var hostPort string
	select {
	case hostPort = <-hostPortCh:
	case <-time.After(2 * time.Minute):
		t.Fatal("child did not report its host:port")
	}
	t.Logf("child process temporal up on %s, %s after exec", hostPort, time.Since(start))

	// A Temporal value only for its client plumbing: the server is the child's.
	certs, err := DevTemporalTLS(filepath.Join(dataDir, "tls")) // the child's
	if err != nil {
		t.Fatal(err)
	}
	clientTLS, err := certs.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	remote := &Temporal{hostPort: hostPort, namespace: temporalDefaultNamespace, tls: clientTLS}
	runID := runGreet(t, remote, "devstack-xproc-1", "from another process")

	if err := cmd.Process.Kill(); err != nil {
		t.Fatalf("kill child: %v", err)
	}
	_ = cmd.Wait()

	local := startTestTemporal(t, dataDir)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c, err := local.NewClient(ctx)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	defer c.Close()
	desc, err := c.DescribeWorkflowExecution(ctx, "devstack-xproc-1", runID)
	if err != nil {
		t.Fatalf("DescribeWorkflowExecution after killed server: %v", err)
	}
	if st := desc.GetWorkflowExecutionInfo().GetStatus(); st != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
		t.Fatalf("workflow status after restart = %v, want COMPLETED", st)
	}
	runGreet(t, local, "devstack-xproc-2", "after the crash")
}

func TestTemporalSequentialStartsSameDataDir(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "nested", "data") // created if missing
	listenAddr := "127.0.0.1:0"
	for i := range 2 {
		// The second start reuses the first one's port: a fixed ListenAddr
		// (the dev stack's 7233) must be bindable again right after Stop.
		tmp := startTestTemporalOn(t, dataDir, listenAddr)
		listenAddr = tmp.HostPort()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		c, err := tmp.NewClient(ctx)
		if err != nil {
			cancel()
			t.Fatalf("start %d: NewClient: %v", i+1, err)
		}
		if _, err := c.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
			t.Errorf("start %d: CheckHealth: %v", i+1, err)
		}
		c.Close()
		cancel()
		start := time.Now()
		if err := tmp.Stop(); err != nil {
			t.Fatalf("start %d: Stop: %v", i+1, err)
		}
		t.Logf("stop %d took %s", i+1, time.Since(start))
		// Stop must be idempotent: t.Cleanup calls it again.
		if err := tmp.Stop(); err != nil {
			t.Fatalf("start %d: second Stop: %v", i+1, err)
		}
	}
}

func TestTemporalConfigErrors(t *testing.T) {
	_, err := StartTemporal(t.Context(), TemporalConfig{ListenAddr: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "DataDir is required") {
		t.Fatalf("empty DataDir: err = %v, want one naming DataDir", err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = StartTemporal(t.Context(), TemporalConfig{DataDir: t.TempDir(), ListenAddr: l.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "failed to listen") {
		t.Fatalf("port in use: err = %v, want a listen error", err)
	}

	_, err = StartTemporal(t.Context(), TemporalConfig{DataDir: t.TempDir(), ListenAddr: "0.0.0.0:0"})
	if err == nil || !strings.Contains(err.Error(), "loopback only") {
		t.Fatalf("wildcard ListenAddr with the dev certificates: err = %v, want loopback only", err)
	}

	_, err = StartTemporal(t.Context(), TemporalConfig{DataDir: t.TempDir(), ListenAddr: "example.com:7233"})
	if err == nil || !strings.Contains(err.Error(), "IP address") {
		t.Fatalf("hostname ListenAddr: err = %v, want an IP address error", err)
	}
}
