package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/workers/natsauth"
)

// auditorCreds returns the path of a keyflow-account creds file: the dev
// stack's DIR/auditor.creds if it writes one, else one issued here from the
// stack's identity.
func auditorCreds(t *testing.T, dir string) (path string, creds []byte) {
	t.Helper()
	path = filepath.Join(dir, "auditor.creds")
	if b, err := os.ReadFile(path); err == nil {
		return path, b
	}
	id, err := natsauth.Load(filepath.Join(dir, "nats", "identity.json"))
	if err != nil {
		t.Fatal(err)
	}
	creds, err = id.ServiceCreds("e2e-auditor")
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "auditor.creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, creds
}

// forwarded is one line of `keyflow audit forward --out`.
type forwarded struct {
	Seq   uint64          `json:"seq"`
	Event json.RawMessage `json:"event"`
}

// readForwarded parses the complete lines of a forwarded file.
func readForwarded(t *testing.T, path string) []forwarded {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		b = nil
	}
	var out []forwarded
	for i, line := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var f forwarded
		if err := json.Unmarshal(line, &f); err != nil {
			t.Fatalf("forwarded line %d is not a record: %v: %q", i+1, err, line)
		}
		out = append(out, f)
	}
	return out
}

// TestAuditForwardAndFilters runs a stack with the audit flags
// (--audit-fail-open and retention limits), forwards its trail to a file
// with `keyflow audit forward` under a steady load, SIGKILLs the forwarder
// mid-way, starts it again, and checks that the file holds every record of
// the stream exactly once and in order. Then it drives `audit tail`'s
// server-side filters through the CLI.
func TestAuditForwardAndFilters(t *testing.T) {
	dir := t.TempDir()
	st := startStack(t, dir, "127.0.0.1:0", "127.0.0.1:0",
		"--audit-fail-open", "--audit-max-age", "720h", "--audit-max-bytes", "1000000000")
	ctx := context.Background()
	credsPath, creds := auditorCreds(t, dir)
	opt, err := natsauth.CredsOption(creds)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(st.natsURL, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("RetentionFlags", func(t *testing.T) {
		str, err := js.Stream(ctx, jsaudit.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		c := str.CachedInfo().Config
		if c.MaxAge != 720*time.Hour || c.MaxBytes != 1000000000 || c.MaxMsgs != -1 || c.Discard != jetstream.DiscardOld || !c.DenyDelete || !c.DenyPurge {
			t.Errorf("audit stream limits: max age %v, max bytes %d, max msgs %d, discard %v, deny delete %v purge %v",
				c.MaxAge, c.MaxBytes, c.MaxMsgs, c.Discard, c.DenyDelete, c.DenyPurge)
		}
	})

	var k keyMetadata
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "create", "--alias", "fwd")), &k)
	var other keyMetadata
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "create", "--alias", "other")), &other)
	app, err := client.Dial(ctx, client.Options{Server: st.natsURL, CredsFile: st.creds, Tenant: "default", Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()

	// A steady load: encrypt with both keys until told to stop.
	var (
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		loadOK  atomic.Int64
		loadErr atomic.Pointer[error]
	)
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			key := k.KeyID
			if i%3 == 0 {
				key = other.KeyID
			}
			if _, err := app.Encrypt(ctx, api.EncryptRequest{KeyID: key, Plaintext: []byte("forward me")}); err != nil {
				loadErr.CompareAndSwap(nil, &err)
				return
			}
			loadOK.Add(1)
		}
	})
	stopLoad := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	defer stopLoad()

	out := filepath.Join(t.TempDir(), "audit.jsonl")
	type proc struct {
		cmd    *exec.Cmd
		output *outputBuffer
		exited chan struct{}
	}
	forward := func() *proc {
		t.Helper()
		p := &proc{output: newOutputBuffer(), exited: make(chan struct{})}
		p.cmd = exec.Command(kfBin, "audit", "forward", "--out", out, "--auditor-creds", credsPath)
		p.cmd.Env = cliEnv(st.natsURL, st.dir)
		p.cmd.Stdout, p.cmd.Stderr = p.output, p.output
		killWithParent(p.cmd)
		if err := p.cmd.Start(); err != nil {
			t.Fatalf("failed to start audit forward: %v", err)
		}
		go func() { _ = p.cmd.Wait(); close(p.exited) }()
		t.Cleanup(func() {
			select {
			case <-p.exited:
			default:
				_ = p.cmd.Process.Kill()
				<-p.exited
			}
		})
		return p
	}
	lines := func() int { return len(readForwarded(t, out)) }

	f1 := forward()
	if !waitFor(t, cliTimeout, func() bool { return lines() >= 300 }) {
		t.Fatalf("audit forward wrote %d lines; output:\n%s", lines(), f1.output)
	}
	if err := f1.cmd.Process.Kill(); err != nil { // SIGKILL: no cleanup at all
		t.Fatal(err)
	}
	<-f1.exited
	n1 := lines()
	t.Logf("forwarder killed after %d lines (load: %d encrypts so far)", n1, loadOK.Load())

	f2 := forward()
	if !waitFor(t, cliTimeout, func() bool { return lines() >= n1+300 }) {
		t.Fatalf("the restarted audit forward wrote %d lines after %d; output:\n%s", lines()-n1, n1, f2.output)
	}
	stopLoad()
	if p := loadErr.Load(); p != nil {
		t.Fatalf("the load failed: %v", *p)
	}

	// Every record of the stream, as stored, read as the read-only auditor
	// reads (direct gets: it may not create consumers).
	var want []jsaudit.Stored
	if err := jsaudit.ReadAll(ctx, js, jsaudit.ReadAllParams{}, func(seq uint64, body []byte) error {
		want = append(want, jsaudit.Stored{Seq: seq, Event: append([]byte(nil), body...)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	last := want[len(want)-1].Seq
	if !waitFor(t, cliTimeout, func() bool {
		got := readForwarded(t, out)
		return len(got) > 0 && got[len(got)-1].Seq >= last
	}) {
		t.Fatalf("audit forward did not reach seq %d; output:\n%s", last, f2.output)
	}
	if err := f2.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f2.exited:
	case <-time.After(stopTimeout):
		t.Fatalf("audit forward did not exit within %v of SIGINT", stopTimeout)
	}
	if code := f2.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("audit forward exited %d after SIGINT; output:\n%s", code, f2.output)
	}

	got := readForwarded(t, out)
	t.Logf("%d encrypts; %d records in the stream, %d lines forwarded", loadOK.Load(), len(want), len(got))
	if len(got) != len(want) {
		t.Errorf("forwarded %d lines, the stream holds %d records", len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if got[i].Seq != want[i].Seq {
			t.Fatalf("line %d has seq %d, want %d (a gap, a duplicate or a reordering)", i+1, got[i].Seq, want[i].Seq)
		}
		if !bytes.Equal(got[i].Event, want[i].Event) {
			t.Fatalf("line %d (seq %d) is not the record as stored", i+1, got[i].Seq)
		}
	}
	fileMode(t, out, 0o600)

	// Starting fail-open is on the record, deployment-wide.
	policy := 0
	for _, f := range got {
		var e struct {
			Type, Tenant string
			Data         map[string]any
		}
		_ = json.Unmarshal(f.Event, &e)
		if e.Type == "io.keyflow.audit.policy.changed.v1" {
			policy++
			if e.Tenant != "-" || e.Data["failClosed"] != false {
				t.Errorf("policy event: %s", f.Event)
			}
		}
	}
	if policy != 1 {
		t.Errorf("%d io.keyflow.audit.policy.changed.v1 events, want 1", policy)
	}

	t.Run("TailFilters", func(t *testing.T) {
		r := mustOK(t, st.kf(t, "", "audit", "tail", "--key", "fwd", "--type", "io.keyflow.crypto.*"))
		n := 0
		for _, line := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
			var e cloudEvent
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("audit tail line is not JSON: %v: %q", err, line)
			}
			if e.Type != "io.keyflow.crypto.encrypt.v1" || e.Subject != "kf:default:key/"+k.KeyID {
				t.Errorf("audit tail --key fwd --type io.keyflow.crypto.*: got %s on %s", e.Type, e.Subject)
			}
			n++
		}
		if n < 400 {
			t.Errorf("audit tail --key fwd printed %d encrypt events", n)
		}
		r = mustOK(t, st.kf(t, "", "audit", "tail", "--key", other.KeyID, "--type", "io.keyflow.key.*", "--limit", "5"))
		if lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n"); len(lines) != 1 || !strings.Contains(lines[0], `"type":"io.keyflow.key.created.v1"`) {
			t.Errorf("audit tail --key other --type io.keyflow.key.*: %q", r.stdout)
		}
		expectFailure(t, st.kf(t, "", "audit", "tail", "--type", "io.keyflow.crypto.enc*"), 1, "ValidationException")
		expectFailure(t, st.kf(t, "", "audit", "tail", "--key", "no-such-key"), 1, "NotFoundException")
		expectFailure(t, st.kf(t, "", "audit", "tail", "--tenant", "someone-else"), 1, "AccessDeniedException")
		expectFailure(t, st.kf(t, "", "audit", "forward"), 2, "UsageError")
		expectFailure(t, st.kf(t, "", "audit", "forward", "--out", out, "--syslog", "127.0.0.1:514"), 2, "UsageError")
	})
}
