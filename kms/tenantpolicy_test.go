package kms_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/schemas"
)

func TestTenantPolicyValidate(t *testing.T) {
	bad := []struct {
		name string
		p    kms.TenantPolicy
		want string
	}{
		{"unknown operation", kms.TenantPolicy{Approvals: []kms.ApprovalRule{{Operation: "format-disk", Required: 1}}}, "operation"},
		{"zero required", kms.TenantPolicy{Approvals: []kms.ApprovalRule{{Operation: kms.ApprovalDisable}}}, "required"},
		{"two rules", kms.TenantPolicy{Approvals: []kms.ApprovalRule{{Operation: kms.ApprovalDisable, Required: 1}, {Operation: kms.ApprovalDisable, Required: 2}}}, "two rules"},
		{"M > N", kms.TenantPolicy{Approvals: []kms.ApprovalRule{{Operation: kms.ApprovalImport, Required: 3, Approvers: []string{"bob", "carol", "bob"}}}}, "distinct approvers"},
		{"bad expiry", kms.TenantPolicy{Approvals: []kms.ApprovalRule{{Operation: kms.ApprovalImport, Required: 1, ExpiresAfter: "3 days"}}}, "expiresAfter"},
		{"expiry too long", kms.TenantPolicy{Approvals: []kms.ApprovalRule{{Operation: kms.ApprovalImport, Required: 1, ExpiresAfter: "2161h"}}}, "expiresAfter"},
		{"negative rate", kms.TenantPolicy{Quotas: &kms.Quotas{RequestsPerSecond: -1}}, "requestsPerSecond"},
		{"unknown profile", kms.TenantPolicy{Profiles: []string{"fips-9000"}}, "profile"},
		{"window", kms.TenantPolicy{MinDeletionWindowDays: 400}, "minDeletionWindowDays"},
		{"origin", kms.TenantPolicy{RequiredOrigin: "KEYFLOW"}, "requiredOrigin"},
	}
	for _, c := range bad {
		err := c.p.Validate()
		if !errors.Is(err, kms.ErrValidation) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ValidationException about %s", c.name, err, c.want)
		}
	}
	good := kms.TenantPolicy{
		Approvals: []kms.ApprovalRule{{Operation: kms.ApprovalScheduleDeletion, Required: 2, Approvers: []string{"bob", "carol"}, ExpiresAfter: "1h"}},
		Quotas:    &kms.Quotas{RequestsPerSecond: 0.5, Burst: 2, MaxKeys: 10}, Profiles: []string{kms.ProfileCNSA2, kms.ProfileNISTIR8547},
		MinDeletionWindowDays: 7, RequiredOrigin: kms.OriginExternal,
	}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestTenantPolicyChecks(t *testing.T) {
	p := &kms.TenantPolicy{MinDeletionWindowDays: 14, RequiredOrigin: kms.OriginExternal}
	if err := p.CheckDeletionWindow(7); !errors.Is(err, kms.ErrValidation) || !strings.Contains(err.Error(), "at least 14 days") {
		t.Errorf("7-day window: %v", err)
	}
	for _, d := range []int{14, 30} {
		if err := p.CheckDeletionWindow(d); err != nil {
			t.Errorf("%d-day window: %v", d, err)
		}
	}
	if err := p.CheckOrigin(kms.OriginKMS); !errors.Is(err, kms.ErrAccessDenied) {
		t.Errorf("KEYFLOW origin under EXTERNAL-only: %v", err)
	}
	if err := p.CheckOrigin(kms.OriginExternal); err != nil {
		t.Errorf("EXTERNAL origin: %v", err)
	}
	var none *kms.TenantPolicy
	if none.CheckDeletionWindow(1) != nil || none.CheckOrigin(kms.OriginKMS) != nil || none.Rule(kms.ApprovalDisable) != nil {
		t.Error("a nil policy must allow everything")
	}

	// Profiles, judged from the spec table's data.
	cnsa := &kms.TenantPolicy{Profiles: []string{kms.ProfileCNSA2}}
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	allowed := map[kms.KeySpec]bool{kms.SpecSymmetricDefault: true, kms.SpecMLKEM1024: true, kms.SpecMLDSA87: true}
	for _, spec := range kms.Specs() {
		_, err := cnsa.CheckSpec(spec, now)
		if allowed[spec] != (err == nil) {
			t.Errorf("cnsa2 on %s: %v", spec, err)
		}
		if err != nil && !errors.Is(err, kms.ErrAccessDenied) {
			t.Errorf("cnsa2 refusal of %s is %v, want AccessDeniedException", spec, err)
		}
	}
	nist := &kms.TenantPolicy{Profiles: []string{kms.ProfileNISTIR8547}}
	at := func(y int) time.Time { return time.Date(y, 3, 1, 0, 0, 0, 0, time.UTC) }
	for _, c := range []struct {
		spec     kms.KeySpec
		year     int
		warn     bool
		refused  bool
		contains string
	}{
		{kms.SpecECCP256, 2029, false, false, ""},
		{kms.SpecECCP256, 2031, true, false, "disallowed for new keys from 2035"},
		{kms.SpecRSA3072, 2034, true, false, "quantum-vulnerable"},
		{kms.SpecRSA4096, 2035, false, true, ""},
		{kms.SpecEd25519, 2040, false, true, ""},
		{kms.SpecMLDSA65, 2040, false, false, ""},
		{kms.SpecSymmetricDefault, 2040, false, false, ""},
	} {
		w, err := nist.CheckSpec(c.spec, at(c.year))
		if (err != nil) != c.refused || (c.refused && !errors.Is(err, kms.ErrAccessDenied)) {
			t.Errorf("nist-ir-8547 on %s in %d: %v", c.spec, c.year, err)
		}
		if (w != "") != c.warn || !strings.Contains(w, c.contains) {
			t.Errorf("nist-ir-8547 on %s in %d: warning %q", c.spec, c.year, w)
		}
	}
	// Every spec states its strength (the nist profile reads it).
	for _, spec := range kms.Specs() {
		if p, _ := kms.SpecProfile(spec); p.ClassicalBits < 112 {
			t.Errorf("%s has no classical strength in the spec table", spec)
		}
	}
}

