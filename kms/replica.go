package kms

// Multi-region keys (docs/multi-region.md): one logical key over several
// keyflow deployments, one per region, each with its own HSM root key.
//
// A multi-region key has a primary region, where it is created, rotated
// and changed, and replicas in other regions with the same key ID, the
// same versions and the same material, so that a ciphertext made in one
// region decrypts in every other without a cross-region call.
//
// How a version moves (the BYOK machinery of imports.go, turned around):
//
//  1. the replica's HSM makes an RSA-3072 wrapping key pair and an import
//     token (ReplicaImportParameters), exactly as GetParametersForImport
//     does for a customer;
//  2. the primary's HSM unwraps the version under its root key into a
//     temporary object and wraps it to that public key with RSA-OAEP
//     (ExportReplicaVersion, hsm.TransportWrapper): the material never
//     leaves either HSM in the clear;
//  3. the replica imports it (ApplyReplicaVersion: RSA-OAEP unwrap into
//     its HSM, re-wrapped under its own root key) and stores it like any
//     version.
//
// Only SYMMETRIC_DEFAULT and HMAC_256 replicate: they are what
// hsm.TransportWrapper moves inside SoftHSM. Asymmetric specs would move
// as PKCS#8 under RSA + AES key wrap, which SoftHSM 2.6.1 lacks as a
// wrapping mechanism (and Ed25519 private keys cannot be wrapped at all);
// post-quantum keys are software keys with no HSM transport. Both are
// refused with a message saying so.
//
// A replica never changes material: it refuses to rotate, to create
// versions and to switch its primary version, so nothing can conflict.
// Everything the primary changes reaches the replica as the next version
// (in order) or as metadata (ApplyReplicaMetadata), sent by the primary
// region's replication workflow (workflows/replication.go) over the NATS
// link (package region). The domain knows nothing of either.

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"time"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/hsm"
)

// ReplicaState is a replica's state as its primary records it.
type ReplicaState string

// Replica states.
const (
	// ReplicaCreating: requested; the replica has no version yet.
	ReplicaCreating ReplicaState = "CREATING"
	// ReplicaActive: the replica has at least one version and serves.
	ReplicaActive ReplicaState = "ACTIVE"
	// ReplicaPendingDeletion: the replica is scheduled for deletion in
	// its region (ScheduleReplicaDeletion), with its own window.
	ReplicaPendingDeletion ReplicaState = "PENDING_DELETION"
	// ReplicaDisabled: the replica's deletion was cancelled
	// (CancelReplicaDeletion); its key there is SUSPENDED (keyflow's
	// disabled) until it is replicated again (ReplicateKey), as AWS KMS
	// leaves a replica whose deletion was cancelled Disabled.
	ReplicaDisabled ReplicaState = "DISABLED"
	// ReplicaDestroyed: the replica's window ended and its region
	// destroyed its material (MarkReplicaDestroyed). The entry stays, so
	// that the key's history shows it; nothing is sent to it any more.
	ReplicaDestroyed ReplicaState = "DESTROYED"
)

// Replica is one region of a multi-region key other than its primary.
type Replica struct {
	Region            string       `json:"region"`
	State             ReplicaState `json:"state"`
	LastSyncedVersion uint32       `json:"lastSyncedVersion"`
	SyncedAt          time.Time    `json:"syncedAt,omitzero"`
	DeletionDate      time.Time    `json:"deletionDate,omitzero"`
	// DeletionSeq counts the primary's changes of this replica's deletion
	// (scheduled, cancelled, enabled again, destroyed): a replica ignores
	// news about its deletion older than what it has (a stale message).
	// A counter, not a time, so that no clock decides it.
	DeletionSeq uint32 `json:"deletionSeq,omitempty"`
}

var regionRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ValidRegion reports whether s is a well-formed region name. Region
// names appear in NATS subjects and JetStream domains: [a-z0-9-].
func ValidRegion(s string) bool { return regionRE.MatchString(s) }

// replicable is what hsm.TransportWrapper moves (see the notes above).
var replicable = map[KeySpec]hsm.ImportTarget{
	SpecSymmetricDefault: {Kind: hsm.ImportAES, Size: 32},
	SpecHMAC256:          {Kind: hsm.ImportHMAC, Size: 32},
}

