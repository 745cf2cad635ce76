package workflows

import (
	"context"
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/kms"
)

// The post-quantum migration campaign (issue #7), one workflow per
// campaign, with the steps:
//
//  1. create the target keys (one per source key, of the planned spec);
//  2. link each source to its target: signing keys enter a dual-signing
//     period (Sign on the source returns both signatures; Verify on either
//     key accepts either), encryption keys are linked;
//  3. rewrap every registered data key of each source under its target, in
//     batches (heartbeating activities), continuing as new with a cursor;
//  4. the readiness gate: wait for the cutover approval (cutoverReady);
//  5. cutover: the targets take over the sources' aliases and the sources
//     become DEACTIVATED (decrypt and verify only);
//  6. after a grace period (a durable timer), retire the sources.
//
// Signals pause and resume it (between batches and steps) and roll it back
// at any point before retirement; a query reports its status. Every step
// is an idempotent activity recorded in the audit trail with an event ID
// derived from the step, so a worker restart or a retried activity leaves
// one record per fact.

// Signal and query names of the migration workflow.
const (
	SignalPause    = "pause"
	SignalResume   = "resume"
	SignalRollback = "rollback"
	SignalApprove  = "approve-cutover"
	QueryStatus    = "status"
)

// Campaign phases, as the status reports them.
const (
	PhaseCreatingTargets  = "creating-targets"
	PhaseDualSigning      = "dual-signing"
	PhaseRewrapping       = "rewrapping"
	PhaseAwaitingApproval = "awaiting-approval"
	PhaseCutover          = "cutover"
	PhaseGrace            = "grace"
	PhaseRetired          = "retired"
	PhaseRolledBack       = "rolled-back"
)

// MigrationParams start a campaign. IDs and specs only.
type MigrationParams struct {
	CampaignID string
	Tenant     string
	Principal  string
	RequestID  string
	Keys       []MigrationKey
	// DualSigningPeriod is the least time the links stay in their
	// dual-signing phase before the rewrap (0: none beyond the rewrap and
	// the wait for approval, which happen in that phase too).
	DualSigningPeriod time.Duration
	// GracePeriod runs from cutover to retirement (default 7 days).
	GracePeriod time.Duration
	// RequiredApprovals is the cutover gate's M (default 1).
	RequiredApprovals int
	BatchSize         int // default 100
	MaxBatchesPerRun  int // default 50; then ContinueAsNew

	// State carries the campaign across ContinueAsNew; nil at start.
	State *MigrationState
}

// MigrationKey is one source key of a campaign and where it stands.
type MigrationKey struct {
	SourceKeyID string
	TargetSpec  string
	TargetKeyID string
	Signing     bool // a signing key: dual-signing, no data keys
	Total       int  // registrations under the source when the rewrap began
	Rewrapped   int
	Failed      int
	Skipped     int
	Cursor      string
	RewrapDone  bool
	Retired     bool
	// RetireBlocked is set when registered data keys still used the
	// source at retirement; the source stays linked (and DEACTIVATED).
	RetireBlocked bool
}

// Approval is one cutover approval.
type Approval struct {
	Principal string
	At        time.Time
}

// ControlSignal is the payload of every campaign signal: who asked.
type ControlSignal struct {
	Principal string
	RequestID string
	// ApprovalID is set by the approval workflow when the cutover's
	// approval request completed (dual control: gates.go).
	ApprovalID string `json:",omitempty"`
	// Token authorizes the signal (optoken.go); its detail is the
	// ApprovalID.
	Token *kms.OpToken `json:",omitempty"`
}

// MigrationState is the campaign's progress.
type MigrationState struct {
	Phase           string
	Paused          bool
	PauseRecorded   bool // the pause state the audit trail last saw
	RollbackAsked   bool
	Approvals       []Approval
	Keys            []MigrationKey
	StartedAt       time.Time
	RewrapStartedAt time.Time
	RewrapEndedAt   time.Time // the rate is of the first pass
	GraceEndsAt     time.Time
	// SweepStarted is set once the post-cutover sweep began (a second
	// rewrap pass for data keys registered under a source while the
	// first ran).
	SweepStarted bool
	// Cutover is the dual-control state of the gate (gates.go).
	Cutover CutoverGate
	// Events counts the phase records so far: their IDs derive from it.
	Events int
	Error  string
	// Tokens are the signal tokens already used (optoken.go), carried
	// across continue-as-new.
	Tokens tokenLedger
}

