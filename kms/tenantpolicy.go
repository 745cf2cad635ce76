package kms

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// TenantPolicy is a tenant's governance document: which operations need
// dual control (M-of-N approvals), the tenant's quotas, the algorithm
// profiles it adopted, its minimum deletion window and the key origin it
// requires. A tenant without one has no approvals, no quotas beyond the
// deployment's fairness limit, and every algorithm keyflow supports.
//
// It is set as a whole (keyflow tenant policy set --file F.json) and
// stored in the kf_tenant_policy bucket. Changing it is itself the
// protected operation "policy-change" when the current policy lists it,
// so an administrator cannot drop a dual-control rule alone.
type TenantPolicy struct {
	// Approvals lists the operations that need approval, one rule each.
	Approvals []ApprovalRule `json:"approvals,omitempty"`
	// Quotas limits the tenant's request rate and key count.
	Quotas *Quotas `json:"quotas,omitempty"`
	// Profiles are the algorithm profiles the tenant adopted
	// (ProfileCNSA2, ProfileNISTIR8547); every one applies.
	Profiles []string `json:"profiles,omitempty"`
	// MinDeletionWindowDays is the shortest deletion window a key deletion
	// may be scheduled with (see CheckDeletionWindow).
	MinDeletionWindowDays int `json:"minDeletionWindowDays,omitempty"`
	// RequiredOrigin, when set, is the only origin new keys may have
	// (OriginKMS or OriginExternal; see CheckOrigin).
	RequiredOrigin Origin `json:"requiredOrigin,omitempty"`

	// Set by the server.
	UpdatedAt time.Time `json:"updatedAt,omitzero"`
	UpdatedBy string    `json:"updatedBy,omitempty"`
}

// ApprovalRule makes one operation need Required approvals from distinct
// principals other than the requester.
type ApprovalRule struct {
	Operation ApprovalKind `json:"operation"`
	// Required is M: how many distinct approvals complete the request.
	Required int `json:"required"`
	// Approvers, when set, are the N principals who may approve; when
	// empty, any principal with the approver role may (see Caller.Roles).
	Approvers []string `json:"approvers,omitempty"`
	// ExpiresAfter is how long the request waits for its approvals, as a
	// Go duration ("72h", "30m"); default 72h, at least 1s, at most 90 days.
	ExpiresAfter string `json:"expiresAfter,omitempty"`
}

// Quotas are a tenant's limits. Zero means no limit.
type Quotas struct {
	// RequestsPerSecond is the sustained rate of API requests (a token
	// bucket refilled at this rate); over it, callers get
	// ThrottlingException with a retry hint.
	RequestsPerSecond float64 `json:"requestsPerSecond,omitempty"`
	// Burst is the bucket's size (default: one second of the rate, at
	// least 1).
	Burst int `json:"burst,omitempty"`
	// MaxKeys is the most keys the tenant may hold; over it, CreateKey
	// fails with LimitExceededException.
	MaxKeys int `json:"maxKeys,omitempty"`
}

// Algorithm profiles a tenant can adopt.
const (
	// ProfileCNSA2 allows only the CNSA 2.0 algorithms: AES-256,
	// ML-KEM-1024, ML-DSA-87 (and HMAC with SHA-384/512, which keyflow
	// does not offer yet).
	ProfileCNSA2 = "cnsa2"
	// ProfileNISTIR8547 follows NIST IR 8547's transition: quantum-vulnerable
	// (RSA, ECC) keys of 112-bit strength are deprecated after 2030, and
	// all new RSA/ECC keys are refused from 2035.
	ProfileNISTIR8547 = "nist-ir-8547"
)

// NIST IR 8547 transition dates (UTC).
var (
	nistDeprecate112 = time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC) // "after 2030"
	nistDisallowQV   = time.Date(2035, 1, 1, 0, 0, 0, 0, time.UTC)
)

const (
	defaultApprovalExpiry = 72 * time.Hour
	maxApprovalExpiry     = 90 * 24 * time.Hour
	maxPolicyApprovers    = 100
)