// Replicable reports whether keys of spec can be multi-region.
func Replicable(spec KeySpec) bool { _, ok := replicable[spec]; return ok }

// Region returns this deployment's region ("" for a single-region one).
func (s *Service) Region() string { return s.region }

// IsReplica reports whether k is a replica here: a multi-region key whose
// primary is in another region.
func (s *Service) IsReplica(k *Key) bool { return k.MultiRegion && k.PrimaryRegion != s.region }

// Regions lists every region a key lives in, its primary first.
func (k *Key) Regions() []string {
	if !k.MultiRegion {
		return nil
	}
	out := []string{k.PrimaryRegion}
	for _, r := range k.Replicas {
		if r.State != ReplicaDestroyed {
			out = append(out, r.Region)
		}
	}
	return out
}

// ReplicaIn returns the replica of region and whether there is one.
func (k *Key) ReplicaIn(region string) (Replica, bool) {
	for _, r := range k.Replicas {
		if r.Region == region {
			return r, true
		}
	}
	return Replica{}, false
}

// NewestVersion is the highest version number of k.
func (k *Key) NewestVersion() uint32 {
	if len(k.Versions) == 0 {
		return 0
	}
	return k.Versions[len(k.Versions)-1].Number
}

// refuseReplicaChange refuses a material change (rotation, a new
// version, a primary-version switch) on a replica.
func (s *Service) refuseReplicaChange(k *Key, what string) error {
	if !s.IsReplica(k) {
		return nil
	}
	return newError(CodeUnsupportedOperation, "key %s is a replica of a multi-region key whose primary is in region %s; a replica does not %s: do it on the primary, and it reaches this region", k.ID, k.PrimaryRegion, what)
}

// checkMultiRegionCreate checks CreateKey's MultiRegion request.
func (s *Service) checkMultiRegionCreate(p CreateKeyParams, external bool) error {
	if !p.MultiRegion {
		return nil
	}
	if s.region == "" {
		return newError(CodeUnsupportedOperation, "this deployment has no region; start it with a region name to create multi-region keys")
	}
	if !Replicable(p.Spec) {
		return newError(CodeUnsupportedOperation, "key spec %s cannot be multi-region: only %s and %s move between HSMs without leaving them (docs/multi-region.md)", p.Spec, SpecSymmetricDefault, SpecHMAC256)
	}
	if external || p.Exportable || p.material != nil {
		return newError(CodeValidation, "a multi-region key is generated by keyflow: it cannot be EXTERNAL, exportable or registered")
	}
	return nil
}

// ReplicateKeyParams are the inputs of ReplicateKey.
type ReplicateKeyParams struct {
	KeyRef string
	Region string
}

// ReplicateKey adds a replica region to a multi-region primary key. It is
// idempotent: a region that is already a replica is returned unchanged.
// The transport then starts the replication workflow, which sends the
// versions.
func (s *Service) ReplicateKey(ctx context.Context, c Caller, p ReplicateKeyParams) (k *Key, err error) {
	defer s.finish(ctx, c, events.TypeKeyReplicaCreated, &err, func() (string, map[string]any) {
		data := map[string]any{"keyRef": truncate(p.KeyRef, 64), "region": truncate(p.Region, 64), "role": "primary"}
		subject := ""
		if k != nil {
			subject = k.ResourceName()
			data["primaryRegion"] = k.PrimaryRegion
		}
		return subject, data
	}, func() { k = nil })
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if !ValidRegion(p.Region) {
		return nil, newError(CodeValidation, "%q is not a region name ([a-z0-9-], 1-63 characters)", truncate(p.Region, 64))
	}
	cur, _, err := s.resolve(ctx, c.Tenant, p.KeyRef)
	if err != nil {
		return nil, err
	}
	k = cur
	if err := s.checkPrimaryHere(cur); err != nil {
		return nil, err
	}
	if p.Region == s.region {
		return nil, newError(CodeValidation, "key %s already lives in region %s: it is the primary", cur.ID, p.Region)
	}
	k, err = s.updateKey(ctx, c.Tenant, cur.ID, func(k *Key) (bool, error) {
		if r, ok := k.ReplicaIn(p.Region); ok {
			return reenableReplica(k, r)
		}
		if k.Lifecycle.PendingDeletion || !k.State.Allows(UseProcess) {
			return false, newError(CodeInvalidState, "key %s is %s and is not replicated", k.ID, k.State)
		}
		k.Replicas = append(k.Replicas, Replica{Region: p.Region, State: ReplicaCreating})
		return false, nil
	})
	return k, err
}

