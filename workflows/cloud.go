package workflows

// Cloud distribution (the Multi-Cloud pattern, docs/multi-cloud.md): keyflow
// keeps copies of a key in AWS KMS, Google Cloud KMS and Azure Key Vault in
// step with its own state, durably.
//
//   - CloudSyncWorkflow brings a key's copy in one or more destinations to
//     keyflow's state: the first run imports the key (Step "distribute"),
//     later runs propagate a rotation (the provider gets the new primary
//     version), a disable, an enable, a scheduled deletion or its
//     cancellation. Key changes start it by themselves
//     (cloud_propagate.go); one runs per key, and a request that arrives
//     while it runs becomes one more round (SignalCloudSync). Its one
//     activity, CloudSync, is convergent: it reads keyflow's key and the
//     placement, does only what is missing, and the connectors find what
//     an earlier attempt made, so a retry after a crash or an outage
//     finishes the job instead of doing it twice.
//   - An undistribute is a round of the same sync (Step "undistribute",
//     activity CloudUndistribute): it schedules the key's deletion in the
//     provider, with the provider's own window, and forgets the
//     placement, in its turn among the key's other rounds, so a
//     rotation's propagation never imports into a destination being
//     removed. CloudUndistributeWorkflow, which did this under its own
//     ID, stays registered for runs started before.
//   - CloudReconcileWorkflow compares every placement of a tenant with the
//     provider's view, in batches, and records each difference as an
//     io.keyflow.cloud.drift.v1 event naming the field; a destination whose
//     drift setting is "repair" is put back. Run it from a Temporal
//     Schedule (Client.ScheduleCloudReconcile).
//
// Activities pass key IDs and destination names, never material: the
// material is wrapped for the provider inside CloudSync (kms.WrapForCloud)
// and goes straight to the provider, so no byte of it reaches the workflow
// history. Every provider request is an io.keyflow.cloud.call.v1 record
// with the provider's request ID, including the failed ones.
//
// Retries: a provider that is down or throttling is retried with backoff
// (1 s doubling to 1 min, for up to a day); a refusal (a quota, a
// validation error) is not, and is kept on the placement as its last
// error, which `keyflow cloud status` shows.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/keyflow/keyflow/cloud"
	"github.com/keyflow/keyflow/kms"
)

// Cloud steps.
const (
	CloudStepDistribute       = "distribute"
	CloudStepRotate           = "rotate"
	CloudStepEnable           = "enable"
	CloudStepDisable          = "disable"
	CloudStepScheduleDeletion = "schedule-deletion"
	CloudStepSync             = "sync"
	CloudStepUndistribute     = "undistribute"
	CloudStepRepair           = "repair"
)

// ErrTypeCloudUnavailable is the application error type of a provider
// that did not answer (retried).
const ErrTypeCloudUnavailable = "CloudProviderUnavailable"

// CloudConnect opens the connector of a destination.
type CloudConnect func(ctx context.Context, d *kms.CloudDestination) (cloud.Connector, error)

// CloudSyncParams are the inputs of CloudSyncWorkflow.
type CloudSyncParams struct {
	Tenant    string
	KeyID     string
	Principal string
	RequestID string
	// Destinations to sync; empty means every destination the key is in.
	Destinations []string
	Step         string
	// Queued are rounds asked for while an earlier run of the workflow
	// ran, carried across ContinueAsNew.
	Queued []CloudSyncParams `json:",omitempty"`
}

// CloudSyncResult says what each destination holds now.
type CloudSyncResult struct {
	Destinations []CloudSyncOutcome
}

// CloudSyncOutcome is one destination's outcome.
type CloudSyncOutcome struct {
	Destination string
	Resource    string
	KeyVersion  uint32
	State       string
	Error       string
	// ErrorType is the failure's application error type (a keyflow
	// error code, or ErrTypeCloudUnavailable).
	ErrorType string `json:",omitempty"`
}

func cloudActivityOptions(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout:    2 * time.Minute,
		ScheduleToCloseTimeout: 24 * time.Hour,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    time.Second,
			BackoffCoefficient: 2,
			MaximumInterval:    time.Minute,
		},
	})
}

// SignalCloudSync asks a running CloudSyncWorkflow for one more round
// (its payload is a CloudSyncParams): StartCloudSync signals-with-start,
// so a change made while a sync runs is never lost to the running one.
const SignalCloudSync = "cloud-sync"

// cloudSyncRoundsPerRun bounds the history of one run.
const cloudSyncRoundsPerRun = 50

