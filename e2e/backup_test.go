package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBackupAndRootCeremony is disaster recovery through the CLI: keys
// and ciphertexts on one stack, a backup, the stack stopped, the root key
// exported as 3-of-5 shares, a fresh data directory, two shares refused,
// three shares imported, a new stack, the backup restored, and the old
// ciphertexts decrypt.
func TestBackupAndRootCeremony(t *testing.T) {
	dir := t.TempDir()
	st := startStack(t, dir, "127.0.0.1:0", "127.0.0.1:0")
	fileMode(t, filepath.Join(dir, "hsm", "so-pin"), 0o600)

	var k keyMetadata
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "create", "--alias", "payroll")), &k)
	ct1 := strings.TrimSpace(mustOK(t, st.kf(t, "first secret", "encrypt", "--key", "payroll")).stdout)
	mustOK(t, st.kf(t, "", "key", "rotate", "payroll"))
	ct2 := strings.TrimSpace(mustOK(t, st.kf(t, "second secret", "encrypt", "--key", "payroll", "--context", "team=hr")).stdout)

	backup := filepath.Join(t.TempDir(), "keys.kfbackup")
	var created struct {
		BackupID string `json:"backupId"`
		Keys     int    `json:"keys"`
		Versions int    `json:"versions"`
		File     string `json:"file"`
		SHA256   string `json:"sha256"`
	}
	decodeJSON(t, mustOK(t, st.kf(t, "", "backup", "create", "--out", backup)), &created)
	if created.Keys != 1 || created.Versions != 2 || created.File != backup || len(created.SHA256) != 64 {
		t.Fatalf("backup create: %+v", created)
	}
	fileMode(t, backup, 0o600)
	raw, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("payroll")) || bytes.Contains(raw, []byte(k.KeyID)) {
		t.Fatal("the backup file shows an alias or key ID in the clear")
	}
	expectFailure(t, st.kf(t, "", "backup", "create", "--out", backup), 2, "UsageError")
	var list struct {
		Backups []struct {
			BackupID string `json:"backupId"`
		} `json:"backups"`
	}
	decodeJSON(t, mustOK(t, st.kf(t, "", "backup", "list")), &list)
	if len(list.Backups) != 1 || list.Backups[0].BackupID != created.BackupID {
		t.Fatalf("backup list: %+v", list)
	}
	// Archive commands reach the workflows: nothing is due, a live version
	// cannot be restored, nothing waits for a decision.
	var run struct {
		WorkflowID string `json:"workflowId"`
		Archived   []any  `json:"archived"`
	}
	decodeJSON(t, mustOK(t, st.kf(t, "", "archive", "run")), &run)
	if run.WorkflowID != "archive/default" || len(run.Archived) != 0 {
		t.Fatalf("archive run: %+v", run)
	}
	expectFailure(t, st.kf(t, "", "archive", "restore", "payroll", "--version", "1"), 1, "KMSInvalidStateException")
	expectFailure(t, st.kf(t, "", "archive", "approve", "payroll", "--version", "1"), 1, "NotFoundException")
	// The ceremony refuses while the stack holds the data directory (its
	// lock, DIR/keyflow.lock), and writes nothing.
	live := filepath.Join(t.TempDir(), "live")
	expectFailure(t, runKF(t, cliEnv("", dir), "", "root", "export-shares", "--out-dir", live), 1, "ConflictException")
	if _, err := os.Stat(live); !os.IsNotExist(err) {
		t.Errorf("export-shares wrote %s while the stack ran", live)
	}
	st.stop(t)

	// The ceremony, offline.
	shares := filepath.Join(t.TempDir(), "ceremony")
	var cer struct {
		CeremonyID  string   `json:"ceremonyId"`
		WrappedRoot string   `json:"wrappedRoot"`
		Shares      []string `json:"shares"`
	}
	decodeJSON(t, mustOK(t, runKF(t, cliEnv("", dir), "", "root", "export-shares", "--m", "3", "--n", "5", "--out-dir", shares)), &cer)
	if len(cer.Shares) != 5 || cer.CeremonyID == "" {
		t.Fatalf("export-shares: %+v", cer)
	}
	for _, p := range append([]string{cer.WrappedRoot}, cer.Shares...) {
		fileMode(t, p, 0o600)
	}
	expectFailure(t, runKF(t, cliEnv("", dir), "", "root", "export-shares", "--out-dir", shares), 2, "UsageError")

	fresh := t.TempDir()
	env := cliEnv("", fresh)
	r := runKF(t, env, "", "root", "import-shares", "--shares", cer.Shares[0]+","+cer.Shares[3], "--wrapped-root", cer.WrappedRoot)
	expectFailure(t, r, 1, "ValidationException")
	if !strings.Contains(r.stderr, "needs 3 of its 5 shares; 2 given") {
		t.Errorf("two shares: stderr %q does not say how many are needed", r.stderr)
	}
	corrupt := filepath.Join(t.TempDir(), "share-2-of-5.json")
	b, _ := os.ReadFile(cer.Shares[1])
	b = bytes.Replace(b, []byte(`"index": 2`), []byte(`"index": 4`), 1)
	if err := os.WriteFile(corrupt, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r = runKF(t, env, "", "root", "import-shares", "--shares", cer.Shares[0]+","+corrupt+","+cer.Shares[4], "--wrapped-root", cer.WrappedRoot)
	expectFailure(t, r, 1, "ValidationException")
	if !strings.Contains(r.stderr, "corrupt") {
		t.Errorf("corrupt share: stderr %q", r.stderr)
	}
	var imp struct {
		CeremonyID string `json:"ceremonyId"`
		SharesUsed int    `json:"sharesUsed"`
	}
	decodeJSON(t, mustOK(t, runKF(t, env, "", "root", "import-shares", "--shares", cer.Shares[0]+","+cer.Shares[2]+","+cer.Shares[4], "--wrapped-root", cer.WrappedRoot)), &imp)
	if imp.CeremonyID != cer.CeremonyID || imp.SharesUsed != 3 {
		t.Fatalf("import-shares: %+v", imp)
	}
	expectFailure(t, runKF(t, env, "", "root", "import-shares", "--shares", strings.Join(cer.Shares, ","), "--wrapped-root", cer.WrappedRoot), 1, "AlreadyExistsException")

	// A new stack on the fresh directory, with the imported root key.
	st2 := startStack(t, fresh, "127.0.0.1:0", "127.0.0.1:0")
	expectFailure(t, st2.kf(t, ct1, "decrypt"), 1, "InvalidCiphertextException")
	tampered := filepath.Join(t.TempDir(), "tampered.kfbackup")
	bad := bytes.Clone(raw)
	bad[len(bad)-7] ^= 0x20
	if err := os.WriteFile(tampered, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	expectFailure(t, st2.kf(t, "", "backup", "restore", "--in", tampered), 1, "InvalidCiphertextException")
	expectFailure(t, st2.kf(t, "", "backup", "restore", "--in", backup[:len(backup)-1]+"x"), 2, "UsageError")
	var restored struct {
		BackupID string `json:"backupId"`
		Keys     int    `json:"keys"`
		Aliases  int    `json:"aliases"`
	}
	decodeJSON(t, mustOK(t, st2.kf(t, "", "backup", "restore", "--in", backup)), &restored)
	if restored.BackupID != created.BackupID || restored.Keys != 1 || restored.Aliases != 1 {
		t.Fatalf("backup restore: %+v", restored)
	}
	if got := mustOK(t, st2.kf(t, ct1, "decrypt")).stdout; got != "first secret" {
		t.Fatalf("decrypt of the version-1 ciphertext after recovery: %q", got)
	}
	if got := mustOK(t, st2.kf(t, ct2, "decrypt", "--context", "team=hr")).stdout; got != "second secret" {
		t.Fatalf("decrypt of the version-2 ciphertext after recovery: %q", got)
	}
	var d keyMetadata
	decodeJSON(t, mustOK(t, st2.kf(t, "", "key", "describe", "payroll")), &d)
	if d.KeyID != k.KeyID || d.PrimaryVersion != 2 {
		t.Fatalf("restored key: %+v", d)
	}
	expectFailure(t, st2.kf(t, "", "backup", "restore", "--in", backup), 1, "AlreadyExistsException")
	_, evs := auditTail(t, st2)
	if !hasEvent(evs, "io.keyflow.backup.restored.v1", "success", map[string]any{"backupId": created.BackupID}) {
		t.Error("no successful backup.restored event in the new stack's trail")
	}
	var sharesJSON map[string]any
	sb, _ := os.ReadFile(cer.Shares[0])
	if err := json.Unmarshal(sb, &sharesJSON); err != nil || sharesJSON["m"] != float64(3) || sharesJSON["ceremonyId"] != cer.CeremonyID {
		t.Errorf("share file: %v %v", sharesJSON, err)
	}
}
