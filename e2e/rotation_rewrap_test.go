package e2e

import (
	"strings"
	"testing"
)

// TestRotationRewrapCLI drives rotation with rewrap through the real binary
// against the dev stack: registered data keys keep an old version from
// retiring (refused with their count), key rotate --rewrap moves them and
// prints the counts, rewrap status shows the finished workflow, and the
// old versions then retire; the rewrapped data keys still open.
func TestRotationRewrapCLI(t *testing.T) {
	dir := t.TempDir()
	st := startStack(t, dir, "127.0.0.1:0", "127.0.0.1:0")

	mustOK(t, st.kf(t, "", "key", "create", "--alias", "orders"))
	var regs []string
	for i := range 3 {
		var gen struct {
			RegistrationID string `json:"registrationId"`
		}
		decodeJSON(t, mustOK(t, st.kf(t, "", "datakey", "--key", "orders", "--without-plaintext", "--register", "--context", "row="+string(rune('a'+i)))), &gen)
		if gen.RegistrationID == "" {
			t.Fatal("datakey --register printed no registrationId")
		}
		regs = append(regs, gen.RegistrationID)
	}
	// The primary version never retires; nor does a version in use.
	expectFailure(t, st.kf(t, "", "key", "retire-version", "orders", "--version", "1", "--now"), 1, "KMSInvalidStateException")
	expectFailure(t, st.kf(t, "", "key", "retire-version", "orders"), 2, "UsageError")
	mustOK(t, st.kf(t, "", "key", "rotate", "orders"))
	r := st.kf(t, "", "key", "retire-version", "orders", "--version", "1")
	expectFailure(t, r, 1, "KMSInvalidStateException")
	if !strings.Contains(r.stderr, "3 registered data keys still use version 1") {
		t.Fatalf("refusal does not name the count: %s", r.stderr)
	}
	// No rewrap has run for the key yet.
	expectFailure(t, st.kf(t, "", "rewrap", "status", "orders"), 1, "NotFoundException")

	out := mustOK(t, st.kf(t, "", "key", "rotate", "orders", "--rewrap", "-o", "table")).stdout
	if !strings.Contains(out, "version 2 -> 3") || !strings.Contains(out, "rewrapped 3 registered data keys to version 3 (0 failed, 0 already current, 0 remaining") {
		t.Fatalf("key rotate --rewrap printed:\n%s", out)
	}
	var status struct {
		WorkflowID string `json:"workflowId"`
		Rewrapped  int    `json:"rewrapped"`
		Done       bool   `json:"done"`
	}
	decodeJSON(t, mustOK(t, st.kf(t, "", "rewrap", "status", "alias/orders")), &status)
	if !status.Done || status.Rewrapped != 3 || !strings.HasPrefix(status.WorkflowID, "rewrap/") {
		t.Fatalf("rewrap status: %+v", status)
	}
	if out := mustOK(t, st.kf(t, "", "rewrap", "status", "orders", "-o", "table")).stdout; !strings.Contains(out, "done, 3 rewrapped") {
		t.Fatalf("rewrap status -o table printed %q", out)
	}

	// Nothing registered uses versions 1 and 2 now: both retire. By
	// default after a waiting period, which can be cancelled; --now at
	// once.
	type retireReply struct {
		Version        uint32 `json:"version"`
		PreviousState  string `json:"previousState"`
		State          string `json:"state"`
		Transition     string `json:"transition"`
		RetirementDate string `json:"retirementDate"`
		WorkflowID     string `json:"workflowId"`
	}
	var ret retireReply
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "retire-version", "orders", "--version", "1", "--window", "7d")), &ret)
	if ret.State != "ACTIVE" || ret.Transition != "" || ret.RetirementDate == "" || !strings.HasPrefix(ret.WorkflowID, "retire/") {
		t.Fatalf("retire-version 1 with a window: %+v", ret)
	}
	expectFailure(t, st.kf(t, "", "key", "retire-version", "orders", "--version", "1", "--now", "--cancel"), 2, "UsageError")
	if out := mustOK(t, st.kf(t, "", "key", "retire-version", "orders", "--version", "1", "--cancel", "-o", "table")).stdout; !strings.Contains(out, "retirement cancelled") {
		t.Fatalf("retire-version --cancel printed %q", out)
	}
	ret = retireReply{}
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "retire-version", "orders", "--version", "1", "--now")), &ret)
	if ret.State != "DESTROYED" || ret.Transition != "T5" {
		t.Fatalf("retire-version 1: %+v", ret)
	}
	if out := mustOK(t, st.kf(t, "", "key", "retire-version", "orders", "--version", "2", "--now", "-o", "table")).stdout; !strings.Contains(out, "ACTIVE -> DESTROYED (T5)") {
		t.Fatalf("retire-version 2 printed %q", out)
	}
	for i, reg := range regs {
		var d struct {
			KeyVersion uint32 `json:"keyVersion"`
		}
		decodeJSON(t, mustOK(t, st.kf(t, "", "datakey", "get", reg)), &d)
		if d.KeyVersion != 3 {
			t.Fatalf("registration %d is under version %d", i, d.KeyVersion)
		}
		blob := strings.TrimSpace(mustOK(t, st.kf(t, "", "datakey", "get", reg, "--blob")).stdout)
		mustOK(t, st.kf(t, blob, "decrypt", "--context", "row="+string(rune('a'+i))))
	}

	// The key-level setting: set-rotation --rewrap-on-rotation keeps the
	// period and is shown by describe; the next plain rotation rewraps.
	var meta struct {
		RewrapOnRotation bool `json:"rewrapOnRotation"`
	}
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "set-rotation", "orders", "--rewrap-on-rotation")), &meta)
	if !meta.RewrapOnRotation {
		t.Fatal("set-rotation --rewrap-on-rotation did not set it")
	}
	var rot struct {
		NewVersion uint32 `json:"newVersion"`
		Rewrap     *struct {
			Rewrapped int `json:"rewrapped"`
		} `json:"rewrap"`
	}
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "rotate", "orders")), &rot)
	if rot.NewVersion != 4 || rot.Rewrap == nil || rot.Rewrap.Rewrapped != 3 {
		t.Fatalf("rotation under rewrap-on-rotation: %+v", rot)
	}

	_, evs := auditTail(t, st)
	if !hasEvent(evs, "io.keyflow.key.version.retired.v1", "success", map[string]any{"state": "DESTROYED"}) {
		t.Error("no successful io.keyflow.key.version.retired.v1 record")
	}
	if !hasEvent(evs, "io.keyflow.key.version.retirement.scheduled.v1", "failure", map[string]any{"registeredDataKeys": 3}) {
		t.Error("no refused io.keyflow.key.version.retirement.scheduled.v1 record naming 3 data keys")
	}
	if !hasEvent(evs, "io.keyflow.key.version.retirement.cancelled.v1", "success", map[string]any{"version": 1}) {
		t.Error("no io.keyflow.key.version.retirement.cancelled.v1 record")
	}
	if !hasEvent(evs, "io.keyflow.datakey.rewrapped.v1", "success", nil) {
		t.Error("no io.keyflow.datakey.rewrapped.v1 record")
	}
}
