package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI runs the command tree in-process and returns stdout and the
// error (as main would report it).
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestConfigExampleThenCheck(t *testing.T) {
	example, err := runCLI(t, "config", "example")
	if err != nil || !strings.Contains(example, "roles:") || !strings.Contains(example, "# ") {
		t.Fatalf("config example: %v\n%s", err, example)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "keyflow.yaml")
	if err := os.WriteFile(path, []byte(example), 0o600); err != nil {
		t.Fatal(err)
	}
	// The example names files this machine does not have: one message each.
	_, err = runCLI(t, "config", "check", path)
	var ue usageError
	if !errors.As(err, &ue) || report(err) != exitUsage || !strings.Contains(ue.msg, "hsm.pin_file: /etc/keyflow/hsm/pin") {
		t.Fatalf("config check of the example: %v", err)
	}

	for _, f := range []string{"worker.creds", "identity.json", "pin"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	good := "roles: [crypto]\nnats:\n  urls: [nats://127.0.0.1:4222]\n  creds_file: " + filepath.Join(dir, "worker.creds") +
		"\n  identity_file: " + filepath.Join(dir, "identity.json") + "\nhsm: {token_label: keyflow, pin_file: " + filepath.Join(dir, "pin") + "}\n"
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "config", "check", path)
	if err != nil || out != path+": ok\n" {
		t.Fatalf("config check of a good file: %v %q", err, out)
	}
	// The environment is part of what is checked.
	t.Setenv("KEYFLOW_NATS_REPLICAS", "9")
	if _, err := runCLI(t, "config", "check", path); err == nil || !strings.Contains(err.Error(), "nats.replicas: 9") {
		t.Fatalf("KEYFLOW_NATS_REPLICAS=9 passed the check: %v", err)
	}
	// serve refuses the same file before connecting to anything.
	if _, err := runCLI(t, "serve", "--config", path, "--roles", "crypto,reaper"); err == nil || !strings.Contains(err.Error(), `unknown role "reaper"`) {
		t.Fatalf("serve with an unknown role: %v", err)
	}
}
