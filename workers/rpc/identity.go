package rpc

import (
	"context"
	"encoding/json"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// identityGroups are the identity and access endpoints: key policies,
// grants, principals and tenants. Roles are checked before any of them
// runs (kms.Authorize, from serve).
func (s *Server) identityGroups() []struct {
	name  string
	group string
	ops   map[string]handlerFunc
} {
	return []struct {
		name  string
		group string
		ops   map[string]handlerFunc
	}{
		{"keyflow-keypolicy", "keys", map[string]handlerFunc{"setpolicy": s.setKeyPolicy, "getpolicy": s.getKeyPolicy,
			"setalias": s.setAlias, "deletealias": s.deleteAlias,
			"tag": s.tagKey, "untag": s.untagKey, "setdescription": s.setDescription}},
		{"keyflow-grants", "grants", map[string]handlerFunc{"create": s.createGrant, "list": s.listGrants, "retire": s.retireGrant, "revoke": s.revokeGrant, "listretirable": s.listRetirableGrants}},
		{"keyflow-principals", "principals", map[string]handlerFunc{"create": s.createPrincipal, "list": s.listPrincipals, "disable": s.disablePrincipal}},
		{"keyflow-tenants", "tenants", map[string]handlerFunc{"create": s.createTenant}},
		{"keyflow-accesskeys", "accesskeys", map[string]handlerFunc{"create": s.createAccessKey, "list": s.listAccessKeys, "disable": s.disableAccessKey, "delete": s.deleteAccessKey}},
	}
}

// directory is the identity directory, when the tenant resolver is one
// (natsauth.Identity is).
func (s *Server) directory() kms.Directory {
	d, _ := s.cfg.Tenants.(kms.Directory)
	return d
}

func (s *Server) setKeyPolicy(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.SetKeyPolicyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeySetPolicy, err)
	}
	res, err := s.cfg.KMS.SetKeyPolicy(ctx, c, req.KeyID, req.Policy)
	if err != nil {
		return nil, err
	}
	doc, _ := json.Marshal(res.Policy)
	return api.KeyPolicyReply{KeyID: res.KeyID, Policy: doc}, nil
}

func (s *Server) getKeyPolicy(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.KeyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyGetPolicy, err)
	}
	keyID, p, err := s.cfg.KMS.GetKeyPolicy(ctx, c, req.KeyID)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return api.KeyPolicyReply{KeyID: keyID, Default: true}, nil
	}
	doc, _ := json.Marshal(p)
	return api.KeyPolicyReply{KeyID: keyID, Policy: doc}, nil
}

func (s *Server) createGrant(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.CreateGrantRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpGrantCreate, err)
	}
	ops := make([]keypolicy.Action, len(req.Operations))
	for i, o := range req.Operations {
		ops[i] = keypolicy.Action(o)
	}
	g, err := s.cfg.KMS.CreateGrant(ctx, c, kms.CreateGrantParams{
		KeyRef: req.KeyID, Grantee: req.Grantee, Operations: ops,
		Constraints: conditionsFromWire(req.Constraints), RetiringPrincipal: req.RetiringPrincipal,
	})
	if err != nil {
		return nil, err
	}
	return grantToWire(*g), nil
}

func (s *Server) listGrants(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.KeyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpGrantList, err)
	}
	return grantsReply(s.cfg.KMS.ListGrants(ctx, c, req.KeyID))
}

// grantsReply is the wire form of a grant listing.
func grantsReply(gs []keypolicy.Grant, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	out := api.ListGrantsReply{Grants: make([]api.Grant, 0, len(gs))}
	for _, g := range gs {
		out.Grants = append(out.Grants, grantToWire(g))
	}
	return out, nil
}

func (s *Server) retireGrant(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.GrantRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpGrantRetire, err)
	}
	if err := s.cfg.KMS.RetireGrant(ctx, c, req.KeyID, req.GrantID); err != nil {
		return nil, err
	}
	return req, nil
}

func (s *Server) revokeGrant(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.GrantRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpGrantRevoke, err)
	}
	if err := s.cfg.KMS.RevokeGrant(ctx, c, req.KeyID, req.GrantID); err != nil {
		return nil, err
	}
	return req, nil
}