// Validate checks a policy document and fills defaults. Every problem is a
// ValidationException naming the field.
func (p *TenantPolicy) Validate() error {
	seen := map[ApprovalKind]bool{}
	for i := range p.Approvals {
		r := &p.Approvals[i]
		if !slices.Contains(ApprovalKinds(), r.Operation) {
			return newError(CodeValidation, "approvals[%d].operation %q is not one of %v", i, truncate(string(r.Operation), 64), ApprovalKinds())
		}
		if seen[r.Operation] {
			return newError(CodeValidation, "approvals: operation %s has two rules", r.Operation)
		}
		seen[r.Operation] = true
		if r.Required < 1 || r.Required > maxPolicyApprovers {
			return newError(CodeValidation, "approvals[%d].required must be 1-%d", i, maxPolicyApprovers)
		}
		if len(r.Approvers) > maxPolicyApprovers {
			return newError(CodeValidation, "approvals[%d].approvers has more than %d principals", i, maxPolicyApprovers)
		}
		for _, a := range r.Approvers {
			if a == "" || len(a) > 256 {
				return newError(CodeValidation, "approvals[%d].approvers has an empty or overlong principal", i)
			}
		}
		if d := distinct(r.Approvers); len(r.Approvers) > 0 && d < r.Required {
			return newError(CodeValidation, "approvals[%d]: %d approvals required but only %d distinct approvers listed", i, r.Required, d)
		}
		if _, err := r.expiry(); err != nil {
			return newError(CodeValidation, "approvals[%d].expiresAfter: %s", i, err)
		}
	}
	if q := p.Quotas; q != nil {
		if q.RequestsPerSecond < 0 || q.RequestsPerSecond > 1e6 {
			return newError(CodeValidation, "quotas.requestsPerSecond must be between 0 and 1000000")
		}
		if q.Burst < 0 || q.Burst > 1e6 {
			return newError(CodeValidation, "quotas.burst must be between 0 and 1000000")
		}
		if q.MaxKeys < 0 {
			return newError(CodeValidation, "quotas.maxKeys must not be negative")
		}
	}
	for _, pr := range p.Profiles {
		if pr != ProfileCNSA2 && pr != ProfileNISTIR8547 {
			return newError(CodeValidation, "profile %q is not one of [%s %s]", truncate(pr, 64), ProfileCNSA2, ProfileNISTIR8547)
		}
	}
	if p.MinDeletionWindowDays < 0 || p.MinDeletionWindowDays > 365 {
		return newError(CodeValidation, "minDeletionWindowDays must be 0-365")
	}
	switch p.RequiredOrigin {
	case "", OriginKMS, OriginExternal:
	default:
		return newError(CodeValidation, "requiredOrigin %q is not %s or %s", truncate(string(p.RequiredOrigin), 64), OriginKMS, OriginExternal)
	}
	return nil
}

func distinct(s []string) int {
	c := slices.Clone(s)
	slices.Sort(c)
	return len(slices.Compact(c))
}

func (r *ApprovalRule) expiry() (time.Duration, error) {
	if r.ExpiresAfter == "" {
		return defaultApprovalExpiry, nil
	}
	d, err := time.ParseDuration(r.ExpiresAfter)
	if err != nil {
		return 0, errors.New("not a duration such as 72h or 30m")
	}
	if d < time.Second || d > maxApprovalExpiry {
		return 0, errors.New("must be between 1s and 2160h (90 days)")
	}
	return d, nil
}

// Rule returns the approval rule of an operation, or nil when the
// operation needs no approval. A nil policy has no rules.
func (p *TenantPolicy) Rule(kind ApprovalKind) *ApprovalRule {
	if p == nil {
		return nil
	}
	for i := range p.Approvals {
		if p.Approvals[i].Operation == kind {
			return &p.Approvals[i]
		}
	}
	return nil
}

// CheckDeletionWindow refuses a deletion window shorter than the tenant's
// minimum. The key deletion feature calls it before it schedules a
// deletion; a nil policy allows any window.
func (p *TenantPolicy) CheckDeletionWindow(days int) error {
	if p == nil || p.MinDeletionWindowDays == 0 || days >= p.MinDeletionWindowDays {
		return nil
	}
	return newError(CodeValidation, "the tenant policy requires a deletion window of at least %d days; %d requested", p.MinDeletionWindowDays, days)
}

// CheckOrigin refuses a key whose origin is not the one the tenant
// requires (for example, only EXTERNAL keys: everything is imported).
// CreateKey calls it with the new key's origin. A nil policy allows any
// origin.
func (p *TenantPolicy) CheckOrigin(origin Origin) error {
	if p == nil || p.RequiredOrigin == "" || origin == p.RequiredOrigin {
		return nil
	}
	return newError(CodeAccessDenied, "the tenant policy requires keys of origin %s; this key's origin would be %s", p.RequiredOrigin, origin)
}

