package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/events/chain"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/kvstore"
	"github.com/keyflow/keyflow/workers/natsauth"
	"github.com/keyflow/keyflow/workers/sealer"
)

// TestMain configures SoftHSM before the PKCS#11 library initialises.
func TestMain(m *testing.M) { pkcs11test.Main(m) }

// auditStack is a NATS server with a listener (the CLI connects by URL),
// the KMS, the audit stream and a running sealer, plus the auditor's and a
// tenant's creds files in dir.
type auditStack struct {
	url, dir string
	audit    *jsaudit.Publisher
	sealer   *sealer.Sealer
	js       jetstream.JetStream
	kms      *kms.Service
	nc       *nats.Conn
	id       *natsauth.Identity
}

func newAuditStack(t *testing.T) *auditStack {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	id, err := natsauth.Load(filepath.Join(dir, "identity.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := id.AddTenant("alpha"); err != nil {
		t.Fatal(err)
	}
	ns, err := natsserver.Start(natsserver.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := natsserver.ConnectService(ns, id, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	store, err := kvstore.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	// As the dev stack does: the operator provisions the streams and the
	// auditor's durable; the workers attach.
	if _, err := jsaudit.Provision(ctx, js, natsauth.AuditorDurable); err != nil {
		t.Fatal(err)
	}
	audit, err := jsaudit.Attach(ctx, js, "/test")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	svc, err := kms.New(ctx, kms.Config{HSM: pkcs11test.NewToken(t), Store: store, Audit: audit, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	s, err := sealer.Start(ctx, sealer.Config{JS: js, KMS: svc, Every: 50, Interval: 20 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	// What the dev stack writes: the read-only auditor's creds, the
	// sealer's public keys (the auditor cannot read the key store) and a
	// tenant principal's creds.
	creds, err := id.AuditorCreds("auditor")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := sealer.StoredPublicKeys(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := json.Marshal(map[string]any{"keys": keys})
	if err := os.WriteFile(filepath.Join(dir, sealer.PubKeysFile), kb, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, sealer.AuditorCredsFile), creds, 0o600); err != nil {
		t.Fatal(err)
	}
	if creds, err = id.UserCreds("alpha", "admin"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "admin.creds"), creds, 0o600); err != nil {
		t.Fatal(err)
	}
	st := &auditStack{url: ns.ClientURL(), dir: dir, audit: audit, sealer: s, js: js, kms: svc, nc: nc, id: id}
	for i := 0; i < 120; i++ {
		if err := audit.Emit(ctx, events.Record{Type: events.TypeEncrypt, Tenant: "alpha", Principal: "app", Outcome: events.OutcomeSuccess,
			Subject: "kf:alpha:key/k1", Data: map[string]any{"n": i}}); err != nil {
			t.Fatal(err)
		}
	}
	info, _ := js.Stream(ctx, jsaudit.StreamName)
	si, _ := info.Info(ctx)
	deadline := time.Now().Add(30 * time.Second)
	for s.Status().SealedTo < si.State.LastSeq {
		if time.Now().After(deadline) {
			t.Fatalf("sealer stuck at %+v", s.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return st
}

// run runs the CLI in-process and returns stdout, stderr and the exit code.
func (st *auditStack) run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(append([]string{"--server", st.url, "--data-dir", st.dir}, args...))
	err := root.ExecuteContext(context.Background())
	code := exitOK
	if err != nil {
		// report() prints to the process's stderr; keep the line here too.
		code = report(err)
		errb.WriteString(err.Error())
	}
	return out.String(), errb.String(), code
}

func TestAuditVerifyCLIClean(t *testing.T) {
	st := newAuditStack(t)
	out, errs, code := st.run(t, "audit", "verify", "-o", "table")
	if code != exitOK || !strings.Contains(out, "OK: ") {
		t.Fatalf("verify: exit %d\n%s%s", code, out, errs)
	}
	t.Log(out)
	out, _, code = st.run(t, "audit", "verify")
	var r chain.Report
	if code != exitOK || json.Unmarshal([]byte(out), &r) != nil || !r.OK() || r.Verified < 120 {
		t.Fatalf("verify -o json: exit %d: %s", code, out)
	}
}

func TestAuditCheckpointCLI(t *testing.T) {
	st := newAuditStack(t)
	cp := filepath.Join(t.TempDir(), "checkpoint.json")
	if out, errs, code := st.run(t, "audit", "checkpoint", "--out", cp); code != exitOK {
		t.Fatalf("checkpoint: exit %d\n%s%s", code, out, errs)
	}
	out, errs, code := st.run(t, "audit", "verify", "-o", "table", "--since-checkpoint", cp)
	if code != exitOK || !strings.Contains(out, "checkpoint: digest") {
		t.Fatalf("verify --since-checkpoint: exit %d\n%s%s", code, out, errs)
	}
	// A checkpoint whose digest was altered is refused before anything is
	// read.
	b, _ := os.ReadFile(cp)
	bad := filepath.Join(t.TempDir(), "bad.json")
	_ = os.WriteFile(bad, bytes.ReplaceAll(b, []byte(`"toSeq": `), []byte(`"toSeq": 1`)), 0o600)
	if _, errs, code := st.run(t, "audit", "verify", "--since-checkpoint", bad); code == exitOK {
		t.Fatalf("an altered checkpoint was accepted: %s", errs)
	}
}

func TestAuditExportAndVerifyFile(t *testing.T) {
	st := newAuditStack(t)
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	out, errs, code := st.run(t, "audit", "export", "--format", "jsonl", "--out", file)
	if code != exitOK {
		t.Fatalf("export: exit %d: %s", code, errs)
	}
	var res sealer.ExportResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Records < 120 || res.Digests < 2 {
		t.Fatalf("export result %s", out)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Fatalf("export file mode %v", fi.Mode())
	}
	if _, errs, code = st.run(t, "audit", "verify", "--file", file); code != exitOK {
		t.Fatalf("verify --file: exit %d: %s", code, errs)
	}

	// Pinned keys.
	keys := filepath.Join(t.TempDir(), "keys.json")
	out, _, code = st.run(t, "audit", "pubkeys")
	if code != exitOK {
		t.Fatalf("pubkeys: exit %d", code)
	}
	os.WriteFile(keys, []byte(out), 0o600)
	if _, errs, code = st.run(t, "audit", "verify", "--file", file, "--pubkeys", keys); code != exitOK {
		t.Fatalf("verify --pubkeys: exit %d: %s", code, errs)
	}

	// A modified record: exit 1, one line naming the sequence and the kind.
	b, _ := os.ReadFile(file)
	lines := strings.Split(string(b), "\n")
	target := -1
	for i, l := range lines {
		if strings.HasPrefix(l, `{"type":"record","seq":42,`) {
			target = i
		}
	}
	lines[target] = strings.Replace(lines[target], `"id":"`, `"id":"0`, 1)
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	os.WriteFile(bad, []byte(strings.Join(lines, "\n")), 0o600)
	_, errs, code = st.run(t, "audit", "verify", "--file", bad, "--pubkeys", keys)
	if code != exitRefused || !strings.Contains(errs, "seq 42: modified record") || !strings.Contains(errs, codeVerificationFailed) {
		t.Fatalf("verify of a modified export: exit %d: %s", code, errs)
	}
	t.Log(errs)

	// Keys that are not the sealer's: every digest is forged.
	other := filepath.Join(t.TempDir(), "other.json")
	os.WriteFile(other, []byte(fmt.Sprintf(`{"keys":[{"keyId":"x","keyVersion":1,"keySpec":"ECC_NIST_EDWARDS25519","publicKey":%q}]}`,
		"MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=")), 0o600)
	_, errs, code = st.run(t, "audit", "verify", "--file", file, "--pubkeys", other)
	if code != exitRefused || !strings.Contains(errs, "forged digest") {
		t.Fatalf("verify with foreign keys: exit %d: %s", code, errs)
	}
}

func TestAuditExportCEF(t *testing.T) {
	st := newAuditStack(t)
	out, errs, code := st.run(t, "audit", "export", "--format", "cef", "--since", "1h")
	if code != exitOK {
		t.Fatalf("export cef: exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 120 {
		t.Fatalf("%d CEF lines", len(lines))
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "CEF:0|keyflow|keyflow|1|io.keyflow.") {
			t.Fatalf("not CEF: %s", l)
		}
	}
	// Nothing since a future time.
	if out, _, code = st.run(t, "audit", "export", "--format", "cef", "--since", time.Now().Add(time.Hour).Format(time.RFC3339)); code != exitOK || out != "" {
		t.Fatalf("export since the future: exit %d: %q", code, out)
	}
}

func TestAuditVerifyNeedsKeyflowAccount(t *testing.T) {
	st := newAuditStack(t)
	_, errs, code := st.run(t, "audit", "verify", "--auditor-creds", filepath.Join(st.dir, "admin.creds"))
	if code != exitRefused || !strings.Contains(errs, "audit tail") {
		t.Fatalf("verify with tenant creds: exit %d: %s", code, errs)
	}
	_, errs, code = st.run(t, "audit", "verify", "--auditor-creds", filepath.Join(st.dir, "missing.creds"))
	if code != exitNoCreds {
		t.Fatalf("verify without creds: exit %d: %s", code, errs)
	}
	if _, _, code = st.run(t, "audit", "export", "--format", "xml"); code != exitUsage {
		t.Fatalf("bad format: exit %d", code)
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"24h":                  now.Add(-24 * time.Hour),
		"90m":                  now.Add(-90 * time.Minute),
		"2026-04-30T00:00:00Z": time.Date(2026, 4, 30, 0, 0, 0, 0, time.UTC),
	} {
		if got, err := parseSince(in, now); err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"yesterday", "-1h", ""} {
		if _, err := parseSince(bad, now); err == nil {
			t.Errorf("parseSince(%q) accepted", bad)
		}
	}
}

// audit verify's progress: the counter the progress line reads counts
// every record verified, the line says so, and with stderr not a terminal
// (a buffer here, as in scripts) nothing is written to stderr at all.
func TestAuditVerifyProgress(t *testing.T) {
	st := newAuditStack(t)
	out, errs, code := st.run(t, "audit", "verify")
	var want chain.Report
	if code != exitOK || json.Unmarshal([]byte(out), &want) != nil || !want.OK() {
		t.Fatalf("verify: exit %d: %s%s", code, out, errs)
	}
	if errs != "" {
		t.Fatalf("verify wrote to a non-terminal stderr: %q", errs)
	}
	keys, err := storedKeys(t.Context(), st.js)
	if err != nil {
		t.Fatal(err)
	}
	var read atomic.Uint64
	r, err := sealer.Verify(t.Context(), st.js, sealer.VerifyParams{Keys: keys, Read: &read})
	if err != nil || !r.OK() {
		t.Fatalf("verify: %v %+v", err, r)
	}
	if n := read.Load(); n < uint64(want.Verified) || n < 120 {
		t.Fatalf("progress counted %d records, the report verified %d", n, want.Verified)
	}
	if line := verifyProgress(&read)(3 * time.Second); line != fmt.Sprintf("verifying the audit trail: %d records verified (3s)", read.Load()) {
		t.Fatalf("progress line %q", line)
	}
	// --metrics-listen serves the same counter to Prometheus.
	rec := httptest.NewRecorder()
	verifyMetrics(&read).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if want := fmt.Sprintf("keyflow_audit_verify_records_read_total %d\n", read.Load()); !strings.Contains(rec.Body.String(), want) {
		t.Fatalf("/metrics lacks %q:\n%s", want, rec.Body)
	}
}
