package kms

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// DisabledPrincipals is a tenant's deny list: principals refused at once by
// every worker, whatever credentials they present.
type DisabledPrincipals struct {
	Tenant     string               `json:"tenant"`
	Principals map[string]time.Time `json:"principals"`
}

// authzCache holds policies, grants and deny lists in memory. The NATS
// adapter invalidates it from a watch on the store (InvalidateAuthz), so a
// change made on one worker reaches every worker within milliseconds.
type authzCache struct {
	mu       sync.RWMutex
	gen      uint64 // bumped by every invalidation; a load that raced one is not cached
	keys     map[[2]string]*keypolicy.KeyAuthz
	disabled map[string]*DisabledPrincipals
}

func (s *Service) authzCache() *authzCache { return &s.authz }

func (s *Service) authzStore() (AuthzStore, bool) {
	a, ok := s.store.(AuthzStore)
	return a, ok
}

// InvalidateAuthz forgets the cached policy and grants of one key, or with
// keyID "" the tenant's deny list.
func (s *Service) InvalidateAuthz(tenant, keyID string) {
	c := s.authzCache()
	c.mu.Lock()
	c.gen++
	if keyID == "" {
		delete(c.disabled, tenant)
	} else {
		delete(c.keys, [2]string{tenant, keyID})
	}
	c.mu.Unlock()
}

func (s *Service) keyAuthz(ctx context.Context, tenant, keyID string) (*keypolicy.KeyAuthz, error) {
	st, ok := s.authzStore()
	if !ok {
		return nil, nil
	}
	c := s.authzCache()
	c.mu.RLock()
	a, hit := c.keys[[2]string{tenant, keyID}]
	gen := c.gen
	c.mu.RUnlock()
	if hit {
		return a, nil
	}
	a, _, err := st.GetKeyAuthz(ctx, tenant, keyID)
	switch {
	case errors.Is(err, ErrStoreNotFound):
		a = nil
	case err != nil:
		return nil, wrapError(CodeInternal, err, "failed to read the key policy")
	}
	c.mu.Lock()
	if c.gen == gen {
		if c.keys == nil || len(c.keys) >= 10000 {
			c.keys = map[[2]string]*keypolicy.KeyAuthz{} // crude bound; the working set refills it
		}
		c.keys[[2]string{tenant, keyID}] = a
	}
	c.mu.Unlock()
	return a, nil
}

func (s *Service) principalDisabled(ctx context.Context, tenant, principal string) (bool, error) {
	st, ok := s.authzStore()
	if !ok {
		return false, nil
	}
	c := s.authzCache()
	c.mu.RLock()
	d, hit := c.disabled[tenant]
	gen := c.gen
	c.mu.RUnlock()
	if !hit {
		var err error
		d, _, err = st.GetDisabled(ctx, tenant)
		switch {
		case errors.Is(err, ErrStoreNotFound):
			d = nil
		case err != nil:
			return false, wrapError(CodeInternal, err, "failed to read the tenant's disabled principals")
		}
		c.mu.Lock()
		if c.gen == gen {
			if c.disabled == nil || len(c.disabled) >= 10000 {
				c.disabled = map[string]*DisabledPrincipals{}
			}
			c.disabled[tenant] = d
		}
		c.mu.Unlock()
	}
	if d == nil {
		return false, nil
	}
	_, off := d.Principals[principal]
	return off, nil
}

// AccessTarget is one key an operation touches. The key is KeyRef, and
// also the key a keyflow ciphertext's header names (decrypt reads the key
// from the header, so that is the key to check); each one that exists in
// the caller's tenant is checked.
type AccessTarget struct {
	KeyRef     string
	Ciphertext []byte
	// Action overrides the operation's action (re-encryption checks
	// ReEncryptFrom on the source and ReEncryptTo on the destination).
	Action  keypolicy.Action
	Context EncryptionContext
}

// AuthorizeParams name what a caller asks to do.
type AuthorizeParams struct {
	// Operation is the transport's operation name ("crypto.encrypt"), a
	// row of the operation table (see PermissionOf).
	Operation string
	Targets   []AccessTarget
}

