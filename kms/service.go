package kms

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/hsm"
)

// Caller is who asks, as established by the transport (never by the request
// body): the tenant and principal the NATS server vouched for.
type Caller struct {
	Tenant    string
	Principal string
	RequestID string
	// IdempotencyKey, when set, makes the audit event ID deterministic, so
	// a retried workflow activity does not produce a second record.
	IdempotencyKey string
	// Roles are the caller's roles as the transport established them
	// (key-admin, crypto-user, auditor, approver, tenant-admin). Nil when
	// the transport has no role information (internal calls).
	Roles []string
}

// Service is the key management domain: it creates keys, runs crypto
// operations through the HSM and records every attempt in the audit trail.
// It is safe for concurrent use. Transports (NATS services, HTTP gateways,
// Temporal activities) are thin adapters over it.
type Service struct {
	hsm     hsm.Backend
	root    hsm.KeyHandle
	label   string
	store   Store
	audit   events.Sink
	source  string
	log     *slog.Logger
	now     func() time.Time
	handles *handleCache

	failOpen bool
	dropped  atomic.Uint64 // audit records lost while failing open

	metaMu sync.RWMutex
	meta   map[[2]string]*Key
	// mats caches wrapped version material of software keys, which is
	// write-once and useless without the HSM: it saves a KV read per
	// post-quantum operation. The private key itself is never cached.
	mats map[versionRef]*VersionMaterial
	// aliasIDs lets cachedKey serve requests by alias from meta.
	aliasIDs aliasCache

	gov          governance  // tenant policies and approvals (tenantpolicy.go, approval.go)
	imports      importHooks // BYOK (imports.go)
	authz        authzCache  // key policies, grants and deny lists (authz.go)
	destroyersMu sync.Mutex
	destroyers   []MaterialDestroyer // see RegisterDestroyer
	akMu         sync.Mutex
	akWatchers   []AccessKeyWatcher // gateways' secret caches (accesskeys.go)
	region       string             // this deployment's region (replica.go)
}

// DroppedAuditRecords is the number of audit records this service could
// not store and went on without (fail-open only; always 0 fail-closed).
func (s *Service) DroppedAuditRecords() uint64 { return s.dropped.Load() }

// Close destroys the cached session objects. It does not close the HSM.
func (s *Service) Close() { s.handles.closeAll() }

// Invalidate forgets cached metadata and unwrapped versions of one key. The
// NATS adapter calls it from a watch on the key bucket, so every worker
// sees a state change within milliseconds.
func (s *Service) Invalidate(tenant, keyID string) {
	s.metaMu.Lock()
	delete(s.meta, [2]string{tenant, keyID})
	for ref := range s.mats {
		if ref.tenant == tenant && ref.keyID == keyID {
			delete(s.mats, ref)
		}
	}
	s.metaMu.Unlock()
	s.aliasIDs.forget(tenant)
	s.handles.invalidateKey(tenant, keyID)
}

// emit records one fact. It is called on success and on failure alike. It
// fails closed: if the record cannot be stored, a successful operation is
// reported as AuditUnavailable and its result is withheld by the caller.
// With Config.AuditFailOpen it logs and counts the lost record instead, and
// the operation's own outcome stands.
func (s *Service) emit(ctx context.Context, c Caller, typ, subject string, data map[string]any, opErr error) error {
	err, _ := s.emitRecord(ctx, c, typ, subject, data, opErr)
	return err
}

