package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyflow/keyflow/workers/natsauth"
)

// TestCredsErrors: every way the creds file can be wrong is named, with
// its own code and exit code, while the server is up; only a server that
// is not there is "Unreachable".
func TestCredsErrors(t *testing.T) {
	st := newAuditStack(t)
	notCreds := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(notCreds, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Creds of another deployment: a valid file the server refuses.
	other, err := natsauth.Load(filepath.Join(t.TempDir(), "identity.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.AddTenant("alpha"); err != nil {
		t.Fatal(err)
	}
	foreign, err := other.UserCreds("alpha", "admin")
	if err != nil {
		t.Fatal(err)
	}
	foreignPath := filepath.Join(t.TempDir(), "foreign.creds")
	if err := os.WriteFile(foreignPath, foreign, 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string // in the message
	}{
		{"none found", []string{"--data-dir", t.TempDir(), "key", "list"}, exitNoCreds, []string{"NoCredentials", "admin.creds", "KEYFLOW_CREDS"}},
		{"mistyped --creds", []string{"--creds", filepath.Join(st.dir, "admn.creds"), "key", "list"}, exitCredsUnreadable, []string{"CredentialsUnreadable", "admn.creds", "--creds"}},
		{"not a creds file", []string{"--creds", notCreds, "key", "list"}, exitCredsInvalid, []string{"InvalidCredentials", "notes.txt", "not a NATS creds file"}},
		{"auditor creds", []string{"--creds", filepath.Join(st.dir, "auditor.creds"), "key", "list"}, exitCredsInvalid, []string{"InvalidCredentials", "auditor.creds", "no keyflow tenant"}},
		{"refused", []string{"--creds", foreignPath, "key", "list"}, exitCredsRefused, []string{"CredentialsRefused", "foreign.creds"}},
		{"no auditor creds", []string{"audit", "verify", "--auditor-creds", filepath.Join(st.dir, "missing.creds")}, exitNoCreds, []string{"NoCredentials", "missing.creds"}},
		{"server down", []string{"--server", "nats://127.0.0.1:1", "key", "list"}, exitUnreachable, []string{"could not be reached", "KEYFLOW_SERVER"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errs, code := st.run(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s", code, tc.code, errs)
			}
			for _, w := range tc.want {
				if !strings.Contains(errs, w) {
					t.Errorf("message %q does not say %q", errs, w)
				}
			}
		})
	}

	t.Run("KEYFLOW_CREDS", func(t *testing.T) {
		t.Setenv("KEYFLOW_CREDS", filepath.Join(st.dir, "missing.creds"))
		_, errs, code := st.run(t, "key", "list")
		if code != exitCredsUnreadable || !strings.Contains(errs, "(KEYFLOW_CREDS)") {
			t.Fatalf("exit %d: %s", code, errs)
		}
	})
}