// CloudSyncWorkflow syncs a key to its destinations, one activity each.
// A destination that fails does not stop the others; the result and the
// placements name the failure.
//
// It runs in rounds: the first is p, and every SignalCloudSync that
// arrives meanwhile queues one more (requests with the same step and
// destinations collapse into one, since each round reads keyflow's
// latest state). A rotation, a disable and a distribution to another
// destination that happen while a sync runs are each carried out.
func CloudSyncWorkflow(ctx workflow.Context, p CloudSyncParams) (*CloudSyncResult, error) {
	sig := workflow.GetSignalChannel(ctx, SignalCloudSync)
	queue := p.Queued
	p.Queued = nil
	drain := func() {
		var q CloudSyncParams
		for sig.ReceiveAsync(&q) {
			queue = append(queue, q)
			q = CloudSyncParams{}
		}
	}
	var order []string
	last := map[string]CloudSyncOutcome{}
	lastErr := map[string]error{}
	for round := 0; ; round++ {
		drain()
		queue = collapseRounds(queue, p)
		outs, errs, err := cloudSyncRound(ctx, p)
		if err != nil {
			return nil, err
		}
		for i, o := range outs {
			if _, seen := last[o.Destination]; !seen {
				order = append(order, o.Destination)
			}
			last[o.Destination], lastErr[o.Destination] = o, errs[i]
		}
		drain()
		if len(queue) == 0 {
			break
		}
		next := queue[0]
		queue = queue[1:]
		if round+1 >= cloudSyncRoundsPerRun {
			next.Queued = queue
			return nil, workflow.NewContinueAsNewError(ctx, CloudSyncWorkflow, next)
		}
		p = next
	}
	if len(order) == 1 && lastErr[order[0]] != nil {
		return nil, lastErr[order[0]]
	}
	res := &CloudSyncResult{}
	for _, d := range order {
		res.Destinations = append(res.Destinations, last[d])
	}
	return res, nil
}

// cloudRoundKey identifies what a round does: its step and destinations.
func cloudRoundKey(p CloudSyncParams) string {
	return p.Step + "|" + strings.Join(p.Destinations, ",")
}

// collapseRounds drops the queued rounds that repeat p, the round about
// to run (it reads keyflow's latest state, so they would find nothing to
// do), up to the first round they must not jump: an undistribute, or,
// when p is one, a distribute. So "distribute, undistribute, distribute"
// leaves the key distributed, and the reverse leaves it removed.
func collapseRounds(queue []CloudSyncParams, p CloudSyncParams) []CloudSyncParams {
	out := make([]CloudSyncParams, 0, len(queue))
	barrier := false
	for _, q := range queue {
		if !barrier && cloudRoundKey(q) == cloudRoundKey(p) {
			continue
		}
		if q.Step == CloudStepUndistribute || (p.Step == CloudStepUndistribute && q.Step == CloudStepDistribute) {
			barrier = true
		}
		out = append(out, q)
	}
	return out
}

// cloudUndistributeRound guards undistribute rounds in CloudSyncWorkflow
// (before it, `key undistribute` ran CloudUndistributeWorkflow under its
// own ID, and no sync round had that step).
const cloudUndistributeRound = "cloud-undistribute-round"

// cloudSyncRound runs one round: a CloudSync activity per destination,
// in parallel. errs[i] is the failure of outs[i]'s destination.
func cloudSyncRound(ctx workflow.Context, p CloudSyncParams) (outs []CloudSyncOutcome, errs []error, _ error) {
	actx := cloudActivityOptions(ctx)
	var a *Activities
	dests := p.Destinations
	if len(dests) == 0 {
		lctx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 30 * time.Second})
		if err := workflow.ExecuteActivity(lctx, a.CloudPlacementsOf, p).Get(ctx, &dests); err != nil {
			return nil, nil, err
		}
	}
	// An undistribute round removes the key from its destinations, in its
	// turn: no other round of the key's sync runs meanwhile.
	undistribute := p.Step == CloudStepUndistribute &&
		workflow.GetVersion(ctx, cloudUndistributeRound, workflow.DefaultVersion, 1) == 1
	futures := make([]workflow.Future, len(dests))
	for i, d := range dests {
		q := p
		q.Destinations = []string{d}
		if undistribute {
			futures[i] = workflow.ExecuteActivity(actx, a.CloudUndistribute, q)
		} else {
			futures[i] = workflow.ExecuteActivity(actx, a.CloudSync, q)
		}
	}
	for i, f := range futures {
		var o CloudSyncOutcome
		err := f.Get(ctx, &o)
		if undistribute && err == nil {
			o = CloudSyncOutcome{Destination: dests[i], State: CloudPlacementRemoved}
		}
		if err != nil {
			o = CloudSyncOutcome{Destination: dests[i], Error: err.Error()}
			var app *temporal.ApplicationError
			if errors.As(err, &app) {
				o.Error, o.ErrorType = app.Message(), app.Type()
			}
		}
		outs, errs = append(outs, o), append(errs, err)
	}
	return outs, errs, nil
}