func (s *Server) createTenant(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.CreateTenantRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpTenantCreate, err)
	}
	var pol *keypolicy.RolePolicy
	switch {
	case req.AllowAnyRoleCombination && len(req.ForbiddenRoleSets) > 0:
		return nil, s.rejectWith(ctx, c, api.OpTenantCreate, &kms.Error{Code: kms.CodeValidation, Message: "give forbiddenRoleSets or allowAnyRoleCombination, not both"})
	case req.AllowAnyRoleCombination:
		pol = &keypolicy.RolePolicy{}
	case len(req.ForbiddenRoleSets) > 0:
		pol = &keypolicy.RolePolicy{}
		for _, set := range req.ForbiddenRoleSets {
			rs := make([]keypolicy.Role, len(set))
			for i, r := range set {
				rs[i] = keypolicy.Role(r)
			}
			pol.ForbiddenRoleSets = append(pol.ForbiddenRoleSets, rs)
		}
	}
	res, err := s.cfg.KMS.CreateTenant(ctx, c, s.directory(), kms.CreateTenantParams{
		Name: req.Tenant, Policy: pol, AdminName: req.AdminName, AdminPublicKey: req.AdminPublicKey,
	})
	if err != nil {
		return nil, err
	}
	out := api.CreateTenantReply{Tenant: res.Tenant, Admin: res.Admin, AdminJWT: res.Credential, ForbiddenRoleSets: [][]string{}}
	for _, set := range res.Policy.ForbiddenRoleSets {
		out.ForbiddenRoleSets = append(out.ForbiddenRoleSets, rolesToWire(set))
	}
	return out, nil
}

func (s *Server) createPrincipal(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.CreatePrincipalRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpPrincipalCreate, err)
	}
	roles := make([]keypolicy.Role, len(req.Roles))
	for i, r := range req.Roles {
		roles[i] = keypolicy.Role(r)
	}
	info, cred, err := s.cfg.KMS.CreatePrincipal(ctx, c, s.directory(), kms.CreatePrincipalParams{Name: req.Name, Roles: roles, PublicKey: req.PublicKey})
	if err != nil {
		return nil, err
	}
	return api.CreatePrincipalReply{Principal: principalToWire(*info), JWT: cred}, nil
}

func (s *Server) listPrincipals(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct{}
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpPrincipalList, err)
	}
	ps, err := s.cfg.KMS.ListPrincipals(ctx, c, s.directory())
	if err != nil {
		return nil, err
	}
	out := api.ListPrincipalsReply{Principals: make([]api.Principal, 0, len(ps))}
	for _, p := range ps {
		out.Principals = append(out.Principals, principalToWire(p))
	}
	return out, nil
}

func (s *Server) disablePrincipal(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.PrincipalRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpPrincipalDisable, err)
	}
	if err := s.cfg.KMS.DisablePrincipal(ctx, c, s.directory(), req.Name); err != nil {
		return nil, err
	}
	return req, nil
}

func conditionsFromWire(c *api.GrantConstraints) *keypolicy.Conditions {
	if c == nil {
		return nil
	}
	return &keypolicy.Conditions{
		EncryptionContextEquals: c.EncryptionContextEquals, EncryptionContextSubset: c.EncryptionContextSubset,
		SourcePrincipals: c.SourcePrincipals, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
	}
}

func grantToWire(g keypolicy.Grant) api.Grant {
	out := api.Grant{
		GrantID: g.ID, KeyID: g.KeyID, Grantee: g.Grantee, RetiringPrincipal: g.RetiringPrincipal,
		CreationDate: g.CreatedAt, CreatedBy: g.CreatedBy, Operations: make([]string, len(g.Operations)),
	}
	for i, o := range g.Operations {
		out.Operations[i] = string(o)
	}
	if c := g.Constraints; c != nil {
		out.Constraints = &api.GrantConstraints{
			EncryptionContextEquals: c.EncryptionContextEquals, EncryptionContextSubset: c.EncryptionContextSubset,
			SourcePrincipals: c.SourcePrincipals, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
		}
	}
	return out
}

func rolesToWire(rs []keypolicy.Role) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r)
	}
	return out
}

func principalToWire(p kms.PrincipalInfo) api.Principal {
	return api.Principal{Name: p.Name, Roles: rolesToWire(p.Roles), CreationDate: p.CreatedAt, CreatedBy: p.CreatedBy, DisabledDate: p.DisabledAt}
}