// MigrationStatus is what the status query answers.
type MigrationStatus struct {
	CampaignID        string
	Phase             string
	Paused            bool
	Approvals         []Approval
	RequiredApprovals int
	Keys              []MigrationKey
	Total             int
	Rewrapped         int
	Failed            int
	Skipped           int
	RatePerSecond     float64
	ETASeconds        float64
	StartedAt         time.Time
	GraceEndsAt       time.Time
	Done              bool
	Error             string
}

// MigrationWorkflowID is the one workflow of a campaign: starting the same
// campaign twice joins it.
func MigrationWorkflowID(tenant, campaignID string) string {
	return "migration/" + tenant + "/" + campaignID
}

// cutoverReady is the readiness gate: enough distinct approvals. It is a
// function of the state alone so that governance can replace it (M-of-N
// with roles, requester exclusion) without touching the workflow.
func cutoverReady(st *MigrationState, required int) bool {
	if st.Cutover.ApprovalID != "" { // the tenant policy's M-of-N (gates.go)
		return st.Cutover.Approved
	}
	return len(st.Approvals) >= required
}

// campaign is one run of the workflow: its params, state and signals.
type campaign struct {
	p   MigrationParams
	st  *MigrationState
	chs map[string]workflow.ReceiveChannel
	// tokens is set when this run checks signal tokens (optoken.go).
	tokens bool
	// names fixes the order signals are polled in (no map ranging).
	names []string
}

// MigrationWorkflow runs a campaign. See the package comment above.
func MigrationWorkflow(ctx workflow.Context, p MigrationParams) (*MigrationStatus, error) {
	if p.GracePeriod <= 0 {
		p.GracePeriod = 7 * 24 * time.Hour
	}
	if p.RequiredApprovals <= 0 {
		p.RequiredApprovals = 1
	}
	if p.BatchSize <= 0 {
		p.BatchSize = defaultBatchSize
	}
	if p.MaxBatchesPerRun <= 0 {
		p.MaxBatchesPerRun = defaultMaxBatchesPerRun
	}
	m := &campaign{p: p, st: p.State, chs: map[string]workflow.ReceiveChannel{}}
	fresh := m.st == nil
	if fresh {
		m.st = &MigrationState{Phase: PhaseCreatingTargets, StartedAt: workflow.Now(ctx), Keys: append([]MigrationKey(nil), p.Keys...)}
	}
	m.p.State = nil
	m.tokens = tokensRequired(ctx)
	m.names = []string{SignalPause, SignalResume, SignalRollback, SignalApprove}
	for _, n := range m.names {
		m.chs[n] = workflow.GetSignalChannel(ctx, n)
	}
	if err := workflow.SetQueryHandler(ctx, QueryStatus, func() (MigrationStatus, error) {
		return m.status(workflow.Now(ctx)), nil
	}); err != nil {
		return nil, err
	}
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval: 200 * time.Millisecond, BackoffCoefficient: 2, MaximumInterval: 10 * time.Second, MaximumAttempts: 20,
		},
	})
	if fresh {
		if err := m.record(ctx, events.TypeMigrationStarted, map[string]any{"keys": len(m.st.Keys)}); err != nil {
			return nil, err
		}
	}
	err := m.run(ctx)
	var can *workflow.ContinueAsNewError
	if errors.As(err, &can) {
		return nil, err
	}
	if errors.Is(err, errRollback) {
		err = m.rollback(ctx)
	}
	if err != nil {
		m.st.Error = err.Error()
		return nil, err
	}
	s := m.status(workflow.Now(ctx))
	return &s, nil
}

// errRollback unwinds the steps when a rollback was asked for.
var errRollback = errors.New("rollback asked")