// CheckSpec applies the tenant's algorithm profiles to a new key (or a
// migration target) of spec at time now. It returns a warning to pass on
// to the caller when the key is allowed but on its way out, and an
// AccessDeniedException when a profile forbids it.
func (p *TenantPolicy) CheckSpec(spec KeySpec, now time.Time) (warning string, err error) {
	if p == nil || len(p.Profiles) == 0 {
		return "", nil
	}
	prof, ok := SpecProfile(spec)
	if !ok {
		return "", newError(CodeValidation, "unsupported key spec %q", truncate(string(spec), 64))
	}
	for _, name := range p.Profiles {
		w, err := checkProfile(name, spec, prof, now)
		if err != nil {
			return "", err
		}
		if w != "" {
			warning = w
		}
	}
	return warning, nil
}

// checkProfile is one profile's verdict on one spec, from the spec table's
// data (Profile.CNSA2, QuantumVulnerable, ClassicalBits): no spec names.
func checkProfile(name string, spec KeySpec, prof Profile, now time.Time) (string, error) {
	switch name {
	case ProfileCNSA2:
		if !prof.CNSA2 {
			return "", newError(CodeAccessDenied, "the tenant's cnsa2 profile allows only AES-256, ML-KEM-1024, ML-DSA-87 and HMAC-SHA-384/512; %s (%s) is not allowed", spec, prof.Algorithm)
		}
	case ProfileNISTIR8547:
		if !prof.QuantumVulnerable {
			return "", nil
		}
		now = now.UTC()
		if !now.Before(nistDisallowQV) {
			return "", newError(CodeAccessDenied, "the tenant's nist-ir-8547 profile refuses new quantum-vulnerable keys (%s) from 2035; use a post-quantum spec", prof.Algorithm)
		}
		if !now.Before(nistDeprecate112) {
			if prof.ClassicalBits > 0 && prof.ClassicalBits <= 112 {
				return fmt.Sprintf("nist-ir-8547: %s has 112-bit security, deprecated after 2030 and disallowed from 2035", prof.Algorithm), nil
			}
			return fmt.Sprintf("nist-ir-8547: %s is quantum-vulnerable and disallowed for new keys from 2035", prof.Algorithm), nil
		}
	}
	return "", nil
}

// tenantPolicy returns the tenant's policy, nil when it has none or when
// the service has no governance store.
func (s *Service) tenantPolicy(ctx context.Context, tenant string) (*TenantPolicy, Revision, error) {
	if s.gov.store == nil {
		return nil, 0, nil
	}
	p, rev, err := s.gov.store.GetTenantPolicy(ctx, tenant)
	if errors.Is(err, ErrStoreNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, wrapError(CodeInternal, err, "failed to read the tenant policy")
	}
	return p, rev, nil
}

// TenantQuotas returns a tenant's quotas for the transport's rate limiter
// (nil: none). It reads the store's in-memory copy and emits no event.
func (s *Service) TenantQuotas(ctx context.Context, tenant string) *Quotas {
	p, _, err := s.tenantPolicy(ctx, tenant)
	if err != nil || p == nil {
		return nil
	}
	return p.Quotas
}

// GetTenantPolicy returns the caller's tenant policy (an empty one when
// none is set).
func (s *Service) GetTenantPolicy(ctx context.Context, c Caller) (p *TenantPolicy, err error) {
	defer s.finish(ctx, c, events.TypeTenantPolicyRead, &err, func() (string, map[string]any) {
		return TenantPolicyResource(c.Tenant), nil
	}, func() { p = nil })
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if s.gov.store == nil {
		return nil, newError(CodeInternal, "tenant policies are not available on this worker")
	}
	p, _, err = s.tenantPolicy(ctx, c.Tenant)
	if err != nil {
		return nil, err
	}
	if p == nil {
		p = &TenantPolicy{}
	}
	return p, nil
}

// TenantPolicyTarget is the target of a policy-change approval that
// changes the tenant policy (key policies name their key).
const TenantPolicyTarget = "tenant-policy"

// TenantPolicyResource is the tenant policy's name in audit events.
func TenantPolicyResource(tenant string) string { return "kf:" + tenant + ":tenant-policy" }

