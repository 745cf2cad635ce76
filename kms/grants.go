package kms

import (
	"context"
	"errors"
	"slices"

	"github.com/google/uuid"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// errNoAuthzStore is returned by policy and grant operations when the
// store cannot hold them.
var errNoAuthzStore = newError(CodeInternal, "this deployment's store cannot hold key policies and grants")

// updateKeyAuthz applies change to a key's policy-and-grants record with
// optimistic concurrency, retrying on a conflict, and drops this worker's
// cached copy (the store watch drops the others').
func (s *Service) updateKeyAuthz(ctx context.Context, k *Key, change func(a *keypolicy.KeyAuthz) error) (*keypolicy.KeyAuthz, error) {
	st, ok := s.authzStore()
	if !ok {
		return nil, errNoAuthzStore
	}
	for range 5 {
		a, rev, err := st.GetKeyAuthz(ctx, k.Tenant, k.ID)
		if errors.Is(err, ErrStoreNotFound) {
			a, rev = &keypolicy.KeyAuthz{Tenant: k.Tenant, KeyID: k.ID}, 0
		} else if err != nil {
			return nil, wrapError(CodeInternal, err, "failed to read the key policy")
		}
		if err := change(a); err != nil {
			return nil, err
		}
		_, err = st.PutKeyAuthz(ctx, a, rev)
		if errors.Is(err, ErrStoreConflict) || errors.Is(err, ErrStoreExists) {
			continue
		}
		if err != nil {
			return nil, wrapError(CodeInternal, err, "failed to store the key policy")
		}
		s.InvalidateAuthz(k.Tenant, k.ID)
		return a, nil
	}
	return nil, newError(CodeConflict, "the key's policy and grants changed concurrently; retry")
}

// SetKeyPolicyResult is the output of SetKeyPolicy.
type SetKeyPolicyResult struct {
	KeyID  string
	Policy *keypolicy.KeyPolicy
}

// SetKeyPolicy replaces a key's policy with doc, a JSON document valid
// against schemas/policy/KeyPolicy.json.
func (s *Service) SetKeyPolicy(ctx context.Context, c Caller, keyRef string, doc []byte) (res *SetKeyPolicyResult, err error) {
	var k *Key
	defer s.finish(ctx, c, events.TypeKeyPolicyChanged, &err, func() (string, map[string]any) {
		subject, data := "", map[string]any{"keyRef": truncate(keyRef, 64)}
		if k != nil {
			subject = k.ResourceName()
		}
		if res != nil {
			sids := make([]string, 0, len(res.Policy.Statements))
			for _, st := range res.Policy.Statements {
				sids = append(sids, st.Sid)
			}
			data["statements"] = sids
		}
		return subject, data
	}, func() { res = nil })
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if k, _, err = s.resolve(ctx, c.Tenant, keyRef); err != nil {
		return nil, err
	}
	p, err := parseKeyPolicy(doc)
	if err != nil {
		return nil, err
	}
	if _, err := s.updateKeyAuthz(ctx, k, func(a *keypolicy.KeyAuthz) error { a.Policy = p; return nil }); err != nil {
		return nil, err
	}
	return &SetKeyPolicyResult{KeyID: k.ID, Policy: p}, nil
}

// GetKeyPolicy returns a key's policy; nil means the default (roles
// decide).
func (s *Service) GetKeyPolicy(ctx context.Context, c Caller, keyRef string) (keyID string, p *keypolicy.KeyPolicy, err error) {
	var k *Key
	defer s.finish(ctx, c, events.TypeKeyPolicyRead, &err, func() (string, map[string]any) {
		subject := ""
		if k != nil {
			subject = k.ResourceName()
		}
		return subject, map[string]any{"keyRef": truncate(keyRef, 64)}
	}, func() { p = nil })
	if err := checkCaller(c); err != nil {
		return "", nil, err
	}
	if k, _, err = s.resolve(ctx, c.Tenant, keyRef); err != nil {
		return "", nil, err
	}
	a, err := s.keyAuthz(ctx, c.Tenant, k.ID)
	if err != nil {
		return "", nil, err
	}
	if a != nil {
		p = a.Policy
	}
	return k.ID, p, nil
}

// CreateGrantParams are the inputs of CreateGrant.
type CreateGrantParams struct {
	KeyRef            string
	Grantee           string
	Operations        []keypolicy.Action
	Constraints       *keypolicy.Conditions
	RetiringPrincipal string
}

// CreateGrant gives a principal of the key's tenant narrow use of the key:
// the listed operations, under the constraints, until Constraints.NotAfter.
func (s *Service) CreateGrant(ctx context.Context, c Caller, p CreateGrantParams) (g *keypolicy.Grant, err error) {
	var k *Key
	defer s.finish(ctx, c, events.TypeGrantCreated, &err, func() (string, map[string]any) {
		subject := ""
		data := map[string]any{"keyRef": truncate(p.KeyRef, 64), "grantee": truncate(p.Grantee, 64)}
		if k != nil {
			subject = k.ResourceName()
		}
		if g != nil {
			data["grantId"] = g.ID
			ops := make([]string, len(g.Operations))
			for i, o := range g.Operations {
				ops[i] = string(o)
			}
			data["operations"] = ops
			if g.Constraints != nil && g.Constraints.NotAfter != nil {
				data["expiresAt"] = g.Constraints.NotAfter.UTC().Format("2006-01-02T15:04:05Z07:00")
			}
		}
		return subject, data
	}, func() { g = nil })
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if err := checkPrincipalName(p.Grantee); err != nil {
		return nil, err
	}
	if p.RetiringPrincipal != "" {
		if err := checkPrincipalName(p.RetiringPrincipal); err != nil {
			return nil, err
		}
	}
	if len(p.Operations) == 0 {
		return nil, newError(CodeValidation, "a grant needs at least one operation; operations: %v", keypolicy.PolicyActions())
	}
	for _, o := range p.Operations {
		if !slices.Contains(keypolicy.PolicyActions(), o) {
			return nil, newError(CodeValidation, "unknown grant operation %q; operations: %v", truncate(string(o), 64), keypolicy.PolicyActions())
		}
	}
	if err := checkConditions(p.Constraints); err != nil {
		return nil, err
	}
	if p.Constraints != nil && p.Constraints.NotAfter != nil && !p.Constraints.NotAfter.After(s.now()) {
		return nil, newError(CodeValidation, "the grant's expiry is in the past")
	}
	if k, _, err = s.resolve(ctx, c.Tenant, p.KeyRef); err != nil {
		return nil, err
	}
	g = &keypolicy.Grant{
		ID: uuid.NewString(), KeyID: k.ID, Grantee: p.Grantee, Operations: slices.Clone(p.Operations),
		Constraints: p.Constraints, RetiringPrincipal: p.RetiringPrincipal,
		CreatedAt: s.now().UTC(), CreatedBy: c.Principal,
	}
	_, err = s.updateKeyAuthz(ctx, k, func(a *keypolicy.KeyAuthz) error {
		if len(a.Grants) >= keypolicy.MaxGrantsPerKey {
			return newError(CodeLimitExceeded, "key %s has %d grants; the limit is %d", k.ID, len(a.Grants), keypolicy.MaxGrantsPerKey)
		}
		a.Grants = append(a.Grants, *g)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return g, nil
}

// ListGrants returns a key's live grants.
func (s *Service) ListGrants(ctx context.Context, c Caller, keyRef string) (grants []keypolicy.Grant, err error) {
	var k *Key
	defer s.finish(ctx, c, events.TypeGrantListed, &err, func() (string, map[string]any) {
		subject := ""
		if k != nil {
			subject = k.ResourceName()
		}
		return subject, map[string]any{"keyRef": truncate(keyRef, 64), "count": len(grants)}
	}, func() { grants = nil })
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if k, _, err = s.resolve(ctx, c.Tenant, keyRef); err != nil {
		return nil, err
	}
	a, err := s.keyAuthz(ctx, c.Tenant, k.ID)
	if err != nil {
		return nil, err
	}
	grants = []keypolicy.Grant{}
	if a != nil {
		grants = append(grants, a.Grants...)
	}
	return grants, nil
}

// ListRetirableGrants returns the live grants, across the caller's
// tenant's keys, that name principal as their retiring principal (AWS
// ListRetirableGrants). Key admins and auditors may ask about any
// principal; anyone else only about itself.
func (s *Service) ListRetirableGrants(ctx context.Context, c Caller, principal string) (grants []keypolicy.Grant, err error) {
	defer s.finish(ctx, c, events.TypeGrantListedRetirable, &err, func() (string, map[string]any) {
		return "", map[string]any{"retiringPrincipal": truncate(principal, 64), "count": len(grants)}
	}, func() { grants = nil })
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if err := checkPrincipalName(principal); err != nil {
		return nil, err
	}
	if principal != c.Principal && !slices.Contains(c.Roles, string(keypolicy.RoleKeyAdmin)) && !slices.Contains(c.Roles, string(keypolicy.RoleAuditor)) {
		return nil, newError(CodeAccessDenied, "only key admins and auditors may list the grants another principal can retire")
	}
	keys, err := s.store.ListKeys(ctx, c.Tenant)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to list keys")
	}
	grants = []keypolicy.Grant{}
	for _, k := range keys {
		a, err := s.keyAuthz(ctx, c.Tenant, k.ID)
		if err != nil {
			return nil, err
		}
		if a == nil {
			continue
		}
		for _, g := range a.Grants {
			if g.RetiringPrincipal == principal {
				grants = append(grants, g)
			}
		}
	}
	return grants, nil
}

// RetireGrant ends a grant at the request of its grantee, its retiring
// principal or a key admin (AWS RetireGrant).
func (s *Service) RetireGrant(ctx context.Context, c Caller, keyRef, grantID string) error {
	return s.endGrant(ctx, c, events.TypeGrantRetired, keyRef, grantID, func(g *keypolicy.Grant) error {
		if c.Principal == g.Grantee || c.Principal == g.RetiringPrincipal || slices.Contains(c.Roles, string(keypolicy.RoleKeyAdmin)) {
			return nil
		}
		return newError(CodeAccessDenied, "only the grantee, the retiring principal or a key admin may retire this grant")
	})
}

// RevokeGrant ends a grant (a key admin's decision; AWS RevokeGrant).
func (s *Service) RevokeGrant(ctx context.Context, c Caller, keyRef, grantID string) error {
	return s.endGrant(ctx, c, events.TypeGrantRevoked, keyRef, grantID, nil)
}

func (s *Service) endGrant(ctx context.Context, c Caller, typ, keyRef, grantID string, may func(*keypolicy.Grant) error) (err error) {
	var k *Key
	defer s.finish(ctx, c, typ, &err, func() (string, map[string]any) {
		subject := ""
		if k != nil {
			subject = k.ResourceName()
		}
		return subject, map[string]any{"keyRef": truncate(keyRef, 64), "grantId": truncate(grantID, 64)}
	}, nil)
	if err := checkCaller(c); err != nil {
		return err
	}
	if k, _, err = s.resolve(ctx, c.Tenant, keyRef); err != nil {
		return err
	}
	_, err = s.updateKeyAuthz(ctx, k, func(a *keypolicy.KeyAuthz) error {
		i := slices.IndexFunc(a.Grants, func(g keypolicy.Grant) bool { return g.ID == grantID })
		if i < 0 {
			return newError(CodeNotFound, "key %s has no grant %s", k.ID, truncate(grantID, 64))
		}
		if may != nil {
			if err := may(&a.Grants[i]); err != nil {
				return err
			}
		}
		a.Grants = slices.Delete(a.Grants, i, i+1)
		return nil
	})
	return err
}
