package e2e

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// kill SIGKILLs the dev stack (no cleanup at all) and waits for it to go.
func (s *stack) kill(t *testing.T) {
	t.Helper()
	s.stopOnce.Do(func() {
		_ = s.cmd.Process.Kill()
		<-s.exited
	})
}

// rotationPairs reads the key's audit trail and returns, per request ID, the
// number of outcome records (key.rotated or rotation.failed) that follow each
// accepted rotation (rotation.started with outcome success).
func rotationPairs(t *testing.T, st *stack, key string) map[string]int {
	t.Helper()
	out := mustOK(t, st.kf(t, "", "audit", "tail", "--key", key, "--limit", "1000")).stdout
	started := map[string]int{}
	outcomes := map[string]int{}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var e cloudEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit line is not JSON: %v\n%s", err, line)
		}
		switch e.Type {
		case "io.keyflow.key.rotation.started.v1":
			if e.Outcome == "success" {
				started[e.RequestID]++
			}
		case "io.keyflow.key.rotated.v1", "io.keyflow.key.rotation.failed.v1":
			outcomes[e.RequestID]++
		}
	}
	pairs := map[string]int{}
	for id, n := range started {
		if n != 1 {
			t.Errorf("request %s: %d rotation.started records, want 1", id, n)
		}
		pairs[id] = outcomes[id]
	}
	for id := range outcomes {
		if started[id] == 0 {
			t.Errorf("request %s: an outcome record with no rotation.started", id)
		}
	}
	return pairs
}

// TestRotationCrashLeavesOneOutcome replays the crash window of issue 12:
// `keyflow key rotate`, then kill -9 of the stack a few milliseconds later
// (before, during and after the workflow's start), a restart on the same
// data dir, and so on. Once the restarted stack has recovered, every
// rotation.started record has exactly one outcome record (key.rotated or
// rotation.failed) under the same request ID; a request cut off before its
// workflow started has no started record at all.
func TestRotationCrashLeavesOneOutcome(t *testing.T) {
	dir := t.TempDir()
	st := startStack(t, dir, "127.0.0.1:0", "127.0.0.1:0")
	mustOK(t, st.kf(t, "", "key", "create", "--alias", "crash"))
	// A CLI call's own start-up (process, creds, connect) comes before the
	// request reaches the stack: measure it with a describe, and spread the
	// kills from there across the rotation's first 100 ms. The delays only
	// move the kill across the window; nothing asserts on time.
	t0 := time.Now()
	mustOK(t, st.kf(t, "", "key", "describe", "crash"))
	base := time.Since(t0)
	for _, off := range []time.Duration{-10, 10, 30, 60, 100} {
		d := max(base+off*time.Millisecond, 0)
		cmd := exec.Command(kfBin, "key", "rotate", "crash")
		cmd.Env = cliEnv(st.natsURL, st.dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(d)
		st.kill(t)
		_ = cmd.Wait() // the connection is gone: it fails, promptly
		st = startStack(t, dir, "127.0.0.1:0", "127.0.0.1:0")
	}
	// One more, undisturbed, after the last restart. A rotation cut off by
	// the last kill may still be finishing on the restarted worker: a second
	// rotate is then refused with ConflictException naming it, so wait for it.
	var last result
	if !waitFor(t, 2*time.Minute, func() bool {
		last = st.kf(t, "", "key", "rotate", "crash")
		return !strings.Contains(last.stderr, "ConflictException")
	}) {
		t.Fatalf("a recovered rotation was still running after 2m: %v", last)
	}
	mustOK(t, last)

	// Recovery: the workflows cut off by a kill resume on the restarted
	// worker (an activity lost with the old one is retried after its
	// timeout). Poll until every started record has an outcome.
	deadline := time.Now().Add(3 * time.Minute)
	var pairs map[string]int
	for {
		pairs = rotationPairs(t, st, "crash")
		missing := 0
		for _, n := range pairs {
			if n == 0 {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if len(pairs) == 0 {
		t.Fatal("no rotation.started record at all")
	}
	for id, n := range pairs {
		if n != 1 {
			t.Errorf("request %s: %d outcome records after recovery, want exactly 1", id, n)
		}
	}
	t.Logf("%d accepted rotations, each with one outcome", len(pairs))
}