// checkPrimaryHere refuses a primary-only change of a key that is not a
// multi-region primary in this region.
func (s *Service) checkPrimaryHere(k *Key) error {
	if !k.MultiRegion {
		return newError(CodeUnsupportedOperation, "key %s is not a multi-region key; create it with multi-region to replicate it", k.ID)
	}
	if k.PrimaryRegion != s.region {
		return newError(CodeUnsupportedOperation, "key %s is a replica; its primary is in region %s", k.ID, k.PrimaryRegion)
	}
	return nil
}

// ExportReplicaParams are the inputs of ExportReplicaVersion.
type ExportReplicaParams struct {
	KeyID   string
	Region  string
	Version uint32
	// PublicKey is the replica HSM's wrapping public key (DER SPKI), from
	// its ReplicaImportParameters.
	PublicKey []byte
}

// ReplicaVersion is one version on its way to a replica: the version's
// metadata and its material wrapped to the replica HSM's public key.
type ReplicaVersion struct {
	Version Version
	Wrapped []byte
}

// ExportReplicaVersion wraps one version of a multi-region primary for a
// replica inside this HSM (hsm.TransportWrapper). It records nothing: the
// replica's acknowledgement is recorded by MarkReplicaSynced.
func (s *Service) ExportReplicaVersion(ctx context.Context, c Caller, p ExportReplicaParams) (*ReplicaVersion, error) {
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	k, _, err := s.getKey(ctx, c.Tenant, p.KeyID)
	if err != nil {
		return nil, err
	}
	if err := s.checkPrimaryHere(k); err != nil {
		return nil, err
	}
	if _, ok := k.ReplicaIn(p.Region); !ok {
		return nil, newError(CodeNotFound, "key %s has no replica in region %s", k.ID, p.Region)
	}
	v, ok := k.Version(p.Version)
	if !ok {
		return nil, newError(CodeNotFound, "key %s has no version %d", k.ID, p.Version)
	}
	target, ok := replicable[k.Spec]
	if !ok {
		return nil, newError(CodeUnsupportedOperation, "key spec %s does not replicate", k.Spec)
	}
	tw, ok := s.hsm.(hsm.TransportWrapper)
	if !ok {
		return nil, newError(CodeUnsupportedOperation, "this HSM cannot wrap keys for another HSM")
	}
	m, err := s.store.GetMaterial(ctx, k.Tenant, k.ID, v.Number)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to read key material")
	}
	wrapped, err := tw.WrapForTransport(ctx, s.root, m.Wrapped, target, p.PublicKey)
	if err != nil {
		if errors.Is(err, hsm.ErrInvalidInput) {
			return nil, wrapError(CodeValidation, err, "the replica's wrapping public key is not usable")
		}
		return nil, wrapError(CodeInternal, err, "the HSM failed to wrap the version for the replica")
	}
	return &ReplicaVersion{Version: v, Wrapped: wrapped}, nil
}

// MarkReplicaParams are the inputs of MarkReplicaSynced.
type MarkReplicaParams struct {
	KeyID   string
	Region  string
	Version uint32
}

// MarkReplicaSynced records that a replica acknowledged a version. The
// replication activity sets an idempotency key per version, so a retry
// leaves one record.
func (s *Service) MarkReplicaSynced(ctx context.Context, c Caller, p MarkReplicaParams) (k *Key, err error) {
	defer s.finish(ctx, c, events.TypeKeyReplicaSynced, &err, func() (string, map[string]any) {
		return ResourceName(c.Tenant, p.KeyID), map[string]any{"keyId": p.KeyID, "region": truncate(p.Region, 64), "version": p.Version, "role": "primary"}
	}, func() { k = nil })
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	return s.updateKey(ctx, c.Tenant, p.KeyID, func(k *Key) (bool, error) {
		for i := range k.Replicas {
			r := &k.Replicas[i]
			if r.Region != p.Region {
				continue
			}
			if r.LastSyncedVersion >= p.Version {
				return true, nil
			}
			r.LastSyncedVersion, r.SyncedAt = p.Version, s.now().UTC()
			if r.State == ReplicaCreating {
				r.State = ReplicaActive
			}
			return false, nil
		}
		return false, newError(CodeNotFound, "key %s has no replica in region %s", k.ID, p.Region)
	})
}

