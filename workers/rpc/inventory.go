package rpc

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/cbom"
)

// The consumer analysis reads a bounded window of the audit trail: the
// tenant's records among the last recentWindow records of the stream, and
// at most maxPrincipals principals per key.
const (
	recentWindow  = 500
	maxPrincipals = 32
)

func (s *Server) inventory(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.InventoryRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyInventory, err)
	}
	if req.Format != "" && req.Format != api.InventoryFormatJSON && req.Format != api.InventoryFormatCycloneDX {
		return nil, s.rejectWith(ctx, c, api.OpKeyInventory, &kms.Error{Code: kms.CodeValidation, Message: "format must be json or cyclonedx"})
	}
	p := kms.InventoryParams{To: kms.KeySpec(req.To)}
	for _, f := range req.FromAlgorithms {
		p.FromAlgorithms = append(p.FromAlgorithms, kms.KeySpec(f))
	}
	inv, err := s.cfg.KMS.Inventory(ctx, c, p)
	if err != nil {
		return nil, err
	}
	users := s.recentPrincipals(ctx, c.Tenant)
	for i := range inv.Keys {
		inv.Keys[i].RecentPrincipals = users[inv.Keys[i].ID]
	}
	if req.Format == api.InventoryFormatCycloneDX {
		raw, err := cbom.JSON(inv, cbom.Options{SerialNumber: "urn:uuid:" + uuid.NewString(), ToolVersion: s.cfg.Version})
		if err != nil {
			return nil, &kms.Error{Code: kms.CodeInternal, Message: "failed to build the CBOM"}
		}
		return api.InventoryReply{Cbom: raw}, nil
	}
	out := api.InventoryReply{Keys: make([]api.InventoryKey, 0, len(inv.Keys))}
	for _, k := range inv.Keys {
		out.Keys = append(out.Keys, api.InventoryKey{
			KeyID: k.ID, Alias: k.Alias, KeySpec: string(k.Spec), KeyUsage: string(k.Usage), KeyState: string(k.State),
			Versions: k.Versions, PrimaryVersion: k.PrimaryVersion, CreationDate: k.CreatedAt,
			QuantumVulnerable: k.QuantumVulnerable, Exportable: k.Exportable, Regions: k.Regions, TargetKeySpec: string(k.Target), RegisteredDataKeys: k.DataKeys,
			RecentPrincipals: append([]string{}, k.RecentPrincipals...), Clouds: cloudLocations(k.Clouds),
		})
	}
	return out, nil
}

// recentPrincipals maps key IDs to the distinct principals of the tenant's
// records among the last recentWindow records of the audit stream. It is
// best effort: without JetStream, or if the read fails, it finds nobody
// (the inventory itself does not depend on it).
func (s *Server) recentPrincipals(ctx context.Context, tenant string) map[string][]string {
	if s.cfg.JS == nil {
		return nil
	}
	str, err := s.cfg.JS.Stream(ctx, jsaudit.StreamName)
	if err != nil {
		s.cfg.Logger.Warn("inventory: cannot read the audit stream", "err", err)
		return nil
	}
	var after uint64
	if last := str.CachedInfo().State.LastSeq; last > recentWindow {
		after = last - recentWindow
	}
	evs, err := jsaudit.Read(ctx, s.cfg.JS, jsaudit.ReadParams{Tenant: tenant, AfterSeq: after, Limit: recentWindow, Wait: 50 * time.Millisecond})
	if err != nil {
		s.cfg.Logger.Warn("inventory: cannot read the audit stream", "err", err)
		return nil
	}
	out := map[string][]string{}
	for _, e := range evs {
		var ev struct {
			Subject   string `json:"subject"`
			Principal string `json:"principal"`
		}
		if json.Unmarshal(e.Event, &ev) != nil || ev.Principal == "" {
			continue
		}
		id := jsaudit.KeyToken(ev.Subject)
		if id == jsaudit.NoKey {
			continue
		}
		if ps := out[id]; len(ps) < maxPrincipals && !slices.Contains(ps, ev.Principal) {
			out[id] = append(ps, ev.Principal)
		}
	}
	for _, ps := range out {
		slices.Sort(ps)
	}
	return out
}

// cloudLocations is where a key's cloud copies live, for the inventory.
func cloudLocations(ps []kms.CloudPlacement) []api.CloudPlacement {
	var out []api.CloudPlacement
	for i := range ps {
		out = append(out, placementToWire(&ps[i]))
	}
	return out
}