// emitRecord is emit that also reports whether the record was lost (fail
// closed or open), for callers whose only job is the record.
func (s *Service) emitRecord(ctx context.Context, c Caller, typ, subject string, data map[string]any, opErr error) (error, error) {
	rec := events.Record{
		Type: typ, Source: s.source, Subject: subject, Tenant: c.Tenant,
		Principal: c.Principal, RequestID: c.RequestID, Time: s.now(), Data: data,
		Outcome: events.OutcomeSuccess,
	}
	if c.IdempotencyKey != "" {
		rec.ID = events.StableID(c.IdempotencyKey, typ)
	}
	if opErr != nil {
		rec.Outcome = events.OutcomeFailure
		if CodeOf(opErr) == CodeAccessDenied {
			rec.Outcome = events.OutcomeDenied
		}
		rec.ErrorCode = string(CodeOf(opErr))
	}
	if !ValidTenant(rec.Tenant) {
		rec.Tenant = "-"
	}
	// The caller's deadline may be gone (a cancelled request is still an
	// attempt worth recording), so audit gets its own bounded context.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.audit.Emit(actx, rec); err != nil {
		if !s.failOpen {
			s.log.Error("audit record not stored", "type", typ, "subject", subject, "outcome", rec.Outcome, "errorcode", rec.ErrorCode, "err", err)
			lost := wrapError(CodeAuditUnavailable, err, "the audit trail is unavailable, so the operation was refused; retry later")
			if opErr != nil {
				// The caller's own error is more useful than ours; the
				// lost record is in the worker log above.
				return opErr, lost
			}
			return lost, lost
		}
		n := s.dropped.Add(1)
		s.log.Error("AUDIT RECORD DROPPED: fail-open, so the operation went on without it", "type", typ, "subject", subject, "tenant", rec.Tenant, "requestid", rec.RequestID, "outcome", rec.Outcome, "errorcode", rec.ErrorCode, "dropped", n, "err", err)
	}
	if opErr != nil && CodeOf(opErr) == CodeInternal {
		s.log.Error("operation failed", "type", typ, "subject", subject, "err", opErr)
	}
	return opErr, nil
}

// checkCaller refuses a request without an authenticated tenant.
func checkCaller(c Caller) error {
	if !ValidTenant(c.Tenant) {
		return newError(CodeAccessDenied, "the request has no valid tenant")
	}
	return nil
}

// resolve turns a key reference (key ID, alias, or "alias/NAME") into a key.
func (s *Service) resolve(ctx context.Context, tenant, ref string) (*Key, Revision, error) {
	if ref == "" {
		return nil, 0, newError(CodeValidation, "a key ID or alias is required")
	}
	keyID := ref
	if !ValidKeyID(ref) {
		alias := normalizeAlias(ref)
		if !validAlias(alias) {
			return nil, 0, newError(CodeValidation, "%q is neither a key ID nor a valid alias", truncate(ref, 64))
		}
		id, err := s.store.ResolveAlias(ctx, tenant, alias)
		if errors.Is(err, ErrStoreNotFound) {
			return nil, 0, newError(CodeNotFound, "alias %q does not exist", alias)
		}
		if err != nil {
			return nil, 0, wrapError(CodeInternal, err, "failed to resolve alias")
		}
		keyID = id
	}
	return s.getKey(ctx, tenant, keyID)
}

func (s *Service) getKey(ctx context.Context, tenant, keyID string) (*Key, Revision, error) {
	k, rev, err := s.store.GetKey(ctx, tenant, keyID)
	if errors.Is(err, ErrStoreNotFound) {
		return nil, 0, newError(CodeNotFound, "key %s does not exist", keyID)
	}
	if err != nil {
		return nil, 0, wrapError(CodeInternal, err, "failed to read key")
	}
	return k, rev, nil
}

// cachedKey is getKey for the hot path: metadata is served from memory until
// Invalidate drops it.
func (s *Service) cachedKey(ctx context.Context, tenant, ref string) (*Key, error) {
	var alias string // set when ref is an alias (see aliascache.go)
	var aliasGen uint64
	if ValidKeyID(ref) {
		s.metaMu.RLock()
		k := s.meta[[2]string{tenant, ref}]
		s.metaMu.RUnlock()
		if k != nil {
			return k, nil
		}
	} else {
		alias = normalizeAlias(ref)
		var k *Key
		if k, aliasGen = s.cachedAlias(tenant, alias); k != nil {
			return k, nil
		}
	}
	k, _, err := s.resolve(ctx, tenant, ref)
	if err != nil {
		return nil, err
	}
	s.metaMu.Lock()
	if len(s.meta) >= 10000 {
		clear(s.meta) // crude bound; the working set refills it
	}
	s.meta[[2]string{tenant, k.ID}] = k
	s.metaMu.Unlock()
	if alias != "" && k.Alias == alias {
		s.aliasIDs.store(tenant, alias, k.ID, aliasGen, s.now())
	}
	return k, nil
}

