package rpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
	"github.com/keyflow/keyflow/schemas"
	"github.com/keyflow/keyflow/workers/natsauth"
)

// The authorization matrix: each test drives the real NATS server (operator
// mode, tenant accounts, shared service imports) and the real worker, and
// checks both the refusal the caller gets and the audit record that names
// the rule.

// auditOf returns the one audit event of tenant with the request ID of a
// refusal, checking it against its schema.
func auditOf(t *testing.T, b *testbed.Bed, tenant string, ce *client.Error) testbed.AuditEvent {
	t.Helper()
	var found []testbed.AuditEvent
	for _, e := range b.Events(tenant) {
		if e.RequestID == ce.RequestID {
			found = append(found, e)
		}
	}
	if len(found) != 1 {
		t.Fatalf("request %s (%s): %d audit events in %s, want 1", ce.RequestID, ce.Message, len(found), tenant)
	}
	if err := schemas.ValidateEvent(found[0].Raw); err != nil {
		t.Errorf("audit event: %v", err)
	}
	return found[0]
}

// wantDenied asserts an AccessDenied refusal recorded as
// io.keyflow.access.denied.v1 with the given rule and principal.
func wantDenied(t *testing.T, b *testbed.Bed, err error, tenant, principal, rule string) testbed.AuditEvent {
	t.Helper()
	ce := wantErr(t, err, kms.CodeAccessDenied)
	e := auditOf(t, b, tenant, ce)
	if e.Type != events.TypeAccessDenied || e.Outcome != events.OutcomeDenied || e.ErrorCode != string(kms.CodeAccessDenied) {
		t.Errorf("audit event %s outcome %s code %s, want %s denied AccessDeniedException", e.Type, e.Outcome, e.ErrorCode, events.TypeAccessDenied)
	}
	if e.Principal != principal {
		t.Errorf("audit event names principal %q, want %q", e.Principal, principal)
	}
	if e.Data["rule"] != rule {
		t.Errorf("audit event names rule %v, want %q", e.Data["rule"], rule)
	}
	return e
}

func TestAuthzWrongRole(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	ctx := context.Background()
	admin := b.Principal("alpha", "kadmin", keypolicy.RoleKeyAdmin)
	user := b.Principal("alpha", "app", keypolicy.RoleCryptoUser)
	auditor := b.Principal("alpha", "audit", keypolicy.RoleAuditor)

	k, err := admin.CreateKey(ctx, api.CreateKeyRequest{Alias: "roles"})
	if err != nil {
		t.Fatal(err)
	}
	ct, err := user.Encrypt(ctx, api.EncryptRequest{KeyID: "alias/roles", Plaintext: []byte("s3cret")})
	if err != nil {
		t.Fatal(err)
	}

	// The key admin manages keys but never sees plaintext.
	_, err = admin.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: []byte("x")})
	wantDenied(t, b, err, "alpha", "kadmin", "role:crypto-user required")
	_, err = admin.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct.CiphertextBlob})
	wantDenied(t, b, err, "alpha", "kadmin", "role:crypto-user required")
	// The crypto user uses keys but cannot change them.
	_, err = user.CreateKey(ctx, api.CreateKeyRequest{})
	wantDenied(t, b, err, "alpha", "app", "role:key-admin required")
	_, err = user.SetKeyPolicy(ctx, k.KeyID, []byte(`{"version":"2026-11-01","statements":[{"sid":"All","effect":"Allow","principals":["*"],"operations":["*"]}]}`))
	wantDenied(t, b, err, "alpha", "app", "role:key-admin required")
	// The auditor reads the trail and nothing else.
	_, err = auditor.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct.CiphertextBlob})
	wantDenied(t, b, err, "alpha", "audit", "role:crypto-user required")
	_, _, err = auditor.CreatePrincipal(ctx, "mallory", []string{"crypto-user"})
	wantDenied(t, b, err, "alpha", "audit", "role:tenant-admin required")
	if _, err := auditor.AuditTail(ctx, api.AuditTailRequest{Limit: 10}); err != nil {
		t.Fatalf("auditor reading the trail: %v", err)
	}
	_, err = user.AuditTail(ctx, api.AuditTailRequest{Limit: 10})
	wantDenied(t, b, err, "alpha", "app", "role:auditor required")
	// A principal with no role at all is refused everything.
	nobody := b.Principal("alpha", "nobody")
	_, err = nobody.ListKeys(ctx)
	wantDenied(t, b, err, "alpha", "nobody", "role:key-admin|crypto-user|auditor required")
	// The denial never reached the operation: no encrypt event for kadmin.
	for _, e := range b.EventsOfType("alpha", events.TypeEncrypt) {
		if e.Principal == "kadmin" {
			t.Errorf("a denied encrypt reached the operation: %+v", e)
		}
	}
}

