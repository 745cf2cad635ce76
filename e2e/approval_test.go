package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyflow/keyflow/workers/natsauth"
)

// TestDualControlCLI drives dual control with the real binary against
// `keyflow dev`: a tenant policy from a file, a rotation that waits for
// approval (exit 4, the approval ID on stdout), the requester's own
// approval refused (exit 1), a second principal's approval running the
// rotation, and the steps in the audit trail.
func TestDualControlCLI(t *testing.T) {
	dir := t.TempDir()
	st := startStack(t, dir, "127.0.0.1:0", "127.0.0.1:0")

	// A second principal of the default tenant (as the identity feature
	// would issue): a creds file signed with the tenant's account key.
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
	if err := os.WriteFile(policy, []byte(`{"approvals":[{"operation":"rotate","required":1,"expiresAfter":"24h"}],"quotas":{"maxKeys":100}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	mustOK(t, st.kf(t, "", "tenant", "policy", "set", "--file", policy))
	var got struct {
		Approvals []struct {
			Operation string `json:"operation"`
			Required  int    `json:"required"`
		} `json:"approvals"`
		UpdatedBy string `json:"updatedBy"`
	}
	decodeJSON(t, mustOK(t, st.kf(t, "", "tenant", "policy", "get")), &got)
	if len(got.Approvals) != 1 || got.Approvals[0].Operation != "rotate" || got.UpdatedBy != "admin" {
		t.Fatalf("policy get: %+v", got)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"approvals":[{"operation":"rotate","required":0}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	expectFailure(t, st.kf(t, "", "tenant", "policy", "set", "--file", bad), 1, "ValidationException")

	var key struct {
		KeyID string `json:"keyId"`
	}
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "create", "--alias", "guarded")), &key)

	// The rotation waits: exit 4, the approval ID on stdout.
	r := st.kf(t, "", "key", "rotate", "alias/guarded")
	if r.code != 4 || !strings.HasPrefix(r.stdout, "approval ID: ") || !strings.Contains(r.stderr, "PendingApprovalException") {
		t.Fatalf("rotation under dual control: %v", r)
	}
	approvalID := strings.TrimSpace(strings.TrimPrefix(r.stdout, "approval ID: "))
	var list struct {
		Approvals []struct {
			ApprovalID string `json:"approvalId"`
			State      string `json:"state"`
			Requester  string `json:"requester"`
		} `json:"approvals"`
	}
	decodeJSON(t, mustOK(t, st.kf(t, "", "approval", "list", "--state", "pending")), &list)
	if len(list.Approvals) != 1 || list.Approvals[0].ApprovalID != approvalID || list.Approvals[0].Requester != "admin" {
		t.Fatalf("pending list: %+v", list)
	}
	expectFailure(t, st.kf(t, "", "approval", "approve", approvalID), 1, "AccessDeniedException")
	expectFailure(t, st.kf(t, "", "approval", "deny", approvalID), 2, "UsageError")

	mustOK(t, asBob("approval", "approve", approvalID, "--comment", "CHG-7"))
	var show struct {
		State string `json:"state"`
	}
	if !waitFor(t, 60*time.Second, func() bool {
		decodeJSON(t, mustOK(t, st.kf(t, "", "approval", "show", approvalID)), &show)
		return show.State == "COMPLETED"
	}) {
		t.Fatalf("approval state %s, want COMPLETED", show.State)
	}
	var meta struct {
		PrimaryVersion int `json:"primaryVersion"`
	}
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "describe", key.KeyID)), &meta)
	if meta.PrimaryVersion != 2 {
		t.Fatalf("primary version %d after the approved rotation", meta.PrimaryVersion)
	}
	// Several principals act here, so the trail is read without
	// auditTail's one-principal checks.
	var evs []cloudEvent
	for _, line := range strings.Split(strings.TrimSuffix(mustOK(t, st.kf(t, "", "audit", "tail")).stdout, "\n"), "\n") {
		var e cloudEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit line is not JSON: %v\n%s", err, line)
		}
		evs = append(evs, e)
	}
	for _, want := range []struct{ typ, principal, outcome string }{
		{"io.keyflow.approval.requested.v1", "admin", "success"},
		{"io.keyflow.approval.approved.v1", "admin", "denied"}, // the self-approval
		{"io.keyflow.approval.approved.v1", "bob", "success"},
		{"io.keyflow.approval.completed.v1", "keyflow-approvals", "success"},
		{"io.keyflow.key.rotated.v1", "admin", "success"},
		{"io.keyflow.tenant.policy.changed.v1", "admin", "failure"}, // the invalid file
	} {
		found := false
		for _, e := range evs {
			found = found || (e.Type == want.typ && e.Principal == want.principal && e.Outcome == want.outcome)
		}
		if !found {
			t.Errorf("no %s by %s (%s) in the audit trail", want.typ, want.principal, want.outcome)
		}
	}
}
