package workflows

// Starting the cloud workflows for the NATS API (workers/rpc/cloud.go):
// `keyflow key distribute KEY --to NAME` starts CloudSyncWorkflow for one
// key and one destination, `key undistribute` one more round of it
// (Step "undistribute"), and `keyflow cloud status --probe` runs CloudProbeWorkflow, whose one
// activity asks the destination a cheap question (Describe of a key that
// does not exist) and records the call like every other provider call.
//
// A distribution is one more round of the key's one sync
// (CloudSyncWorkflowID, signal-with-start, as a rotation's propagation
// is): a rotation during a first distribution then waits for it, and the
// same version is never imported twice at once. With --wait the request
// waits, bounded, until the destination's placement holds keyflow's state
// (or the round fails), not for every other round of the key's sync.
// An undistribution is a round of the same sync: it waits for a
// rotation's propagation that runs, and a propagation asked for after it
// no longer finds the destination.

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

	"github.com/keyflow/keyflow/cloud"
	"github.com/keyflow/keyflow/kms"
)

// CloudProbeWait bounds how long ProbeCloud waits for one probe.
const CloudProbeWait = 8 * time.Second

// CloudWaitMax bounds how long a distribute or undistribute request waits
// for its workflow (and never past the request's own deadline).
const CloudWaitMax = 20 * time.Second

// CloudUndistributeWorkflowID was the workflow ID of a key's removal
// from one destination (CloudUndistributeWorkflow, before removals became
// rounds of the key's sync); kept to find runs started before.
func CloudUndistributeWorkflowID(tenant, keyID, dest string) string {
	return "cloud-undistribute/" + tenant + "/" + keyID + "/" + dest
}

// DistributeToCloud asks the key's sync (CloudSyncWorkflowID; started
// if none runs) for a round that distributes keyID to dest and, with
// wait, waits for that destination. done says the destination's placement
// holds keyflow's state, or that its round failed (err, as a keyflow
// error), within the wait.
func (c *Client) DistributeToCloud(ctx context.Context, caller kms.Caller, keyID, dest string, wait bool) (id string, done bool, err error) {
	return c.cloudRound(ctx, caller, keyID, dest, CloudStepDistribute, wait, func(pl *kms.CloudPlacement, k *kms.Key) bool { return pl != nil && cloudInStep(pl, k) })
}

// cloudRound asks the key's sync for a round of step for dest and, with
// wait, waits (bounded by cloudWaitContext) until reached says the
// destination's placement is where the round leaves it.
func (c *Client) cloudRound(ctx context.Context, caller kms.Caller, keyID, dest, step string, wait bool, reached func(*kms.CloudPlacement, *kms.Key) bool) (id string, done bool, err error) {
	p := CloudSyncParams{Tenant: caller.Tenant, KeyID: keyID, Principal: caller.Principal, RequestID: caller.RequestID,
		Destinations: []string{dest}, Step: step}
	id = CloudSyncWorkflowID(caller.Tenant, keyID)
	run, err := startCloudSync(ctx, c.Temporal, p)
	if err != nil || !wait {
		return id, false, err
	}
	wctx, cancel, ok := cloudWaitContext(ctx)
	if !ok {
		return id, false, nil
	}
	defer cancel()
	done, err = c.waitPlacement(wctx, caller, run, keyID, dest, reached)
	return id, done, err
}

// cloudPlacementWatcher is what waitPlacement reads (*kms.Service).
type cloudPlacementWatcher interface {
	GetKey(ctx context.Context, c kms.Caller, keyID string) (*kms.Key, error)
	CloudPlacement(ctx context.Context, c kms.Caller, keyID, dest string) (*kms.CloudPlacement, error)
}

