package workflows

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/keyflow/keyflow/kms"
)

// RotateKeyParams start a rotation. No material: IDs and the requester only.
type RotateKeyParams struct {
	Tenant    string
	KeyID     string
	Principal string
	RequestID string
	// Rewrap asks for a rewrap of the registered data keys after the
	// rotation even if the key's policy does not (rotate_rewrap.go);
	// SkipRewrap suppresses it (remediation rewraps on its own).
	Rewrap     bool `json:",omitempty"`
	SkipRewrap bool `json:",omitempty"`
}

// RotateKeyResult reports the versions before and after, and the rewrap
// that followed, if any (RewrapProblem says why it did not finish).
type RotateKeyResult struct {
	KeyID           string
	PreviousVersion uint32
	NewVersion      uint32
	Rewrap          *RewrapResult `json:",omitempty"`
	RewrapProblem   string        `json:",omitempty"`
	// CloudSync is the workflow that takes the new version to the key's
	// cloud destinations (empty when it is in none); CloudProblem says
	// why it was not started.
	CloudSync    string `json:",omitempty"`
	CloudProblem string `json:",omitempty"`
}

// RotateKeyWorkflow creates the key's next version and makes it primary.
// Old versions keep decrypting. Each step is an idempotent activity, so the
// workflow can be retried or replayed after a crash at any point. After
// the switch, a key distributed to clouds has its cloud sync started
// (cloud_propagate.go), before any rewrap.
//
// The workflow records the rotation's own audit pair: rotation.started as
// its first step (so the record exists only once the start is durable),
// then exactly one outcome, key.rotated (SetPrimaryVersion) or
// rotation.failed. Both records have IDs derived from the run, so a retried
// activity is deduplicated by the stream (docs/lifecycle.md, "Rotation
// after a crash").
func RotateKeyWorkflow(ctx workflow.Context, p RotateKeyParams) (*RotateKeyResult, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		// Each step is a KV update and an HSM call (milliseconds); a
		// step lost with a crashed worker is retried after this.
		StartToCloseTimeout: 10 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    200 * time.Millisecond,
			BackoffCoefficient: 2,
			MaximumInterval:    10 * time.Second,
			MaximumAttempts:    20,
		},
	})
	var a *Activities
	audited := workflow.GetVersion(ctx, rotationAuditChange, workflow.DefaultVersion, 1) != workflow.DefaultVersion
	step := KeyStep{Tenant: p.Tenant, KeyID: p.KeyID, Principal: p.Principal, RequestID: p.RequestID}
	if audited {
		if err := workflow.ExecuteActivity(ctx, a.RecordRotationStarted, step).Get(ctx, nil); err != nil {
			return nil, err // no started record: nothing to answer for
		}
	}
	res, primary, err := rotateSteps(ctx, p, step)
	if err != nil && audited && !primary {
		// The outcome is recorded even if the workflow was cancelled.
		dctx, _ := workflow.NewDisconnectedContext(ctx)
		code, msg := failureCode(err)
		if ferr := workflow.ExecuteActivity(dctx, a.RecordRotationFailed, RotationFailedStep{KeyStep: step, Code: code, Message: msg}).Get(dctx, nil); ferr != nil {
			workflow.GetLogger(ctx).Error("rotation outcome not recorded", "key", p.KeyID, "err", ferr)
		}
	}
	return res, err
}

// rotationAuditChange guards the workflow's own started and failed records
// (histories recorded before it have neither).
const rotationAuditChange = "rotation-audit"

// rotateSteps runs the rotation proper. primary reports whether the new
// version became primary: from then on the rotation has happened (its
// outcome, key.rotated, is recorded) whatever follows.
func rotateSteps(ctx workflow.Context, p RotateKeyParams, step KeyStep) (_ *RotateKeyResult, primary bool, _ error) {
	var a *Activities
	var next uint32
	if err := workflow.ExecuteActivity(ctx, a.NextVersion, step).Get(ctx, &next); err != nil {
		return nil, false, err
	}
	step.Version = next
	if err := workflow.ExecuteActivity(ctx, a.CreateVersion, step).Get(ctx, nil); err != nil {
		return nil, false, err
	}
	plan, laggards, err := waitForReplicas(ctx, step) // multi-region keys only (replication.go)
	if err != nil {
		return nil, false, err
	}
	var prev uint32
	if err := workflow.ExecuteActivity(ctx, a.SetPrimaryVersion, step).Get(ctx, &prev); err != nil {
		return nil, false, err
	}
	if err := afterReplicaSwitch(ctx, step, plan, laggards); err != nil {
		return nil, true, err
	}
	res := &RotateKeyResult{KeyID: p.KeyID, PreviousVersion: prev, NewVersion: next}
	propagateRotation(ctx, p, res) // distributed keys (cloud_propagate.go)
	if err := rewrapAfterRotation(ctx, p, res); err != nil {
		return nil, true, err
	}
	return res, true, nil
}

// failureCode is the stable code and public message of a step's failure.
func failureCode(err error) (string, string) {
	var app *temporal.ApplicationError
	if errors.As(err, &app) && app.Type() != "" {
		return app.Type(), app.Message()
	}
	return string(kms.CodeInternal), "the rotation workflow failed"
}

