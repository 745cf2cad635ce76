package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// stdoutSpan is the part of a stdouttrace span the test reads.
type stdoutSpan struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct{ TraceID, SpanID string }
}

// A CLI call made inside a caller's trace (TRACEPARENT) carries it over
// NATS to the worker and down to the HSM call: `keyflow dev --trace-stdout`
// prints the worker's span as a child of the caller's span, and the HSM's
// as a child of the worker's. The ready line names the Web UI.
func TestTraceFromCLIThroughWorkerToHSM(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "stack")
	st := startStack(t, dir, "127.0.0.1:0", "127.0.0.1:0", "--trace-stdout")
	if !strings.Contains(st.stdout.Ready(), " ui=http://127.0.0.1:") {
		t.Errorf("ready line names no Web UI: %q", st.stdout.Ready())
	}
	mustOK(t, st.kf(t, "", "key", "create", "--alias", "traced"))

	const traceID, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	env := append(cliEnv(st.natsURL, st.dir), "TRACEPARENT=00-"+traceID+"-"+callerSpan+"-01")
	if r := runKF(t, env, "secret plaintext", "encrypt", "--key", "traced"); r.code != 0 {
		t.Fatal(r)
	}

	var worker, hsm *stdoutSpan
	deadline := time.Now().Add(20 * time.Second) // spans are exported in batches
	for worker == nil || hsm == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no worker and HSM spans of trace %s on stdout:\n%s", traceID, st.stdout)
		}
		time.Sleep(200 * time.Millisecond)
		for l := range strings.Lines(st.stdout.String()) {
			var s stdoutSpan
			if !strings.HasPrefix(l, "{") || json.Unmarshal([]byte(l), &s) != nil || s.SpanContext.TraceID != traceID {
				continue
			}
			switch s.Name {
			case "keyflow.worker crypto.encrypt":
				worker = &s
			case "keyflow.hsm encrypt":
				hsm = &s
			}
		}
	}
	if worker.Parent.SpanID != callerSpan || hsm.Parent.SpanID != worker.SpanContext.SpanID {
		t.Fatalf("worker span's parent %s (want the caller's %s); HSM span's parent %s (want the worker's %s)",
			worker.Parent.SpanID, callerSpan, hsm.Parent.SpanID, worker.SpanContext.SpanID)
	}
	if strings.Contains(st.stdout.String(), "secret plaintext") {
		t.Error("the plaintext appears in the spans")
	}
}
