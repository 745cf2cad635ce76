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

	"github.com/keyflow/keyflow/kms"
)

// The key lifecycle's durable timers and processes (docs/lifecycle.md):
//
//	ActivationWorkflow    activate/<tenant>/<key>      T4 at the activation date
//	CryptoperiodWorkflow  cryptoperiod/<tenant>/<key>  T8 for each version at the end of its originator-usage period
//	DeletionWorkflow      deletion/<tenant>/<key>      the waiting period, then destruction (deletion.go)
//	RemediationWorkflow   remediate/<tenant>/<key>/vN  compromise remediation (remediation.go)
//	rotation schedule     rotation/<tenant>/<key>      a Temporal Schedule that runs RotateKeyWorkflow (schedule.go)
//
// Every one of them is keyed by the key, so starting one twice is harmless.

// Signals.
const (
	// SignalCheck wakes a CryptoperiodWorkflow to look at the key again
	// (a new version was created).
	SignalCheck = "check"
	// SignalCancel ends a DeletionWorkflow's waiting period without
	// destroying anything.
	SignalCancel = "cancel"
)

// SchedulerPrincipal is the principal of lifecycle steps that no person
// requested (timers, schedules).
const SchedulerPrincipal = "keyflow-lifecycle"

func registerLifecycle(r interface{ RegisterWorkflow(any) }) {
	r.RegisterWorkflow(ActivationWorkflow)
	r.RegisterWorkflow(CryptoperiodWorkflow)
	r.RegisterWorkflow(DeletionWorkflow)
	r.RegisterWorkflow(RemediationWorkflow)
	r.RegisterWorkflow(FleetRotateWorkflow)
	// Remediation runs RewrapWorkflow (rewrap.go) as a child; Register
	// registers it.
}

// lifecycleOptions are the activity options of the lifecycle workflows:
// the same bounded retries as rotation.
func lifecycleOptions(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    200 * time.Millisecond,
			BackoffCoefficient: 2,
			MaximumInterval:    10 * time.Second,
			MaximumAttempts:    20,
		},
	})
}

// ActivationParams start an activation timer.
type ActivationParams struct {
	Tenant         string
	KeyID          string
	ActivationDate time.Time
}

// ActivationWorkflow waits for a PRE_ACTIVE key's activation date and
// activates it (T4). If the key left PRE_ACTIVE meanwhile (activated by
// hand, compromised, destroyed), it does nothing and returns false.
func ActivationWorkflow(ctx workflow.Context, p ActivationParams) (bool, error) {
	if d := p.ActivationDate.Sub(workflow.Now(ctx)); d > 0 {
		if err := workflow.Sleep(ctx, d); err != nil {
			return false, err
		}
	}
	var a *Activities
	var activated bool
	err := workflow.ExecuteActivity(lifecycleOptions(ctx), a.Activate, KeyStep{Tenant: p.Tenant, KeyID: p.KeyID, Principal: SchedulerPrincipal}).Get(ctx, &activated)
	return activated, err
}

// CryptoperiodParams start (or continue) a key's cryptoperiod timer.
type CryptoperiodParams struct {
	Tenant string
	KeyID  string
}

// cryptoperiodIdle is how long the timer sleeps when no version has a
// deadline, before it looks again (a signal wakes it sooner).
const cryptoperiodIdle = 30 * 24 * time.Hour

// CryptoperiodWorkflow deactivates each version of a key when its
// originator-usage period ends (T8), sleeping until the next deadline. It
// ends when the key is destroyed, and continues as new every 100 rounds to
// keep its history short. Operations refuse a version past its deadline
// even before this timer fires; the timer makes the state change durable
// and audited.
func CryptoperiodWorkflow(ctx workflow.Context, p CryptoperiodParams) error {
	var a *Activities
	check := workflow.GetSignalChannel(ctx, SignalCheck)
	for range 100 {
		var chk kms.CryptoperiodCheck
		if err := workflow.ExecuteActivity(lifecycleOptions(ctx), a.DeactivateExpired, KeyStep{Tenant: p.Tenant, KeyID: p.KeyID, Principal: SchedulerPrincipal}).Get(ctx, &chk); err != nil {
			var app *temporal.ApplicationError
			if errors.As(err, &app) && app.Type() == string(kms.CodeNotFound) {
				return nil
			}
			return err
		}
		if chk.Final {
			return nil
		}
		wait := cryptoperiodIdle
		if !chk.Next.IsZero() {
			wait = max(chk.Next.Sub(workflow.Now(ctx)), time.Second)
		}
		tctx, cancel := workflow.WithCancel(ctx)
		sel := workflow.NewSelector(ctx)
		sel.AddFuture(workflow.NewTimer(tctx, wait), func(workflow.Future) {})
		sel.AddReceive(check, func(c workflow.ReceiveChannel, _ bool) { c.Receive(ctx, nil) })
		sel.Select(ctx)
		cancel()
	}
	// Drain signals into the next run's first check.
	for check.ReceiveAsync(nil) {
	}
	return workflow.NewContinueAsNewError(ctx, CryptoperiodWorkflow, p)
}