// run drives the steps from wherever the state says the campaign is.
func (m *campaign) run(ctx workflow.Context) error {
	var a *Activities
	if m.st.Phase == PhaseCreatingTargets {
		for i := range m.st.Keys {
			if err := m.checkpoint(ctx); err != nil {
				return err
			}
			k := &m.st.Keys[i]
			var res MigrationTarget
			if err := m.exec(ctx, a.CreateMigrationTarget, m.step(k, ""), &res); err != nil {
				return err
			}
			k.TargetKeyID, k.Signing = res.TargetKeyID, res.Signing
		}
		if err := m.enter(ctx, PhaseDualSigning); err != nil {
			return err
		}
	}
	if m.st.Phase == PhaseDualSigning {
		for i := range m.st.Keys {
			k := &m.st.Keys[i]
			phase := kms.PhaseLinked
			if k.Signing {
				phase = kms.PhaseDualSigning
			}
			if err := m.exec(ctx, a.LinkMigration, m.step(k, string(phase)), nil); err != nil {
				return err
			}
		}
		if m.p.DualSigningPeriod > 0 {
			if err := m.sleep(ctx, m.p.DualSigningPeriod); err != nil {
				return err
			}
		}
		if err := m.enter(ctx, PhaseRewrapping); err != nil {
			return err
		}
		m.st.RewrapStartedAt = workflow.Now(ctx)
		for i := range m.st.Keys {
			k := &m.st.Keys[i]
			if err := m.exec(ctx, a.RemainingDataKeys, RewrapBatchParams{Tenant: m.p.Tenant, Principal: m.p.Principal, RequestID: m.p.RequestID, KeyID: k.SourceKeyID, DestinationKeyID: k.TargetKeyID}, &k.Total); err != nil {
				return err
			}
		}
	}
	if m.st.Phase == PhaseRewrapping {
		if err := m.rewrap(ctx); err != nil {
			return err
		}
		m.st.RewrapEndedAt = workflow.Now(ctx)
		if err := m.enter(ctx, PhaseAwaitingApproval); err != nil {
			return err
		}
	}
	if m.st.Phase == PhaseAwaitingApproval {
		if err := m.awaitCutover(ctx); err != nil {
			return err
		}
		if err := m.enter(ctx, PhaseCutover); err != nil {
			return err
		}
	}
	if m.st.Phase == PhaseCutover {
		for i := range m.st.Keys {
			if err := m.exec(ctx, a.CutoverMigration, m.step(&m.st.Keys[i], ""), nil); err != nil {
				return err
			}
		}
		m.st.GraceEndsAt = workflow.Now(ctx).Add(m.p.GracePeriod)
		if err := m.enter(ctx, PhaseGrace); err != nil {
			return err
		}
	}
	if m.st.Phase == PhaseGrace {
		// The sweep: the sources stopped encrypting at cutover, so one
		// more pass from each cursor moves whatever was registered under
		// them after the first pass, and nothing can follow it.
		if !m.st.SweepStarted {
			m.st.SweepStarted = true
			for i := range m.st.Keys {
				m.st.Keys[i].RewrapDone = false
			}
		}
		if err := m.rewrap(ctx); err != nil {
			return err
		}
		// A durable timer: it survives worker restarts and, in tests,
		// time skipping. It counts from cutover, also across a restart.
		if d := m.st.GraceEndsAt.Sub(workflow.Now(ctx)); d > 0 {
			if err := m.sleep(ctx, d); err != nil {
				return err
			}
		}
		if err := m.checkpoint(ctx); err != nil {
			return err
		}
		for i := range m.st.Keys {
			k := &m.st.Keys[i]
			err := m.exec(ctx, a.RetireMigrationSource, m.step(k, ""), nil)
			var app *temporal.ApplicationError
			switch {
			case err == nil:
				k.Retired = true
			case errors.As(err, &app) && app.Type() == string(kms.CodeInvalidState):
				k.RetireBlocked = true
			default:
				return err
			}
		}
		return m.enter(ctx, PhaseRetired)
	}
	return nil
}

