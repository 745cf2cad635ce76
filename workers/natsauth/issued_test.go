package natsauth_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
	"github.com/keyflow/keyflow/workers/natsauth"
)

// IssuedUser answers "did keyflow issue this user key to this principal
// with these roles": only the exact triple is, and a worker process sees a
// principal that another process (the control plane) issued later.
func TestIssuedUser(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "identity.json")
	control, err := natsauth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := control.AddTenant("acme"); err != nil {
		t.Fatal(err)
	}
	worker, err := natsauth.Load(path) // a crypto worker's copy
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the refresh looks at most once a second
	app := userPub(t)
	if _, err := control.IssuePrincipal(ctx, kms.IssuePrincipalParams{Tenant: "acme", Name: "app", Roles: []keypolicy.Role{keypolicy.RoleCryptoUser}, PublicKey: app, CreatedBy: "t"}); err != nil {
		t.Fatal(err)
	}
	crypto := []string{"crypto-user"}
	if !worker.IssuedUser("acme", "app", app, crypto) {
		t.Fatal("the worker does not see a principal the control plane issued after it started")
	}
	for _, c := range []struct {
		name                   string
		tenant, principal, key string
		roles                  []string
	}{
		{"more roles", "acme", "app", app, []string{"crypto-user", "key-admin"}},
		{"fewer roles", "acme", "app", app, []string{}},
		{"another principal's name", "acme", "admin", app, crypto},
		{"a key never issued", "acme", "app", userPub(t), crypto},
		{"another tenant", "default", "app", app, crypto},
	} {
		if worker.IssuedUser(c.tenant, c.principal, c.key, c.roles) || control.IssuedUser(c.tenant, c.principal, c.key, c.roles) {
			t.Errorf("%s: counted as issued", c.name)
		}
	}
	// A bootstrap key (every role) added to a principal issued with fewer
	// roles carries its own roles.
	if _, err := control.UserCreds("acme", "app"); err != nil {
		t.Fatal(err)
	}
	if !control.IssuedUser("acme", "app", app, crypto) {
		t.Error("the first key lost its roles")
	}
}
