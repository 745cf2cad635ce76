package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeFiles creates empty files for every path and returns dir.
func writeFiles(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestExampleDecodesStrictlyAndOnlyMissesItsFiles(t *testing.T) {
	c, err := Parse([]byte(Example()), nil)
	if err != nil {
		t.Fatalf("the example does not decode: %v", err)
	}
	if c.NATS.Replicas != 3 || len(c.NATS.URLs) != 3 || c.Temporal.Namespace != "keyflow" || c.HSM.TokenLabel != "keyflow" {
		t.Fatalf("example decoded to %+v", c)
	}
	for _, p := range c.Problems() {
		if !strings.Contains(p, "no such file") {
			t.Errorf("the example has a problem other than a missing file: %s", p)
		}
	}
	if !strings.Contains(Example(), "# ") {
		t.Error("the example has no comments")
	}
}

func TestUnknownFieldIsAnError(t *testing.T) {
	_, err := Parse([]byte("nats:\n  url: nats://x:4222\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "field url not found") {
		t.Fatalf("a misspelt field decoded: %v", err)
	}
	if _, err := Parse([]byte("hsm:\n  pin: '1234'\n"), nil); err == nil {
		t.Fatal("an inline PIN decoded: secrets are by file only")
	}
}

func TestEnvironmentOverrides(t *testing.T) {
	env := map[string]string{
		"KEYFLOW_NATS_URLS":            "nats://a:4222, nats://b:4222",
		"KEYFLOW_NATS_REPLICAS":        "3",
		"KEYFLOW_HSM_PIN_FILE":         "/run/secrets/pin",
		"KEYFLOW_AUDIT_MAX_AGE":        "48h",
		"KEYFLOW_AUDIT_FAIL_OPEN":      "true",
		"KEYFLOW_ROLES":                "crypto,sealer",
		"KEYFLOW_TEMPORAL_TLS_CA_FILE": "/ca.pem",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	c, err := Parse([]byte("nats:\n  urls: [nats://file:4222]\n  replicas: 1\nhsm:\n  pin_file: /etc/pin\n"), lookup)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.NATS.URLs, " "); got != "nats://a:4222 nats://b:4222" {
		t.Errorf("urls = %q", got)
	}
	if c.NATS.Replicas != 3 || c.HSM.PINFile != "/run/secrets/pin" || c.Audit.MaxAge != 48*time.Hour || !c.Audit.FailOpen {
		t.Errorf("overrides not applied: %+v", c)
	}
	if strings.Join(c.Roles, ",") != "crypto,sealer" || c.Temporal.TLS.CAFile != "/ca.pem" {
		t.Errorf("roles %v, temporal ca %q", c.Roles, c.Temporal.TLS.CAFile)
	}

	bad := map[string]string{"KEYFLOW_NATS_REPLICAS": "three"}
	_, err = Parse(nil, func(k string) (string, bool) { v, ok := bad[k]; return v, ok })
	if err == nil || !strings.Contains(err.Error(), "KEYFLOW_NATS_REPLICAS") {
		t.Fatalf("a bad override: %v", err)
	}
}

func TestProblemsOneMessageEach(t *testing.T) {
	c, err := Parse([]byte(`
roles: [crypto, gateway, crypto, reaper]
log: {level: loud, format: xml}
nats:
  urls: [localhost:4222]
  replicas: 7
  tls: {cert_file: /nonexistent/c.pem}
hsm: {sessions: -1}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`roles: "crypto" given twice`,
		`roles: unknown role "reaper"`,
		`log.level: "loud"`,
		`log.format: "xml"`,
		`nats.urls: "localhost:4222" is not a URL`,
		`nats.tls.cert_file: /nonexistent/c.pem`,
		`nats.tls: cert_file and key_file go together`,
		`nats.replicas: 7`,
		`nats.identity_file is required`,
		`hsm.token_label is required`,
		`hsm.pin_file is required`,
		`hsm.sessions: must not be negative`,
		`gateway.xks.listen: the gateway role has nothing to serve`,
	}
	got := c.Problems()
	for _, w := range want {
		n := 0
		for _, p := range got {
			if strings.Contains(p, w) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d messages contain %q; problems:\n%s", n, w, strings.Join(got, "\n"))
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	if err := c.Err(); err == nil || !strings.Contains(err.Error(), "13 problems") {
		t.Errorf("Err() = %v", err)
	}
}

func TestValidConfigHasNoProblems(t *testing.T) {
	dir := writeFiles(t, "worker.creds", "identity.json", "pin")
	c, err := Parse([]byte(`
roles: [crypto, admin, lifecycle, sealer, remediation]
nats:
  urls: [nats://127.0.0.1:4222]
  creds_file: `+filepath.Join(dir, "worker.creds")+`
  identity_file: `+filepath.Join(dir, "identity.json")+`
temporal: {address: 127.0.0.1:7233}
hsm: {token_label: keyflow, pin_file: `+filepath.Join(dir, "pin")+`}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
	if c.NATS.Replicas != 1 || c.Ops.Listen != DefaultOpsListen || c.Temporal.Namespace != DefaultNamespace {
		t.Errorf("defaults: %+v", c)
	}
}

func TestReadSecretNeverShowsTheSecret(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "pin")
	if err := os.WriteFile(p, []byte("  s3cret-pin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := ReadSecret(p); err != nil || s != "s3cret-pin" {
		t.Fatalf("ReadSecret = %q, %v", s, err)
	}
	if _, err := ReadSecret(filepath.Join(dir, "none")); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestRegionReplicaSwitchTimeout(t *testing.T) {
	c, err := Parse([]byte("region: {name: eu-west, replica_switch_timeout: 45s}\n"), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if c.Region.Name != "eu-west" || c.Region.ReplicaSwitchTimeout != 45*time.Second {
		t.Fatalf("region decoded to %+v", c.Region)
	}
}