// SetTenantPolicyResult says whether the policy was applied or waits for
// approval.
type SetTenantPolicyResult struct {
	Policy     *TenantPolicy
	ApprovalID string // set when the change waits for approval
}

// SetTenantPolicy validates and stores the caller's tenant policy. When
// the current policy makes "policy-change" need approval, the new
// document is parked and an approval request started instead; it is
// applied (by ApplyProposedPolicy) once approved. With role information,
// only a tenant-admin may set it.
func (s *Service) SetTenantPolicy(ctx context.Context, c Caller, p *TenantPolicy) (res *SetTenantPolicyResult, err error) {
	defer s.finish(ctx, c, events.TypeTenantPolicyChanged, &err, func() (string, map[string]any) {
		data := policySummary(p)
		if res != nil && res.ApprovalID != "" {
			data["approvalId"] = res.ApprovalID
			data["pending"] = true
		}
		return TenantPolicyResource(c.Tenant), data
	}, func() { res = nil })
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if c.Roles != nil && !slices.Contains(c.Roles, string(keypolicy.RoleTenantAdmin)) {
		return nil, newError(CodeAccessDenied, "only a %s may set the tenant policy", keypolicy.RoleTenantAdmin)
	}
	if s.gov.store == nil {
		return nil, newError(CodeInternal, "tenant policies are not available on this worker")
	}
	if p == nil {
		return nil, newError(CodeValidation, "a policy document is required")
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	cur, _, err := s.tenantPolicy(ctx, c.Tenant)
	if err != nil {
		return nil, err
	}
	if cur.Rule(ApprovalPolicyChange) != nil {
		id, err := s.newApprovalID()
		if err != nil {
			return nil, err
		}
		if err := s.gov.store.PutProposedPolicy(ctx, c.Tenant, id, p); err != nil {
			return nil, wrapError(CodeInternal, err, "failed to store the proposed policy")
		}
		if _, err := s.requireApproval(ctx, c, cur, id, ApprovalPolicyChange, TenantPolicyTarget); err != nil {
			return nil, err
		}
		return &SetTenantPolicyResult{ApprovalID: id}, nil
	}
	stored, err := s.storeTenantPolicy(ctx, c, p)
	if err != nil {
		return nil, err
	}
	return &SetTenantPolicyResult{Policy: stored}, nil
}

// ApplyProposedPolicy stores the policy change an approval request
// parked. The approval workflow calls it once the request is approved; it
// is idempotent (storing the same document twice changes nothing a
// caller can see).
func (s *Service) ApplyProposedPolicy(ctx context.Context, c Caller, approvalID string) (err error) {
	var p *TenantPolicy
	defer s.finish(ctx, c, events.TypeTenantPolicyChanged, &err, func() (string, map[string]any) {
		data := policySummary(p)
		data["approvalId"] = approvalID
		return TenantPolicyResource(c.Tenant), data
	}, nil)
	if err := checkCaller(c); err != nil {
		return err
	}
	if s.gov.store == nil {
		return newError(CodeInternal, "tenant policies are not available on this worker")
	}
	p, err = s.gov.store.GetProposedPolicy(ctx, c.Tenant, approvalID)
	if errors.Is(err, ErrStoreNotFound) {
		return newError(CodeNotFound, "approval %s has no proposed policy", approvalID)
	}
	if err != nil {
		return wrapError(CodeInternal, err, "failed to read the proposed policy")
	}
	_, err = s.storeTenantPolicy(ctx, c, p)
	return err
}

func (s *Service) storeTenantPolicy(ctx context.Context, c Caller, p *TenantPolicy) (*TenantPolicy, error) {
	np := *p
	np.UpdatedAt, np.UpdatedBy = s.now().UTC(), c.Principal
	for attempt := 0; attempt < 5; attempt++ {
		_, rev, err := s.tenantPolicy(ctx, c.Tenant)
		if err != nil {
			return nil, err
		}
		if _, err := s.gov.store.PutTenantPolicy(ctx, c.Tenant, &np, rev); errors.Is(err, ErrStoreConflict) {
			continue
		} else if err != nil {
			return nil, wrapError(CodeInternal, err, "failed to store the tenant policy")
		}
		return &np, nil
	}
	return nil, newError(CodeConflict, "the tenant policy is changing concurrently; retry")
}

// policySummary is what a policy change's audit record says: the shape of
// the policy, not a copy of it.
func policySummary(p *TenantPolicy) map[string]any {
	data := map[string]any{}
	if p == nil {
		return data
	}
	ops := make([]string, 0, len(p.Approvals))
	for _, r := range p.Approvals {
		ops = append(ops, truncate(string(r.Operation), 64))
	}
	data["approvalOperations"] = ops
	data["profiles"] = truncateAll(p.Profiles)
	if p.Quotas != nil {
		data["requestsPerSecond"] = p.Quotas.RequestsPerSecond
		data["burst"] = p.Quotas.Burst
		data["maxKeys"] = p.Quotas.MaxKeys
	}
	data["minDeletionWindowDays"] = p.MinDeletionWindowDays
	data["requiredOrigin"] = truncate(string(p.RequiredOrigin), 64)
	return data
}

func truncateAll(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		out = append(out, truncate(s, 64))
	}
	return out
}