// rewrap moves each key's registered data keys, a batch at a time, and
// continues as new after MaxBatchesPerRun batches.
func (m *campaign) rewrap(ctx workflow.Context) error {
	var a *Activities
	actx := workflow.WithActivityOptions(ctx, rewrapActivityOptions)
	batches := 0
	for i := range m.st.Keys {
		k := &m.st.Keys[i]
		for !k.RewrapDone && !k.Signing {
			if err := m.checkpoint(ctx); err != nil {
				return err
			}
			if batches >= m.p.MaxBatchesPerRun {
				m.drain(ctx)
				p := m.p
				p.State = m.st
				return workflow.NewContinueAsNewError(ctx, MigrationWorkflow, p)
			}
			batches++
			var page RewrapBatchResult
			f := workflow.ExecuteActivity(actx, a.RewrapBatch, RewrapBatchParams{
				Tenant: m.p.Tenant, Principal: m.p.Principal, RequestID: m.p.RequestID,
				Tag:   "migration/" + m.p.Tenant + "/" + m.p.CampaignID + "/rewrap",
				KeyID: k.SourceKeyID, DestinationKeyID: k.TargetKeyID, Cursor: k.Cursor, Limit: m.p.BatchSize,
			})
			if err := m.waitFor(ctx, f, nil); err != nil && !errors.Is(err, errRollback) {
				return err
			}
			if err := f.Get(ctx, &page); err != nil {
				return err
			}
			k.Rewrapped += page.Rewrapped
			k.Failed += page.Failed
			k.Skipped += page.Skipped
			if page.NextCursor != "" {
				k.Cursor = page.NextCursor
			}
			k.RewrapDone = page.Done
			if k.RewrapDone {
				if err := m.reconcile(ctx, k); err != nil {
					return err
				}
			}
		}
	}
	return m.checkpoint(ctx)
}

// reconcile corrects a key's counts from the registry once its pass is
// done: a batch cut short by a crash is retried, and the moves it had
// finished are not in any batch result (they are in the registry and in
// the audit trail, once each).
func (m *campaign) reconcile(ctx workflow.Context, k *MigrationKey) error {
	var a *Activities
	var remaining int
	if err := m.exec(ctx, a.RemainingDataKeys, RewrapBatchParams{Tenant: m.p.Tenant, Principal: m.p.Principal, RequestID: m.p.RequestID,
		KeyID: k.SourceKeyID, DestinationKeyID: k.TargetKeyID}, &remaining); err != nil {
		return err
	}
	k.Total = max(k.Total, k.Rewrapped+remaining)
	k.Rewrapped = max(k.Rewrapped, k.Total-remaining)
	return nil
}

// rollback undoes the campaign on every key, newest step first.
func (m *campaign) rollback(ctx workflow.Context) error {
	var a *Activities
	if m.st.Phase == PhaseRetired {
		return temporal.NewNonRetryableApplicationError("the campaign has retired its keys; it cannot be rolled back", string(kms.CodeInvalidState), nil)
	}
	for i := len(m.st.Keys) - 1; i >= 0; i-- {
		if err := m.exec(ctx, a.RollbackMigration, m.step(&m.st.Keys[i], ""), nil); err != nil {
			return err
		}
	}
	m.st.Paused, m.st.PauseRecorded = false, false
	return m.enter(ctx, PhaseRolledBack)
}

// checkpoint applies pending signals, waits while paused, and unwinds on a
// rollback.
func (m *campaign) checkpoint(ctx workflow.Context) error {
	m.drain(ctx)
	return m.waitFor(ctx, nil, nil)
}

// RollbackEndsTimerChange is the change (workflow.GetVersion) after which
// a rollback ends a timer's wait at once. Before it, a rollback waited for
// the timer to fire (issue 13): histories recorded then replay that way.
const RollbackEndsTimerChange = "migration-rollback-ends-timer"

// sleep waits d on a durable timer (it survives worker restarts and, in
// tests, time skipping), handling signals meanwhile. A rollback cancels
// the timer and ends the wait with errRollback at once: unlike an
// activity in flight, a timer has nothing to finish.
func (m *campaign) sleep(ctx workflow.Context, d time.Duration) error {
	tctx, cancel := workflow.WithCancel(ctx)
	defer cancel() // a no-op once the timer fired
	return m.wait(ctx, workflow.NewTimer(tctx, d), nil, true)
}

// waitFor blocks until f is ready (if given), until (if given) holds, and
// the campaign is not paused, handling signals meanwhile. A rollback ends
// the wait with errRollback (after f is ready: an activity in flight
// finishes first).
func (m *campaign) waitFor(ctx workflow.Context, f workflow.Future, until func() bool) error {
	return m.wait(ctx, f, until, false)
}