// Laggards lists the replica regions of k that do not have version v yet,
// in the order of k.Replicas. Replicas pending deletion are not waited for.
func Laggards(k *Key, v uint32) []string {
	var out []string
	for _, r := range k.Replicas {
		if r.State != ReplicaPendingDeletion && r.State != ReplicaDestroyed && r.LastSyncedVersion < v {
			out = append(out, r.Region)
		}
	}
	return out
}

// RecordReplicaLag records that a multi-region primary switched to version
// v before every replica had it (the rotation's wait timed out), naming
// the lagging regions. They catch up afterwards.
func (s *Service) RecordReplicaLag(ctx context.Context, c Caller, keyID string, v uint32, laggards []string) error {
	if err := checkCaller(c); err != nil {
		return err
	}
	_, lost := s.emitRecord(ctx, c, events.TypeKeyReplicaLagging, ResourceName(c.Tenant, keyID), map[string]any{"keyId": keyID, "version": v, "regions": laggards}, nil)
	return lost
}

// ReplicaImportParameters makes a wrapping key pair in this HSM and an
// import token for one version of a replica to come (step 1 of the notes
// above). The key need not exist here yet.
func (s *Service) ReplicaImportParameters(ctx context.Context, c Caller, keyID string) (*ImportParameters, error) {
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if !ValidKeyID(keyID) {
		return nil, newError(CodeValidation, "%q is not a key ID", truncate(keyID, 64))
	}
	tok := importToken{
		Tenant: c.Tenant, KeyID: keyID, Algorithm: WrapRSAOAEPSHA1, Spec: WrappingRSA3072,
		Expires: s.now().Add(ImportTokenLifetime).UTC().Truncate(time.Second), WrappedBy: s.label,
	}
	if err := s.rsaWrappingPair(ctx, &tok); err != nil {
		return nil, err
	}
	sealed, err := s.sealImportToken(ctx, &tok)
	if err != nil {
		return nil, err
	}
	return &ImportParameters{KeyID: keyID, Algorithm: tok.Algorithm, Spec: tok.Spec, PublicKey: tok.PublicKey, ImportToken: sealed, ValidTo: tok.Expires}, nil
}

// ApplyReplicaParams are the inputs of ApplyReplicaVersion.
type ApplyReplicaParams struct {
	// From is the region that sends: the key's primary region.
	From string
	// Key is the primary's metadata of the key (no material).
	Key         *Key
	Version     uint32
	Wrapped     []byte
	ImportToken []byte
}

// ApplyResult says whether an apply changed anything: false for a version
// or metadata the replica already had (a retried or repeated message).
type ApplyResult struct {
	Applied bool
	Key     *Key
}

// checkFromPrimary checks a replication message against what this region
// knows: the sender must be the key's primary as the message says, and as
// the local replica says when there is one.
func (s *Service) checkFromPrimary(c Caller, from string, meta *Key, local *Key) error {
	if meta == nil || !meta.MultiRegion || !ValidKeyID(meta.ID) || meta.Tenant != c.Tenant {
		return newError(CodeValidation, "the replication message does not describe a multi-region key of tenant %s", c.Tenant)
	}
	if !ValidRegion(from) || from == s.region {
		return newError(CodeValidation, "the replication message comes from region %q, which is not another region", truncate(from, 64))
	}
	if !Replicable(meta.Spec) {
		return newError(CodeUnsupportedOperation, "key spec %s does not replicate", meta.Spec)
	}
	if local != nil {
		if !local.MultiRegion || local.Spec != meta.Spec {
			return newError(CodeConflict, "key %s exists in region %s and is not a replica of this multi-region key", local.ID, s.region)
		}
		if local.PrimaryRegion != from {
			return newError(CodeInvalidState, "key %s has its primary in region %s, not %s; the change is refused", local.ID, local.PrimaryRegion, from)
		}
	}
	return nil
}

