package kms

import (
	"context"
	"errors"

	"github.com/keyflow/keyflow/events"
)

// Aliases after creation: create, move and delete. A keyflow key carries
// at most one alias (its Alias field, which the alias cache relies on), so
// naming a key that already has another alias is LimitExceeded rather
// than a second name as in AWS. Each change is recorded as
// io.keyflow.key.alias.changed.v1 with the action.

// SetAliasParams are the inputs of SetAlias.
type SetAliasParams struct {
	Alias  string // with or without "alias/"
	KeyRef string // the key the alias is to name
	// Create makes a new alias (AlreadyExists if it names a key); false
	// moves an existing one (NotFound if there is none).
	Create bool
}

// SetAlias creates an alias for a key, or points an existing alias at
// another key of the caller's tenant.
func (s *Service) SetAlias(ctx context.Context, c Caller, p SetAliasParams) (k *Key, err error) {
	alias := normalizeAlias(p.Alias)
	action := "update"
	if p.Create {
		action = "create"
	}
	defer s.finish(ctx, c, events.TypeKeyAliasChanged, &err, func() (string, map[string]any) {
		d := map[string]any{"alias": truncate(alias, 64), "action": action, "keyRef": truncate(p.KeyRef, 64)}
		if k != nil {
			return k.ResourceName(), d
		}
		return "", d
	}, func() { k = nil })
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if !validAlias(alias) {
		return nil, newError(CodeValidation, "%q is not a valid alias (alias/ and 1-250 characters of A-Za-z0-9/_-)", truncate(p.Alias, 64))
	}
	target, _, err := s.resolve(ctx, c.Tenant, p.KeyRef)
	if err != nil {
		return nil, err
	}
	cur, err := s.store.ResolveAlias(ctx, c.Tenant, alias)
	switch {
	case err == nil && p.Create:
		return nil, newError(CodeAlreadyExists, "alias %s already exists", alias)
	case errors.Is(err, ErrStoreNotFound) && !p.Create:
		return nil, newError(CodeNotFound, "alias %s does not exist", alias)
	case errors.Is(err, ErrStoreNotFound):
		cur = ""
	case err != nil:
		return nil, wrapError(CodeInternal, err, "failed to resolve alias")
	}
	if target.Alias != "" && target.Alias != alias {
		return nil, newError(CodeLimitExceeded, "key %s already has the alias %s; a keyflow key has one alias", target.ID, target.Alias)
	}
	switch cur {
	case target.ID: // already there
	case "":
		if err := s.store.CreateAlias(ctx, c.Tenant, alias, target.ID); errors.Is(err, ErrStoreExists) {
			return nil, newError(CodeAlreadyExists, "alias %s already exists", alias)
		} else if err != nil {
			return nil, wrapError(CodeInternal, err, "failed to create alias")
		}
		if _, err := s.updateKeyAlways(ctx, c.Tenant, target.ID, func(k *Key) error { k.Alias = alias; return nil }); err != nil {
			return nil, err
		}
	default:
		if err := s.moveAlias(ctx, c.Tenant, alias, cur, target.ID); err != nil {
			return nil, err
		}
	}
	k, _, err = s.getKey(ctx, c.Tenant, target.ID)
	return k, err
}

// DeleteAlias removes an alias; the key keeps working by its ID.
func (s *Service) DeleteAlias(ctx context.Context, c Caller, aliasRef string) (err error) {
	alias := normalizeAlias(aliasRef)
	var keyID string
	defer s.finish(ctx, c, events.TypeKeyAliasChanged, &err, func() (string, map[string]any) {
		d := map[string]any{"alias": truncate(alias, 64), "action": "delete"}
		if keyID != "" {
			return ResourceName(c.Tenant, keyID), d
		}
		return "", d
	}, nil)
	if err := checkCaller(c); err != nil {
		return err
	}
	if !validAlias(alias) {
		return newError(CodeValidation, "%q is not a valid alias", truncate(aliasRef, 64))
	}
	keyID, err = s.store.ResolveAlias(ctx, c.Tenant, alias)
	if errors.Is(err, ErrStoreNotFound) {
		return newError(CodeNotFound, "alias %s does not exist", alias)
	}
	if err != nil {
		return wrapError(CodeInternal, err, "failed to resolve alias")
	}
	if err := s.store.DeleteAlias(ctx, c.Tenant, alias); err != nil && !errors.Is(err, ErrStoreNotFound) {
		return wrapError(CodeInternal, err, "failed to delete alias")
	}
	_, err = s.updateKeyAlways(ctx, c.Tenant, keyID, func(k *Key) error {
		if k.Alias == alias {
			k.Alias = ""
		}
		return nil
	})
	return err
}
