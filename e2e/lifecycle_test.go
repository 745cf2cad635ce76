package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// lifecycleKey is the JSON the CLI prints for a key, with the lifecycle
// fields (written from the documented names, not imported).
type lifecycleKey struct {
	KeyID                string `json:"keyId"`
	KeyState             string `json:"keyState"`
	PrimaryVersion       int    `json:"primaryVersion"`
	RotationPeriodInDays int    `json:"rotationPeriodInDays"`
	CryptoperiodInDays   int    `json:"cryptoperiodInDays"`
	PendingDeletion      bool   `json:"pendingDeletion"`
	DeletionDate         string `json:"deletionDate"`
	ActivationDate       string `json:"activationDate"`
	Versions             []struct {
		Version          int    `json:"version"`
		State            string `json:"state"`
		DeactivationDate string `json:"deactivationDate"`
	} `json:"versions"`
}

// TestLifecycleCLI drives the key lifecycle through the real binary and
// the embedded stack: states and their refusals, the transition table,
// compromise and its event-triggered remediation, pending deletion with
// its safety net, and a deletion window that survives a restart of the
// whole stack.
func TestLifecycleCLI(t *testing.T) {
	dir := t.TempDir()
	st := startStack(t, dir, "127.0.0.1:0", "127.0.0.1:0")
	const plaintext = "e2e-lifecycle-plaintext-7d1f"
	describe := func(st *stack, ref string) lifecycleKey {
		t.Helper()
		var k lifecycleKey
		decodeJSON(t, mustOK(t, st.kf(t, "", "key", "describe", ref)), &k)
		return k
	}

	// Create with a future activation date, a rotation period and a
	// cryptoperiod: PRE_ACTIVE, describe only.
	var k lifecycleKey
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "create", "--alias", "life", "--activation-date", "+2d", "--rotation-period", "90d", "--cryptoperiod", "1y")), &k)
	if k.KeyState != "PRE_ACTIVE" || k.RotationPeriodInDays != 90 || k.CryptoperiodInDays != 365 || k.ActivationDate == "" {
		t.Fatalf("created %+v", k)
	}
	expectFailure(t, st.kf(t, plaintext, "encrypt", "--key", "life"), 1, "KMSInvalidStateException")
	expectFailure(t, st.kf(t, "", "key", "create", "--rotation-period", "8y"), 1, "ValidationException")
	expectFailure(t, st.kf(t, "", "key", "create", "--rotation-period", "soon"), 2, "UsageError")

	// T4, then the ACTIVE key encrypts; each version has its cryptoperiod.
	if out := mustOK(t, st.kf(t, "", "key", "activate", "life", "-o", "table")).stdout; !strings.Contains(out, "PRE_ACTIVE -> ACTIVE (T4)") {
		t.Errorf("activate printed %q", out)
	}
	ct := strings.TrimSpace(mustOK(t, st.kf(t, plaintext, "encrypt", "--key", "life")).stdout)
	if k = describe(st, "life"); k.Versions[0].DeactivationDate == "" {
		t.Errorf("version 1 has no deactivation date: %+v", k)
	}

	// Suspended (disable): decrypt only. A transition the standard does
	// not allow is refused and names the current state.
	mustOK(t, st.kf(t, "", "key", "disable", "life"))
	expectFailure(t, st.kf(t, plaintext, "encrypt", "--key", "life"), 1, "KMSInvalidStateException")
	if got := mustOK(t, st.kf(t, ct, "decrypt")).stdout; got != plaintext {
		t.Errorf("decrypt while suspended: %q", got)
	}
	r := st.kf(t, "", "key", "set-state", "life", "PRE_ACTIVE")
	expectFailure(t, r, 1, "KMSInvalidStateException")
	if !strings.Contains(r.stderr, "the key is SUSPENDED") {
		t.Errorf("refusal does not name the current state: %s", r.stderr)
	}
	mustOK(t, st.kf(t, "", "key", "enable", "life"))

	// Compromise: the audit record starts remediation, which rotates to
	// a fresh version; the compromised version decrypts only with the
	// override.
	var cr struct {
		Version               int    `json:"version"`
		Transition            string `json:"transition"`
		RemediationWorkflowID string `json:"remediationWorkflowId"`
	}
	expectFailure(t, st.kf(t, "", "key", "compromise", "life"), 2, "UsageError")
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "compromise", "life", "--reason", "found in a paste")), &cr)
	if cr.Version != 1 || cr.Transition != "T6" || !strings.HasPrefix(cr.RemediationWorkflowID, "remediate/default/") {
		t.Fatalf("compromise: %+v", cr)
	}
	if !waitFor(t, 2*time.Minute, func() bool { return describe(st, "life").PrimaryVersion == 2 }) {
		t.Fatalf("remediation did not rotate the key: %+v", describe(st, "life"))
	}
	k = describe(st, "life")
	if k.Versions[0].State != "COMPROMISED" || k.Versions[1].State != "ACTIVE" {
		t.Errorf("after remediation: %+v", k)
	}
	expectFailure(t, st.kf(t, ct, "decrypt"), 1, "KMSInvalidStateException")
	if got := mustOK(t, st.kf(t, ct, "decrypt", "--allow-compromised")).stdout; got != plaintext {
		t.Errorf("decrypt --allow-compromised: %q", got)
	}
	var report cloudEvent
	if !waitFor(t, time.Minute, func() bool {
		out := mustOK(t, st.kf(t, "", "audit", "tail", "--type", "io.keyflow.key.compromise.remediated.v1")).stdout
		return json.Unmarshal([]byte(strings.TrimSpace(out)), &report) == nil
	}) {
		t.Fatal("no remediation report in the audit trail")
	}
	var rep struct {
		NewVersion int      `json:"newVersion"`
		Remaining  int      `json:"remaining"`
		Problems   []string `json:"problems"`
	}
	if err := json.Unmarshal(report.Data, &rep); err != nil || rep.NewVersion != 2 {
		t.Errorf("remediation report %s (%v)", report.Data, err)
	}
	decrypts := mustOK(t, st.kf(t, "", "audit", "tail", "--type", "io.keyflow.crypto.decrypt.v1")).stdout
	if !strings.Contains(decrypts, `"allowCompromised":true`) {
		t.Errorf("the override is not in the audit trail:\n%s", decrypts)
	}

	// Pending deletion: every use refused and recorded; the window is a
	// workflow timer that survives a restart of the whole stack.
	expectFailure(t, st.kf(t, "", "key", "schedule-deletion", "life", "--window", "3d"), 2, "UsageError")
	var sd struct {
		DeletionDate string `json:"deletionDate"`
		WorkflowID   string `json:"workflowId"`
	}
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "schedule-deletion", "life", "--window", "7d")), &sd)
	if sd.WorkflowID == "" || sd.DeletionDate == "" {
		t.Fatalf("schedule-deletion: %+v", sd)
	}
	r = st.kf(t, plaintext, "encrypt", "--key", "life")
	expectFailure(t, r, 1, "KMSInvalidStateException")
	if !strings.Contains(r.stderr, "pending deletion") {
		t.Errorf("refusal does not say pending deletion: %s", r.stderr)
	}
	refused := mustOK(t, st.kf(t, "", "audit", "tail", "--type", "io.keyflow.key.use.refused.v1")).stdout
	if strings.Count(refused, "\n") != 1 {
		t.Errorf("use-refused records:\n%s", refused)
	}

	st.stop(t)
	st = startStack(t, dir, "127.0.0.1:0", "127.0.0.1:0")
	if k = describe(st, "life"); !k.PendingDeletion || k.DeletionDate == "" {
		t.Fatalf("after the restart: %+v", k)
	}
	expectFailure(t, st.kf(t, plaintext, "encrypt", "--key", "life"), 1, "KMSInvalidStateException")
	mustOK(t, st.kf(t, "", "key", "cancel-deletion", "life"))
	mustOK(t, st.kf(t, plaintext, "encrypt", "--key", "life"))
	expectFailure(t, st.kf(t, "", "key", "cancel-deletion", "life"), 1, "KMSInvalidStateException")

	// Automatic rotation can be turned off and on.
	if k := describeSetRotation(t, st, "off"); k.RotationPeriodInDays != 0 {
		t.Errorf("set-rotation off: %+v", k)
	}
	if k := describeSetRotation(t, st, "1y"); k.RotationPeriodInDays != 365 {
		t.Errorf("set-rotation 1y: %+v", k)
	}
}

func describeSetRotation(t *testing.T, st *stack, period string) lifecycleKey {
	t.Helper()
	var k lifecycleKey
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "set-rotation", "life", "--period", period)), &k)
	return k
}