// wait is waitFor; when f is a timer, a rollback ends the wait at once.
func (m *campaign) wait(ctx workflow.Context, f workflow.Future, until func() bool, timer bool) error {
	ready := f == nil
	for {
		if m.st.RollbackAsked && ready {
			return errRollback
		}
		// GetVersion only here, where the behaviour changed: a history
		// with no rollback during a timer records no marker.
		if m.st.RollbackAsked && timer && workflow.GetVersion(ctx, RollbackEndsTimerChange, workflow.DefaultVersion, 1) >= 1 {
			return errRollback
		}
		if m.st.Paused != m.st.PauseRecorded {
			m.st.PauseRecorded = m.st.Paused
			if err := m.record(ctx, events.TypeMigrationPhase, map[string]any{"phase": m.st.Phase, "paused": m.st.Paused}); err != nil {
				return err
			}
		}
		if ready && !m.st.Paused && (until == nil || until()) {
			return nil
		}
		sel := workflow.NewSelector(ctx)
		for _, n := range m.names {
			sel.AddReceive(m.chs[n], func(c workflow.ReceiveChannel, _ bool) { m.apply(ctx, n, c) })
		}
		if f != nil && !ready {
			sel.AddFuture(f, func(workflow.Future) { ready = true })
		}
		sel.Select(ctx)
	}
}

// drain applies every signal already received.
func (m *campaign) drain(ctx workflow.Context) {
	for _, n := range m.names {
		for {
			var sig ControlSignal
			if !m.chs[n].ReceiveAsync(&sig) {
				break
			}
			if m.authorized(ctx, n, sig) {
				m.applySignal(n, sig, time.Time{})
			}
		}
	}
}

func (m *campaign) apply(ctx workflow.Context, name string, c workflow.ReceiveChannel) {
	var sig ControlSignal
	c.Receive(ctx, &sig)
	if m.authorized(ctx, name, sig) {
		m.applySignal(name, sig, workflow.Now(ctx))
	}
}

// authorized checks a signal's token (optoken.go); a refused signal is
// recorded and ignored. Tokens count from the campaign's start, which
// continue-as-new keeps.
func (m *campaign) authorized(ctx workflow.Context, name string, sig ControlSignal) bool {
	if !m.tokens {
		return true
	}
	return m.st.Tokens.authorize(ctx, tokenRequest{Tenant: m.p.Tenant, Principal: sig.Principal, Operation: name,
		Detail: sig.ApprovalID, Token: sig.Token}, m.st.StartedAt)
}

func (m *campaign) applySignal(name string, sig ControlSignal, now time.Time) {
	switch name {
	case SignalPause:
		m.st.Paused = true
	case SignalResume:
		m.st.Paused = false
	case SignalRollback:
		if m.st.Phase != PhaseRetired {
			m.st.RollbackAsked = true
		}
	case SignalApprove:
		if m.st.Phase != PhaseAwaitingApproval {
			// An approval is of what the gate shows (the finished
			// rewrap); before it there is nothing to approve, after it
			// nothing left. The client refuses such requests up front.
			return
		}
		if m.cutoverSignal(sig, now) {
			return // governed by the tenant policy (gates.go)
		}
		for _, a := range m.st.Approvals {
			if a.Principal == sig.Principal {
				return // M-of-N counts distinct principals
			}
		}
		m.st.Approvals = append(m.st.Approvals, Approval{Principal: sig.Principal, At: now})
	}
}

// enter moves the campaign to phase and records it.
func (m *campaign) enter(ctx workflow.Context, phase string) error {
	m.st.Phase = phase
	return m.record(ctx, events.TypeMigrationPhase, map[string]any{"phase": phase, "paused": m.st.Paused})
}

// record stores a campaign-level audit record; its ID derives from the
// campaign and the record's ordinal, the same on every replay and retry.
func (m *campaign) record(ctx workflow.Context, typ string, data map[string]any) error {
	m.st.Events++
	var a *Activities
	return m.exec(ctx, a.RecordMigrationEvent, MigrationRecord{
		Tenant: m.p.Tenant, Principal: m.p.Principal, RequestID: m.p.RequestID, CampaignID: m.p.CampaignID,
		Type: typ, Seq: m.st.Events, Data: data,
	}, nil)
}

// exec runs an activity and waits for it, answering signals meanwhile. A
// rollback asked during the activity takes effect at the next checkpoint.
func (m *campaign) exec(ctx workflow.Context, act any, arg any, out any) error {
	f := workflow.ExecuteActivity(ctx, act, arg)
	for {
		done := false
		sel := workflow.NewSelector(ctx)
		sel.AddFuture(f, func(workflow.Future) { done = true })
		for _, n := range m.names {
			sel.AddReceive(m.chs[n], func(c workflow.ReceiveChannel, _ bool) { m.apply(ctx, n, c) })
		}
		sel.Select(ctx)
		if done {
			return f.Get(ctx, out)
		}
	}
}