func normalizeAlias(a string) string { return strings.TrimPrefix(a, "alias/") }

// truncate shortens caller-supplied text for messages and audit records,
// without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// CreateKeyParams are the inputs of CreateKey.
type CreateKeyParams struct {
	Alias       string
	Description string
	Spec        KeySpec
	Usage       KeyUsage
	// Origin EXTERNAL creates a key without material, in PENDING_IMPORT,
	// for BYOK (imports.go). Default AWS_KMS: generated in the HSM.
	Origin Origin
	// Lifecycle policy (lifecycle.go): a future ActivationDate keeps the
	// key PRE_ACTIVE until then; RotationPeriod and Cryptoperiod are 0 for
	// none and the default.
	ActivationDate time.Time
	RotationPeriod time.Duration
	Cryptoperiod   time.Duration
	// RewrapOnRotation: rotations rewrap the registered data keys.
	RewrapOnRotation bool
	// Exportable keeps a releasable copy of the material (export.go).
	// The transport authorizes it separately.
	Exportable bool
	// Attributes are stored with the key (KMIP names, custom attributes).
	Attributes []Attribute
	// Tags are the key's first tags (tags.go).
	Tags []Tag
	// MultiRegion makes a multi-region primary key in this region
	// (replica.go).
	MultiRegion bool
	// material, when set, is the key material to store instead of
	// generating it (RegisterKey, export.go).
	material []byte
}