// CloudPlacementRemoved is the outcome state of a destination an
// undistribute round took the key out of.
const CloudPlacementRemoved = "REMOVED"

// CloudUndistributeWorkflow removes a key from one destination. New
// removals are undistribute rounds of the key's CloudSyncWorkflow; this
// one stays registered for the runs started before.
func CloudUndistributeWorkflow(ctx workflow.Context, p CloudSyncParams) error {
	var a *Activities
	return workflow.ExecuteActivity(cloudActivityOptions(ctx), a.CloudUndistribute, p).Get(ctx, nil)
}

// CloudReconcileParams are the inputs of CloudReconcileWorkflow.
type CloudReconcileParams struct {
	Tenant    string
	Principal string
	RequestID string
	// After is the cursor (a placement's "keyID/destination"); empty
	// starts at the beginning.
	After string
	// BatchSize is the placements one activity compares (default 200).
	BatchSize int
	// Totals carried across ContinueAsNew.
	Checked, Drifts, Repaired int
}

// CloudReconcileResult counts what one reconcile found.
type CloudReconcileResult struct {
	Checked, Drifts, Repaired, Errors int
	Next                              string // empty when done
}

// cloudReconcileBatchesPerRun bounds the history of one run.
const cloudReconcileBatchesPerRun = 50

// CloudReconcileWorkflow compares every placement of a tenant with its
// provider, batch by batch, continuing as new every 50 batches.
func CloudReconcileWorkflow(ctx workflow.Context, p CloudReconcileParams) (*CloudReconcileResult, error) {
	if p.BatchSize <= 0 {
		p.BatchSize = 200
	}
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 10 * time.Minute,
		HeartbeatTimeout:    time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: time.Minute, MaximumAttempts: 5},
	})
	var a *Activities
	total := &CloudReconcileResult{Checked: p.Checked, Drifts: p.Drifts, Repaired: p.Repaired}
	for range cloudReconcileBatchesPerRun {
		var r CloudReconcileResult
		if err := workflow.ExecuteActivity(actx, a.CloudReconcileBatch, p).Get(ctx, &r); err != nil {
			return nil, err
		}
		total.Checked += r.Checked
		total.Drifts += r.Drifts
		total.Repaired += r.Repaired
		total.Errors += r.Errors
		if r.Next == "" {
			return total, nil
		}
		p.After = r.Next
	}
	p.Checked, p.Drifts, p.Repaired = total.Checked, total.Drifts, total.Repaired
	return nil, workflow.NewContinueAsNewError(ctx, CloudReconcileWorkflow, p)
}

// cloudCaller is the domain caller of a cloud activity; records of
// provider calls carry no idempotency key (each attempt is its own
// request to the provider, and its own record).
func cloudCaller(tenant, principal, requestID string) kms.Caller {
	return kms.Caller{Tenant: tenant, Principal: principal, RequestID: requestID}
}

// CloudPlacementsOf lists the destinations a key is in.
func (a *Activities) CloudPlacementsOf(ctx context.Context, p CloudSyncParams) ([]string, error) {
	ps, err := a.KMS.CloudPlacements(ctx, cloudCaller(p.Tenant, p.Principal, p.RequestID), p.KeyID)
	if err != nil {
		return nil, activityError(err)
	}
	out := make([]string, 0, len(ps))
	for _, pl := range ps {
		out = append(out, pl.Destination)
	}
	slices.Sort(out)
	return out, nil
}

// connect opens a destination's connector.
func (a *Activities) connect(ctx context.Context, c kms.Caller, name string) (*kms.CloudDestination, cloud.Connector, error) {
	d, err := a.KMS.GetCloudDestination(ctx, c, name)
	if err != nil {
		return nil, nil, activityError(err)
	}
	if a.CloudConnect == nil {
		return nil, nil, temporal.NewNonRetryableApplicationError("this worker has no cloud connectors", string(kms.CodeUnsupportedOperation), nil)
	}
	conn, err := a.CloudConnect(ctx, d)
	if err != nil {
		return nil, nil, temporal.NewNonRetryableApplicationError("failed to open the destination: "+err.Error(), string(kms.CodeValidation), nil)
	}
	return d, conn, nil
}

