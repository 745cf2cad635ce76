package kms

import (
	"context"
	"errors"
	"regexp"
	"slices"

	"github.com/google/uuid"

	"github.com/keyflow/keyflow/events"
)

// The domain side of a post-quantum migration campaign.
//
// A campaign (run by the Temporal MigrationWorkflow) replaces each source
// key with a target key of a post-quantum spec. Between them the two keys
// carry a MigrationLink in their metadata, which is all the crypto path
// needs to know about a campaign:
//
//   - phase dual-signing: Sign on the source key also signs with the
//     target and returns both signatures; Verify on either key accepts a
//     signature made by the other (the algorithm says which);
//   - phase cutover: the source key's alias now names the target, and the
//     source key is DEACTIVATED (it decrypts and verifies, and no longer
//     encrypts or signs);
//   - phase retired: the campaign is over; no rollback.
//
// Rollback (before retirement) gives the source back its alias and its
// ACTIVE state, and leaves the target DEACTIVATED: data keys already
// rewrapped under the target stay decryptable, so nothing is lost.
//
// Every step is idempotent (workflow activities are retried) and recorded
// as io.keyflow.migration.key.changed.v1.

// MigrationPhase is where a linked pair of keys stands.
type MigrationPhase string

// Migration phases carried by a link.
const (
	PhaseLinked      MigrationPhase = "linked"
	PhaseDualSigning MigrationPhase = "dual-signing"
	PhaseCutover     MigrationPhase = "cutover"
	PhaseRetired     MigrationPhase = "retired"
)

// Migration roles.
const (
	RoleSource = "source"
	RoleTarget = "target"
)

// MigrationLink is a key's side of a migration.
type MigrationLink struct {
	CampaignID string         `json:"campaignId"`
	Role       string         `json:"role"`
	PeerKeyID  string         `json:"peerKeyId"`
	Phase      MigrationPhase `json:"phase"`
}

// MigrationKeyParams name one source key of a campaign and, once created,
// its target.
type MigrationKeyParams struct {
	CampaignID  string
	SourceKeyID string
	TargetKeyID string
	TargetSpec  KeySpec
	Phase       MigrationPhase // for LinkMigration
}

// TargetKeyID is the ID a campaign gives the target of a source key: derived
// from both, so a retried creation finds the key it made before.
func TargetKeyID(tenant, campaignID, sourceKeyID string) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("keyflow-migration:"+tenant+"/"+campaignID+"/"+sourceKeyID)).String()
}

// recordMigration records one step of a campaign on one key.
func (s *Service) recordMigration(ctx context.Context, c Caller, action string, p MigrationKeyParams, errp *error) {
	s.finish(ctx, c, events.TypeMigrationKey, errp, func() (string, map[string]any) {
		data := map[string]any{"campaignId": truncate(p.CampaignID, 128), "action": action}
		if ValidKeyID(p.SourceKeyID) {
			data["sourceKey"] = ResourceName(c.Tenant, p.SourceKeyID)
		}
		if ValidKeyID(p.TargetKeyID) {
			data["targetKey"] = ResourceName(c.Tenant, p.TargetKeyID)
		}
		if p.TargetSpec != "" {
			data["targetKeySpec"] = truncate(string(p.TargetSpec), 64)
		}
		if p.Phase != "" {
			data["phase"] = string(p.Phase)
		}
		subject := ""
		if ValidKeyID(p.SourceKeyID) {
			subject = ResourceName(c.Tenant, p.SourceKeyID)
		}
		return subject, data
	}, nil)
}

func checkCampaign(p MigrationKeyParams, needTarget bool) error {
	if !ValidCampaignID(p.CampaignID) {
		return newError(CodeValidation, "%q is not a campaign ID (1-63 characters of a-z, 0-9 and -)", truncate(p.CampaignID, 64))
	}
	if !ValidKeyID(p.SourceKeyID) {
		return newError(CodeValidation, "%q is not a key ID", truncate(p.SourceKeyID, 64))
	}
	if needTarget && !ValidKeyID(p.TargetKeyID) {
		return newError(CodeValidation, "%q is not a key ID", truncate(p.TargetKeyID, 64))
	}
	return nil
}