// checkKeyCreate applies the tenant policy to a new key generated by
// keyflow: the required origin, the algorithm profiles and the key-count
// quota. A profile warning is recorded (io.keyflow.policy.warning.v1) and
// the key created; the transport repeats the warning in its reply (see
// KeySpecWarning).
func (s *Service) checkKeyCreate(ctx context.Context, c Caller, spec KeySpec, origin Origin) (release func(), err error) {
	release = func() {}
	p, _, err := s.tenantPolicy(ctx, c.Tenant)
	if err != nil || p == nil {
		return release, err
	}
	if err := p.CheckOrigin(origin); err != nil {
		return release, err
	}
	warning, err := p.CheckSpec(spec, s.now())
	if err != nil {
		return release, err
	}
	if p.Quotas != nil && p.Quotas.MaxKeys > 0 {
		// The count and the new key's store are one step across workers:
		// the caller holds the tenant's lock until its key is stored.
		if l, ok := s.store.(KeyCreateLocker); ok {
			unlock, err := l.LockKeyCreate(ctx, c.Tenant, keyCreateLockTTL)
			if err != nil {
				return release, wrapError(CodeThrottling, err, "another key of this tenant is being created under its key quota; retry")
			}
			release = unlock
		}
		keys, err := s.store.ListKeys(ctx, c.Tenant)
		if err != nil {
			release()
			return func() {}, wrapError(CodeInternal, err, "failed to count keys")
		}
		if len(keys) >= p.Quotas.MaxKeys {
			release()
			return func() {}, newError(CodeLimitExceeded, "the tenant holds %d keys; its quota is %d", len(keys), p.Quotas.MaxKeys)
		}
	}
	if warning != "" {
		data := map[string]any{"operation": "keys.create", "keySpec": string(spec), "warning": warning}
		if err := s.emit(ctx, c, events.TypePolicyWarning, "", data, nil); err != nil {
			release()
			return func() {}, err
		}
	}
	return release, nil
}

// keyCreateLockTTL bounds how long a dead worker's key-create lock blocks
// its tenant (KeyCreateLocker).
const keyCreateLockTTL = 30 * time.Second

// KeySpecWarning returns the warning the tenant's profiles give for a new
// key of spec now ("" for none), for the transport's reply. It emits no
// event: CreateKey recorded it.
func (s *Service) KeySpecWarning(ctx context.Context, tenant string, spec KeySpec) string {
	p, _, err := s.tenantPolicy(ctx, tenant)
	if err != nil || p == nil {
		return ""
	}
	w, _ := p.CheckSpec(spec, s.now())
	return w
}

// CheckMigrationTarget applies the tenant's algorithm profiles to the
// target spec of a migration; the migration feature calls it before it
// creates the target key. It emits no event of its own.
func (s *Service) CheckMigrationTarget(ctx context.Context, c Caller, spec KeySpec) (warning string, err error) {
	p, _, err := s.tenantPolicy(ctx, c.Tenant)
	if err != nil || p == nil {
		return "", err
	}
	return p.CheckSpec(spec, s.now())
}

// TenantPolicyFor returns a tenant's policy (nil when none) for features
// that enforce parts of it themselves: key deletion calls
// CheckDeletionWindow, key import CheckOrigin(OriginExternal).
func (s *Service) TenantPolicyFor(ctx context.Context, tenant string) (*TenantPolicy, error) {
	p, _, err := s.tenantPolicy(ctx, tenant)
	return p, err
}