// newClockedKMS is a second worker over the bed's stores with a clock the
// test sets.
func newClockedKMS(t *testing.T, b *testbed.Bed, now *time.Time) *kms.Service {
	var mu sync.Mutex
	s, err := kms.New(context.Background(), kms.Config{
		HSM: b.HSM, Store: b.Store, Audit: b.Audit, Source: "/keyflow/test", Governance: b.Gov,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		Now:    func() time.Time { mu.Lock(); defer mu.Unlock(); return *now },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestCreateKeyUnderTenantPolicy(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	clock := time.Date(2031, 5, 1, 0, 0, 0, 0, time.UTC)
	s := newClockedKMS(t, b, &clock)
	admin := kms.Caller{Tenant: "alpha", Principal: "alice", RequestID: "r-policy"}
	if _, err := s.SetTenantPolicy(ctx, admin, &kms.TenantPolicy{Profiles: []string{kms.ProfileNISTIR8547}, Quotas: &kms.Quotas{MaxKeys: 2}}); err != nil {
		t.Fatal(err)
	}
	// Roles, when known, must include tenant-admin.
	if _, err := s.SetTenantPolicy(ctx, kms.Caller{Tenant: "alpha", Principal: "eve", Roles: []string{"crypto-user"}}, &kms.TenantPolicy{}); !errors.Is(err, kms.ErrAccessDenied) {
		t.Fatalf("set by a crypto-user: %v", err)
	}
	got, err := s.GetTenantPolicy(ctx, admin)
	if err != nil || got.Quotas == nil || got.Quotas.MaxKeys != 2 || got.UpdatedBy != "alice" {
		t.Fatalf("policy read back: %+v, %v", got, err)
	}

	// 2031: an ECC key is created, with a warning recorded.
	k, err := s.CreateKey(ctx, admin, kms.CreateKeyParams{Spec: kms.SpecECCP256})
	if err != nil {
		t.Fatal(err)
	}
	if w := s.KeySpecWarning(ctx, "alpha", k.Spec); !strings.Contains(w, "nist-ir-8547") {
		t.Errorf("warning for the reply: %q", w)
	}
	warns := b.EventsOfType("alpha", events.TypePolicyWarning)
	if len(warns) != 1 || warns[0].Data["keySpec"] != "ECC_NIST_P256" || warns[0].Outcome != events.OutcomeSuccess {
		t.Fatalf("warning events: %+v", warns)
	}
	if err := schemas.ValidateEvent(warns[0].Raw); err != nil {
		t.Fatalf("warning event: %v", err)
	}
	// 2035: refused, and the refusal is on the record.
	clock = time.Date(2035, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := s.CreateKey(ctx, admin, kms.CreateKeyParams{Spec: kms.SpecRSA3072}); !errors.Is(err, kms.ErrAccessDenied) || !strings.Contains(err.Error(), "2035") {
		t.Fatalf("RSA in 2035: %v", err)
	}
	// The key quota: a second key fits, a third does not.
	if _, err := s.CreateKey(ctx, admin, kms.CreateKeyParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateKey(ctx, admin, kms.CreateKeyParams{Alias: "third"}); !errors.Is(err, kms.ErrLimitExceeded) {
		t.Fatalf("third key over a quota of 2: %v", err)
	}
	// Beta has no policy: unaffected.
	if _, err := s.CreateKey(ctx, kms.Caller{Tenant: "beta", Principal: "bob"}, kms.CreateKeyParams{Spec: kms.SpecRSA3072}); err != nil {
		t.Fatalf("beta: %v", err)
	}
	var denied, limited int
	for _, e := range b.EventsOfType("alpha", events.TypeKeyCreated) {
		switch e.ErrorCode {
		case "AccessDeniedException":
			denied++
			if e.Outcome != events.OutcomeDenied {
				t.Errorf("refusal recorded as %s", e.Outcome)
			}
		case "LimitExceededException":
			limited++
		}
	}
	if denied != 1 || limited != 1 {
		t.Errorf("audit: %d profile refusals, %d quota refusals; want 1 and 1", denied, limited)
	}
	// The alias of the refused key was not left behind.
	if _, err := s.DescribeKey(ctx, admin, "third"); !errors.Is(err, kms.ErrNotFound) {
		t.Errorf("alias of the refused key: %v", err)
	}

	// cnsa2 with an EXTERNAL-only origin: keyflow-generated keys refused.
	if _, err := s.SetTenantPolicy(ctx, admin, &kms.TenantPolicy{Profiles: []string{kms.ProfileCNSA2}, RequiredOrigin: kms.OriginExternal}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateKey(ctx, admin, kms.CreateKeyParams{}); !errors.Is(err, kms.ErrAccessDenied) || !strings.Contains(err.Error(), "origin") {
		t.Fatalf("generated key under EXTERNAL-only: %v", err)
	}
	if _, err := s.SetTenantPolicy(ctx, admin, &kms.TenantPolicy{Profiles: []string{kms.ProfileCNSA2}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateKey(ctx, admin, kms.CreateKeyParams{Spec: kms.SpecHMAC256}); !errors.Is(err, kms.ErrAccessDenied) {
		t.Fatalf("HMAC_256 under cnsa2: %v", err)
	}
	if _, err := s.CreateKey(ctx, admin, kms.CreateKeyParams{Spec: kms.SpecMLKEM1024}); err != nil {
		t.Fatalf("ML-KEM-1024 under cnsa2: %v", err)
	}
	if w, err := s.CheckMigrationTarget(ctx, admin, kms.SpecMLDSA65); !errors.Is(err, kms.ErrAccessDenied) || w != "" {
		t.Fatalf("ML-DSA-65 as a cnsa2 migration target: %q, %v", w, err)
	}
	changes := b.EventsOfType("alpha", events.TypeTenantPolicyChanged)
	if len(changes) != 4 { // three applied, one refused (crypto-user)
		t.Fatalf("%d policy change records, want 4", len(changes))
	}
}

// approvalRecorder is an ApprovalEngine that only records the requests:
// the domain's side of dual control, without Temporal (workflows tests the
// workflow).
type approvalRecorder struct {
	mu       sync.Mutex
	started  []*kms.Approval
	failNext bool
}

func (r *approvalRecorder) StartApproval(_ context.Context, a *kms.Approval) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failNext {
		r.failNext = false
		return errors.New("temporal is down")
	}
	r.started = append(r.started, a)
	return nil
}

func (r *approvalRecorder) CastVote(context.Context, string, string, kms.ApprovalVote) error {
	return nil
}

func TestRequireApproval(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	alice := kms.Caller{Tenant: "alpha", Principal: "alice", RequestID: "r1"}
	// No policy: nothing needs approval.
	if id, pending, err := b.KMS.RequireApproval(ctx, alice, kms.ApprovalDisable, "k"); err != nil || pending || id != "" {
		t.Fatalf("without a policy: %q %v %v", id, pending, err)
	}
	if _, err := b.KMS.SetTenantPolicy(ctx, alice, &kms.TenantPolicy{Approvals: []kms.ApprovalRule{{Operation: kms.ApprovalDisable, Required: 2, ExpiresAfter: "1h"}}}); err != nil {
		t.Fatal(err)
	}
	// No engine yet: fail closed.
	if _, _, err := b.KMS.RequireApproval(ctx, alice, kms.ApprovalDisable, "k"); !errors.Is(err, kms.ErrInternal) {
		t.Fatalf("without an engine: %v", err)
	}
	rec := &approvalRecorder{}
	b.KMS.SetApprovalEngine(rec)
	if _, pending, err := b.KMS.RequireApproval(ctx, alice, kms.ApprovalRotate, "k"); err != nil || pending {
		t.Fatalf("an operation the policy does not list: %v %v", pending, err)
	}
	id, pending, err := b.KMS.RequireApproval(ctx, alice, kms.ApprovalDisable, "k")
	if err != nil || !pending || id == "" {
		t.Fatalf("RequireApproval: %q %v %v", id, pending, err)
	}
	a, err := b.KMS.GetApproval(ctx, alice, id)
	if err != nil || a.State != kms.ApprovalPending || a.Required != 2 || a.Requester != "alice" || a.ExpiresAt.Sub(a.CreatedAt) != time.Hour {
		t.Fatalf("stored request: %+v, %v", a, err)
	}
	if perr := kms.PendingApprovalError(id); kms.CodeOf(perr) != kms.CodePendingApproval || kms.PendingApprovalID(perr) != id || !strings.Contains(perr.Error(), id) {
		t.Errorf("pending error: %v", perr)
	}
	// The domain refuses what the workflow would, and records it.
	if _, err := b.KMS.DecideApproval(ctx, alice, kms.ApprovalDecision{ID: id, Approve: true}); !errors.Is(err, kms.ErrAccessDenied) {
		t.Fatalf("self-approval: %v", err)
	}
	if _, err := b.KMS.DecideApproval(ctx, kms.Caller{Tenant: "alpha", Principal: "bob", Roles: []string{"crypto-user"}}, kms.ApprovalDecision{ID: id, Approve: true}); !errors.Is(err, kms.ErrAccessDenied) {
		t.Fatalf("approval without the approver role: %v", err)
	}
	if _, err := b.KMS.DecideApproval(ctx, kms.Caller{Tenant: "alpha", Principal: "bob"}, kms.ApprovalDecision{ID: id}); !errors.Is(err, kms.ErrValidation) {
		t.Fatalf("denial without a reason: %v", err)
	}
	if _, err := b.KMS.DecideApproval(ctx, kms.Caller{Tenant: "beta", Principal: "bob"}, kms.ApprovalDecision{ID: id, Approve: true}); !errors.Is(err, kms.ErrNotFound) {
		t.Fatalf("another tenant's request: %v", err)
	}
	refusals := b.EventsOfType("alpha", events.TypeApprovalApproved)
	if len(refusals) != 2 || refusals[0].Outcome != events.OutcomeDenied || refusals[0].Principal != "alice" || refusals[0].ErrorCode != "AccessDeniedException" {
		t.Fatalf("refused approvals on the record: %+v", refusals)
	}
	reqs := b.EventsOfType("alpha", events.TypeApprovalRequested) // the first failed: no engine
	if len(reqs) != 2 || reqs[0].ErrorCode != "KMSInternalException" || reqs[1].Outcome != events.OutcomeSuccess ||
		reqs[1].Data["approvalId"] != id || reqs[1].Subject != kms.ApprovalResource("alpha", id) {
		t.Fatalf("requested events: %+v", reqs)
	}
	// A workflow that does not start leaves no pending request behind.
	rec.failNext = true
	if _, _, err := b.KMS.RequireApproval(ctx, alice, kms.ApprovalDisable, "k2"); !errors.Is(err, kms.ErrInternal) {
		t.Fatalf("engine failure: %v", err)
	}
	pendingList, err := b.KMS.ListApprovals(ctx, alice, kms.ApprovalPending)
	if err != nil || len(pendingList) != 1 || pendingList[0].ID != id {
		t.Fatalf("pending list: %+v, %v", pendingList, err)
	}
	if failed, _ := b.KMS.ListApprovals(ctx, alice, kms.ApprovalFailed); len(failed) != 1 {
		t.Fatalf("failed list: %+v", failed)
	}

	// The tenant policy itself: with policy-change listed, a change waits.
	if _, err := b.KMS.SetTenantPolicy(ctx, alice, &kms.TenantPolicy{Approvals: []kms.ApprovalRule{{Operation: kms.ApprovalPolicyChange, Required: 1}}}); err != nil {
		t.Fatal(err)
	}
	res, err := b.KMS.SetTenantPolicy(ctx, alice, &kms.TenantPolicy{})
	if err != nil || res.ApprovalID == "" || res.Policy != nil {
		t.Fatalf("guarded policy change: %+v, %v", res, err)
	}
	cur, _ := b.KMS.GetTenantPolicy(ctx, alice)
	if cur.Rule(kms.ApprovalPolicyChange) == nil {
		t.Fatal("the guarded change was applied without approval")
	}
	// Applying it (what the workflow does once approved) removes the rule.
	if err := b.KMS.ApplyProposedPolicy(ctx, alice, res.ApprovalID); err != nil {
		t.Fatal(err)
	}
	if cur, _ = b.KMS.GetTenantPolicy(ctx, alice); cur.Rule(kms.ApprovalPolicyChange) != nil {
		t.Fatal("the approved change was not applied")
	}
}

// TestKeyQuotaAcrossWorkers: two workers over one store create keys at
// once under a key quota of 3; exactly 3 keys exist afterwards and every
// other create is refused with LimitExceeded (the store's key-create lock).
func TestKeyQuotaAcrossWorkers(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	clock := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	w1, w2 := newClockedKMS(t, b, &clock), newClockedKMS(t, b, &clock)
	admin := kms.Caller{Tenant: "alpha", Principal: "alice"}
	if _, err := w1.SetTenantPolicy(ctx, admin, &kms.TenantPolicy{Quotas: &kms.Quotas{MaxKeys: 3}}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	created, refused := 0, 0
	for i := range 10 {
		w := w1
		if i%2 == 1 {
			w = w2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := w.CreateKey(ctx, admin, kms.CreateKeyParams{Spec: kms.SpecHMAC256})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created++
			case kms.CodeOf(err) == kms.CodeLimitExceeded:
				refused++
			default:
				t.Errorf("create: %v", err)
			}
		}()
	}
	wg.Wait()
	keys, err := w1.ListKeys(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	if created != 3 || refused != 7 || len(keys) != 3 {
		t.Fatalf("%d created, %d refused, %d keys; want 3, 7, 3", created, refused, len(keys))
	}
}