// CreateMigrationTarget creates the target key of a source key (a no-op if
// it exists) and returns it. The target gets the spec asked for and the
// usage that takes over the source's role.
func (s *Service) CreateMigrationTarget(ctx context.Context, c Caller, p MigrationKeyParams) (k *Key, err error) {
	p.TargetKeyID = TargetKeyID(c.Tenant, p.CampaignID, p.SourceKeyID)
	defer s.recordMigration(ctx, c, "target-created", p, &err)
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if err := checkCampaign(p, true); err != nil {
		return nil, err
	}
	if existing, _, err := s.store.GetKey(ctx, c.Tenant, p.TargetKeyID); err == nil {
		return existing, nil
	} else if !errors.Is(err, ErrStoreNotFound) {
		return nil, wrapError(CodeInternal, err, "failed to read key")
	}
	src, _, err := s.getKey(ctx, c.Tenant, p.SourceKeyID)
	if err != nil {
		return nil, err
	}
	info, ok := specs[p.TargetSpec]
	if !ok {
		return nil, newError(CodeValidation, "unsupported target key spec %q", truncate(string(p.TargetSpec), 64))
	}
	if info.profile.QuantumVulnerable {
		return nil, newError(CodeValidation, "target key spec %s is itself quantum-vulnerable", p.TargetSpec)
	}
	usage := src.Usage
	if !info.allowsUsage(usage) {
		usage = info.usages[0]
	}
	if srcInfo := specs[src.Spec]; srcInfo == nil || migrationTarget(srcInfo, src.Usage, info) != p.TargetSpec {
		return nil, newError(CodeValidation, "a %s key cannot take over the role of %s key %s (%s)", p.TargetSpec, src.Spec, src.ID, src.Usage)
	}
	if err := s.newVersionMaterial(ctx, c.Tenant, p.TargetKeyID, 1, info); err != nil {
		return nil, err
	}
	now := s.now().UTC()
	k = &Key{
		ID: p.TargetKeyID, Tenant: c.Tenant, Spec: p.TargetSpec, Usage: usage, State: StateActive,
		Description: "post-quantum successor of " + src.ID + " (migration " + truncate(p.CampaignID, 128) + ")",
		CreatedAt:   now, CreatedBy: c.Principal, PrimaryVersion: 1,
		Versions: []Version{{Number: 1, State: StateActive, Algorithm: info.alg, CreatedAt: now}},
	}
	if _, err := s.store.CreateKey(ctx, k); errors.Is(err, ErrStoreExists) {
		k, _, err = s.getKey(ctx, c.Tenant, p.TargetKeyID)
		return k, err
	} else if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to store key")
	}
	return k, nil
}

// updateKeyAlways is updateKey (lifecycle_ops.go) for changes that always
// store.
func (s *Service) updateKeyAlways(ctx context.Context, tenant, keyID string, change func(k *Key) error) (*Key, error) {
	return s.updateKey(ctx, tenant, keyID, func(k *Key) (bool, error) { return false, change(k) })
}

// linkable refuses to link a key that another campaign holds.
func linkable(k *Key, campaignID string) error {
	if k.Migration != nil && k.Migration.CampaignID != campaignID && k.Migration.Phase != PhaseRetired {
		return newError(CodeConflict, "key %s is in migration campaign %s", k.ID, k.Migration.CampaignID)
	}
	return nil
}

// LinkMigration sets the link between a source key and its target to
// p.Phase (linked or dual-signing).
func (s *Service) LinkMigration(ctx context.Context, c Caller, p MigrationKeyParams) (err error) {
	defer s.recordMigration(ctx, c, "linked", p, &err)
	if err := checkCaller(c); err != nil {
		return err
	}
	if err := checkCampaign(p, true); err != nil {
		return err
	}
	if p.Phase != PhaseLinked && p.Phase != PhaseDualSigning {
		return newError(CodeValidation, "phase must be linked or dual-signing")
	}
	return s.setLinks(ctx, c.Tenant, p, p.Phase, nil, nil)
}

// setLinks writes both sides of a link and, optionally, changes each key.
func (s *Service) setLinks(ctx context.Context, tenant string, p MigrationKeyParams, phase MigrationPhase, srcChange, dstChange func(k *Key) error) error {
	if _, err := s.updateKeyAlways(ctx, tenant, p.SourceKeyID, func(k *Key) error {
		if err := linkable(k, p.CampaignID); err != nil {
			return err
		}
		k.Migration = &MigrationLink{CampaignID: p.CampaignID, Role: RoleSource, PeerKeyID: p.TargetKeyID, Phase: phase}
		if srcChange != nil {
			return srcChange(k)
		}
		return nil
	}); err != nil {
		return err
	}
	_, err := s.updateKeyAlways(ctx, tenant, p.TargetKeyID, func(k *Key) error {
		if err := linkable(k, p.CampaignID); err != nil {
			return err
		}
		k.Migration = &MigrationLink{CampaignID: p.CampaignID, Role: RoleTarget, PeerKeyID: p.SourceKeyID, Phase: phase}
		if dstChange != nil {
			return dstChange(k)
		}
		return nil
	})
	return err
}

