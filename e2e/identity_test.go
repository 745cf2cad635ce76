package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGovernanceCLI drives tenants, principals, roles, key policies and
// grants through the real binary against `keyflow dev`, across a restart:
// the zero-configuration admin creates a tenant; its tenant admin creates
// principals (refusing a forbidden role combination); each role can do
// its duty and only that; a key policy narrows a key to one principal and
// a grant widens it again; a disabled principal is refused at once and
// stays refused after a restart.
func TestGovernanceCLI(t *testing.T) {
	dir := t.TempDir()
	s := startStack(t, dir, "127.0.0.1:0", "127.0.0.1:0")
	as := func(creds string, args ...string) result {
		t.Helper()
		return s.kf(t, "", append([]string{"--creds", creds}, args...)...)
	}
	path := func(name string) string { return filepath.Join(dir, name) }
	encrypt := func(creds string, args ...string) result {
		t.Helper()
		return s.kf(t, "payslip", append([]string{"--creds", creds, "encrypt", "--key", "alias/payroll"}, args...)...)
	}

	// The platform tenant's admin creates tenant acme.
	var tenant struct {
		Tenant            string     `json:"tenant"`
		Admin             string     `json:"admin"`
		ForbiddenRoleSets [][]string `json:"forbiddenRoleSets"`
	}
	decodeJSON(t, mustOK(t, s.kf(t, "", "tenant", "create", "acme", "--out", path("acme-admin.creds"))), &tenant)
	if tenant.Tenant != "acme" || tenant.Admin != "admin" || len(tenant.ForbiddenRoleSets) != 1 {
		t.Fatalf("tenant create: %+v", tenant)
	}
	fileMode(t, path("acme-admin.creds"), 0o600)
	acme := path("acme-admin.creds")

	// Principals, each with its duty; the forbidden combination is refused.
	mustOK(t, as(acme, "principal", "create", "kadmin", "--role", "key-admin", "--out", path("kadmin.creds")))
	mustOK(t, as(acme, "principal", "create", "app", "--tenant", "acme", "--role", "crypto-user", "--out", path("app.creds")))
	r := mustOK(t, as(acme, "principal", "create", "other", "--role", "crypto-user"))
	if !strings.Contains(r.stdout, "-----BEGIN NATS USER JWT-----") || !strings.Contains(r.stdout, "-----BEGIN USER NKEY SEED-----") {
		t.Errorf("principal create without --out does not print a creds file:\n%s", r.stdout)
	}
	if err := os.WriteFile(path("other.creds"), []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	r = as(acme, "principal", "create", "both", "--role", "key-admin,crypto-user")
	expectFailure(t, r, 1, "ValidationException")
	if !strings.Contains(r.stderr, "key-admin and crypto-user") {
		t.Errorf("the refusal does not name the combination: %s", r.stderr)
	}
	// Another tenant is out of reach, whatever --tenant says.
	// (The NATS server drops the publish; nats.go also prints that.)
	if r := as(acme, "principal", "list", "--tenant", "default"); r.code != 1 || !strings.Contains(r.stderr, "keyflow: AccessDeniedException: ") {
		t.Errorf("another tenant's subjects: %v", r)
	}
	// Only the platform tenant creates tenants.
	expectFailure(t, as(acme, "tenant", "create", "evil", "--out", path("evil.creds")), 1, "AccessDeniedException")

	kadmin, app, other := path("kadmin.creds"), path("app.creds"), path("other.creds")
	mustOK(t, as(kadmin, "key", "create", "--alias", "payroll"))
	mustOK(t, encrypt(app, "--context", "app=payroll"))
	expectFailure(t, encrypt(kadmin), 1, "AccessDeniedException")
	expectFailure(t, as(app, "key", "create"), 1, "AccessDeniedException")

	// A key policy: only app may use the key, with its context.
	policy := `{"version":"2026-11-01","statements":[
  {"sid":"Admins","effect":"Allow","principals":["role:key-admin"],"operations":["DescribeKey","RotateKey","CreateGrant","ListGrants","RevokeGrant"]},
  {"sid":"App","effect":"Allow","principals":["app"],"operations":["Encrypt","Decrypt"],"conditions":{"encryptionContextSubset":{"app":"payroll"}}}]}`
	if err := os.WriteFile(path("policy.json"), []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	mustOK(t, as(kadmin, "key", "set-policy", "alias/payroll", "--file", path("policy.json")))
	if r := mustOK(t, as(kadmin, "key", "get-policy", "alias/payroll")); !strings.Contains(r.stdout, `"App"`) {
		t.Errorf("get-policy:\n%s", r.stdout)
	}
	r = s.kf(t, `{"version":"2026-11-01","statements":[{"sid":"X","effect":"Maybe","principals":["*"],"operations":["Encrypt"]}]}`, "--creds", kadmin, "key", "set-policy", "alias/payroll", "--file", "-")
	expectFailure(t, r, 1, "ValidationException")
	if !strings.Contains(r.stderr, "KeyPolicy.json") {
		t.Errorf("the refusal does not point at the schema: %s", r.stderr)
	}
	if r := s.kf(t, "not json", "--creds", kadmin, "key", "set-policy", "alias/payroll", "--file", "-"); r.code != 2 {
		t.Errorf("a non-JSON policy: %v", r)
	}
	ct := mustOK(t, encrypt(app, "--context", "app=payroll")).stdout
	expectFailure(t, s.kf(t, ct, "--creds", app, "decrypt", "--context", "app=other"), 1, "AccessDeniedException")
	expectFailure(t, s.kf(t, ct, "--creds", other, "decrypt", "--context", "app=payroll"), 1, "AccessDeniedException")

	// A grant lets other decrypt, for an hour; revoked, it is gone.
	var grant struct {
		GrantID string `json:"grantId"`
	}
	decodeJSON(t, mustOK(t, as(kadmin, "grant", "create", "alias/payroll", "--grantee", "other", "--operations", "Decrypt", "--context", "app=payroll", "--expires", "1h")), &grant)
	mustOK(t, s.kf(t, ct, "--creds", other, "decrypt", "--context", "app=payroll"))
	if r := mustOK(t, as(kadmin, "--output", "table", "grant", "list", "alias/payroll")); !strings.Contains(r.stdout, grant.GrantID) {
		t.Errorf("grant list:\n%s", r.stdout)
	}
	mustOK(t, as(kadmin, "grant", "revoke", "alias/payroll", grant.GrantID))
	expectFailure(t, s.kf(t, ct, "--creds", other, "decrypt", "--context", "app=payroll"), 1, "AccessDeniedException")

	// Disable app: refused at once.
	mustOK(t, as(acme, "principal", "disable", "app"))
	expectFailure(t, encrypt(app, "--context", "app=payroll"), 9, "CredentialsRefused") // the NATS server refuses the revoked creds
	if r := mustOK(t, as(acme, "--output", "table", "principal", "list")); !strings.Contains(r.stdout, "app") || !strings.Contains(r.stdout, "kadmin") {
		t.Errorf("principal list:\n%s", r.stdout)
	}

	// acme's auditor reads the denials, each naming its rule; the tenant
	// admin may not read the trail.
	expectFailure(t, as(acme, "audit", "tail"), 1, "AccessDeniedException")
	mustOK(t, as(acme, "principal", "create", "aud", "--role", "auditor", "--out", path("aud.creds")))
	raw := mustOK(t, as(path("aud.creds"), "audit", "tail", "--limit", "1000")).stdout
	for _, rule := range []string{`"role:crypto-user required"`, `"role:key-admin required"`, `"condition:encryptionContext"`, `"grant:none"`, `"role:auditor required"`} {
		if !strings.Contains(raw, rule) {
			t.Errorf("acme's trail has no denial with rule %s", rule)
		}
	}
	if strings.Contains(raw, "SEED") || strings.Contains(raw, "-----BEGIN") {
		t.Error("the trail holds credentials")
	}

	// After a restart the identities, policies and the revocation hold.
	s.stop(t)
	s = startStack(t, dir, "127.0.0.1:0", "127.0.0.1:0")
	mustOK(t, as(kadmin, "key", "describe", "alias/payroll"))
	expectFailure(t, encrypt(app, "--context", "app=payroll"), 9, "CredentialsRefused") // the NATS server refuses the revoked creds
	expectFailure(t, s.kf(t, ct, "--creds", other, "decrypt", "--context", "app=payroll"), 1, "AccessDeniedException")
}