// Authorize decides, before an operation runs, whether the caller may run
// it. It is called once, centrally, by the transport. In order:
//
//  1. a disabled principal is refused ("principal:disabled");
//  2. the caller must hold one of the operation's roles
//     ("role:<role> required"; an operation missing from the table is
//     refused for everyone, "role:unmapped-operation");
//  3. for every key the request touches: the key's policy and grants must
//     allow the action ("key-policy:statement <sid>", "condition:<name>",
//     "grant:none").
//
// A key that does not exist in the caller's tenant is not checked here: the
// operation then fails the way it fails for everyone (not found, or the one
// generic decryption error), so a denial never tells a caller that a key
// exists in another tenant.
//
// Every denial is recorded (io.keyflow.access.denied.v1) with the rule
// that denied it, and returned as one AccessDeniedException whose message
// says what kind of rule it was and nothing of the policy's contents.
func (s *Service) Authorize(ctx context.Context, c Caller, p AuthorizeParams) error {
	if err := checkCaller(c); err != nil {
		return s.deny(ctx, c, p.Operation, "", "", "tenant:unknown", err)
	}
	perm, ok := keypolicy.PermissionOf(p.Operation)
	if !ok {
		return s.deny(ctx, c, p.Operation, "", "", "role:unmapped-operation",
			newError(CodeAccessDenied, "operation %s is not open to any role", truncate(p.Operation, 64)))
	}
	off, err := s.principalDisabled(ctx, c.Tenant, c.Principal)
	if err != nil {
		return err
	}
	if off {
		return s.deny(ctx, c, p.Operation, "", "", "principal:disabled",
			newError(CodeAccessDenied, "principal %s is disabled", truncate(c.Principal, 64)))
	}
	if !perm.HeldBy(c.Roles) {
		return s.deny(ctx, c, p.Operation, "", "", perm.Rule(),
			newError(CodeAccessDenied, "%s requires the role %s; this principal holds %v", truncate(p.Operation, 64), strings.Join(keypolicy.RoleNames(perm.Roles), " or "), c.Roles))
	}
	if _, ok := s.authzStore(); !ok {
		return nil
	}
	now := s.now()
	for _, t := range p.Targets {
		action := t.Action
		if action == "" {
			action = perm.Action
		}
		if action == "" || action == keypolicy.ActionPutKeyPolicy || action == keypolicy.ActionGetKeyPolicy || action == keypolicy.ActionRetireGrant {
			continue
		}
		for _, keyID := range s.targetKeys(ctx, c.Tenant, t) {
			a, err := s.keyAuthz(ctx, c.Tenant, keyID)
			if err != nil {
				return err
			}
			rule := a.Decide(keypolicy.Request{Principal: c.Principal, Roles: c.Roles, Action: action, Context: t.Context, Now: now})
			if rule != "" {
				return s.deny(ctx, c, p.Operation, keyID, action, rule, newError(CodeAccessDenied, "%s", keypolicy.DenyMessage(action, rule)))
			}
		}
	}
	return nil
}

// targetKeys returns the IDs of the keys of the caller's tenant that a
// target names, by reference or in a ciphertext header.
func (s *Service) targetKeys(ctx context.Context, tenant string, t AccessTarget) []string {
	var ids []string
	if t.KeyRef != "" {
		if k, err := s.cachedKey(ctx, tenant, t.KeyRef); err == nil {
			ids = append(ids, k.ID)
		}
	}
	if len(t.Ciphertext) > 0 {
		if env, err := parseEnvelope(t.Ciphertext); err == nil {
			if k, err := s.cachedKey(ctx, tenant, env.keyID); err == nil && (len(ids) == 0 || ids[0] != k.ID) {
				ids = append(ids, k.ID)
			}
		}
	}
	return ids
}

// deny records one denial and returns err. The record names the rule; its
// subject is the key only when the key is the caller's tenant's.
func (s *Service) deny(ctx context.Context, c Caller, op, keyID string, action keypolicy.Action, rule string, err error) error {
	if !ValidTenant(c.Tenant) {
		c.Tenant = "-"
	}
	data := map[string]any{"operation": truncate(op, 64), "rule": truncate(rule, 128)}
	subject := ""
	if keyID != "" {
		subject = ResourceName(c.Tenant, keyID)
		data["keyId"] = keyID
	}
	if action != "" {
		data["action"] = string(action)
	}
	return s.emit(ctx, c, events.TypeAccessDenied, subject, data, err)
}
