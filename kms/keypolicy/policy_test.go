package keypolicy

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseKeyPolicyRefuses(t *testing.T) {
	cases := map[string]string{
		"not JSON":        `{`,
		"wrong version":   `{"version":"2012-10-17","statements":[{"sid":"A","effect":"Allow","principals":["*"],"operations":["Encrypt"]}]}`,
		"unknown effect":  `{"version":"2026-11-01","statements":[{"sid":"A","effect":"Maybe","principals":["*"],"operations":["Encrypt"]}]}`,
		"unknown op":      `{"version":"2026-11-01","statements":[{"sid":"A","effect":"Allow","principals":["*"],"operations":["Fly"]}]}`,
		"unknown field":   `{"version":"2026-11-01","statements":[{"sid":"A","effect":"Allow","principals":["*"],"operations":["Encrypt"],"resource":"*"}]}`,
		"duplicate sid":   `{"version":"2026-11-01","statements":[{"sid":"A","effect":"Allow","principals":["*"],"operations":["Encrypt"]},{"sid":"A","effect":"Deny","principals":["*"],"operations":["Decrypt"]}]}`,
		"unknown role":    `{"version":"2026-11-01","statements":[{"sid":"A","effect":"Allow","principals":["role:root"],"operations":["Encrypt"]}]}`,
		"inverted window": `{"version":"2026-11-01","statements":[{"sid":"A","effect":"Allow","principals":["*"],"operations":["Encrypt"],"conditions":{"notBefore":"2030-01-01T00:00:00Z","notAfter":"2029-01-01T00:00:00Z"}}]}`,
		"no statements":   `{"version":"2026-11-01","statements":[]}`,
		"trailing data":   `{"version":"2026-11-01","statements":[{"sid":"A","effect":"Allow","principals":["*"],"operations":["Encrypt"]}]} {}`,
	}
	for name, doc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParseKeyPolicy([]byte(doc))
			if !errors.Is(err, ErrInvalid) || err.Error() == "" {
				t.Fatalf("got %v, want an invalid-policy error with a message", err)
			}
		})
	}
	if _, err := ParseKeyPolicy([]byte(strings.Repeat(" ", MaxKeyPolicyBytes+1))); !errors.Is(err, ErrInvalid) {
		t.Fatalf("oversized policy: %v", err)
	}
}