// moveAlias makes alias name keyID, whichever key it named before (or
// none). Aliases live in their own bucket; the keys' Alias fields follow.
func (s *Service) moveAlias(ctx context.Context, tenant, alias, from, to string) error {
	if alias == "" {
		return nil
	}
	cur, err := s.store.ResolveAlias(ctx, tenant, alias)
	switch {
	case err == nil && cur == to:
	case err == nil || errors.Is(err, ErrStoreNotFound):
		if err == nil {
			if err := s.store.DeleteAlias(ctx, tenant, alias); err != nil && !errors.Is(err, ErrStoreNotFound) {
				return wrapError(CodeInternal, err, "failed to move alias")
			}
		}
		if err := s.store.CreateAlias(ctx, tenant, alias, to); err != nil && !errors.Is(err, ErrStoreExists) {
			return wrapError(CodeInternal, err, "failed to move alias")
		}
	default:
		return wrapError(CodeInternal, err, "failed to resolve alias")
	}
	if _, err := s.updateKeyAlways(ctx, tenant, to, func(k *Key) error { k.Alias = alias; return nil }); err != nil {
		return err
	}
	_, err = s.updateKeyAlways(ctx, tenant, from, func(k *Key) error {
		if k.Alias == alias {
			k.Alias = ""
		}
		return nil
	})
	return err
}

// campaignAlias is the alias a campaign moves: the source's own, recorded
// on the link's first write so that a retried cutover (after the source's
// Alias field was cleared) still knows it.
func (s *Service) campaignAlias(ctx context.Context, tenant string, p MigrationKeyParams) (string, error) {
	src, _, err := s.getKey(ctx, tenant, p.SourceKeyID)
	if err != nil {
		return "", err
	}
	if src.Alias != "" {
		return src.Alias, nil
	}
	dst, _, err := s.getKey(ctx, tenant, p.TargetKeyID)
	if err != nil {
		return "", err
	}
	return dst.Alias, nil
}

// CutoverMigration makes the target the key in use: the source's alias
// names the target, and the source becomes DEACTIVATED (decrypt and verify
// only). Callers that use the alias switch to the target without a change.
func (s *Service) CutoverMigration(ctx context.Context, c Caller, p MigrationKeyParams) (err error) {
	p.Phase = PhaseCutover
	defer s.recordMigration(ctx, c, "cutover", p, &err)
	if err := checkCaller(c); err != nil {
		return err
	}
	if err := checkCampaign(p, true); err != nil {
		return err
	}
	alias, err := s.campaignAlias(ctx, c.Tenant, p)
	if err != nil {
		return err
	}
	if err := s.setLinks(ctx, c.Tenant, p, PhaseCutover, func(k *Key) error {
		if k.State == StateActive {
			k.State = StateDeactivated
		}
		return nil
	}, nil); err != nil {
		return err
	}
	return s.moveAlias(ctx, c.Tenant, alias, p.SourceKeyID, p.TargetKeyID)
}

