package testbed

import (
	"context"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// PlatformTenant is the bed's tenant whose tenant admins may create
// tenants.
const PlatformTenant = "alpha"

// watchAuthz makes svc drop cached key policies, grants and deny lists
// when the store changes them, as every worker does.
func (b *Bed) watchAuthz(svc *kms.Service) {
	b.T.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b.T.Cleanup(cancel)
	if err := b.Store.WatchAuthz(ctx, svc); err != nil {
		b.T.Fatal(err)
	}
}

// PrincipalCreds registers a principal of tenant with exactly the given
// roles, as `keyflow principal create` does (no tenant policy is checked:
// the fixture may build any combination), and returns its creds file. The
// user key is generated here, as a client would.
func (b *Bed) PrincipalCreds(tenant, name string, roles ...keypolicy.Role) []byte {
	b.T.Helper()
	ukp, err := nkeys.CreateUser()
	if err != nil {
		b.T.Fatal(err)
	}
	pub, _ := ukp.PublicKey()
	tok, err := b.Identity.IssuePrincipal(context.Background(), kms.IssuePrincipalParams{Tenant: tenant, Name: name, Roles: roles, PublicKey: pub, CreatedBy: "testbed"})
	if err != nil {
		b.T.Fatal(err)
	}
	seed, _ := ukp.Seed()
	creds, err := jwt.FormatUserConfig(tok, seed)
	if err != nil {
		b.T.Fatal(err)
	}
	return creds
}

// Principal registers a principal with the given roles and connects as it.
func (b *Bed) Principal(tenant, name string, roles ...keypolicy.Role) *client.Client {
	b.T.Helper()
	return b.ClientWithCreds(tenant, name, b.PrincipalCreds(tenant, name, roles...))
}

// ClientWithCreds connects with a creds file through the tenant's account.
func (b *Bed) ClientWithCreds(tenant, name string, creds []byte) *client.Client {
	b.T.Helper()
	nc, err := natsserver.Connect(b.NATS, creds, name)
	if err != nil {
		b.T.Fatal(err)
	}
	b.T.Cleanup(nc.Close)
	c, err := client.Dial(context.Background(), client.Options{Conn: nc, Creds: creds, Tenant: tenant, Timeout: 20 * time.Second})
	if err != nil {
		b.T.Fatal(err)
	}
	return c
}
