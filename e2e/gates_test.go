package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyflow/keyflow/workers/natsauth"
)

// TestLifecycleGatesCLI drives the lifecycle gates with the real binary
// against `keyflow dev`: a deletion window under the tenant's minimum is
// refused (exit 1), `key schedule-deletion` and `key disable` wait for
// approval (exit 4, the approval ID on stdout) and change nothing, and a
// second principal's approval makes them run.
func TestLifecycleGatesCLI(t *testing.T) {
	dir := t.TempDir()
	st := startStack(t, dir, "127.0.0.1:0", "127.0.0.1:0")
	id, err := natsauth.Load(filepath.Join(dir, "nats", "identity.json"))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := id.UserCreds("default", "bob")
	if err != nil {
		t.Fatal(err)
	}
	bobCreds := filepath.Join(dir, "bob.creds")
	if err := os.WriteFile(bobCreds, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	asBob := func(args ...string) result {
		t.Helper()
		return runKF(t, cliEnv(st.natsURL, dir), "", append([]string{"--creds", bobCreds}, args...)...)
	}
	policy := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policy, []byte(`{"minDeletionWindowDays":14,"approvals":[{"operation":"schedule-deletion","required":1},{"operation":"disable","required":1}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	mustOK(t, st.kf(t, "", "tenant", "policy", "set", "--file", policy))
	mustOK(t, st.kf(t, "", "key", "create", "--alias", "old"))
	mustOK(t, st.kf(t, "", "key", "create", "--alias", "paused"))

	expectFailure(t, st.kf(t, "", "key", "schedule-deletion", "alias/old", "--window", "7d"), 1, "ValidationException")

	approveAndWait := func(what string, r result) {
		t.Helper()
		if r.code != 4 || !strings.HasPrefix(r.stdout, "approval ID: ") || !strings.Contains(r.stderr, "PendingApprovalException") {
			t.Fatalf("%s under dual control: %v", what, r)
		}
		approvalID := strings.TrimSpace(strings.TrimPrefix(r.stdout, "approval ID: "))
		mustOK(t, asBob("approval", "approve", approvalID))
		var show struct {
			State string `json:"state"`
		}
		if !waitFor(t, 60*time.Second, func() bool {
			decodeJSON(t, mustOK(t, st.kf(t, "", "approval", "show", approvalID)), &show)
			return show.State == "COMPLETED"
		}) {
			t.Fatalf("%s: approval state %s, want COMPLETED", what, show.State)
		}
	}
	var meta struct {
		KeyState        string `json:"keyState"`
		PendingDeletion bool   `json:"pendingDeletion"`
	}
	r := st.kf(t, "", "key", "schedule-deletion", "alias/old", "--window", "21d")
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "describe", "alias/old")), &meta)
	if meta.PendingDeletion {
		t.Fatal("pending deletion before approval")
	}
	approveAndWait("schedule-deletion", r)
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "describe", "alias/old")), &meta)
	if !meta.PendingDeletion {
		t.Fatalf("after the approved deletion: %+v", meta)
	}

	r = st.kf(t, "", "key", "disable", "alias/paused")
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "describe", "alias/paused")), &meta)
	if meta.KeyState != "ACTIVE" {
		t.Fatalf("key %s before approval", meta.KeyState)
	}
	approveAndWait("disable", r)
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "describe", "alias/paused")), &meta)
	if meta.KeyState != "SUSPENDED" {
		t.Fatalf("key %s after the approved disable", meta.KeyState)
	}
}