// RollbackMigration undoes a campaign on one key before retirement: the
// source gets its alias and ACTIVE state back, the links go, and the
// target becomes DEACTIVATED. Data keys rewrapped under the target stay
// there and keep decrypting (the registry serves their current blob).
func (s *Service) RollbackMigration(ctx context.Context, c Caller, p MigrationKeyParams) (err error) {
	defer s.recordMigration(ctx, c, "rolled-back", p, &err)
	if err := checkCaller(c); err != nil {
		return err
	}
	if err := checkCampaign(p, false); err != nil {
		return err
	}
	src, _, err := s.getKey(ctx, c.Tenant, p.SourceKeyID)
	if err != nil {
		return err
	}
	if src.Migration != nil && src.Migration.CampaignID == p.CampaignID && src.Migration.Phase == PhaseRetired {
		return newError(CodeInvalidState, "key %s was retired by campaign %s; it cannot be rolled back", src.ID, p.CampaignID)
	}
	if !ValidKeyID(p.TargetKeyID) {
		p.TargetKeyID = TargetKeyID(c.Tenant, p.CampaignID, p.SourceKeyID)
	}
	dst, _, err := s.getKey(ctx, c.Tenant, p.TargetKeyID)
	if CodeOf(err) == CodeNotFound {
		// The campaign never created the target: only the source's link
		// (if any) to undo.
		_, err = s.updateKeyAlways(ctx, c.Tenant, p.SourceKeyID, func(k *Key) error {
			if k.Migration != nil && k.Migration.CampaignID == p.CampaignID {
				k.Migration = nil
			}
			return nil
		})
		return err
	}
	if err != nil {
		return err
	}
	alias := src.Alias
	if alias == "" && dst.Migration != nil && dst.Migration.CampaignID == p.CampaignID {
		alias = dst.Alias
	}
	if err := s.moveAlias(ctx, c.Tenant, alias, p.TargetKeyID, p.SourceKeyID); err != nil {
		return err
	}
	unlink := func(state KeyState) func(k *Key) error {
		return func(k *Key) error {
			if k.Migration != nil && k.Migration.CampaignID == p.CampaignID {
				k.Migration = nil
				if (state == StateActive && k.State == StateDeactivated) || (state == StateDeactivated && k.State == StateActive) {
					k.State = state
				}
			}
			return nil
		}
	}
	if _, err := s.updateKeyAlways(ctx, c.Tenant, p.SourceKeyID, unlink(StateActive)); err != nil {
		return err
	}
	_, err = s.updateKeyAlways(ctx, c.Tenant, p.TargetKeyID, unlink(StateDeactivated))
	return err
}

// RetireMigrationSource ends a campaign on one key after its grace period.
// It refuses while registered data keys still use the source. The source
// stays DEACTIVATED (it still opens what was never registered and verifies
// old signatures) and the links say retired: no rollback from here.
func (s *Service) RetireMigrationSource(ctx context.Context, c Caller, p MigrationKeyParams) (err error) {
	p.Phase = PhaseRetired
	defer s.recordMigration(ctx, c, "retired", p, &err)
	if err := checkCaller(c); err != nil {
		return err
	}
	if err := checkCampaign(p, true); err != nil {
		return err
	}
	if err := s.CheckVersionUnused(ctx, c, p.SourceKeyID, 0); err != nil {
		return err
	}
	return s.setLinks(ctx, c.Tenant, p, PhaseRetired, nil, nil)
}

// RecordMigrationEvent records a campaign-level fact (started, a phase
// change, a control signal). Workflows call it through an activity with
// an idempotency key naming the fact.
func (s *Service) RecordMigrationEvent(ctx context.Context, c Caller, typ string, campaignID string, data map[string]any) error {
	if err := checkCaller(c); err != nil {
		return err
	}
	if !slices.Contains([]string{events.TypeMigrationStarted, events.TypeMigrationPhase, events.TypeMigrationControl}, typ) {
		return newError(CodeValidation, "not a campaign event type")
	}
	d := map[string]any{"campaignId": truncate(campaignID, 128)}
	for k, v := range data {
		d[k] = v
	}
	return s.emit(ctx, c, typ, "", d, nil)
}

// migrationPeer is the key a Sign or Verify on k also involves: the
// target while k is a source in its dual-signing phase.
func (s *Service) migrationPeer(ctx context.Context, k *Key) (*Key, bool) {
	if k.Migration == nil || k.Migration.Role != RoleSource || k.Migration.Phase != PhaseDualSigning {
		return nil, false
	}
	peer, err := s.cachedKey(ctx, k.Tenant, k.Migration.PeerKeyID)
	if err != nil || peer.Usage != UsageSignVerify {
		return nil, false
	}
	return peer, true
}

// verifyPeer returns the key that should verify a signature of algorithm
// alg asked of ref: the linked peer when ref's key does not use alg and
// its peer in a campaign does (a signature by the other side of a
// migration), else ref itself.
func (s *Service) verifyPeer(ctx context.Context, tenant, ref string, alg SigningAlgorithm) string {
	k, err := s.cachedKey(ctx, tenant, ref)
	if err != nil || k.Migration == nil || specs[k.Spec] == nil || contains(specs[k.Spec].signing, alg) {
		return ref
	}
	peer, err := s.cachedKey(ctx, tenant, k.Migration.PeerKeyID)
	if err != nil || specs[peer.Spec] == nil || !contains(specs[peer.Spec].signing, alg) {
		return ref
	}
	return peer.ID
}

