package natsauth_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
	"github.com/keyflow/keyflow/workers/natsauth"
)

func userPub(t *testing.T) string {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	p, _ := kp.PublicKey()
	return p
}

// TestIdentitySurvivesRestart checks that tenants, their policies,
// principals, roles and revocations are kept in the identity file, so a
// restarted stack refuses what it refused before.
func TestIdentitySurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "identity.json")
	id, err := natsauth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var pushed []string
	id.SetClaimsPublisher(func(_ context.Context, account, token string) error {
		pushed = append(pushed, token)
		return nil
	})
	pol := keypolicy.DefaultRolePolicy()
	if err := id.CreateTenant(ctx, "acme", pol); err != nil {
		t.Fatal(err)
	}
	if err := id.CreateTenant(ctx, "acme", pol); !errors.Is(err, kms.ErrStoreExists) {
		t.Fatalf("second create: %v", err)
	}
	if err := id.CreateTenant(ctx, natsauth.SystemTenant, pol); kms.CodeOf(err) != kms.CodeValidation {
		t.Fatalf("reserved name: %v", err)
	}
	carolKey := userPub(t)
	tok, err := id.IssuePrincipal(ctx, kms.IssuePrincipalParams{Tenant: "acme", Name: "carol", Roles: []keypolicy.Role{keypolicy.RoleCryptoUser, keypolicy.RoleApprover}, PublicKey: carolKey})
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	if uc.Subject != carolKey || uc.Name != "carol" || !uc.Tags.Contains("role:crypto-user") || !uc.Tags.Contains("role:approver") || uc.Tags.Contains("role:key-admin") {
		t.Fatalf("user claims: subject %s name %s tags %v", uc.Subject, uc.Name, uc.Tags)
	}
	if _, err := id.IssuePrincipal(ctx, kms.IssuePrincipalParams{Tenant: "acme", Name: "carol", Roles: []keypolicy.Role{keypolicy.RoleAuditor}, PublicKey: userPub(t)}); !errors.Is(err, kms.ErrStoreExists) {
		t.Fatalf("second carol: %v", err)
	}
	if _, err := id.IssuePrincipal(ctx, kms.IssuePrincipalParams{Tenant: "acme", Name: "dan", Roles: []keypolicy.Role{keypolicy.RoleAuditor}, PublicKey: "not-a-key"}); kms.CodeOf(err) != kms.CodeValidation {
		t.Fatalf("bad public key: %v", err)
	}
	if err := id.DisablePrincipal(ctx, "acme", "carol"); err != nil {
		t.Fatal(err)
	}
	// The tenant's creation and carol's revocation were pushed.
	if len(pushed) != 2 {
		t.Fatalf("%d account updates pushed, want 2 (creation, revocation)", len(pushed))
	}
	ac, err := jwt.DecodeAccountClaims(pushed[1])
	if err != nil {
		t.Fatal(err)
	}
	if !ac.IsClaimRevoked(uc) {
		t.Fatal("the pushed account JWT does not revoke carol's user JWT")
	}

	// Restart.
	id2, err := natsauth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(id2.Tenants(), "acme") {
		t.Fatalf("tenants after restart: %v", id2.Tenants())
	}
	got, err := id2.RolePolicy(ctx, "acme")
	if err != nil || len(got.ForbiddenRoleSets) != 1 {
		t.Fatalf("tenant policy after restart: %+v %v", got, err)
	}
	ps, err := id2.Principals(ctx, "acme")
	if err != nil || len(ps) != 1 || ps[0].Name != "carol" || ps[0].DisabledAt == nil || len(ps[0].Roles) != 2 {
		t.Fatalf("principals after restart: %+v %v", ps, err)
	}
	if _, err := id2.Principals(ctx, "nope"); !errors.Is(err, kms.ErrStoreNotFound) {
		t.Fatalf("unknown tenant: %v", err)
	}
}

func TestRequestInfoRoles(t *testing.T) {
	ri, err := natsauth.ParseRequestInfo(`{"acc":"A","user":"U","name_tag":"bob","tags":["keyflow_tenant:alpha","role:crypto-user","role:auditor"]}`)
	if err != nil {
		t.Fatal(err)
	}
	if got := ri.Roles(); !slices.Equal(got, []string{"crypto-user", "auditor"}) {
		t.Fatalf("roles %v", got)
	}
	ri, _ = natsauth.ParseRequestInfo(`{"acc":"A"}`)
	if got := ri.Roles(); got == nil || len(got) != 0 {
		t.Fatalf("no tags: roles %#v, want empty and non-nil", got)
	}
}