// ApplyReplicaVersion stores one version sent by the primary (step 3 of
// the notes above): the first one creates the replica key here with the
// same ID. Versions arrive in order: a version the replica has is a no-op
// (Applied false, no record); a gap is a conflict, and the primary sends
// the missing one first. One io.keyflow.key.replica.applied.v1 record per
// version applied.
func (s *Service) ApplyReplicaVersion(ctx context.Context, c Caller, p ApplyReplicaParams) (res *ApplyResult, err error) {
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	subject := ""
	if p.Key != nil && ValidKeyID(p.Key.ID) {
		subject = ResourceName(c.Tenant, p.Key.ID)
	}
	record := func(opErr error) error {
		data := map[string]any{"version": p.Version, "primaryRegion": truncate(p.From, 64), "region": s.region, "role": "replica"}
		if subject != "" {
			data["keyId"] = p.Key.ID
		}
		return s.emit(ctx, c, events.TypeKeyReplicaApplied, subject, data, opErr)
	}
	res, err = s.applyReplicaVersion(ctx, c, p)
	if err != nil || res.Applied {
		if err = record(err); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func (s *Service) applyReplicaVersion(ctx context.Context, c Caller, p ApplyReplicaParams) (*ApplyResult, error) {
	local, _, err := s.getKey(ctx, c.Tenant, keyIDOf(p.Key))
	if err != nil && CodeOf(err) != CodeNotFound {
		return nil, err
	}
	if err := s.checkFromPrimary(c, p.From, p.Key, local); err != nil {
		return nil, err
	}
	meta := p.Key
	mv, ok := meta.Version(p.Version)
	if !ok {
		return nil, newError(CodeValidation, "the replication message carries version %d, which key %s does not list", p.Version, meta.ID)
	}
	if local != nil {
		if err := s.refuseDestroyedReplica(local, p.From); err != nil {
			return nil, err
		}
		if _, ok := local.Version(p.Version); ok {
			return &ApplyResult{Key: local}, nil
		}
		if want := local.NewestVersion() + 1; p.Version != want {
			return nil, newError(CodeConflict, "replica of key %s has versions up to %d; version %d must come first", local.ID, local.NewestVersion(), want)
		}
	}
	tok, err := s.openImportToken(ctx, p.ImportToken)
	if err != nil {
		return nil, err
	}
	if tok.Tenant != c.Tenant || tok.KeyID != meta.ID || tok.WrappedBy != s.label || tok.Algorithm != WrapRSAOAEPSHA1 {
		return nil, newError(CodeInvalidImportToken, "the import token was issued for another key or root key")
	}
	if !s.now().Before(tok.Expires) {
		return nil, newError(CodeExpiredImportToken, "the import token expired at %s", tok.Expires.Format(time.RFC3339))
	}
	blob, _, err := s.unwrapImport(ctx, tok, p.Wrapped, importKind{target: replicable[meta.Spec]})
	if err != nil {
		return nil, err
	}
	m := &VersionMaterial{Tenant: c.Tenant, KeyID: meta.ID, Version: p.Version, Algorithm: mv.Algorithm, Wrapped: blob, WrappedBy: s.label}
	if err := s.store.PutMaterial(ctx, m); err != nil && !errors.Is(err, ErrStoreExists) {
		return nil, wrapError(CodeInternal, err, "failed to store key material")
	}
	if local == nil {
		if p.Version != meta.Versions[0].Number { // a replica starts with the primary's oldest version
			return nil, newError(CodeConflict, "a new replica of key %s starts with version %d", meta.ID, meta.Versions[0].Number)
		}
		k := replicaFrom(meta, []Version{mv})
		if _, err := s.store.CreateKey(ctx, k); err != nil {
			if errors.Is(err, ErrStoreExists) {
				return nil, newError(CodeConflict, "key %s was created concurrently; retry", meta.ID)
			}
			return nil, wrapError(CodeInternal, err, "failed to store key")
		}
		return &ApplyResult{Applied: true, Key: k}, nil
	}
	applied := false
	k, err := s.updateKey(ctx, c.Tenant, meta.ID, func(k *Key) (bool, error) {
		if _, ok := k.Version(p.Version); ok {
			return true, nil
		}
		if p.Version != k.NewestVersion()+1 {
			return false, newError(CodeConflict, "replica of key %s has versions up to %d", k.ID, k.NewestVersion())
		}
		*k = *replicaFrom(meta, append(k.Versions, mv))
		applied = true
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	return &ApplyResult{Applied: applied, Key: k}, nil
}

func keyIDOf(k *Key) string {
	if k == nil || !ValidKeyID(k.ID) {
		return "00000000-0000-0000-0000-000000000000"
	}
	return k.ID
}

// replicaFrom is the replica's record of meta holding versions: the
// primary's metadata, with the replica's own versions, and a primary
// version the replica has. Aliases stay per region.
func replicaFrom(meta *Key, versions []Version) *Key {
	k := *meta
	k.Alias = ""
	k.Versions = slices.Clone(versions)
	for i := range k.Versions {
		if mv, ok := meta.Version(k.Versions[i].Number); ok {
			k.Versions[i].State = mv.State
			k.Versions[i].DeactivationDate = mv.DeactivationDate
		}
	}
	if _, ok := k.Version(meta.PrimaryVersion); !ok {
		k.PrimaryVersion = k.NewestVersion()
	}
	k.Replicas = slices.Clone(meta.Replicas)
	k.Migration, k.Import, k.Attributes = nil, nil, nil
	return &k
}

// ApplyMetadataParams are the inputs of ApplyReplicaMetadata.
type ApplyMetadataParams struct {
	From string
	Key  *Key
}

// ApplyReplicaMetadata takes the primary's metadata of a key the replica
// already has: its state (enabled, disabled), its primary version (once
// the replica has that version), its replica list and primary region, and
// this region's scheduled deletion. A message that changes nothing is a
// no-op without a record; otherwise one io.keyflow.key.replica.updated.v1
// record names what changed.
func (s *Service) ApplyReplicaMetadata(ctx context.Context, c Caller, p ApplyMetadataParams) (res *ApplyResult, err error) {
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	var changed []string
	subject := ""
	if p.Key != nil && ValidKeyID(p.Key.ID) {
		subject = ResourceName(c.Tenant, p.Key.ID)
	}
	res, err = s.applyReplicaMetadata(ctx, c, p, &changed)
	if err != nil || len(changed) > 0 {
		data := map[string]any{"primaryRegion": truncate(p.From, 64), "region": s.region, "changed": changed, "role": "replica"}
		if res != nil {
			data["keyId"] = res.Key.ID
			data["primaryVersion"] = res.Key.PrimaryVersion
			data["keyState"] = string(res.Key.State)
			data["newPrimaryRegion"] = res.Key.PrimaryRegion
		}
		if err = s.emit(ctx, c, events.TypeKeyReplicaUpdated, subject, data, err); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func (s *Service) applyReplicaMetadata(ctx context.Context, c Caller, p ApplyMetadataParams, changed *[]string) (*ApplyResult, error) {
	local, _, err := s.getKey(ctx, c.Tenant, keyIDOf(p.Key))
	if err != nil {
		return nil, err
	}
	if err := s.checkFromPrimary(c, p.From, p.Key, local); err != nil {
		return nil, err
	}
	meta := p.Key
	k, err := s.updateKey(ctx, c.Tenant, local.ID, func(k *Key) (bool, error) {
		*changed = (*changed)[:0]
		if err := s.refuseDestroyedReplica(k, p.From); err != nil {
			return false, err
		}
		next := replicaFrom(meta, k.Versions)
		next.Alias = k.Alias
		if next.PrimaryRegion == s.region {
			// Failover: this region becomes the primary.
			next.Replicas = slices.DeleteFunc(next.Replicas, func(r Replica) bool { return r.Region == s.region })
		} else {
			s.applyOwnDeletion(k, next)
		}
		if k.State != next.State {
			*changed = append(*changed, "keyState")
		}
		if k.PrimaryVersion != next.PrimaryVersion {
			*changed = append(*changed, "primaryVersion")
		}
		if k.PrimaryRegion != next.PrimaryRegion {
			*changed = append(*changed, "primaryRegion")
		}
		if k.Lifecycle.PendingDeletion != next.Lifecycle.PendingDeletion || !k.Lifecycle.DeletionDate.Equal(next.Lifecycle.DeletionDate) {
			*changed = append(*changed, "deletion")
		}
		if !slices.EqualFunc(k.Replicas, next.Replicas, func(a, b Replica) bool {
			return a.Region == b.Region && a.State == b.State && a.LastSyncedVersion == b.LastSyncedVersion
		}) {
			*changed = append(*changed, "replicas")
		}
		for i := range k.Versions {
			if k.Versions[i].State != next.Versions[i].State {
				*changed = append(*changed, "versionState")
				break
			}
		}
		if len(*changed) == 0 {
			return true, nil
		}
		*k = *next
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	return &ApplyResult{Applied: len(*changed) > 0, Key: k}, nil
}

// UpdatePrimaryRegion makes a replica region the key's primary (failover
// or a planned move). Only the current primary does it, and only to a
// replica that has every version: the new primary must be able to decrypt
// everything. This region becomes a replica with everything synced; the
// replication workflow then tells the new primary.
func (s *Service) UpdatePrimaryRegion(ctx context.Context, c Caller, ref, region string) (*Key, error) {
	data := map[string]any{"keyRef": truncate(ref, 64), "region": truncate(region, 64), "previousPrimaryRegion": s.region}
	return s.changeKey(ctx, c, events.TypeKeyReplicaPrimaryChanged, ref, data, s.checkPrimaryHere, func(k *Key) (bool, error) {
		r, ok := k.ReplicaIn(region)
		if !ok {
			return false, newError(CodeNotFound, "key %s has no replica in region %s", k.ID, truncate(region, 64))
		}
		if r.State == ReplicaPendingDeletion || r.State == ReplicaDestroyed {
			return false, newError(CodeInvalidState, "the replica of key %s in region %s is %s", k.ID, region, r.State)
		}
		if r.LastSyncedVersion < k.NewestVersion() {
			return false, newError(CodeInvalidState, "the replica of key %s in region %s has versions up to %d of %d; it becomes primary once it has them all", k.ID, region, r.LastSyncedVersion, k.NewestVersion())
		}
		k.Replicas = slices.DeleteFunc(k.Replicas, func(x Replica) bool { return x.Region == region })
		k.Replicas = append(k.Replicas, Replica{Region: s.region, State: ReplicaActive, LastSyncedVersion: k.NewestVersion(), SyncedAt: s.now().UTC()})
		k.PrimaryRegion = region
		return false, nil
	})
}

// ScheduleReplicaDeletion schedules the deletion of one replica, with its
// own waiting period, on the primary; the replication workflow tells the
// replica, which refuses every use from then on and runs the standard
// deletion timer of its region (replica_deletion.go).
func (s *Service) ScheduleReplicaDeletion(ctx context.Context, c Caller, ref, region string, window time.Duration) (*Key, error) {
	data := map[string]any{"keyRef": truncate(ref, 64), "region": truncate(region, 64), "pendingWindowDays": int(window / Day)}
	return s.changeKey(ctx, c, events.TypeKeyReplicaDeletionScheduled, ref, data, func(cur *Key) error {
		if window < 7*Day || window > 30*Day {
			return newError(CodeValidation, "the waiting period of a replica's deletion is 7 to 30 days")
		}
		return s.checkPrimaryHere(cur)
	}, func(k *Key) (bool, error) {
		for i := range k.Replicas {
			if k.Replicas[i].Region == region {
				switch k.Replicas[i].State {
				case ReplicaPendingDeletion:
					return true, nil
				case ReplicaDestroyed:
					return false, newError(CodeInvalidState, "the replica of key %s in region %s is destroyed already", k.ID, region)
				}
				k.Replicas[i].State = ReplicaPendingDeletion
				k.Replicas[i].DeletionDate = s.now().Add(window).UTC().Truncate(time.Second)
				k.Replicas[i].DeletionSeq++
				return false, nil
			}
		}
		return false, newError(CodeNotFound, "key %s has no replica in region %s", k.ID, truncate(region, 64))
	})
}
