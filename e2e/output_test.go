package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestOutputConventions: every command prints JSON by default (the crypto
// verbs included, with -o raw for the bare form), -o table works for the
// commands that ignored it, and the tables are complete.
func TestOutputConventions(t *testing.T) {
	st := startStack(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0")
	exact := func(stdin string, args ...string) result {
		t.Helper()
		return mustOK(t, runKFExact(t, cliEnv(st.natsURL, st.dir), stdin, args...))
	}
	exact("", "key", "create", "--alias", "conv", "--rotation-period", "90d")

	// JSON by default; -o raw for pipes.
	var enc struct {
		KeyID          string `json:"keyId"`
		KeyVersion     int    `json:"keyVersion"`
		CiphertextBlob []byte `json:"ciphertextBlob"`
	}
	decodeJSON(t, exact("card", "encrypt", "--key", "conv"), &enc)
	if enc.KeyID == "" || enc.KeyVersion != 1 || len(enc.CiphertextBlob) == 0 {
		t.Fatalf("encrypt JSON: %+v", enc)
	}
	var dec struct {
		Plaintext []byte `json:"plaintext"`
	}
	decodeJSON(t, exact(b64(enc.CiphertextBlob), "decrypt"), &dec)
	if string(dec.Plaintext) != "card" {
		t.Errorf("decrypt JSON plaintext %q", dec.Plaintext)
	}
	if got := exact(b64(enc.CiphertextBlob), "decrypt", "-o", "raw").stdout; got != "card" {
		t.Errorf("decrypt -o raw: %q", got)
	}
	if got := strings.TrimSpace(exact("x", "encrypt", "--key", "conv", "-o", "raw").stdout); strings.ContainsAny(got, "{}\n") || got == "" {
		t.Errorf("encrypt -o raw is not bare base64: %q", got)
	}
	var rnd map[string]any
	decodeJSON(t, exact("", "random", "--bytes", "8"), &rnd)
	if rnd["plaintext"] == nil {
		t.Errorf("random JSON: %v", rnd)
	}

	// -o table where it was ignored.
	if out := exact("", "tenant", "policy", "get", "-o", "table").stdout; strings.HasPrefix(out, "{") {
		t.Errorf("tenant policy get -o table printed JSON:\n%s", out)
	}
	if out := exact("", "grant", "create", "conv", "--grantee", "batch", "--operations", "Decrypt", "--expires", "1s", "-o", "table").stdout; !strings.HasPrefix(out, "FIELD") {
		t.Errorf("grant create -o table:\n%s", out)
	}
	time.Sleep(1500 * time.Millisecond)
	if out := exact("", "grant", "list", "conv", "-o", "table").stdout; !strings.Contains(out, "EXPIRED") {
		t.Errorf("an expired grant is not marked:\n%s", out)
	}
	out := exact("", "audit", "tail", "-o", "table").stdout
	if lines := strings.Split(strings.TrimSpace(out), "\n"); !strings.HasPrefix(lines[0], "TIME") || len(lines) < 3 || strings.HasPrefix(lines[1], "{") {
		t.Errorf("audit tail -o table:\n%s", out)
	}

	// Complete tables.
	exact("", "key", "create", "--alias", "doomed")
	exact("", "key", "schedule-deletion", "doomed", "--window", "7d")
	out = exact("", "key", "list", "-o", "table").stdout
	for _, want := range []string{"ROTATION", "CRYPTOPERIOD", "PENDING DELETION", "90d"} {
		if !strings.Contains(out, want) {
			t.Errorf("key list -o table lacks %q:\n%s", want, out)
		}
	}
	exact("", "backup", "create", "--out", st.dir+"/b.kfb")
	if out := exact("", "backup", "list", "-o", "table").stdout; !strings.HasPrefix(out, "BACKUP ID") {
		t.Errorf("backup list -o table has no header:\n%s", out)
	}
	// -o json stays JSON.
	var anyJSON any
	if err := json.Unmarshal([]byte(exact("", "key", "describe", "conv", "-o", "json").stdout), &anyJSON); err != nil {
		t.Errorf("key describe -o json: %v", err)
	}
}