// waitPlacement waits until ready says dest's placement of keyID (nil
// when there is none) is what the round was for (done), or the key's
// sync ends (its chain of runs, which has taken this round by then):
// then dest's outcome decides. It gives up, not done, when ctx ends.
// Without Clouds that can read placements, only the end of the sync
// counts.
func (c *Client) waitPlacement(ctx context.Context, caller kms.Caller, run client.WorkflowRun, keyID, dest string,
	ready func(pl *kms.CloudPlacement, k *kms.Key) bool) (bool, error) {
	type ended struct {
		res CloudSyncResult
		err error
	}
	end := make(chan ended, 1)
	go func() {
		var e ended
		e.err = run.Get(ctx, &e.res)
		end <- e
	}()
	watch, _ := c.Clouds.(cloudPlacementWatcher)
	inStep := func() bool {
		if watch == nil {
			return false
		}
		k, err := watch.GetKey(ctx, caller, keyID)
		if err != nil {
			return false
		}
		pl, err := watch.CloudPlacement(ctx, caller, keyID, dest)
		switch {
		case kms.CodeOf(err) == kms.CodeNotFound:
			return ready(nil, k)
		case err != nil:
			return false
		}
		return ready(pl, k)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case e := <-end:
			if inStep() {
				return true, nil
			}
			return syncEnded(ctx, e.res, e.err, dest)
		case <-tick.C:
			if inStep() {
				return true, nil
			}
		case <-ctx.Done():
			return false, nil
		}
	}
}

// syncEnded is a distribution's answer once the key's sync ended (err
// from its run, res its result) and dest's placement is not in step.
func syncEnded(ctx context.Context, res CloudSyncResult, err error, dest string) (bool, error) {
	var failed *temporal.WorkflowExecutionError
	var deadline *serviceerror.DeadlineExceeded
	switch {
	case err == nil:
	case !errors.As(err, &failed) && (ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &deadline)):
		return false, nil // it runs on
	default:
		return true, cloudDomainError(err)
	}
	for _, o := range res.Destinations {
		if o.Destination == dest && o.Error != "" {
			return true, outcomeError(o)
		}
	}
	return true, nil
}

// outcomeError is a failed destination's outcome as a keyflow error.
func outcomeError(o CloudSyncOutcome) error {
	code := kms.Code(o.ErrorType)
	switch o.ErrorType {
	case "", ErrTypeCloudUnavailable:
		code = kms.CodeCloudProvider
	}
	return &kms.Error{Code: code, Message: o.Error}
}

// cloudWaitContext bounds a request's wait for its workflow: CloudWaitMax,
// and never past the request's own deadline (less 2 s to answer). ok is
// false when no time is left.
func cloudWaitContext(ctx context.Context) (context.Context, context.CancelFunc, bool) {
	d := CloudWaitMax
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl)-2*time.Second)
	}
	if d <= 0 {
		return nil, nil, false
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	return wctx, cancel, true
}

// UndistributeFromCloud asks the key's sync (CloudSyncWorkflowID;
// started if none runs) for a round that removes keyID from dest, where
// the provider deletes it after its own window, and, with wait, waits
// for it. The round runs after the rounds already asked for (a rotation's
// propagation finishes first). done says the placement is gone, or that
// the round failed (err, as a keyflow error), within the wait.
func (c *Client) UndistributeFromCloud(ctx context.Context, caller kms.Caller, keyID, dest string, wait bool) (id string, done bool, err error) {
	return c.cloudRound(ctx, caller, keyID, dest, CloudStepUndistribute, wait, func(pl *kms.CloudPlacement, _ *kms.Key) bool { return pl == nil })
}

// cloudDomainError is DomainError, with a provider that did not answer
// as CloudProviderException.
func cloudDomainError(err error) error {
	var app *temporal.ApplicationError
	if errors.As(err, &app) && app.Type() == ErrTypeCloudUnavailable {
		return &kms.Error{Code: kms.CodeCloudProvider, Message: app.Message()}
	}
	return DomainError(err)
}

// CloudDistributable says whether the connectors take k's spec; the
// refusal is UnsupportedOperationException.
func (c *Client) CloudDistributable(k *kms.Key) error {
	_, err := cloudSpec(k)
	return DomainError(err)
}