// Campaign control actions, as callers ask for them.
const (
	ControlPause    = "pause"
	ControlResume   = "resume"
	ControlRollback = "rollback"
	ControlApprove  = "approve"
)

// RequestMigrationControl records that a caller asked a campaign to pause,
// resume, roll back or approve its cutover, and checks the request. The
// transport then signals the workflow, which records what it did.
func (s *Service) RequestMigrationControl(ctx context.Context, c Caller, campaignID, action string) (err error) {
	defer s.finish(ctx, c, events.TypeMigrationControl, &err, func() (string, map[string]any) {
		return "", map[string]any{"campaignId": truncate(campaignID, 128), "action": truncate(action, 64)}
	}, nil)
	if err := checkCaller(c); err != nil {
		return err
	}
	if !ValidCampaignID(campaignID) {
		return newError(CodeValidation, "%q is not a campaign ID", truncate(campaignID, 64))
	}
	switch action {
	case ControlPause, ControlResume, ControlRollback, ControlApprove:
		return nil
	}
	return newError(CodeValidation, "action must be pause, resume, rollback or approve")
}

var campaignRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ValidCampaignID reports whether s is a well-formed campaign ID (it
// appears in workflow IDs and audit records).
func ValidCampaignID(s string) bool { return campaignRE.MatchString(s) }

// Campaigns lists the campaigns that hold links on the tenant's keys (not
// yet retired or rolled back), from key metadata. It is a plain read.
func (s *Service) Campaigns(ctx context.Context, c Caller) ([]string, error) {
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	keys, err := s.store.ListKeys(ctx, c.Tenant)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to list keys")
	}
	var out []string
	for _, k := range keys {
		if k.Migration != nil && k.Migration.Phase != PhaseRetired && !slices.Contains(out, k.Migration.CampaignID) {
			out = append(out, k.Migration.CampaignID)
		}
	}
	return out, nil
}

// MaxCampaignKeys bounds the keys of one campaign.
const MaxCampaignKeys = 256

// ControlStart is the action recorded when a campaign is asked to start.
const ControlStart = "start"

// RequestMigration checks a campaign plan before the transport starts its
// workflow, and records the request: every key exists, is of this tenant,
// appears once, is in no other campaign, and its target spec can take
// over its role.
func (s *Service) RequestMigration(ctx context.Context, c Caller, campaignID string, plan []MigrationKeyParams) (err error) {
	defer s.finish(ctx, c, events.TypeMigrationControl, &err, func() (string, map[string]any) {
		return "", map[string]any{"campaignId": truncate(campaignID, 128), "action": ControlStart, "keys": len(plan)}
	}, nil)
	if err := checkCaller(c); err != nil {
		return err
	}
	if !ValidCampaignID(campaignID) {
		return newError(CodeValidation, "%q is not a campaign ID (1-63 characters of a-z, 0-9 and -)", truncate(campaignID, 64))
	}
	if len(plan) == 0 || len(plan) > MaxCampaignKeys {
		return newError(CodeValidation, "a campaign moves 1 to %d keys", MaxCampaignKeys)
	}
	seen := map[string]bool{}
	for _, p := range plan {
		if !ValidKeyID(p.SourceKeyID) {
			return newError(CodeValidation, "%q is not a key ID", truncate(p.SourceKeyID, 64))
		}
		if seen[p.SourceKeyID] {
			return newError(CodeValidation, "key %s appears twice in the plan", p.SourceKeyID)
		}
		seen[p.SourceKeyID] = true
		k, _, err := s.getKey(ctx, c.Tenant, p.SourceKeyID)
		if err != nil {
			return err
		}
		if err := linkable(k, campaignID); err != nil {
			return err
		}
		to, ok := specs[p.TargetSpec]
		if !ok {
			return newError(CodeValidation, "unsupported target key spec %q", truncate(string(p.TargetSpec), 64))
		}
		if to.profile.QuantumVulnerable {
			return newError(CodeValidation, "target key spec %s is itself quantum-vulnerable", p.TargetSpec)
		}
		if info := specs[k.Spec]; info == nil || migrationTarget(info, k.Usage, to) != p.TargetSpec {
			return newError(CodeValidation, "a %s key cannot take over the role of key %s (%s, %s)", p.TargetSpec, k.ID, k.Spec, k.Usage)
		}
	}
	return nil
}
