package kms

import (
	"context"
	"slices"
	"time"

	"github.com/keyflow/keyflow/events"
)

// InventoryParams select the keys of an inventory.
type InventoryParams struct {
	// FromAlgorithms keeps the keys of these specs; empty keeps all.
	FromAlgorithms []KeySpec
	// To, when set, is the migration target instead of the recommended
	// one: it becomes the target of every quantum-vulnerable key whose
	// role (encryption or signing) it can take over.
	To KeySpec
}

// maxInventorySpecs bounds FromAlgorithms (there are fewer specs).
const maxInventorySpecs = 32

// InventoryItem is one key in an inventory.
type InventoryItem struct {
	ID                string
	Alias             string
	Spec              KeySpec
	Usage             KeyUsage
	State             KeyState
	Versions          int
	PrimaryVersion    uint32
	CreatedAt         time.Time
	QuantumVulnerable bool
	// Exportable marks a key whose material can be released (export.go).
	Exportable bool
	// Regions are the regions a multi-region key lives in, its primary
	// first (replica.go); empty for a single-region key.
	Regions []string
	// Target is the spec to migrate to; empty when the key is not
	// quantum-vulnerable or no target fits its usage.
	Target KeySpec
	// DataKeys is how many registered wrapped data keys the key holds
	// (all versions): what a migration has to rewrap.
	DataKeys int
	// Clouds is where copies of the key live (cloud.go): provider,
	// resource, version and last sync per destination.
	Clouds []CloudPlacement
	// RecentPrincipals is who used the key recently, from the audit trail.
	// The domain leaves it empty; the NATS adapter fills it.
	RecentPrincipals []string
}

// Inventory is a tenant's keys as crypto assets.
type Inventory struct {
	Tenant      string
	GeneratedAt time.Time
	Keys        []InventoryItem
}

// Inventory lists the tenant's keys with what a post-quantum migration
// needs to know about each: whether a quantum computer breaks it and which
// spec replaces it. The spec facts come from the spec table (Profile).
func (s *Service) Inventory(ctx context.Context, c Caller, p InventoryParams) (inv *Inventory, err error) {
	defer s.finish(ctx, c, events.TypeKeyInventoryRead, &err, func() (string, map[string]any) {
		data := map[string]any{"count": 0}
		if inv != nil {
			data["count"] = len(inv.Keys)
		}
		if len(p.FromAlgorithms) > 0 {
			from := make([]string, 0, min(len(p.FromAlgorithms), maxInventorySpecs))
			for _, f := range p.FromAlgorithms[:min(len(p.FromAlgorithms), maxInventorySpecs)] {
				from = append(from, truncate(string(f), 64))
			}
			data["fromAlgorithms"] = from
		}
		if p.To != "" {
			data["to"] = truncate(string(p.To), 64)
		}
		return "", data
	}, func() {
		inv = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if len(p.FromAlgorithms) > maxInventorySpecs {
		return nil, newError(CodeValidation, "at most %d specs may be given", maxInventorySpecs)
	}
	from := map[KeySpec]bool{}
	for _, f := range p.FromAlgorithms {
		if f == specAES256Alias {
			f = SpecSymmetricDefault
		}
		if _, ok := specs[f]; !ok {
			return nil, newError(CodeValidation, "unsupported key spec %q; supported: %v", truncate(string(f), 64), Specs())
		}
		from[f] = true
	}
	var to *specInfo
	if p.To != "" {
		var ok bool
		if to, ok = specs[p.To]; !ok {
			return nil, newError(CodeValidation, "unsupported target key spec %q; supported: %v", truncate(string(p.To), 64), Specs())
		}
		if to.profile.QuantumVulnerable {
			return nil, newError(CodeValidation, "target key spec %s is itself quantum-vulnerable", p.To)
		}
	}
	keys, err := s.store.ListKeys(ctx, c.Tenant)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to list keys")
	}
	inv = &Inventory{Tenant: c.Tenant, GeneratedAt: s.now().UTC(), Keys: make([]InventoryItem, 0, len(keys))}
	clouds := map[string][]CloudPlacement{}
	if cs, ok := s.store.(CloudStore); ok {
		ps, err := cs.ListCloudPlacements(ctx, c.Tenant, "")
		if err != nil {
			return nil, wrapError(CodeInternal, err, "failed to list cloud placements")
		}
		for _, p := range ps {
			clouds[p.KeyID] = append(clouds[p.KeyID], *p)
		}
	}
	for _, k := range keys {
		if len(from) > 0 && !from[k.Spec] {
			continue
		}
		it := InventoryItem{
			ID: k.ID, Alias: k.Alias, Spec: k.Spec, Usage: k.Usage, State: k.State,
			Versions: len(k.Versions), PrimaryVersion: k.PrimaryVersion, CreatedAt: k.CreatedAt,
		}
		if ds, ok := s.store.(DataKeyStore); ok {
			counts, err := ds.CountDataKeys(ctx, c.Tenant, k.ID)
			if err != nil {
				return nil, wrapError(CodeInternal, err, "failed to count registered data keys")
			}
			for _, n := range counts {
				it.DataKeys += n
			}
		}
		it.Exportable = k.Exportable
		it.Clouds = clouds[k.ID]
		it.Regions = k.Regions()
		if info, ok := specs[k.Spec]; ok {
			it.QuantumVulnerable = info.profile.QuantumVulnerable
			it.Target = migrationTarget(info, k.Usage, to)
		}
		inv.Keys = append(inv.Keys, it)
	}
	return inv, nil
}

// migrationTarget is the spec a key of info and usage moves to: to when
// given and able to take over the key's role, else the recommended one.
func migrationTarget(info *specInfo, usage KeyUsage, to *specInfo) KeySpec {
	if !info.profile.QuantumVulnerable {
		return ""
	}
	rec, ok := info.profile.Targets[usage]
	if to == nil {
		return rec
	}
	// The target takes over the key's role when it allows the key's usage
	// or the usage of the recommended target (encryption moves to a
	// KEY_ENCAPSULATION key).
	if to.allowsUsage(usage) || (ok && slices.ContainsFunc(specs[rec].usages, to.allowsUsage)) {
		return to.spec
	}
	return ""
}