// CloudProbeParams are the inputs of CloudProbeWorkflow.
type CloudProbeParams struct {
	Tenant      string
	Principal   string
	RequestID   string
	Destination string
}

// CloudProbeResult is how a destination answered a probe.
type CloudProbeResult struct {
	// ErrorCode is the provider's error code ("Unavailable" when it did
	// not answer); empty when it answered.
	ErrorCode     string
	Error         string
	LatencyMillis int64
}

// cloudProbeKey is the keyflow key ID a probe describes: no key has it,
// so the provider answers "not found", which is a success.
const cloudProbeKey = "keyflow-health-probe"

// CloudProbeWorkflow asks one destination one cheap question, once.
func CloudProbeWorkflow(ctx workflow.Context, p CloudProbeParams) (*CloudProbeResult, error) {
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 20 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
	})
	var a *Activities
	var r CloudProbeResult
	if err := workflow.ExecuteActivity(actx, a.CloudProbe, p).Get(ctx, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// CloudProbe describes a key that does not exist in the destination, and
// records the call (io.keyflow.cloud.call.v1, step "probe").
func (a *Activities) CloudProbe(ctx context.Context, p CloudProbeParams) (*CloudProbeResult, error) {
	c := cloudCaller(p.Tenant, p.Principal, p.RequestID)
	d, conn, err := a.connect(ctx, c, p.Destination)
	if err != nil {
		var app *temporal.ApplicationError
		if errors.As(err, &app) && app.Type() == string(kms.CodeValidation) {
			return &CloudProbeResult{ErrorCode: "InvalidSettings", Error: app.Message()}, nil
		}
		return nil, err
	}
	j := &cloud.Journal{}
	start := time.Now()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second) // a provider that hangs is unreachable
	defer cancel()
	_, err = conn.Describe(cloud.WithJournal(dctx, j), cloud.KeyRef{KeyID: cloudProbeKey})
	res := &CloudProbeResult{LatencyMillis: time.Since(start).Milliseconds()}
	for _, call := range j.Calls() {
		if rerr := a.KMS.RecordCloudCall(ctx, c, kms.CloudCallRecord{Destination: d.Name, Provider: d.Provider, Operation: call.Operation,
			RequestID: call.RequestID, Resource: call.Resource, ErrorCode: call.ErrorCode, Step: "probe"}); rerr != nil {
			return nil, activityError(rerr)
		}
	}
	if err != nil {
		res.ErrorCode, res.Error = cloud.CodeUnavailable, err.Error()
		if ce, ok := cloud.AsError(err); ok {
			res.ErrorCode = ce.Code
		}
	}
	return res, nil
}

// ProbeCloud runs CloudProbeWorkflow for dest (joining one already
// running) and returns the provider's error code and message, both empty
// when it answered.
func (c *Client) ProbeCloud(ctx context.Context, caller kms.Caller, dest string) (code, msg string, latency time.Duration, err error) {
	id := "cloud-probe/" + caller.Tenant + "/" + dest
	run, err := c.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: TaskQueue, WorkflowExecutionTimeout: time.Minute,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING}, CloudProbeWorkflow,
		CloudProbeParams{Tenant: caller.Tenant, Principal: caller.Principal, RequestID: caller.RequestID, Destination: dest})
	if err != nil {
		return "", "", 0, fmt.Errorf("failed to start the probe: %w", err)
	}
	// The probe's own activity gives up after 20 s; a worker that does
	// not pick it up must not hold the whole status request.
	wctx, cancel := context.WithTimeout(ctx, CloudProbeWait)
	defer cancel()
	var r CloudProbeResult
	if err := run.Get(wctx, &r); err != nil {
		return "", "", 0, DomainError(err)
	}
	return r.ErrorCode, r.Error, time.Duration(r.LatencyMillis) * time.Millisecond, nil
}
