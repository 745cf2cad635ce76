package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// operator init writes the ceremony's files and says where each goes;
// run again on the same directory, it refuses to replace the identity.
func TestOperatorInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ceremony")
	out, err := runCLI(t, "operator", "init", dir, "--tenant", "default,acme")
	if err != nil {
		t.Fatalf("operator init: %v\n%s", err, out)
	}
	for _, want := range []string{"offline keys", "server stanza", "identity", "creds acme-admin", "creds worker"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, f := range []string{"offline/operator.nk", "operator.jwt", "nats-operator.conf", "identity.json", "creds/sealer.creds", "creds/acme-admin.creds"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	id, err := os.ReadFile(filepath.Join(dir, "identity.json"))
	if err != nil || strings.Contains(string(id), `"operator":`) {
		t.Fatalf("identity.json holds the operator key (%v)", err)
	}
	if out, err := runCLI(t, "operator", "init", dir); err == nil || !strings.Contains(err.Error(), "runs once") {
		t.Fatalf("second init: %v\n%s", err, out)
	}
}
