package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pykmipPython is Debian's interpreter, where python3-pykmip installs.
const pykmipPython = "/usr/bin/python3"

// TestKMIPWithPyKMIP runs a real KMIP client, PyKMIP's ProxyKmipClient,
// against `keyflow dev --kmip-listen` over mutual TLS with the dev CA's
// admin certificate (testdata/kmip_pykmip.py: create, register symmetric
// key and secret data, locate, get refused then allowed on exportable
// keys, activate, encrypt/decrypt, get attributes, re-key, key pair with
// sign/verify, MAC, revoke, destroy). The
// KMIP objects are keyflow keys: the CLI lists them, and the audit trail
// has one key.exported record per Get, with no key material in it.
func TestKMIPWithPyKMIP(t *testing.T) {
	if err := exec.Command(pykmipPython, "-c", "import kmip").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PyKMIP is missing (python3-pykmip; .ci/install-deps installs it): %v", err)
		}
		t.Skipf("PyKMIP is not installed (apt-get install python3-pykmip): %v", err)
	}
	dir := t.TempDir()
	st := startStack(t, dir, "127.0.0.1:0", "127.0.0.1:0", "--kmip-listen", "127.0.0.1:0")
	fields := map[string]string{}
	for _, line := range strings.Split(st.stdout.String(), "\n") {
		if strings.HasPrefix(line, "keyflow kmip ") {
			for _, f := range strings.Fields(line) {
				if k, v, ok := strings.Cut(f, "="); ok {
					fields[k] = v
				}
			}
		}
	}
	host, port, ok := strings.Cut(fields["endpoint"], ":")
	if !ok {
		t.Fatalf("no kmip line in the output:\n%s", st.stdout)
	}
	clients := filepath.Join(dir, "kmip", "clients")
	fileMode(t, filepath.Join(clients, "admin-key.pem"), 0o600)
	fileMode(t, filepath.Join(dir, "kmip", "ca", "ca-key.pem"), 0o600)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, pykmipPython, filepath.Join("testdata", "kmip_pykmip.py"), host, port,
		filepath.Join(clients, "admin-cert.pem"), filepath.Join(clients, "admin-key.pem"), fields["ca"])
	out, err := cmd.CombinedOutput()
	t.Logf("PyKMIP:\n%s", out)
	if err != nil || !strings.Contains(string(out), "14 passed, 0 failed") {
		t.Fatalf("the PyKMIP run failed: %v", err)
	}

	// One key, whichever protocol: the CLI sees the KMIP keys.
	r := mustOK(t, st.kf(t, "", "key", "list"))
	var keys struct {
		Keys []struct {
			KeySpec string `json:"keySpec"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &keys); err != nil || len(keys.Keys) < 4 {
		t.Fatalf("keyflow key list after the KMIP run: %v\n%s", err, r.stdout)
	}
	r = mustOK(t, st.kf(t, "", "audit", "tail", "--type", "io.keyflow.key.exported.*"))
	var evs []cloudEvent
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var e cloudEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit line is not JSON: %v\n%s", err, line)
		}
		evs = append(evs, e)
	}
	if !hasEvent(evs, "io.keyflow.key.exported.v1", "denied", map[string]any{"exportable": false}) ||
		!hasEvent(evs, "io.keyflow.key.exported.v1", "success", map[string]any{"exportable": true}) {
		t.Errorf("no key.exported records for the refused and the allowed Get:\n%s", r.stdout)
	}
}