func TestAuthzSeparationOfDuties(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	ctx := context.Background()
	platform := b.Client("alpha", "alice") // every role, in the platform tenant

	// A new tenant gets the default policy: key-admin with crypto-user is
	// forbidden.
	tr, gammaAdminCreds, err := platform.CreateTenant(ctx, client.CreateTenantParams{Tenant: "gamma"})
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.ForbiddenRoleSets) != 1 || strings.Join(tr.ForbiddenRoleSets[0], ",") != "key-admin,crypto-user" {
		t.Fatalf("default tenant policy %v", tr.ForbiddenRoleSets)
	}
	gadmin := b.ClientWithCreds("gamma", "admin", gammaAdminCreds)
	_, _, err = gadmin.CreatePrincipal(ctx, "both", []string{"key-admin", "crypto-user"})
	ce := wantErr(t, err, kms.CodeValidation)
	if !strings.Contains(ce.Message, "forbids one principal to hold key-admin and crypto-user") {
		t.Errorf("message %q does not name the combination", ce.Message)
	}
	e := auditOf(t, b, "gamma", ce)
	if e.Type != events.TypePrincipalCreated || e.Outcome != events.OutcomeFailure || e.Principal != "admin" {
		t.Errorf("refused principal audit: %s %s %s", e.Type, e.Outcome, e.Principal)
	}
	// Separate principals for the two duties are fine, and several
	// compatible roles on one principal too.
	if _, _, err := gadmin.CreatePrincipal(ctx, "keys", []string{"key-admin", "approver"}); err != nil {
		t.Fatal(err)
	}
	p, userCreds, err := gadmin.CreatePrincipal(ctx, "app", []string{"crypto-user"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "app" || len(p.Roles) != 1 {
		t.Fatalf("principal %+v", p)
	}
	// The issued creds work, with the roles the server vouches for.
	app := b.ClientWithCreds("gamma", "app", userCreds)
	if _, err := app.ListKeys(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = app.CreateKey(ctx, api.CreateKeyRequest{})
	wantDenied(t, b, err, "gamma", "app", "role:key-admin required")
	// Only the platform tenant's tenant admins create tenants.
	_, _, err = gadmin.CreateTenant(ctx, client.CreateTenantParams{Tenant: "delta"})
	ce = wantErr(t, err, kms.CodeAccessDenied)
	if e := auditOf(t, b, "gamma", ce); e.Type != events.TypeTenantCreated || e.Outcome != events.OutcomeDenied {
		t.Errorf("refused tenant creation audit: %s %s", e.Type, e.Outcome)
	}
	list, err := gadmin.ListPrincipals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range list.Principals {
		names = append(names, p.Name)
	}
	if strings.Join(names, ",") != "admin,app,keys" {
		t.Errorf("principals %v", names)
	}
}

func TestAuthzCrossTenant(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	ctx := context.Background()
	alice := b.Client("alpha", "alice")
	mallory := b.Principal("beta", "mallory", keypolicy.RoleCryptoUser, keypolicy.RoleKeyAdmin, keypolicy.RoleAuditor)

	k, err := alice.CreateKey(ctx, api.CreateKeyRequest{Alias: "payroll"})
	if err != nil {
		t.Fatal(err)
	}
	ct, err := alice.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: []byte("salary")})
	if err != nil {
		t.Fatal(err)
	}
	before := len(b.Events("alpha"))

	// Through its own account, another tenant's key does not exist:
	// the same answers as for a key that never existed.
	_, err = mallory.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: []byte("x")})
	ce := wantErr(t, err, kms.CodeNotFound)
	if e := auditOf(t, b, "beta", ce); e.Type != events.TypeEncrypt || e.Subject != "" || e.Outcome != events.OutcomeFailure {
		t.Errorf("cross-tenant encrypt audit: %s subject %q %s", e.Type, e.Subject, e.Outcome)
	}
	_, err = mallory.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct.CiphertextBlob})
	ce = wantErr(t, err, kms.CodeInvalidCiphertext)
	if e := auditOf(t, b, "beta", ce); e.Type != events.TypeDecrypt || e.Subject != "" {
		t.Errorf("cross-tenant decrypt audit: %s subject %q", e.Type, e.Subject)
	}
	_, err = mallory.DescribeKey(ctx, "alias/payroll")
	wantErr(t, err, kms.CodeNotFound)
	_, err = mallory.ListGrants(ctx, k.KeyID)
	wantErr(t, err, kms.CodeNotFound)

	// Addressing the other tenant's subjects directly: the server refuses
	// the publish (the user may publish only to its tenant's subjects).
	other, err := client.Dial(ctx, client.Options{Conn: mallorysConn(t, b), Tenant: "alpha", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct.CiphertextBlob})
	if err == nil {
		t.Fatal("a beta principal reached alpha's subjects")
	}
	var cerr *client.Error
	if !errors.As(err, &cerr) && !errors.Is(err, client.ErrNoService) && !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "timeout") {
		t.Errorf("unexpected error %v", err)
	}
	// Nothing of it reached alpha's trail.
	for _, e := range b.Events("alpha")[before:] {
		t.Errorf("alpha's trail got an event from another tenant's requests: %s %s", e.Type, e.Principal)
	}
}

