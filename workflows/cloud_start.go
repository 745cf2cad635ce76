package workflows

// Starting the cloud workflows for the NATS API (workers/rpc/cloud.go):
// `keyflow key distribute KEY --to NAME` starts CloudSyncWorkflow for one
// key and one destination, `key undistribute` CloudUndistributeWorkflow,
// and `keyflow cloud status --probe` runs CloudProbeWorkflow, whose one
// activity asks the destination a cheap question (Describe of a key that
// does not exist) and records the call like every other provider call.
//
// Each start names its own workflow ID per key and destination, so that a
// distribution to one destination never joins a sync to another; a second
// request for the same pair while one runs joins it.

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

// CloudDistributeWorkflowID is the workflow ID of a key's distribution
// to one destination; CloudUndistributeWorkflowID of its removal.
func CloudDistributeWorkflowID(tenant, keyID, dest string) string {
	return "cloud-distribute/" + tenant + "/" + keyID + "/" + dest
}

// CloudUndistributeWorkflowID is the workflow ID of a key's removal from
// one destination.
func CloudUndistributeWorkflowID(tenant, keyID, dest string) string {
	return "cloud-undistribute/" + tenant + "/" + keyID + "/" + dest
}

// DistributeToCloud starts (or joins) the distribution of keyID to dest
// and, with wait, waits for it. done says the workflow finished within the
// wait; err is its failure as a keyflow error.
func (c *Client) DistributeToCloud(ctx context.Context, caller kms.Caller, keyID, dest string, wait bool) (id string, done bool, err error) {
	p := CloudSyncParams{Tenant: caller.Tenant, KeyID: keyID, Principal: caller.Principal, RequestID: caller.RequestID,
		Destinations: []string{dest}, Step: CloudStepDistribute}
	return c.startCloud(ctx, CloudDistributeWorkflowID(caller.Tenant, keyID, dest), CloudSyncWorkflow, p, wait)
}

// UndistributeFromCloud starts (or joins) the removal of keyID from dest,
// where the provider deletes it after its own window.
func (c *Client) UndistributeFromCloud(ctx context.Context, caller kms.Caller, keyID, dest string, wait bool) (id string, done bool, err error) {
	p := CloudSyncParams{Tenant: caller.Tenant, KeyID: keyID, Principal: caller.Principal, RequestID: caller.RequestID,
		Destinations: []string{dest}, Step: CloudStepUndistribute}
	return c.startCloud(ctx, CloudUndistributeWorkflowID(caller.Tenant, keyID, dest), CloudUndistributeWorkflow, p, wait)
}

func (c *Client) startCloud(ctx context.Context, id string, wf any, p CloudSyncParams, wait bool) (string, bool, error) {
	run, err := c.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: TaskQueue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING}, wf, p)
	if err != nil {
		return id, false, fmt.Errorf("failed to start %s: %w", id, err)
	}
	if !wait {
		return id, false, nil
	}
	d := CloudWaitMax
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl)-2*time.Second)
	}
	if d <= 0 {
		return id, false, nil
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	err = run.Get(wctx, nil)
	var failed *temporal.WorkflowExecutionError
	var deadline *serviceerror.DeadlineExceeded
	switch {
	case err == nil:
		return id, true, nil
	case !errors.As(err, &failed) && (wctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &deadline)):
		return id, false, nil // it runs on
	}
	return id, true, cloudDomainError(err)
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