func (m *campaign) step(k *MigrationKey, phase string) MigrationStep {
	return MigrationStep{
		Tenant: m.p.Tenant, Principal: m.p.Principal, RequestID: m.p.RequestID, CampaignID: m.p.CampaignID,
		SourceKeyID: k.SourceKeyID, TargetKeyID: k.TargetKeyID, TargetSpec: k.TargetSpec, Phase: phase,
	}
}

// status summarises the campaign for the query.
func (m *campaign) status(now time.Time) MigrationStatus {
	s := MigrationStatus{
		CampaignID: m.p.CampaignID, Phase: m.st.Phase, Paused: m.st.Paused, Approvals: m.st.Approvals,
		RequiredApprovals: m.p.RequiredApprovals, Keys: m.st.Keys, StartedAt: m.st.StartedAt, GraceEndsAt: m.st.GraceEndsAt,
		Done: m.st.Phase == PhaseRetired || m.st.Phase == PhaseRolledBack, Error: m.st.Error,
	}
	for _, k := range m.st.Keys {
		s.Total += k.Total
		s.Rewrapped += k.Rewrapped
		s.Failed += k.Failed
		s.Skipped += k.Skipped
	}
	if !m.st.RewrapStartedAt.IsZero() {
		processed := s.Rewrapped + s.Failed + s.Skipped
		end := now
		if !m.st.RewrapEndedAt.IsZero() {
			end = m.st.RewrapEndedAt
		}
		if secs := end.Sub(m.st.RewrapStartedAt).Seconds(); secs > 0 && processed > 0 {
			s.RatePerSecond = float64(processed) / secs
			if left := s.Total - processed; left > 0 && m.st.Phase == PhaseRewrapping {
				s.ETASeconds = float64(left) / s.RatePerSecond
			}
		}
	}
	return s
}

// MigrationStep is the input of a per-key campaign activity.
type MigrationStep struct {
	Tenant      string
	Principal   string
	RequestID   string
	CampaignID  string
	SourceKeyID string
	TargetKeyID string
	TargetSpec  string
	Phase       string
}

// MigrationTarget is the target key a campaign made for a source key.
type MigrationTarget struct {
	TargetKeyID string
	Signing     bool
}

// MigrationRecord is a campaign-level audit record to store.
type MigrationRecord struct {
	Tenant     string
	Principal  string
	RequestID  string
	CampaignID string
	Type       string
	Seq        int
	Data       map[string]any
}

// migrationCaller names the fact a campaign step establishes (campaign,
// source key, step), so a retried step re-emits the same event ID.
func migrationCaller(s MigrationStep, step string) kms.Caller {
	return kms.Caller{
		Tenant: s.Tenant, Principal: s.Principal, RequestID: s.RequestID,
		IdempotencyKey: fmt.Sprintf("migration/%s/%s/%s/%s", s.Tenant, s.CampaignID, s.SourceKeyID, step),
	}
}

func (s MigrationStep) params() kms.MigrationKeyParams {
	return kms.MigrationKeyParams{CampaignID: s.CampaignID, SourceKeyID: s.SourceKeyID, TargetKeyID: s.TargetKeyID,
		TargetSpec: kms.KeySpec(s.TargetSpec), Phase: kms.MigrationPhase(s.Phase)}
}

// CreateMigrationTarget creates (or finds) the target key of a source.
func (a *Activities) CreateMigrationTarget(ctx context.Context, s MigrationStep) (*MigrationTarget, error) {
	k, err := a.KMS.CreateMigrationTarget(ctx, migrationCaller(s, "create-target"), s.params())
	if err != nil {
		return nil, activityError(err)
	}
	return &MigrationTarget{TargetKeyID: k.ID, Signing: k.Usage == kms.UsageSignVerify}, nil
}

// LinkMigration links a source and its target.
func (a *Activities) LinkMigration(ctx context.Context, s MigrationStep) error {
	return activityError(a.KMS.LinkMigration(ctx, migrationCaller(s, "link"), s.params()))
}

// CutoverMigration makes the target the key in use.
func (a *Activities) CutoverMigration(ctx context.Context, s MigrationStep) error {
	return activityError(a.KMS.CutoverMigration(ctx, migrationCaller(s, "cutover"), s.params()))
}