// Activate activates a PRE_ACTIVE key (T4); false if it is no longer
// PRE_ACTIVE.
func (a *Activities) Activate(ctx context.Context, s KeyStep) (bool, error) {
	c := caller(ctx, s)
	k, err := a.KMS.GetKey(ctx, c, s.KeyID)
	if err != nil {
		return false, activityError(err)
	}
	if k.State != kms.StatePreActive {
		return false, nil
	}
	res, err := a.KMS.SetState(ctx, c, kms.SetStateParams{KeyRef: s.KeyID, To: kms.StateActive, Reason: "activation date reached"})
	if err != nil {
		return false, activityError(err)
	}
	return res.Key.State == kms.StateActive, nil
}

// DeactivateExpired deactivates the versions past their cryptoperiod.
func (a *Activities) DeactivateExpired(ctx context.Context, s KeyStep) (*kms.CryptoperiodCheck, error) {
	chk, err := a.KMS.DeactivateExpiredVersions(ctx, caller(ctx, s), s.KeyID)
	return chk, activityError(err)
}

// Workflow IDs, one per key (and version, for remediation).
func ActivationWorkflowID(tenant, keyID string) string { return "activate/" + tenant + "/" + keyID }
func CryptoperiodWorkflowID(tenant, keyID string) string {
	return "cryptoperiod/" + tenant + "/" + keyID
}
func DeletionWorkflowID(tenant, keyID string) string { return "deletion/" + tenant + "/" + keyID }
func RemediationWorkflowID(tenant, keyID string, version uint32) string {
	return fmt.Sprintf("remediate/%s/%s/v%d", tenant, keyID, version)
}

// KeyChanged brings a key's timers and schedule in line with its
// metadata: the activation timer of a PRE_ACTIVE key, the cryptoperiod
// timer, the rotation schedule, and the sync of the clouds it is
// distributed to. The transport calls it after creating
// a key, rotating it or changing its policy; every step is idempotent.
func (c *Client) KeyChanged(ctx context.Context, kc kms.Caller, k *kms.Key) error {
	if err := c.syncReplicas(ctx, k); err != nil { // multi-region keys (replication.go)
		return err
	}
	if k.State == kms.StateDestroyed || k.State == kms.StateDestroyedCompromised {
		if err := c.SetRotationSchedule(ctx, k.Tenant, k.ID, 0); err != nil {
			return err
		}
		return c.syncClouds(ctx, kc, k, CloudStepScheduleDeletion)
	}
	if k.State == kms.StatePreActive && !k.Lifecycle.ActivationDate.IsZero() {
		_, err := c.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
			ID: ActivationWorkflowID(k.Tenant, k.ID), TaskQueue: TaskQueue,
			WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		}, ActivationWorkflow, ActivationParams{Tenant: k.Tenant, KeyID: k.ID, ActivationDate: k.Lifecycle.ActivationDate})
		if err != nil {
			return fmt.Errorf("failed to start the activation timer: %w", err)
		}
	}
	_, err := c.Temporal.SignalWithStartWorkflow(ctx, CryptoperiodWorkflowID(k.Tenant, k.ID), SignalCheck, nil, client.StartWorkflowOptions{
		TaskQueue: TaskQueue,
	}, CryptoperiodWorkflow, CryptoperiodParams{Tenant: k.Tenant, KeyID: k.ID})
	if err != nil {
		return fmt.Errorf("failed to start the cryptoperiod timer: %w", err)
	}
	if err := c.SetRotationSchedule(ctx, k.Tenant, k.ID, k.Lifecycle.RotationPeriod); err != nil {
		return err
	}
	return c.syncClouds(ctx, kc, k, CloudStepSync) // distributed keys (cloud_propagate.go)
}

// isNotFound reports a Temporal "no such workflow or schedule".
func isNotFound(err error) bool {
	var nf *serviceerror.NotFound
	return errors.As(err, &nf)
}
