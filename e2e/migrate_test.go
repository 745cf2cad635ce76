package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMigrationCampaignCLI drives the post-quantum migration through the
// real binary against the dev stack (embedded Temporal): register data
// keys, plan, start, watch the dual-signing period, approve, follow the
// campaign with status --watch to retirement, and fetch the rewrapped data
// keys; then a second campaign rolled back before its cutover.
func TestMigrationCampaignCLI(t *testing.T) {
	dir := t.TempDir()
	st := startStack(t, dir, "127.0.0.1:0", "127.0.0.1:0")

	mustOK(t, st.kf(t, "", "key", "create", "--alias", "billing", "--spec", "RSA_3072", "--usage", "ENCRYPT_DECRYPT"))
	mustOK(t, st.kf(t, "", "key", "create", "--alias", "release", "--spec", "ECC_NIST_P256"))
	mustOK(t, st.kf(t, "", "key", "create", "--alias", "app"))
	// Three wrapped data keys under the RSA key, registered.
	var regs []string
	var secrets []string
	for i := range 3 {
		secret := strings.Repeat(string(rune('a'+i)), 32)
		ct := strings.TrimSpace(mustOK(t, st.kf(t, secret, "encrypt", "--key", "billing", "--algorithm", "RSAES_OAEP_SHA_256")).stdout)
		var reg struct {
			RegistrationID string `json:"registrationId"`
			KeyVersion     uint32 `json:"keyVersion"`
		}
		decodeJSON(t, mustOK(t, st.kf(t, ct, "datakey", "register", "--key", "billing", "--algorithm", "RSAES_OAEP_SHA_256", "--label", "invoice")), &reg)
		if reg.RegistrationID == "" || reg.KeyVersion != 1 {
			t.Fatalf("register printed %+v", reg)
		}
		regs, secrets = append(regs, reg.RegistrationID), append(secrets, secret)
	}
	// datakey --register, and the refusals of a blob that does not open.
	var gen struct {
		RegistrationID string `json:"registrationId"`
		CiphertextBlob []byte `json:"ciphertextBlob"`
	}
	decodeJSON(t, mustOK(t, st.kf(t, "", "datakey", "--key", "app", "--without-plaintext", "--register", "--context", "t=1")), &gen)
	if gen.RegistrationID == "" {
		t.Fatal("datakey --register printed no registrationId")
	}
	expectFailure(t, st.kf(t, b64(gen.CiphertextBlob), "datakey", "register"), 1, "InvalidCiphertextException")
	expectFailure(t, st.kf(t, "", "datakey", "get", "not-an-id"), 1, "ValidationException")

	// The plan counts the registered data keys.
	planOut := mustOK(t, st.kf(t, "", "migrate", "plan")).stdout
	var plan struct {
		Keys []struct {
			KeyID              string `json:"keyId"`
			TargetKeySpec      string `json:"targetKeySpec"`
			RegisteredDataKeys int    `json:"registeredDataKeys"`
		} `json:"keys"`
		Counts struct {
			WithTarget int `json:"withTarget"`
			DataKeys   int `json:"registeredDataKeys"`
		} `json:"counts"`
	}
	if err := json.Unmarshal([]byte(planOut), &plan); err != nil || plan.Counts.WithTarget != 2 || plan.Counts.DataKeys != 3 {
		t.Fatalf("plan: %v\n%s", err, planOut)
	}
	planFile := filepath.Join(t.TempDir(), "plan.json")
	if err := os.WriteFile(planFile, []byte(planOut), 0o600); err != nil {
		t.Fatal(err)
	}

	type status struct {
		CampaignID string   `json:"campaignId"`
		Phase      string   `json:"phase"`
		Done       bool     `json:"done"`
		Total      int      `json:"total"`
		Rewrapped  int      `json:"rewrapped"`
		Approvals  []string `json:"approvals"`
	}
	var s status
	decodeJSON(t, mustOK(t, st.kf(t, "", "migrate", "start", planFile, "--grace", "1s", "--batch-size", "2")), &s)
	id := s.CampaignID
	if !strings.HasPrefix(id, "pq-") {
		t.Fatalf("campaign ID %q", id)
	}
	// Starting the same plan again joins the campaign.
	decodeJSON(t, mustOK(t, st.kf(t, "", "migrate", "start", planFile)), &s)
	if s.CampaignID != id {
		t.Fatalf("second start: campaign %s, want %s", s.CampaignID, id)
	}
	if !waitFor(t, 2*time.Minute, func() bool {
		r := st.kf(t, "", "migrate", "status", id)
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &s) == nil && s.Phase == "awaiting-approval"
	}) {
		t.Fatalf("the campaign never reached the approval gate: %+v", s)
	}
	if s.Total != 3 || s.Rewrapped != 3 {
		t.Fatalf("at the gate: %+v", s)
	}
	// status without an ID finds the one campaign in progress.
	decodeJSON(t, mustOK(t, st.kf(t, "", "migrate", "status")), &s)
	if s.CampaignID != id {
		t.Fatalf("status without ID: %+v", s)
	}
	// Dual signing: the ECDSA key returns an ML-DSA signature too, which
	// verifies on the old key.
	var sig struct {
		Signature  []byte `json:"signature"`
		Additional []struct {
			KeyID            string `json:"keyId"`
			SigningAlgorithm string `json:"signingAlgorithm"`
			Signature        []byte `json:"signature"`
		} `json:"additionalSignatures"`
	}
	decodeJSON(t, mustOK(t, st.kf(t, "release v1", "sign", "--key", "release", "--algorithm", "ECDSA_SHA_256", "-o", "json")), &sig)
	if len(sig.Additional) != 1 || sig.Additional[0].SigningAlgorithm != "ML_DSA_SHAKE_256" {
		t.Fatalf("sign during dual signing: %+v", sig)
	}
	mustOK(t, st.kf(t, "release v1", "verify", "--key", "release", "--algorithm", "ML_DSA_SHAKE_256", "--signature", b64(sig.Additional[0].Signature)))

	mustOK(t, st.kf(t, "", "migrate", "approve", id))
	// --watch without a terminal prints a line per change and returns
	// when the campaign is done.
	watch := mustOK(t, st.kf(t, "", "migrate", "status", id, "--watch", "--interval", "100ms"))
	lines := strings.Split(strings.TrimSpace(watch.stdout), "\n")
	last := lines[len(lines)-1]
	if !strings.Contains(last, "retired") || !strings.Contains(last, "3/3 rewrapped") || !strings.Contains(last, "100%") || strings.Contains(watch.stdout, "\r") {
		t.Fatalf("status --watch printed:\n%s", watch.stdout)
	}
	decodeJSON(t, mustOK(t, st.kf(t, "", "migrate", "status", id)), &s)
	if !s.Done || s.Phase != "retired" || len(s.Approvals) != 1 || s.Approvals[0] != "admin" {
		t.Fatalf("final status: %+v", s)
	}
	// The registered blobs now open under the X-Wing key, to the same
	// data keys; the aliases name the targets.
	for i, reg := range regs {
		blob := strings.TrimSpace(mustOK(t, st.kf(t, "", "datakey", "get", reg, "--blob")).stdout)
		if got := mustOK(t, st.kf(t, blob, "decrypt")).stdout; got != secrets[i] {
			t.Fatalf("registration %d opens to %q", i, got)
		}
	}
	var billing struct {
		KeySpec  string `json:"keySpec"`
		KeyState string `json:"keyState"`
	}
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "describe", "alias/billing")), &billing)
	if billing.KeySpec != "X_WING" {
		t.Fatalf("alias/billing names a %s key after cutover", billing.KeySpec)
	}
	expectFailure(t, st.kf(t, "", "migrate", "rollback", id), 1, "NotFoundException")
	expectFailure(t, st.kf(t, "", "migrate", "approve", id), 1, "KMSInvalidStateException")

	// A second campaign, rolled back at the gate: the key is as before.
	mustOK(t, st.kf(t, "", "key", "create", "--alias", "legacy", "--spec", "ECC_NIST_EDWARDS25519"))
	mustOK(t, st.kf(t, "", "key", "create", "--alias", "legacy-other", "--spec", "ECC_NIST_EDWARDS25519"))
	plan2 := mustOK(t, st.kf(t, "", "migrate", "plan", "--from", "ECC_NIST_EDWARDS25519", "--key-filter", "alias/legacy")).stdout
	var p2 struct {
		Keys []struct {
			Alias string `json:"alias"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(plan2), &p2); err != nil || len(p2.Keys) != 1 || p2.Keys[0].Alias != "legacy" {
		t.Fatalf("plan --key-filter alias/legacy: %v\n%s", err, plan2)
	}
	expectFailure(t, st.kf(t, "", "migrate", "plan", "--key-filter", "[x"), 2, "UsageError")
	if err := os.WriteFile(planFile, []byte(plan2), 0o600); err != nil {
		t.Fatal(err)
	}
	mustOK(t, st.kf(t, "", "migrate", "start", planFile, "--id", "rb-test"))
	if !waitFor(t, 2*time.Minute, func() bool {
		r := st.kf(t, "", "migrate", "status", "rb-test")
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &s) == nil && s.Phase == "awaiting-approval"
	}) {
		t.Fatalf("the second campaign never reached the gate: %+v", s)
	}
	mustOK(t, st.kf(t, "", "migrate", "pause", "rb-test"))
	mustOK(t, st.kf(t, "", "migrate", "rollback", "rb-test"))
	mustOK(t, st.kf(t, "", "migrate", "status", "rb-test", "--watch", "--interval", "100ms"))
	decodeJSON(t, mustOK(t, st.kf(t, "", "migrate", "status", "rb-test")), &s)
	if s.Phase != "rolled-back" {
		t.Fatalf("after rollback: %+v", s)
	}
	var legacy struct {
		KeySpec  string `json:"keySpec"`
		KeyState string `json:"keyState"`
	}
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "describe", "alias/legacy")), &legacy)
	if legacy.KeySpec != "ECC_NIST_EDWARDS25519" || legacy.KeyState != "ACTIVE" {
		t.Fatalf("alias/legacy after rollback: %+v", legacy)
	}
	expectFailure(t, st.kf(t, "", "migrate", "approve", "No Such"), 1, "ValidationException")
	expectFailure(t, st.kf(t, "", "migrate", "start"), 2, "UsageError")

	// Every step is on the record.
	_, evs := auditTail(t, st)
	for _, typ := range []string{"io.keyflow.migration.started.v1", "io.keyflow.migration.phase.changed.v1", "io.keyflow.migration.control.v1",
		"io.keyflow.migration.key.changed.v1", "io.keyflow.datakey.rewrapped.v1", "io.keyflow.datakey.registered.v1"} {
		if !hasEvent(evs, typ, "success", nil) {
			t.Errorf("no %s event", typ)
		}
	}
	for _, ph := range []string{"retired", "rolled-back"} {
		if !hasEvent(evs, "io.keyflow.migration.phase.changed.v1", "success", map[string]any{"phase": ph}) {
			t.Errorf("no phase %s record", ph)
		}
	}
}