// RollbackMigration undoes the campaign on one key.
func (a *Activities) RollbackMigration(ctx context.Context, s MigrationStep) error {
	return activityError(a.KMS.RollbackMigration(ctx, migrationCaller(s, "rollback"), s.params()))
}

// RetireMigrationSource retires a source after the grace period.
func (a *Activities) RetireMigrationSource(ctx context.Context, s MigrationStep) error {
	return activityError(a.KMS.RetireMigrationSource(ctx, migrationCaller(s, "retire"), s.params()))
}

// RecordMigrationEvent stores a campaign-level record.
func (a *Activities) RecordMigrationEvent(ctx context.Context, r MigrationRecord) error {
	c := kms.Caller{Tenant: r.Tenant, Principal: r.Principal, RequestID: r.RequestID,
		IdempotencyKey: fmt.Sprintf("migration/%s/%s/event/%d", r.Tenant, r.CampaignID, r.Seq)}
	return activityError(a.KMS.RecordMigrationEvent(ctx, c, r.Type, r.CampaignID, r.Data))
}

func startOptions(id string) client.StartWorkflowOptions {
	return client.StartWorkflowOptions{ID: id, TaskQueue: TaskQueue}
}

// StartMigration starts a campaign, or finds it running: the workflow ID
// derives from the campaign ID, so a second start of the same campaign
// joins it. It returns the workflow ID.
func (c *Client) StartMigration(ctx context.Context, p MigrationParams) (string, error) {
	id := MigrationWorkflowID(p.Tenant, p.CampaignID)
	opts := startOptions(id)
	opts.WorkflowIDReusePolicy = enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE
	opts.WorkflowIDConflictPolicy = enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING
	if _, err := c.Temporal.ExecuteWorkflow(ctx, opts, MigrationWorkflow, p); err != nil {
		var started *serviceerror.WorkflowExecutionAlreadyStarted
		if errors.As(err, &started) {
			return id, &kms.Error{Code: kms.CodeAlreadyExists, Message: "campaign " + p.CampaignID + " already ran; start a new plan under another ID"}
		}
		return id, fmt.Errorf("failed to start the campaign: %w", err)
	}
	return id, nil
}

// SignalMigration sends a campaign one of the control signals. An approval
// is refused (KMSInvalidStateException) unless the campaign waits at its
// gate: approving a rewrap that has not finished would approve nothing.
func (c *Client) SignalMigration(ctx context.Context, tenant, campaignID, signal string, sig ControlSignal) error {
	id := MigrationWorkflowID(tenant, campaignID)
	tok, err := mint(ctx, c.Tokens, kms.Caller{Tenant: tenant, Principal: sig.Principal, RequestID: sig.RequestID}, id, signal, sig.ApprovalID)
	if err != nil {
		return err
	}
	sig.Token = tok
	if signal == SignalApprove {
		s, err := c.MigrationStatus(ctx, tenant, campaignID)
		if err != nil {
			return err
		}
		if s.Phase != PhaseAwaitingApproval {
			return &kms.Error{Code: kms.CodeInvalidState, Message: "campaign " + campaignID + " is " + s.Phase + ", not awaiting approval"}
		}
	}
	err = c.Temporal.SignalWorkflow(ctx, id, "", signal, sig)
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return &kms.Error{Code: kms.CodeNotFound, Message: "campaign " + campaignID + " is not running"}
	}
	if err != nil {
		return fmt.Errorf("failed to signal the campaign: %w", err)
	}
	return nil
}

// MigrationStatus queries a campaign (running or finished).
func (c *Client) MigrationStatus(ctx context.Context, tenant, campaignID string) (*MigrationStatus, error) {
	v, err := c.Temporal.QueryWorkflow(ctx, MigrationWorkflowID(tenant, campaignID), "", QueryStatus)
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return nil, &kms.Error{Code: kms.CodeNotFound, Message: "campaign " + campaignID + " does not exist"}
	}
	if err != nil {
		return nil, fmt.Errorf("failed to query the campaign: %w", err)
	}
	var s MigrationStatus
	if err := v.Get(&s); err != nil {
		return nil, fmt.Errorf("failed to decode the campaign status: %w", err)
	}
	return &s, nil
}