// mallorysConn connects a beta principal whose permissions are beta's.
func mallorysConn(t *testing.T, b *testbed.Bed) *nats.Conn {
	t.Helper()
	nc, err := connectSigned(b.NATS, b.PrincipalCreds("beta", "mallory2", keypolicy.RoleCryptoUser), "mallory2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func TestAuthzForgedTenant(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	ctx := context.Background()
	alice := b.Client("alpha", "alice")
	if _, err := alice.CreateKey(ctx, api.CreateKeyRequest{Alias: "forge"}); err != nil {
		t.Fatal(err)
	}
	creds := b.PrincipalCreds("alpha", "eve", keypolicy.RoleAuditor)
	nc, err := connectSigned(b.NATS, creds, "eve")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	eve, err := client.Dial(ctx, client.Options{Conn: nc, Creds: creds, Tenant: "alpha", Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}

	// A tenant named in the body is not the caller's tenant.
	_, err = eve.AuditTail(ctx, api.AuditTailRequest{Tenant: "beta", Limit: 1})
	ce := wantErr(t, err, kms.CodeAccessDenied)
	if e := auditOf(t, b, "alpha", ce); e.Type != events.TypeRequestRejected || e.Principal != "eve" {
		t.Errorf("forged tenant audit: %s %s", e.Type, e.Principal)
	}
	err = eve.CallRaw(ctx, api.OpEncrypt, []byte(`{"keyId":"alias/forge","plaintext":"aGk=","tenant":"beta"}`), nil)
	ce = wantErr(t, err, kms.CodeAccessDenied) // roles first: eve may not encrypt at all
	auditOf(t, b, "alpha", ce)

	// A forged Nats-Request-Info header (another tenant, another user,
	// more roles) is replaced by the server: the worker sees eve.
	forged, _ := json.Marshal(map[string]any{
		"acc": "ABETAACCOUNT", "user": "UADMIN", "name_tag": "admin",
		"tags": []string{"keyflow_tenant:beta", "role:crypto-user", "role:key-admin"},
	})
	msg := nats.NewMsg(api.Subject("alpha", api.OpEncrypt))
	msg.Header.Set(natsauth.RequestInfoHeader, string(forged))
	msg.Header.Set(api.HeaderRequestID, "forged-header-1")
	msg.Data = []byte(`{"keyId":"alias/forge","plaintext":"aGk="}`)
	reply, err := signedRequest(nc, msg, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code := reply.Header.Get(api.HeaderErrorCode); code != string(kms.CodeAccessDenied) {
		t.Fatalf("forged header: reply code %q (%s), want AccessDenied", code, reply.Data)
	}
	e := auditOf(t, b, "alpha", &client.Error{Code: string(kms.CodeAccessDenied), RequestID: "forged-header-1"})
	if e.Principal != "eve" || e.Tenant != "alpha" || e.Data["rule"] != "role:crypto-user required" {
		t.Errorf("forged header audit: principal %q tenant %q rule %v", e.Principal, e.Tenant, e.Data["rule"])
	}
	for _, e := range b.Events("beta") {
		t.Errorf("beta's trail got %s from a forged request", e.Type)
	}
}

func TestAuthzMissingGrant(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	ctx := context.Background()
	admin := b.Principal("alpha", "kadmin", keypolicy.RoleKeyAdmin)
	alice := b.Principal("alpha", "alice", keypolicy.RoleCryptoUser)
	bob := b.Principal("alpha", "bob", keypolicy.RoleCryptoUser)

	k, err := admin.CreateKey(ctx, api.CreateKeyRequest{Alias: "granted"})
	if err != nil {
		t.Fatal(err)
	}
	// Default policy: every crypto user may use the key.
	if _, err := bob.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: []byte("hi")}); err != nil {
		t.Fatal(err)
	}
	pol, err := admin.GetKeyPolicy(ctx, k.KeyID)
	if err != nil || !pol.Default {
		t.Fatalf("policy of a new key: %+v %v", pol, err)
	}
	// Only alice uses it from now on.
	_, err = admin.SetKeyPolicy(ctx, k.KeyID, []byte(`{"version":"2026-11-01","statements":[
		{"sid":"Admins","effect":"Allow","principals":["role:key-admin"],"operations":["DescribeKey","RotateKey","CreateGrant","ListGrants","RevokeGrant"]},
		{"sid":"Alice","effect":"Allow","principals":["alice"],"operations":["Encrypt","Decrypt"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	ct, err := alice.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: []byte("for bob")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bob.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct.CiphertextBlob})
	e := wantDenied(t, b, err, "alpha", "bob", "grant:none")
	if e.Subject != kms.ResourceName("alpha", k.KeyID) || e.Data["keyId"] != k.KeyID || e.Data["action"] != "Decrypt" {
		t.Errorf("denial does not name the key and action: %s %v", e.Subject, e.Data)
	}
	// Re-encryption needs ReEncryptFrom and ReEncryptTo (here on the same
	// key: the destination defaults to the source).
	_, err = alice.ReEncrypt(ctx, api.ReEncryptRequest{CiphertextBlob: ct.CiphertextBlob})
	if e := wantDenied(t, b, err, "alpha", "alice", "grant:none"); e.Data["action"] != "ReEncryptFrom" {
		t.Errorf("re-encrypt denial action %v", e.Data["action"])
	}
	if _, err := admin.CreateGrant(ctx, api.CreateGrantRequest{KeyID: k.KeyID, Grantee: "alice", Operations: []string{"ReEncryptFrom"}}); err != nil {
		t.Fatal(err)
	}
	_, err = alice.ReEncrypt(ctx, api.ReEncryptRequest{CiphertextBlob: ct.CiphertextBlob})
	if e := wantDenied(t, b, err, "alpha", "alice", "grant:none"); e.Data["action"] != "ReEncryptTo" {
		t.Errorf("re-encrypt denial action %v", e.Data["action"])
	}
	// A grant lets bob decrypt, and only decrypt.
	g, err := admin.CreateGrant(ctx, api.CreateGrantRequest{KeyID: k.KeyID, Grantee: "bob", Operations: []string{"Decrypt"}})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := bob.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct.CiphertextBlob}); err != nil || string(out.Plaintext) != "for bob" {
		t.Fatalf("decrypt under a grant: %v", err)
	}
	_, err = bob.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: []byte("x")})
	wantDenied(t, b, err, "alpha", "bob", "grant:none")
	// Revoked, it is gone at once.
	if err := admin.RevokeGrant(ctx, k.KeyID, g.GrantID); err != nil {
		t.Fatal(err)
	}
	_, err = bob.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct.CiphertextBlob})
	wantDenied(t, b, err, "alpha", "bob", "grant:none")
	// A grant its grantee retires.
	g, err = admin.CreateGrant(ctx, api.CreateGrantRequest{KeyID: k.KeyID, Grantee: "bob", Operations: []string{"Decrypt"}})
	if err != nil {
		t.Fatal(err)
	}
	err = alice.RetireGrant(ctx, k.KeyID, g.GrantID)
	if e := auditOf(t, b, "alpha", wantErr(t, err, kms.CodeAccessDenied)); e.Type != events.TypeGrantRetired || e.Outcome != events.OutcomeDenied {
		t.Errorf("alice retiring bob's grant: %s %s", e.Type, e.Outcome)
	}
	if err := bob.RetireGrant(ctx, k.KeyID, g.GrantID); err != nil {
		t.Fatal(err)
	}
	_, err = bob.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct.CiphertextBlob})
	wantDenied(t, b, err, "alpha", "bob", "grant:none")
	// Every grant change is on the record.
	for _, typ := range []string{events.TypeGrantCreated, events.TypeGrantRevoked, events.TypeGrantRetired, events.TypeKeyPolicyChanged} {
		if len(b.EventsOfType("alpha", typ)) == 0 {
			t.Errorf("no %s event", typ)
		}
	}
}

func TestAuthzConditionMismatch(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	ctx := context.Background()
	admin := b.Principal("alpha", "kadmin", keypolicy.RoleKeyAdmin)
	app := b.Principal("alpha", "svc-billing", keypolicy.RoleCryptoUser)
	other := b.Principal("alpha", "svc-web", keypolicy.RoleCryptoUser)
	k, err := admin.CreateKey(ctx, api.CreateKeyRequest{Alias: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.SetKeyPolicy(ctx, k.KeyID, []byte(`{"version":"2026-11-01","statements":[
		{"sid":"BillingOnly","effect":"Allow","principals":["role:crypto-user"],"operations":["Encrypt","Decrypt","GenerateDataKey"],
		 "conditions":{"encryptionContextSubset":{"app":"billing-secret-value"},"sourcePrincipals":["svc-bill*"]}},
		{"sid":"Admins","effect":"Allow","principals":["role:key-admin"],"operations":["CreateGrant","ListGrants","RevokeGrant"]},
		{"sid":"Expired","effect":"Allow","principals":["svc-web"],"operations":["DescribeKey"],"conditions":{"notAfter":"2020-01-01T00:00:00Z"}},
		{"sid":"NoDataKeys","effect":"Deny","principals":["*"],"operations":["GenerateDataKey"],"conditions":{"encryptionContextSubset":{"tier":"cold"}}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	ec := map[string]string{"app": "billing-secret-value"}
	ct, err := app.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: []byte("invoice"), EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	// The wrong encryption context.
	_, err = app.Encrypt(ctx, api.EncryptRequest{KeyID: k.KeyID, Plaintext: []byte("x"), EncryptionContext: map[string]string{"app": "web"}})
	e := wantDenied(t, b, err, "alpha", "svc-billing", "condition:encryptionContext")
	if strings.Contains(string(e.Raw), "billing-secret-value") {
		t.Errorf("the denial reveals the value the condition expected: %s", e.Raw)
	}
	ce := wantErr(t, err, kms.CodeAccessDenied)
	if strings.Contains(ce.Message, "billing-secret-value") || strings.Contains(ce.Message, "BillingOnly") {
		t.Errorf("the reply reveals the policy: %s", ce.Message)
	}
	_, err = app.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct.CiphertextBlob})
	wantDenied(t, b, err, "alpha", "svc-billing", "condition:encryptionContext")
	if out, err := app.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct.CiphertextBlob, EncryptionContext: ec}); err != nil || string(out.Plaintext) != "invoice" {
		t.Fatalf("decrypt with the right context: %v", err)
	}
	// The wrong source principal (same role, same context).
	_, err = other.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct.CiphertextBlob, EncryptionContext: ec})
	wantDenied(t, b, err, "alpha", "svc-web", "condition:sourcePrincipal")
	// Outside the time window.
	_, err = other.DescribeKey(ctx, k.KeyID)
	wantDenied(t, b, err, "alpha", "svc-web", "condition:timeWindow")
	// An explicit Deny wins over the Allow.
	cold := map[string]string{"app": "billing-secret-value", "tier": "cold"}
	_, err = app.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: k.KeyID, EncryptionContext: cold})
	wantDenied(t, b, err, "alpha", "svc-billing", "key-policy:statement NoDataKeys")
	if _, err := app.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: k.KeyID, EncryptionContext: ec}); err != nil {
		t.Fatal(err)
	}
	// Batches are checked item by item: one item against the policy
	// refuses the batch.
	_, err = app.BatchEncrypt(ctx, []api.EncryptRequest{
		{KeyID: k.KeyID, Plaintext: []byte("a"), EncryptionContext: ec},
		{KeyID: k.KeyID, Plaintext: []byte("b")},
	})
	wantDenied(t, b, err, "alpha", "svc-billing", "condition:encryptionContext")
	// A grant's constraints are conditions too.
	if _, err := admin.CreateGrant(ctx, api.CreateGrantRequest{KeyID: k.KeyID, Grantee: "svc-web", Operations: []string{"Decrypt"},
		Constraints: &api.GrantConstraints{EncryptionContextEquals: map[string]string{"app": "billing-secret-value"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct.CiphertextBlob, EncryptionContext: ec}); err != nil {
		t.Fatalf("decrypt under a constrained grant: %v", err)
	}
}

func TestAuthzDisabledPrincipal(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	ctx := context.Background()
	admin := b.Client("alpha", "alice")
	if _, err := admin.CreateKey(ctx, api.CreateKeyRequest{Alias: "d"}); err != nil {
		t.Fatal(err)
	}
	_, creds, err := admin.CreatePrincipal(ctx, "carol", []string{"crypto-user"})
	if err != nil {
		t.Fatal(err)
	}
	asyncErrs := make(chan error, 4)
	nc, err := connectOnce(b, creds, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case asyncErrs <- err:
		default:
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	carol, err := client.Dial(ctx, client.Options{Conn: nc, Creds: creds, Tenant: "alpha", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := carol.Encrypt(ctx, api.EncryptRequest{KeyID: "alias/d", Plaintext: []byte("ok")}); err != nil {
		t.Fatal(err)
	}
	if err := admin.DisablePrincipal(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	if n := len(b.EventsOfType("alpha", events.TypePrincipalDisabled)); n != 1 {
		t.Errorf("%d principal.disabled events, want 1", n)
	}
	// The NATS server revoked carol's user JWT and closed her connection
	// (the push completed before DisablePrincipal returned): her next
	// request fails, and the server said why.
	if _, err := carol.Encrypt(ctx, api.EncryptRequest{KeyID: "alias/d", Plaintext: []byte("again")}); err == nil {
		t.Fatal("a disabled principal's next request succeeded")
	}
	select {
	case err := <-asyncErrs:
		if !errors.Is(err, nats.ErrAuthRevoked) {
			t.Errorf("the server told carol's connection %v, want %v", err, nats.ErrAuthRevoked)
		}
	case <-time.After(20 * time.Second):
		t.Error("the server never told carol's connection that it was revoked")
	}
	// A credential the server does not know to be revoked (a copy issued
	// outside keyflow's record, or a server that missed the update) still
	// reaches the worker, whose deny list refuses it.
	stale, err := b.Identity.UserCreds("alpha", "carol")
	if err != nil {
		t.Fatal(err)
	}
	carol2 := b.ClientWithCreds("alpha", "carol", stale)
	_, err = carol2.Encrypt(ctx, api.EncryptRequest{KeyID: "alias/d", Plaintext: []byte("stale")})
	wantDenied(t, b, err, "alpha", "carol", "principal:disabled")
	// The list shows it; a tenant admin cannot disable themselves.
	list, err := admin.ListPrincipals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list.Principals {
		if p.Name == "carol" && p.DisabledDate == nil {
			t.Error("carol is listed as enabled")
		}
	}
	wantErr(t, admin.DisablePrincipal(ctx, "alice"), kms.CodeValidation)
	wantErr(t, admin.DisablePrincipal(ctx, "nobody"), kms.CodeNotFound)
}

// connectOnce connects in-process without reconnecting, so a connection
// the server closes fails its requests at once.
func connectOnce(b *testbed.Bed, creds []byte, opts ...nats.Option) (*nats.Conn, error) {
	opt, err := natsauth.CredsOption(creds)
	if err != nil {
		return nil, err
	}
	return nats.Connect("", append([]nats.Option{nats.InProcessServer(b.NATS), opt, nats.NoReconnect()}, opts...)...)
}

func TestEveryOperationHasARole(t *testing.T) {
	b := testbed.New(t)
	srv := b.StartRPC(nil)
	ops := srv.Operations()
	if len(ops) < 30 {
		t.Fatalf("only %d operations served: %v", len(ops), ops)
	}
	for _, op := range ops {
		if _, ok := keypolicy.PermissionOf(op); !ok {
			t.Errorf("operation %s has no row in kms's operation table: it is refused to everyone", op)
		}
	}
}