func cloudSpec(k *kms.Key) (string, error) {
	if k.Spec == kms.SpecSymmetricDefault || k.Spec == "" {
		return cloud.SpecAES256, nil
	}
	if spec, ok := cloudPairSpecs[k.Spec][k.Usage]; ok {
		return spec, nil
	}
	return "", temporal.NewNonRetryableApplicationError(fmt.Sprintf("key %s is %s for %s; keyflow distributes %s keys and exportable RSA_3072, RSA_4096, ECC_NIST_P256 and ECC_NIST_P384 key pairs", k.ID, k.Spec, k.Usage, kms.SpecSymmetricDefault), string(kms.CodeUnsupportedOperation), nil)
}

// cloudPairSpecs maps a key pair's spec and usage to the cloud spec.
var cloudPairSpecs = map[kms.KeySpec]map[kms.KeyUsage]string{
	kms.SpecRSA3072: {kms.UsageSignVerify: cloud.SpecRSA3072Sign, kms.UsageEncryptDecrypt: cloud.SpecRSA3072Decrypt},
	kms.SpecRSA4096: {kms.UsageSignVerify: cloud.SpecRSA4096Sign, kms.UsageEncryptDecrypt: cloud.SpecRSA4096Decrypt},
	kms.SpecECCP256: {kms.UsageSignVerify: cloud.SpecECP256Sign},
	kms.SpecECCP384: {kms.UsageSignVerify: cloud.SpecECP384Sign},
}

// cloudRun runs f with a journal and records every provider call, then
// maps f's error: a provider that is down is retried, a refusal is kept
// on the placement (when there is one) and not retried.
func (a *Activities) cloudRun(ctx context.Context, c kms.Caller, d *kms.CloudDestination, keyID, step string, f func(ctx context.Context) error) error {
	j := &cloud.Journal{}
	err := f(cloud.WithJournal(ctx, j))
	for _, call := range j.Calls() {
		if rerr := a.KMS.RecordCloudCall(ctx, c, kms.CloudCallRecord{
			KeyID: keyID, Destination: d.Name, Provider: d.Provider, Operation: call.Operation,
			RequestID: call.RequestID, Resource: call.Resource, ErrorCode: call.ErrorCode, Step: step,
		}); rerr != nil {
			return activityError(rerr)
		}
	}
	if err == nil {
		return nil
	}
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		return err
	}
	if ce, ok := cloud.AsError(err); ok {
		if keyID != "" {
			_ = a.KMS.NoteCloudError(ctx, c, keyID, d.Name, ce.Code, ce.Error())
		}
		if ce.Retryable {
			return temporal.NewApplicationError(fmt.Sprintf("%s: %s did not answer (%s)", d.Name, ce.Operation, ce.Code), ErrTypeCloudUnavailable)
		}
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("%s: %s refused: %s", d.Name, ce.Operation, ce.Code), string(kms.CodeCloudProvider), nil)
	}
	if keyID != "" {
		_ = a.KMS.NoteCloudError(ctx, c, keyID, d.Name, string(kms.CodeOf(err)), kms.PublicMessage(err))
	}
	if _, ok := errors.AsType[*kms.Error](err); ok {
		return activityError(err)
	}
	if errors.Is(err, cloud.ErrUnsupported) {
		return temporal.NewNonRetryableApplicationError(err.Error(), string(kms.CodeUnsupportedOperation), nil)
	}
	return temporal.NewApplicationError(err.Error(), ErrTypeCloudUnavailable)
}

// CloudSync brings one destination (p.Destinations[0]) to keyflow's
// state for the key. A change that lands while it runs is carried out
// too: it goes again (up to three passes in all) while keyflow's records
// say the destination is behind. That closes the gap of a rotation made
// after a first distribution read the key, but before its placement
// existed for the rotation's propagation to find.
func (a *Activities) CloudSync(ctx context.Context, p CloudSyncParams) (out *CloudSyncOutcome, err error) {
	for range 3 {
		if out, err = a.cloudSync(ctx, p, false); err != nil || a.cloudCaughtUp(ctx, p) {
			break
		}
	}
	return out, err
}

