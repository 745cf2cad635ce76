package kms

import (
	"context"
	"errors"
	"time"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// Directory is where tenants and principals live and where their
// credentials are issued and revoked. In keyflow it is the NATS account
// resolver (workers/natsauth): a tenant is a NATS account, a principal a
// user of it whose roles are tags in its user JWT, so the NATS server
// vouches for both on every request. The domain decides who may do what
// (roles, separation of duties) and records it; the directory does it.
//
// Implementations return errors wrapping ErrStoreExists and
// ErrStoreNotFound where those apply.
type Directory interface {
	// PlatformTenant is the tenant whose tenant admins may create tenants.
	PlatformTenant() string
	CreateTenant(ctx context.Context, tenant string, policy keypolicy.RolePolicy) error
	RolePolicy(ctx context.Context, tenant string) (keypolicy.RolePolicy, error)
	// IssuePrincipal registers a principal and returns its credential (a
	// user JWT) for publicKey, whose private half only the caller holds.
	IssuePrincipal(ctx context.Context, p IssuePrincipalParams) (credential string, err error)
	Principals(ctx context.Context, tenant string) ([]PrincipalInfo, error)
	// DisablePrincipal revokes every credential of the principal.
	DisablePrincipal(ctx context.Context, tenant, name string) error
}

// IssuePrincipalParams describe a principal to issue.
type IssuePrincipalParams struct {
	Tenant    string
	Name      string
	Roles     []keypolicy.Role
	PublicKey string
	CreatedBy string
}

// PrincipalInfo describes a principal (never its credentials).
type PrincipalInfo struct {
	Name       string
	Roles      []keypolicy.Role
	CreatedAt  time.Time
	CreatedBy  string
	DisabledAt *time.Time
}

func dirError(err error, what string) error {
	switch {
	case errors.Is(err, ErrStoreExists):
		return newError(CodeAlreadyExists, "%s already exists", what)
	case errors.Is(err, ErrStoreNotFound):
		return newError(CodeNotFound, "%s does not exist", what)
	}
	var ke *Error
	if errors.As(err, &ke) {
		return ke
	}
	return wrapError(CodeInternal, err, "failed to update the identity directory")
}

// CreateTenantParams are the inputs of CreateTenant.
type CreateTenantParams struct {
	Name string
	// Policy is the tenant's policy; nil means DefaultRolePolicy.
	Policy *keypolicy.RolePolicy
	// AdminName and AdminPublicKey issue the new tenant's first principal,
	// a tenant admin (default name "admin").
	AdminName      string
	AdminPublicKey string
}

// CreateTenantResult is the new tenant and its first principal's
// credential.
type CreateTenantResult struct {
	Tenant     string
	Policy     keypolicy.RolePolicy
	Admin      string
	Credential string
}

// CreateTenant creates a tenant with a first tenant admin. Only tenant
// admins of the platform tenant may.
func (s *Service) CreateTenant(ctx context.Context, c Caller, dir Directory, p CreateTenantParams) (res *CreateTenantResult, err error) {
	defer s.finish(ctx, c, events.TypeTenantCreated, &err, func() (string, map[string]any) {
		data := map[string]any{"tenant": truncate(p.Name, 64), "admin": truncate(p.AdminName, 64)}
		if res != nil {
			data["forbiddenRoleSets"] = roleSets(res.Policy.ForbiddenRoleSets)
		}
		return "", data
	}, func() { res = nil })
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if dir == nil {
		return nil, newError(CodeInternal, "tenant management is not available on this worker")
	}
	if c.Tenant != dir.PlatformTenant() {
		return nil, newError(CodeAccessDenied, "only tenant admins of the platform tenant may create tenants")
	}
	if !ValidTenant(p.Name) {
		return nil, newError(CodeValidation, "tenant name %q must be 1-63 characters of a-z0-9- starting with a letter or digit", truncate(p.Name, 64))
	}
	if p.AdminName == "" {
		p.AdminName = "admin"
	}
	if err := checkPrincipalName(p.AdminName); err != nil {
		return nil, err
	}
	pol := keypolicy.DefaultRolePolicy()
	if p.Policy != nil {
		pol = *p.Policy
	}
	if err := pol.Validate(); err != nil {
		return nil, policyError(err)
	}
	if err := dir.CreateTenant(ctx, p.Name, pol); err != nil {
		return nil, dirError(err, "tenant "+p.Name)
	}
	cred, err := dir.IssuePrincipal(ctx, IssuePrincipalParams{
		Tenant: p.Name, Name: p.AdminName, Roles: []keypolicy.Role{keypolicy.RoleTenantAdmin}, PublicKey: p.AdminPublicKey, CreatedBy: c.Tenant + "/" + c.Principal,
	})
	if err != nil {
		return nil, dirError(err, "principal "+p.AdminName)
	}
	return &CreateTenantResult{Tenant: p.Name, Policy: pol, Admin: p.AdminName, Credential: cred}, nil
}

func roleSets(sets [][]keypolicy.Role) [][]string {
	out := make([][]string, len(sets))
	for i, s := range sets {
		out[i] = keypolicy.RoleNames(s)
	}
	return out
}

// CreatePrincipalParams are the inputs of CreatePrincipal.
type CreatePrincipalParams struct {
	Name  string
	Roles []keypolicy.Role
	// PublicKey is the principal's public key (an NKEY user key); the
	// private half never leaves the caller.
	PublicKey string
}

// CreatePrincipal adds a principal to the caller's tenant, refusing a role
// combination the tenant policy forbids, and returns its credential.
func (s *Service) CreatePrincipal(ctx context.Context, c Caller, dir Directory, p CreatePrincipalParams) (info *PrincipalInfo, cred string, err error) {
	defer s.finish(ctx, c, events.TypePrincipalCreated, &err, func() (string, map[string]any) {
		return "", map[string]any{"principal": truncate(p.Name, 64), "roles": keypolicy.RoleNames(truncateRoles(p.Roles))}
	}, func() { info, cred = nil, "" })
	if err := checkCaller(c); err != nil {
		return nil, "", err
	}
	if dir == nil {
		return nil, "", newError(CodeInternal, "principal management is not available on this worker")
	}
	if err := checkPrincipalName(p.Name); err != nil {
		return nil, "", err
	}
	pol, err := dir.RolePolicy(ctx, c.Tenant)
	if err != nil {
		return nil, "", dirError(err, "tenant "+c.Tenant)
	}
	if err := pol.CheckRoles(p.Roles); err != nil {
		return nil, "", policyError(err)
	}
	cred, err = dir.IssuePrincipal(ctx, IssuePrincipalParams{Tenant: c.Tenant, Name: p.Name, Roles: p.Roles, PublicKey: p.PublicKey, CreatedBy: c.Principal})
	if err != nil {
		return nil, "", dirError(err, "principal "+p.Name)
	}
	return &PrincipalInfo{Name: p.Name, Roles: p.Roles, CreatedAt: s.now().UTC(), CreatedBy: c.Principal}, cred, nil
}

// truncateRoles bounds what a refused request can put in a record.
func truncateRoles(rs []keypolicy.Role) []keypolicy.Role {
	if len(rs) > 8 {
		rs = rs[:8]
	}
	out := make([]keypolicy.Role, len(rs))
	for i, r := range rs {
		out[i] = keypolicy.Role(truncate(string(r), 32))
	}
	return out
}

// ListPrincipals lists the caller's tenant's principals.
func (s *Service) ListPrincipals(ctx context.Context, c Caller, dir Directory) (out []PrincipalInfo, err error) {
	defer s.finish(ctx, c, events.TypePrincipalListed, &err, func() (string, map[string]any) {
		return "", map[string]any{"count": len(out)}
	}, func() { out = nil })
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if dir == nil {
		return nil, newError(CodeInternal, "principal management is not available on this worker")
	}
	out, err = dir.Principals(ctx, c.Tenant)
	if err != nil {
		return nil, dirError(err, "tenant "+c.Tenant)
	}
	return out, nil
}

// DisablePrincipal disables a principal of the caller's tenant at once, in
// two places: the workers' deny list (so every worker refuses its next
// request, whatever credential it presents), then the directory (the NATS
// server revokes its credentials and closes its connections).
func (s *Service) DisablePrincipal(ctx context.Context, c Caller, dir Directory, name string) (err error) {
	defer s.finish(ctx, c, events.TypePrincipalDisabled, &err, func() (string, map[string]any) {
		return "", map[string]any{"principal": truncate(name, 64)}
	}, nil)
	if err := checkCaller(c); err != nil {
		return err
	}
	if dir == nil {
		return newError(CodeInternal, "principal management is not available on this worker")
	}
	if err := checkPrincipalName(name); err != nil {
		return err
	}
	if name == c.Principal {
		return newError(CodeValidation, "a principal cannot disable itself; ask another tenant admin")
	}
	known, err := dir.Principals(ctx, c.Tenant)
	if err != nil {
		return dirError(err, "tenant "+c.Tenant)
	}
	found := false
	for _, p := range known {
		found = found || p.Name == name
	}
	if !found {
		return newError(CodeNotFound, "principal %s does not exist", name)
	}
	if err := s.addToDenyList(ctx, c.Tenant, name); err != nil {
		return err
	}
	if err := dir.DisablePrincipal(ctx, c.Tenant, name); err != nil {
		return dirError(err, "principal "+name)
	}
	return nil
}

func (s *Service) addToDenyList(ctx context.Context, tenant, name string) error {
	st, ok := s.authzStore()
	if !ok {
		return nil // the directory's revocation is then the only wall
	}
	for range 5 {
		d, rev, err := st.GetDisabled(ctx, tenant)
		if errors.Is(err, ErrStoreNotFound) {
			d, rev = &DisabledPrincipals{Tenant: tenant, Principals: map[string]time.Time{}}, 0
		} else if err != nil {
			return wrapError(CodeInternal, err, "failed to read the deny list")
		}
		if d.Principals == nil {
			d.Principals = map[string]time.Time{}
		}
		if _, ok := d.Principals[name]; ok {
			return nil
		}
		d.Principals[name] = s.now().UTC()
		_, err = st.PutDisabled(ctx, d, rev)
		if errors.Is(err, ErrStoreConflict) || errors.Is(err, ErrStoreExists) {
			continue
		}
		if err != nil {
			return wrapError(CodeInternal, err, "failed to store the deny list")
		}
		s.InvalidateAuthz(tenant, "")
		return nil
	}
	return newError(CodeConflict, "the deny list changed concurrently; retry")
}
