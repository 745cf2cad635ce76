package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestRootCeremonyRefusesDataDirInUse: while a process holds the data
// directory's lock (as keyflow dev does), export-shares refuses with
// ConflictException and writes nothing; once it is released, it gets past
// the check.
func TestRootCeremonyRefusesDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	f, err := os.OpenFile(filepath.Join(dir, "keyflow.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("4242\n"); err != nil {
		t.Fatal(err)
	}
	st := &auditStack{url: "nats://127.0.0.1:1", dir: dir}
	out := filepath.Join(t.TempDir(), "shares")
	_, errs, code := st.run(t, "root", "export-shares", "--m", "2", "--n", "3", "--out-dir", out)
	if code != exitRefused || !strings.Contains(errs, "ConflictException") || !strings.Contains(errs, "process 4242") {
		t.Fatalf("export-shares with the data directory in use: exit %d: %s", code, errs)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("export-shares wrote %s while refusing", out)
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	_, errs, code = st.run(t, "root", "export-shares", "--m", "2", "--n", "3", "--out-dir", out)
	if strings.Contains(errs, "ConflictException") {
		t.Fatalf("export-shares after the lock was released: exit %d: %s", code, errs)
	}
}