func TestKeyPolicyDecide(t *testing.T) {
	p, err := ParseKeyPolicy([]byte(`{"version":"2026-11-01","statements":[
		{"sid":"Users","effect":"Allow","principals":["role:crypto-user"],"operations":["Encrypt","Decrypt"],"conditions":{"encryptionContextSubset":{"app":"a"}}},
		{"sid":"Batch","effect":"Allow","principals":["batch"],"operations":["*"],"conditions":{"notBefore":"2026-01-01T00:00:00Z","notAfter":"2026-02-01T00:00:00Z"}},
		{"sid":"Exact","effect":"Allow","principals":["*"],"operations":["GenerateDataKey"],"conditions":{"encryptionContextEquals":{"app":"a"},"sourcePrincipals":["svc-*"]}},
		{"sid":"NoBob","effect":"Deny","principals":["bob"],"operations":["Decrypt"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	jan := time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC)
	mar := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	a := &KeyAuthz{Policy: p, Grants: []Grant{
		{ID: "g1", Grantee: "carol", Operations: []Action{ActionDecrypt}, Constraints: &Conditions{NotAfter: &mar}},
	}}
	user := []string{string(RoleCryptoUser)}
	ctxA := map[string]string{"app": "a"}
	cases := []struct {
		name      string
		principal string
		roles     []string
		action    Action
		ec        map[string]string
		now       time.Time
		want      string
	}{
		{"role statement with its context", "alice", user, ActionEncrypt, map[string]string{"app": "a", "x": "y"}, jan, ""},
		{"role statement, wrong context", "alice", user, ActionEncrypt, map[string]string{"app": "b"}, jan, "condition:encryptionContext"},
		{"explicit deny wins", "bob", user, ActionDecrypt, ctxA, jan, "key-policy:statement NoBob"},
		{"deny names only its action", "bob", user, ActionEncrypt, ctxA, jan, ""},
		{"not named anywhere", "dave", nil, ActionEncrypt, ctxA, jan, "grant:none"},
		{"named principal inside its window", "batch", nil, ActionSign, nil, jan, ""},
		{"named principal after its window", "batch", nil, ActionSign, nil, mar, "condition:timeWindow"},
		{"equals wants exactly the pairs", "svc-a", nil, ActionGenerateDataKey, map[string]string{"app": "a", "x": "y"}, jan, "condition:encryptionContext"},
		{"equals and source principal", "svc-a", nil, ActionGenerateDataKey, ctxA, jan, ""},
		{"source principal mismatch", "web", nil, ActionGenerateDataKey, ctxA, jan, "condition:sourcePrincipal"},
		{"grant before expiry", "carol", nil, ActionDecrypt, nil, jan, ""},
		{"grant expired", "carol", nil, ActionDecrypt, nil, mar, "condition:timeWindow"},
		{"grant of another action", "carol", nil, ActionEncrypt, nil, jan, "grant:none"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := a.Decide(Request{Principal: c.principal, Roles: c.roles, Action: c.action, Context: c.ec, Now: c.now})
			if got != c.want {
				t.Fatalf("decide = %q, want %q", got, c.want)
			}
		})
	}
	// No policy: the default, roles decide.
	if got := (&KeyAuthz{}).Decide(Request{Principal: "x", Action: ActionDecrypt}); got != "" {
		t.Fatalf("default policy denied: %q", got)
	}
	// What a denial tells the caller never quotes the policy.
	for _, rule := range []string{"key-policy:statement NoBob", "condition:encryptionContext", "grant:none"} {
		if msg := DenyMessage(ActionDecrypt, rule); strings.Contains(msg, "NoBob") || msg == "" {
			t.Errorf("message for %s: %q", rule, msg)
		}
	}
}

func TestRolePolicyCheckRoles(t *testing.T) {
	pol := DefaultRolePolicy()
	if err := pol.CheckRoles([]Role{RoleKeyAdmin, RoleCryptoUser}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "key-admin and crypto-user") {
		t.Fatalf("forbidden combination: %v", err)
	}
	for _, ok := range [][]Role{{RoleKeyAdmin, RoleApprover}, {RoleCryptoUser}, {RoleTenantAdmin, RoleAuditor}} {
		if err := pol.CheckRoles(ok); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
	for _, bad := range [][]Role{nil, {"root"}, {RoleAuditor, RoleAuditor}} {
		if err := pol.CheckRoles(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%v: %v", bad, err)
		}
	}
	if err := (RolePolicy{}).CheckRoles([]Role{RoleKeyAdmin, RoleCryptoUser}); err != nil {
		t.Errorf("an empty policy forbids nothing: %v", err)
	}
	if err := (RolePolicy{ForbiddenRoleSets: [][]Role{{RoleKeyAdmin}}}).Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("a one-role set: %v", err)
	}
}

func TestEveryOperationNamesKnownRoles(t *testing.T) {
	for _, op := range Operations() {
		p, _ := PermissionOf(op)
		if len(p.Roles) == 0 {
			t.Errorf("%s: no role may call it", op)
		}
		for _, r := range p.Roles {
			if !ValidRole(r) {
				t.Errorf("%s: unknown role %s", op, r)
			}
		}
	}
	// Separation of duties in the table itself.
	for _, op := range []string{"crypto.encrypt", "crypto.decrypt", "crypto.sign", "crypto.datakey"} {
		if p, _ := PermissionOf(op); p.HeldBy([]string{string(RoleKeyAdmin), string(RoleAuditor)}) {
			t.Errorf("%s is open to key admins or auditors", op)
		}
	}
	for _, op := range []string{"keys.create", "keys.setpolicy", "grants.create"} {
		if p, _ := PermissionOf(op); p.HeldBy([]string{string(RoleCryptoUser)}) {
			t.Errorf("%s is open to crypto users", op)
		}
	}
}