// cloudCaughtUp reports whether keyflow's records say p's destination
// holds the key's state (or cannot tell: the key or the placement is
// gone).
func (a *Activities) cloudCaughtUp(ctx context.Context, p CloudSyncParams) bool {
	c := cloudCaller(p.Tenant, p.Principal, p.RequestID)
	k, err := a.KMS.GetKey(ctx, c, p.KeyID)
	if err != nil {
		return true
	}
	pl, err := a.KMS.CloudPlacement(ctx, c, k.ID, p.Destinations[0])
	return err != nil || cloudInStep(pl, k)
}

func (a *Activities) cloudSync(ctx context.Context, p CloudSyncParams, force bool) (*CloudSyncOutcome, error) {
	if len(p.Destinations) != 1 {
		return nil, temporal.NewNonRetryableApplicationError("CloudSync takes one destination", string(kms.CodeValidation), nil)
	}
	c := cloudCaller(p.Tenant, p.Principal, p.RequestID)
	dest := p.Destinations[0]
	k, err := a.KMS.GetKey(ctx, c, p.KeyID)
	if err != nil {
		return nil, activityError(err)
	}
	pl, err := a.KMS.CloudPlacement(ctx, c, k.ID, dest)
	switch {
	case kms.CodeOf(err) == kms.CodeNotFound && p.Step == CloudStepDistribute:
		if !k.Exportable {
			return nil, activityError(a.KMS.Reject(ctx, c, "cloud.distribute", &kms.Error{Code: kms.CodeAccessDenied, Message: fmt.Sprintf("key %s cannot be distributed: only keys created exportable may leave keyflow's HSM", k.ID)}))
		}
		pl = &kms.CloudPlacement{State: kms.PlacementEnabled}
	case kms.CodeOf(err) == kms.CodeNotFound:
		return &CloudSyncOutcome{Destination: dest, Error: "not distributed there"}, nil
	case err != nil:
		return nil, activityError(err)
	}
	want := kms.WantedCloudState(k)
	if !force && cloudInStep(pl, k) {
		// Nothing is missing by keyflow's records (a repeated request, a
		// second round for a change already carried out); the reconcile
		// compares with the provider itself.
		v, _ := pl.Primary()
		return &CloudSyncOutcome{Destination: dest, Resource: pl.Resource, KeyVersion: v.KeyVersion, State: pl.State}, nil
	}
	spec, err := cloudSpec(k)
	if err != nil {
		return nil, err
	}
	d, conn, err := a.connect(ctx, c, dest)
	if err != nil {
		return nil, err
	}
	if err := cloud.CheckSpec(d.Provider, spec); err != nil { // before any provider call
		return nil, activityError(a.KMS.Reject(ctx, c, "cloud."+p.Step, &kms.Error{Code: kms.CodeUnsupportedOperation, Message: err.Error()}))
	}
	// Only a distribution makes a placement; any other step finds the one
	// it read, or stops (an undistribute removed it meanwhile).
	update := a.KMS.ChangeCloudPlacement
	if p.Step == CloudStepDistribute && !force {
		update = a.KMS.UpdateCloudPlacement
	}
	if _, err := update(ctx, c, k.ID, dest, "", func(q *kms.CloudPlacement) error {
		q.Pending = p.Step
		return nil
	}); kms.CodeOf(err) == kms.CodeNotFound {
		return &CloudSyncOutcome{Destination: dest, Error: "not distributed there"}, nil
	} else if err != nil {
		return nil, activityError(err)
	}
	ref := cloud.KeyRef{KeyID: k.ID, Resource: pl.Resource, Versions: pl.ProviderVersions()}
	primary, _ := pl.Primary()
	var imported *cloud.ImportResult
	wrap := func(ctx context.Context, w cloud.WrappingKey) ([]byte, error) {
		return a.KMS.WrapForCloud(ctx, c, kms.WrapForCloudParams{
			KeyID: k.ID, Version: k.PrimaryVersion, Destination: dest, Scheme: kms.WrappingAlgorithm(w.Scheme), PublicKey: w.PublicKey,
		})
	}
	err = a.cloudRun(ctx, c, d, k.ID, p.Step, func(ctx context.Context) error {
		var err error
		if pl.State == kms.PlacementPendingDeletion && want != kms.PlacementPendingDeletion && len(ref.Versions) > 0 {
			// keyflow cancelled the deletion: the provider's copies come back first.
			if err := restoreCloudCopy(ctx, conn, pl, ref); err != nil {
				return err
			}
		}
		if force && want == kms.PlacementEnabled && len(ref.Versions) > 0 {
			// A provider may take only an enabled version as primary.
			if err := conn.Enable(ctx, ref); err != nil {
				return err
			}
		}
		switch {
		case want == kms.PlacementPendingDeletion:
			// Nothing new goes to a key that is going away.
		case len(pl.Versions) == 0:
			imported, err = conn.Import(ctx, cloud.ImportParams{KeyID: k.ID, KeyVersion: k.PrimaryVersion, Spec: spec, Resource: pl.Resource, Wrap: wrap})
		case primary.KeyVersion != k.PrimaryVersion || force:
			imported, err = conn.Rotate(ctx, cloud.RotateParams{Key: ref, KeyVersion: k.PrimaryVersion, Spec: spec, Wrap: wrap})
		}
		if err != nil {
			return err
		}
		if imported != nil {
			ref.Resource = imported.Resource
			if !slices.Contains(ref.Versions, imported.ProviderVersion) {
				ref.Versions = append(ref.Versions, imported.ProviderVersion)
			}
		}
		if want == pl.State && !force && imported == nil {
			return nil
		}
		switch want {
		case kms.PlacementEnabled:
			if pl.State != kms.PlacementEnabled || force {
				return conn.Enable(ctx, ref)
			}
		case kms.PlacementDisabled:
			return conn.Disable(ctx, ref)
		case kms.PlacementPendingDeletion:
			return conn.ScheduleDeletion(ctx, cloud.DeletionParams{Key: ref, Days: deletionDays(k, activity.GetInfo(ctx).StartedTime)})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	step := p.Step
	if force {
		step = CloudStepRepair
	}
	out, err := update(ctx, c, k.ID, dest, step, func(q *kms.CloudPlacement) error {
		if imported != nil {
			q.Resource = imported.Resource
			q.Versions = slices.DeleteFunc(q.Versions, func(v kms.CloudVersion) bool { return v.KeyVersion == k.PrimaryVersion })
			q.Versions = append(q.Versions, kms.CloudVersion{KeyVersion: k.PrimaryVersion, ProviderVersion: imported.ProviderVersion})
		}
		q.State, q.Pending, q.LastSync = want, "", time.Now().UTC()
		q.LastError, q.LastErrorCode = "", ""
		return nil
	})
	if kms.CodeOf(err) == kms.CodeNotFound {
		return &CloudSyncOutcome{Destination: dest, Error: "removed from the destination meanwhile"}, nil
	}
	if err != nil {
		return nil, activityError(err)
	}
	v, _ := out.Primary()
	return &CloudSyncOutcome{Destination: dest, Resource: out.Resource, KeyVersion: v.KeyVersion, State: out.State}, nil
}

// cloudInStep reports whether a placement already holds what keyflow
// wants: some version there, the primary one, the state, and no step
// left unfinished (kms.CloudWorkLeft, which cloud status shows).
func cloudInStep(pl *kms.CloudPlacement, k *kms.Key) bool {
	_, ok := pl.Primary()
	return ok && len(kms.CloudWorkLeft(pl, k)) == 0
}

// restoreCloudCopy takes back a scheduled deletion in the provider, when
// its connector can (cloud.Restorer); otherwise the step is refused, and
// the placement shows why.
func restoreCloudCopy(ctx context.Context, conn cloud.Connector, pl *kms.CloudPlacement, ref cloud.KeyRef) error {
	r, ok := conn.(cloud.Restorer)
	if !ok {
		return &cloud.Error{Operation: "Restore", Code: "UnsupportedOperation", Err: fmt.Errorf("%w: this provider cannot take back a scheduled deletion; restore the key there by hand", cloud.ErrUnsupported)}
	}
	rp := cloud.RestoreParams{Key: ref}
	for _, v := range pl.Versions {
		rp.KeyVersions = append(rp.KeyVersions, v.KeyVersion)
	}
	if prim, ok := pl.Primary(); ok {
		rp.Primary = prim.ProviderVersion
	}
	return r.Restore(ctx, rp)
}

// deletionDays is the key's remaining deletion window in whole days (the
// provider clamps it to what it allows; AWS 7-30), 30 when it has none.
func deletionDays(k *kms.Key, now time.Time) int {
	if k.Lifecycle.DeletionDate.IsZero() {
		return 30
	}
	return max(int(k.Lifecycle.DeletionDate.Sub(now).Hours()/24+0.5), 1)
}

// CloudUndistribute schedules the key's deletion in one destination, with
// the provider's window, and forgets the placement.
func (a *Activities) CloudUndistribute(ctx context.Context, p CloudSyncParams) error {
	if len(p.Destinations) != 1 {
		return temporal.NewNonRetryableApplicationError("CloudUndistribute takes one destination", string(kms.CodeValidation), nil)
	}
	c := cloudCaller(p.Tenant, p.Principal, p.RequestID)
	dest := p.Destinations[0]
	pl, err := a.KMS.CloudPlacement(ctx, c, p.KeyID, dest)
	if kms.CodeOf(err) == kms.CodeNotFound {
		return nil // already gone
	}
	if err != nil {
		return activityError(err)
	}
	d, conn, err := a.connect(ctx, c, dest)
	if err != nil {
		return err
	}
	if _, err := a.KMS.ChangeCloudPlacement(ctx, c, p.KeyID, dest, "", func(q *kms.CloudPlacement) error {
		q.Pending = CloudStepUndistribute
		return nil
	}); err != nil {
		return activityError(err)
	}
	ref := cloud.KeyRef{KeyID: p.KeyID, Resource: pl.Resource, Versions: pl.ProviderVersions()}
	if err := a.cloudRun(ctx, c, d, p.KeyID, CloudStepUndistribute, func(ctx context.Context) error {
		return conn.ScheduleDeletion(ctx, cloud.DeletionParams{Key: ref, Days: 30})
	}); err != nil {
		return err
	}
	return activityError(a.KMS.RemoveCloudPlacement(ctx, c, p.KeyID, dest))
}

// CloudReconcileBatch compares up to p.BatchSize placements after p.After
// with their providers.
func (a *Activities) CloudReconcileBatch(ctx context.Context, p CloudReconcileParams) (*CloudReconcileResult, error) {
	c := cloudCaller(p.Tenant, p.Principal, p.RequestID)
	all, err := a.KMS.CloudPlacements(ctx, c, "")
	if err != nil {
		return nil, activityError(err)
	}
	cursor := func(pl *kms.CloudPlacement) string { return pl.KeyID + "/" + pl.Destination }
	slices.SortFunc(all, func(x, y *kms.CloudPlacement) int { return strings.Compare(cursor(x), cursor(y)) })
	start, _ := slices.BinarySearchFunc(all, p.After, func(pl *kms.CloudPlacement, after string) int {
		if cursor(pl) <= after {
			return -1
		}
		return 1
	})
	batch := all[start:min(start+p.BatchSize, len(all))]
	res := &CloudReconcileResult{}
	dests := map[string]*kms.CloudDestination{}
	conns := map[string]cloud.Connector{}
	for i, pl := range batch {
		activity.RecordHeartbeat(ctx, i)
		d, ok := dests[pl.Destination]
		if !ok {
			dd, conn, err := a.connect(ctx, c, pl.Destination)
			if err != nil {
				res.Errors++
				continue
			}
			d, dests[pl.Destination], conns[pl.Destination] = dd, dd, conn
		}
		drifts, repaired, err := a.reconcileOne(ctx, c, d, conns[pl.Destination], pl)
		res.Checked++
		res.Drifts += drifts
		res.Repaired += repaired
		if err != nil {
			res.Errors++
		}
	}
	if start+p.BatchSize < len(all) && len(batch) > 0 {
		res.Next = cursor(batch[len(batch)-1])
	}
	return res, nil
}

// reconcileOne compares one placement and, when the destination says so,
// repairs it. It returns the number of differing fields and of those
// repaired.
func (a *Activities) reconcileOne(ctx context.Context, c kms.Caller, d *kms.CloudDestination, conn cloud.Connector, pl *kms.CloudPlacement) (int, int, error) {
	if pl.Pending != "" && pl.LastErrorCode == "" {
		return 0, 0, nil // a step is on its way; it converges by itself
	}
	k, err := a.KMS.GetKey(ctx, c, pl.KeyID)
	if err != nil {
		return 0, 0, err
	}
	var desc *cloud.Description
	ref := cloud.KeyRef{KeyID: pl.KeyID, Resource: pl.Resource, Versions: pl.ProviderVersions()}
	if err := a.cloudRun(ctx, c, d, pl.KeyID, "reconcile", func(ctx context.Context) error {
		var err error
		desc, err = conn.Describe(ctx, ref)
		return err
	}); err != nil {
		return 0, 0, err
	}
	type diff struct{ field, keyflow, provider string }
	var diffs []diff
	want := kms.WantedCloudState(k)
	if got := desc.State; got != want && !(want == kms.PlacementPendingDeletion && got == cloud.StateMissing) {
		diffs = append(diffs, diff{"state", want, got})
	}
	if prim, ok := pl.Primary(); ok && want != kms.PlacementPendingDeletion {
		if desc.Primary != prim.ProviderVersion {
			diffs = append(diffs, diff{"primary", prim.ProviderVersion, desc.Primary})
		}
		if prim.KeyVersion != k.PrimaryVersion {
			diffs = append(diffs, diff{"version", fmt.Sprint(k.PrimaryVersion), fmt.Sprint(prim.KeyVersion)})
		}
	}
	repair := d.Drift == kms.DriftRepair && len(diffs) > 0
	if repair {
		if _, err := a.cloudSync(ctx, CloudSyncParams{Tenant: c.Tenant, KeyID: pl.KeyID, Principal: c.Principal, RequestID: c.RequestID, Destinations: []string{d.Name}, Step: CloudStepRepair}, true); err != nil {
			repair = false
		}
	}
	repaired := 0
	if repair {
		repaired = len(diffs)
	}
	for _, df := range diffs {
		if err := a.KMS.RecordCloudDrift(ctx, c, kms.CloudDrift{KeyID: pl.KeyID, Destination: d.Name, Field: df.field, Keyflow: df.keyflow, Provider: df.provider, Repaired: repair}); err != nil {
			return len(diffs), repaired, err
		}
	}
	return len(diffs), repaired, nil
}

// CloudSyncWorkflowID is the workflow ID of a key's sync to its
// destinations: one at a time per key, so a rotation's propagation and a
// disable's cannot interleave.
func CloudSyncWorkflowID(tenant, keyID string) string { return "cloud-sync/" + tenant + "/" + keyID }

// CloudReconcileScheduleID is the ID of a tenant's reconcile schedule.
func CloudReconcileScheduleID(tenant string) string { return "cloud-reconcile/" + tenant }

// StartCloudSync starts CloudSyncWorkflow for a key (or queues one more
// round in the one already running) and returns its workflow ID.
func (c *Client) StartCloudSync(ctx context.Context, p CloudSyncParams) (string, error) {
	id := CloudSyncWorkflowID(p.Tenant, p.KeyID)
	if _, err := startCloudSync(ctx, c.Temporal, p); err != nil {
		return id, err
	}
	return id, nil
}

// startCloudSync starts the key's CloudSyncWorkflow with p, or, when one
// runs, asks it for one more round with p (signal-with-start), so the
// running sync picks up the newer state. The run it returns is the one
// that takes the round (its Get follows ContinueAsNew).
func startCloudSync(ctx context.Context, tc client.Client, p CloudSyncParams) (client.WorkflowRun, error) {
	run, err := tc.SignalWithStartWorkflow(ctx, CloudSyncWorkflowID(p.Tenant, p.KeyID), SignalCloudSync, p,
		client.StartWorkflowOptions{TaskQueue: TaskQueue}, CloudSyncWorkflow, p)
	if err != nil {
		return nil, fmt.Errorf("failed to start the cloud sync: %w", err)
	}
	return run, nil
}

// ScheduleCloudReconcile makes the tenant's reconcile run every period
// (a Temporal Schedule, skipped while the previous run still runs); a
// zero period deletes it. A change behind keyflow's back is found within
// one period.
func (c *Client) ScheduleCloudReconcile(ctx context.Context, tenant string, period time.Duration) error {
	sc := c.Temporal.ScheduleClient()
	id := CloudReconcileScheduleID(tenant)
	if period <= 0 {
		if err := sc.GetHandle(ctx, id).Delete(ctx); err != nil && !isNotFound(err) {
			return fmt.Errorf("failed to delete the reconcile schedule: %w", err)
		}
		return nil
	}
	spec := client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: period}}}
	_, err := sc.Create(ctx, client.ScheduleOptions{
		ID: id, Spec: spec, Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_SKIP,
		Action: &client.ScheduleWorkflowAction{
			ID: "cloud-reconcile-run/" + tenant, Workflow: CloudReconcileWorkflow, TaskQueue: TaskQueue,
			Args: []any{CloudReconcileParams{Tenant: tenant, Principal: SchedulerPrincipal, RequestID: id}},
		},
		Note: "keyflow cloud reconcile",
	})
	if err = updateSpecIfRunning(ctx, sc, id, spec, err); err != nil {
		return fmt.Errorf("failed to set the reconcile schedule: %w", err)
	}
	return nil
}