// RotationFailedStep is the input of RecordRotationFailed.
type RotationFailedStep struct {
	KeyStep
	Code    string
	Message string
}

// rotationCaller is the caller of the rotation's own records: their IDs
// name this run and the record, never the attempt.
func rotationCaller(ctx context.Context, s KeyStep, record string) kms.Caller {
	info := activity.GetInfo(ctx)
	return kms.Caller{
		Tenant: s.Tenant, Principal: s.Principal, RequestID: s.RequestID,
		IdempotencyKey: "rotation/" + info.WorkflowExecution.ID + "/" + info.WorkflowExecution.RunID + "/" + record,
	}
}

// RecordRotationStarted records rotation.started for this run.
func (a *Activities) RecordRotationStarted(ctx context.Context, s KeyStep) error {
	return activityError(a.KMS.RecordRotationStarted(ctx, rotationCaller(ctx, s, "started"), s.KeyID))
}

// RecordRotationFailed records this run's failure outcome.
func (a *Activities) RecordRotationFailed(ctx context.Context, s RotationFailedStep) error {
	return activityError(a.KMS.RecordRotationFailed(ctx, rotationCaller(ctx, s.KeyStep, "outcome"), s.KeyID, &kms.Error{Code: kms.Code(s.Code), Message: s.Message}))
}

// NextVersion returns the number the new version will have.
func (a *Activities) NextVersion(ctx context.Context, s KeyStep) (uint32, error) {
	n, err := a.KMS.NextVersion(ctx, caller(ctx, s), s.KeyID)
	return n, activityError(err)
}

// CreateVersion creates version s.Version (a no-op if it exists).
func (a *Activities) CreateVersion(ctx context.Context, s KeyStep) error {
	_, err := a.KMS.CreateVersion(ctx, caller(ctx, s), kms.CreateVersionParams{KeyID: s.KeyID, Version: s.Version})
	return activityError(err)
}

// SetPrimaryVersion makes s.Version primary and returns the previous one.
func (a *Activities) SetPrimaryVersion(ctx context.Context, s KeyStep) (uint32, error) {
	res, err := a.KMS.SetPrimaryVersion(ctx, caller(ctx, s), kms.SetPrimaryParams{KeyID: s.KeyID, Version: s.Version})
	if err != nil {
		return 0, activityError(err)
	}
	return res.PreviousPrimary, nil
}

// RotateKeyWorkflowID is one rotation per key at a time: a second request
// while one runs is refused with the running one's ID (RotateKey).
func RotateKeyWorkflowID(tenant, keyID string) string { return "rotate/" + tenant + "/" + keyID }

// ErrRotationNotStarted marks a RotateKey error that started nothing (a
// rotation of the key is running, or Temporal refused the start): the
// caller records the refusal. Any other error comes from a workflow that
// ran and recorded its own outcome.
var ErrRotationNotStarted = errors.New("the rotation was not started")

// ErrStillRunning is RotateKey's answer when the workflow outlives the
// wait: it goes on (and records its own outcome); the ID names it.
var ErrStillRunning = errors.New("the rotation is still running")

// DefaultRotateWait is how long RotateKey waits for the workflow when the
// Client sets no RotateWait: well inside the request timeouts of the rpc
// layer (30 s) and the client (30 s by default).
const DefaultRotateWait = 20 * time.Second

// RotateKey starts a rotation and waits for it, up to the Client's
// RotateWait (or ctx's deadline, if sooner). A workflow that outlives the
// wait is reported with ErrStillRunning and its ID, never as a failure.
func (c *Client) RotateKey(ctx context.Context, p RotateKeyParams) (*RotateKeyResult, string, error) {
	id := RotateKeyWorkflowID(p.Tenant, p.KeyID)
	run, err := c.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:        id,
		TaskQueue: TaskQueue,
		// No execution timeout: the workflow's steps are bounded by
		// their retry policy, and the workflow must live to record its
		// outcome (a timed-out run would record none).
		// Not a silent join: the caller learns that its request did not
		// start anything, and which workflow to watch instead.
		WorkflowExecutionErrorWhenAlreadyStarted: true,
	}, RotateKeyWorkflow, p)
	var running *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &running) {
		return nil, id, fmt.Errorf("%w: %w", ErrRotationNotStarted, &kms.Error{Code: kms.CodeConflict, Message: "a rotation of key " + p.KeyID + " is already running: " + id + "; this request started nothing"})
	}
	if err != nil {
		return nil, id, fmt.Errorf("%w: failed to start rotation: %w", ErrRotationNotStarted, err)
	}
	wait := c.RotateWait
	if wait <= 0 {
		wait = DefaultRotateWait
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var res RotateKeyResult
	if err := run.Get(wctx, &res); err != nil {
		// A workflow that ended badly is a WorkflowExecutionError; a
		// deadline (ours, or gRPC's, which can answer a moment before
		// wctx reports it) means it runs on.
		var failed *temporal.WorkflowExecutionError
		var deadline *serviceerror.DeadlineExceeded
		if !errors.As(err, &failed) && (wctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &deadline)) {
			return nil, id, fmt.Errorf("%w: %s", ErrStillRunning, id)
		}
		return nil, id, DomainError(err)
	}
	return &res, id, nil
}