// CreateKey creates a key of any supported spec (see Specs: AES, HMAC, RSA,
// ECC and post-quantum) with its first version, generated inside the HSM (or,
// for post-quantum keys, in software and wrapped at once) and stored wrapped
// under the root key. With Origin EXTERNAL it creates a key without material,
// PENDING_IMPORT, for BYOK (imports.go).
func (s *Service) CreateKey(ctx context.Context, c Caller, p CreateKeyParams) (k *Key, err error) {
	subject := ""
	defer s.finish(ctx, c, events.TypeKeyCreated, &err, func() (string, map[string]any) {
		data := map[string]any{"alias": truncate(p.Alias, 256), "keySpec": truncate(string(p.Spec), 64)}
		if p.Origin == OriginExternal {
			data["origin"] = string(OriginExternal)
		}
		exportAudit(data, p)
		if p.MultiRegion {
			data["multiRegion"] = true
		}
		if k != nil {
			data["keyId"] = k.ID
			data["version"] = k.PrimaryVersion
		}
		return subject, data
	}, func() {
		k = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if p.Spec == "" || p.Spec == specAES256Alias {
		p.Spec = SpecSymmetricDefault
	}
	info, ok := specs[p.Spec]
	if !ok {
		return nil, newError(CodeValidation, "unsupported key spec %q; supported: %v", truncate(string(p.Spec), 64), Specs())
	}
	if p.Usage == "" {
		p.Usage = info.usages[0]
	}
	if !info.allowsUsage(p.Usage) {
		return nil, newError(CodeValidation, "key spec %s does not allow usage %q; allowed: %v", p.Spec, truncate(string(p.Usage), 64), info.usages)
	}
	if err := checkDescription(p.Description); err != nil {
		return nil, err
	}
	if err := ValidateTags(p.Tags); err != nil {
		return nil, err
	}
	alias := normalizeAlias(p.Alias)
	if p.Alias != "" && !validAlias(alias) {
		return nil, newError(CodeValidation, "alias must be 1-250 characters of A-Za-z0-9/_- and not look like a key ID")
	}
	p.Alias = alias
	external, err := checkOrigin(p.Origin, p.Spec)
	if err != nil {
		return nil, err
	}
	origin := OriginKMS
	if external {
		origin = OriginExternal
	}
	release, err := s.checkKeyCreate(ctx, c, p.Spec, origin) // tenant policy: origin, profiles, key quota
	if err != nil {
		return nil, err
	}
	defer release()
	if err := checkPeriod("the rotation period", p.RotationPeriod, MinRotationPeriod, MaxRotationPeriod); err != nil {
		return nil, err
	}
	if err := checkPeriod("the cryptoperiod", p.Cryptoperiod, MinRotationPeriod, MaxRotationPeriod); err != nil {
		return nil, err
	}

	id := uuid.NewString()
	subject = ResourceName(c.Tenant, id)
	if alias != "" {
		if err := s.store.CreateAlias(ctx, c.Tenant, alias, id); err != nil {
			if errors.Is(err, ErrStoreExists) {
				return nil, newError(CodeAlreadyExists, "alias %q already exists", alias)
			}
			return nil, wrapError(CodeInternal, err, "failed to create alias")
		}
		defer func() {
			if err != nil { // compensation: do not leave a dangling alias
				_ = s.store.DeleteAlias(context.WithoutCancel(ctx), c.Tenant, alias)
			}
		}()
	}
	now := s.now().UTC()
	if err := checkExportable(p, info, external); err != nil {
		return nil, err
	}
	if err := s.checkMultiRegionCreate(p, external); err != nil {
		return nil, err
	}
	switch {
	case p.Exportable || p.material != nil:
		if err := s.newExportableMaterial(ctx, c.Tenant, id, 1, info, p.material, p.Exportable); err != nil {
			return nil, err
		}
	case !external:
		if err := s.newVersionMaterial(ctx, c.Tenant, id, 1, info); err != nil {
			return nil, err
		}
	}
	k = &Key{
		ID: id, Tenant: c.Tenant, Alias: alias, Description: p.Description,
		Spec: p.Spec, Usage: p.Usage, State: StateActive, CreatedAt: now, CreatedBy: c.Principal,
		PrimaryVersion: 1,
		Versions:       []Version{{Number: 1, State: StateActive, Algorithm: info.alg, CreatedAt: now}},
	}
	k.Exportable, k.Attributes, k.Tags = p.Exportable, p.Attributes, slices.Clone(p.Tags)
	if p.MultiRegion {
		k.MultiRegion, k.PrimaryRegion = true, s.region
	}
	initialLifecycle(k, p, now)
	if external {
		markPendingImport(k)
	}
	if _, err := s.store.CreateKey(ctx, k); err != nil {
		return nil, wrapError(CodeInternal, err, "failed to store key")
	}
	return k, nil
}

// newVersionMaterial generates key material in the HSM and stores it wrapped.
// If material for this version already exists (a retried activity), it is
// kept: material is write-once.
func (s *Service) newVersionMaterial(ctx context.Context, tenant, keyID string, version uint32, info *specInfo) error {
	if _, err := s.store.GetMaterial(ctx, tenant, keyID, version); err == nil {
		return nil
	} else if !errors.Is(err, ErrStoreNotFound) {
		return wrapError(CodeInternal, err, "failed to read key material")
	}
	m := &VersionMaterial{Tenant: tenant, KeyID: keyID, Version: version, Algorithm: info.alg, WrappedBy: s.label}
	var err error
	switch info.kind {
	case materialAES:
		m.Wrapped, err = s.hsm.GenerateWrappedAESKey(ctx, s.root, 32)
	case materialHMAC:
		macs, ok := s.hsm.(hsm.MACs)
		if !ok {
			return newError(CodeValidation, "this HSM cannot hold %s keys", info.spec)
		}
		m.Wrapped, err = macs.GenerateWrappedSecret(ctx, s.root, 32)
	case materialKeyPair:
		pairs, ok := s.hsm.(hsm.KeyPairs)
		if !ok {
			return newError(CodeValidation, "this HSM cannot hold %s keys", info.spec)
		}
		var kp *hsm.WrappedKeyPair
		if kp, err = pairs.GenerateWrappedKeyPair(ctx, s.root, info.pair); err == nil {
			m.Wrapped, m.PublicKey = kp.WrappedPrivate, kp.PublicKeyDER
		}
	case materialSoftware:
		if err := s.newSoftwareMaterial(ctx, m, info); err != nil {
			return err
		}
	}
	if err != nil {
		return wrapError(CodeInternal, err, "failed to generate key material in the HSM")
	}
	err = s.store.PutMaterial(ctx, m)
	if err != nil && !errors.Is(err, ErrStoreExists) {
		return wrapError(CodeInternal, err, "failed to store key material")
	}
	return nil
}

// DescribeKey returns one key's metadata.
func (s *Service) DescribeKey(ctx context.Context, c Caller, ref string) (k *Key, err error) {
	defer s.finish(ctx, c, events.TypeKeyDescribed, &err, func() (string, map[string]any) {
		subject := ""
		if k != nil {
			subject = k.ResourceName()
		}
		return subject, map[string]any{"keyRef": truncate(ref, 64)}
	}, func() {
		k = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	k, _, err = s.resolve(ctx, c.Tenant, ref)
	return k, err
}

// ListKeys returns the tenant's keys, oldest first.
func (s *Service) ListKeys(ctx context.Context, c Caller) (keys []*Key, err error) {
	defer s.finish(ctx, c, events.TypeKeyListed, &err, func() (string, map[string]any) {
		return "", map[string]any{"count": len(keys)}
	}, func() {
		keys = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	keys, err = s.store.ListKeys(ctx, c.Tenant)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to list keys")
	}
	return keys, nil
}

// handleFor returns an HSM handle for the secret (or private) part of one
// version of k, unwrapping it into the HSM on a cache miss.
func (s *Service) handleFor(ctx context.Context, k *Key, version uint32) (hsm.KeyHandle, func(), error) {
	ref := versionRef{tenant: k.Tenant, keyID: k.ID, version: version}
	return s.handles.acquire(ctx, ref, func(ctx context.Context) (hsm.KeyHandle, error) {
		m, err := s.store.GetMaterial(ctx, k.Tenant, k.ID, version)
		if err != nil {
			return 0, wrapError(CodeInternal, err, "failed to read key material")
		}
		info := specByAlgorithm(m.Algorithm)
		if info == nil {
			return 0, newError(CodeInternal, "version %d of key %s has unknown material %q", version, k.ID, m.Algorithm)
		}
		var h hsm.KeyHandle
		switch info.kind {
		case materialAES:
			h, err = s.hsm.UnwrapAESKey(ctx, s.root, m.Wrapped)
		case materialHMAC:
			macs, ok := s.hsm.(hsm.MACs)
			if !ok {
				return 0, newError(CodeInternal, "this HSM cannot hold %s keys", info.spec)
			}
			h, err = macs.UnwrapHMACKey(ctx, s.root, m.Wrapped)
		case materialKeyPair:
			pairs, ok := s.hsm.(hsm.KeyPairs)
			if !ok {
				return 0, newError(CodeInternal, "this HSM cannot hold %s keys", info.spec)
			}
			h, err = pairs.UnwrapPrivateKey(ctx, s.root, m.Wrapped, info.pair)
		default:
			return 0, newError(CodeInternal, "%s keys are not loaded into the HSM", info.spec)
		}
		if err != nil {
			return 0, wrapError(CodeInternal, err, "failed to load key material into the HSM")
		}
		return h, nil
	})
}

// withHandle runs use with an HSM handle for one version of k: its secret
// or private part, or its public key if public. If the HSM says the handle
// is stale (hsm.ErrKeyHandleInvalid: the HSM session that held the loaded
// key was lost, or the token was reset), the cache entry is dropped, the
// key loaded again from its wrapped blob and use run once more. use
// returns its own errors (wrapped *Error or not); errors from loading the
// key are returned as they are.
func (s *Service) withHandle(ctx context.Context, k *Key, version uint32, public bool, use func(h hsm.KeyHandle) error) error {
	ref := versionRef{tenant: k.Tenant, keyID: k.ID, version: version, public: public}
	for attempt := 0; ; attempt++ {
		var h hsm.KeyHandle
		var release func()
		var err error
		if public {
			h, release, err = s.publicHandleFor(ctx, k, version)
		} else {
			h, release, err = s.handleFor(ctx, k, version)
		}
		if err != nil {
			return err
		}
		err = use(h)
		release()
		if attempt == 0 && errors.Is(err, hsm.ErrKeyHandleInvalid) {
			s.handles.drop(ref, h)
			continue
		}
		return err
	}
}

// publicHandleFor returns an HSM handle for the public key of one version
// of an asymmetric key, with the public key itself.
func (s *Service) publicHandleFor(ctx context.Context, k *Key, version uint32) (hsm.KeyHandle, func(), error) {
	pairs, ok := s.hsm.(hsm.KeyPairs)
	if !ok {
		return 0, nil, newError(CodeInternal, "this HSM has no public-key operations")
	}
	ref := versionRef{tenant: k.Tenant, keyID: k.ID, version: version, public: true}
	return s.handles.acquire(ctx, ref, func(ctx context.Context) (hsm.KeyHandle, error) {
		m, err := s.store.GetMaterial(ctx, k.Tenant, k.ID, version)
		if err != nil {
			return 0, wrapError(CodeInternal, err, "failed to read key material")
		}
		h, err := pairs.ImportPublicKey(ctx, m.PublicKey)
		if err != nil {
			return 0, wrapError(CodeInternal, err, "failed to load the public key into the HSM")
		}
		return h, nil
	})
}

// Reject records a request that was refused before it reached an operation
// (no identity, malformed body) and returns the error to send back. The
// record names the operation and the error code, never the request body.
func (s *Service) Reject(ctx context.Context, c Caller, op string, reason error) error {
	if c.Tenant == "" || !ValidTenant(c.Tenant) {
		c.Tenant = "-"
	}
	return s.emit(ctx, c, events.TypeRequestRejected, "", map[string]any{"operation": op}, reason)
}

// AuditReadParams name what one read of the audit trail returned, by event
// ID (never by stream position, which would tell a tenant about the
// others' activity).
type AuditReadParams struct {
	Events                    int
	FirstEventID, LastEventID string
	Filter                    string // the subject filter, if any
}

// RecordAuditRead records that a caller read its tenant's audit trail, and
// what the read returned.
func (s *Service) RecordAuditRead(ctx context.Context, c Caller, p AuditReadParams) error {
	data := map[string]any{"events": p.Events, "firstEventId": p.FirstEventID, "lastEventId": p.LastEventID}
	if p.Filter != "" {
		data["filter"] = p.Filter
	}
	if err := checkCaller(c); err != nil {
		return s.emit(ctx, c, events.TypeAuditRead, "", data, err)
	}
	return s.emit(ctx, c, events.TypeAuditRead, "", data, nil)
}

// finish records an operation's outcome; every operation defers it. It runs
// after the operation returned or panicked: a panic is recorded as an
// internal failure (never as a success) and then continues. If the record
// cannot be stored (fail-closed), err becomes AuditUnavailable and withhold
// drops the result.
func (s *Service) finish(ctx context.Context, c Caller, typ string, errp *error, record func() (subject string, data map[string]any), withhold func()) {
	panicked := recover()
	if panicked != nil {
		*errp = newError(CodeInternal, "internal error")
	}
	subject, data := record()
	if *errp != nil && errors.Is(*errp, errPendingDeletion) {
		s.refusedWhilePendingDeletion(ctx, c, typ, subject)
	}
	if v, ok := pendingRetirementOf(*errp); ok {
		s.refusedWhilePendingRetirement(ctx, c, typ, subject, v)
	}
	*errp = s.emit(ctx, c, typ, subject, data, *errp)
	if *errp != nil && withhold != nil {
		withhold()
	}
	if panicked != nil {
		panic(panicked)
	}
}

// material returns a version's stored material, from memory when it can.
func (s *Service) material(ctx context.Context, k *Key, version uint32) (*VersionMaterial, error) {
	ref := versionRef{tenant: k.Tenant, keyID: k.ID, version: version}
	s.metaMu.RLock()
	m := s.mats[ref]
	s.metaMu.RUnlock()
	if m != nil {
		return m, nil
	}
	m, err := s.store.GetMaterial(ctx, k.Tenant, k.ID, version)
	if err != nil {
		return nil, err
	}
	s.metaMu.Lock()
	if len(s.mats) >= 10000 {
		clear(s.mats) // crude bound; the working set refills it
	}
	s.mats[ref] = m
	s.metaMu.Unlock()
	return m, nil
}
