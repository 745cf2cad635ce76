package workflows

// Multi-region keys (kms/replica.go, docs/multi-region.md): the primary
// region keeps its replicas in step with one workflow per key and replica
// region, ReplicaSyncWorkflow, and the rotation workflow waits for them
// before the new version becomes primary.
//
// ReplicaSyncWorkflow sends, one activity at a time, the replica's next
// missing version (so versions arrive in order), then the key's metadata
// (state, primary version, replica list, primary region, a scheduled
// deletion of the replica). Every step is idempotent on both sides, and
// its activity retries without end while the link is down: a partition
// only delays it, and the versions made during it arrive in order once
// the link is back, each recorded once in both regions. Anything that
// changes a multi-region key signals (or starts) the workflow, which ends
// when the replica has everything and no signal is pending.
//
// The link is an interface here (ReplicaLink); package region implements
// it over NATS, so this package stays free of NATS.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/keyflow/keyflow/kms"
)

// ReplicaLink reaches the other regions' replication responders.
type ReplicaLink interface {
	ImportParameters(ctx context.Context, region, tenant, keyID string) (publicKey, token []byte, err error)
	ApplyVersion(ctx context.Context, region string, k *kms.Key, version uint32, wrapped, token []byte) (bool, error)
	ApplyMetadata(ctx context.Context, region string, k *kms.Key) (bool, error)
	// ReplicaDestroyed tells a key's primary region that this region, a
	// replica, destroyed its material (replica_deletion.go).
	ReplicaDestroyed(ctx context.Context, primaryRegion, tenant, keyID string) (bool, error)
}

// RegionRefusal is the optional ability of a ReplicaLink error to say
// that the other region refused (with a stable code) rather than was out
// of reach. Refusals that a retry cannot fix stop the sync.
type RegionRefusal interface{ RefusalCode() kms.Code }

// Replication defaults.
const (
	// DefaultReplicaSwitchTimeout bounds how long a rotation of a
	// multi-region key waits for its replicas before it switches anyway.
	DefaultReplicaSwitchTimeout = 5 * time.Minute
	// DefaultReplicaRetryMax is the longest pause between two attempts
	// to reach a region that is cut off.
	DefaultReplicaRetryMax = 10 * time.Second
	// ReplicaSyncSignal asks a running ReplicaSyncWorkflow to look again.
	ReplicaSyncSignal = "replica-sync"
)

// ReplicaSyncParams name one replica of one key. No material.
type ReplicaSyncParams struct {
	Tenant string
	KeyID  string
	Region string
	// RetryMax is the longest pause between attempts (0: the default).
	RetryMax time.Duration `json:",omitempty"`
}

// ReplicaSyncWorkflowID is one sync per key and replica region.
func ReplicaSyncWorkflowID(tenant, keyID, region string) string {
	return "replica-sync/" + tenant + "/" + keyID + "/" + region
}

// ReplicaStepResult is what one sync step did.
type ReplicaStepResult struct {
	// SentVersion is the version sent (0: none).
	SentVersion uint32
	// More is true while the replica still lacks something.
	More bool
}

// replicaWakeChange guards the sync's own retry loop (histories recorded
// before it retried inside the activity, deaf to signals meanwhile).
const replicaWakeChange = "replica-sync-wake"

// ReplicaSyncWorkflow brings one replica up to date (see the notes above).
//
// A step that fails while the link is down is retried by the workflow
// itself, pausing 100 ms, doubling up to RetryMax, and any signal ends the
// pause at once and starts the pauses over: a key's change, or the
// replica region announcing itself when the link comes back
// (Client.WakeReplicaSyncs).
func ReplicaSyncWorkflow(ctx workflow.Context, p ReplicaSyncParams) error {
	wake := workflow.GetVersion(ctx, replicaWakeChange, workflow.DefaultVersion, 1) != workflow.DefaultVersion
	retryMax := p.RetryMax
	if retryMax <= 0 {
		retryMax = DefaultReplicaRetryMax
	}
	if wake {
		ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			StartToCloseTimeout: 30 * time.Second,
			RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
		})
	} else {
		ctx = linkOptions(ctx, p.RetryMax)
	}
	var a *Activities
	sig := workflow.GetSignalChannel(ctx, ReplicaSyncSignal)
	pause := replicaRetryFirst
	for range 500 {
		var res ReplicaStepResult
		if err := workflow.ExecuteActivity(ctx, a.SyncReplicaStep, p).Get(ctx, &res); err != nil {
			if !wake || !retryable(err) {
				return err
			}
			if waitOrWake(ctx, sig, pause) {
				pause = replicaRetryFirst
			} else {
				pause = min(pause*2, retryMax)
			}
			continue
		}
		pause = replicaRetryFirst
		if res.More {
			continue
		}
		pending := false
		for sig.ReceiveAsync(nil) {
			pending = true
		}
		if !pending {
			return nil
		}
	}
	return workflow.NewContinueAsNewError(ctx, ReplicaSyncWorkflow, p)
}

// replicaRetryFirst is the sync's first pause after a failed step.
const replicaRetryFirst = 100 * time.Millisecond

// waitOrWake pauses for d or until a signal comes, which it takes; it
// reports whether a signal ended the pause.
func waitOrWake(ctx workflow.Context, sig workflow.ReceiveChannel, d time.Duration) bool {
	tctx, cancel := workflow.WithCancel(ctx)
	defer cancel()
	woken := false
	s := workflow.NewSelector(ctx)
	s.AddFuture(workflow.NewTimer(tctx, d), func(workflow.Future) {})
	s.AddReceive(sig, func(c workflow.ReceiveChannel, _ bool) {
		c.Receive(ctx, nil)
		woken = true
	})
	s.Select(ctx)
	return woken
}

// retryable reports whether a failed step may be tried again: not when
// the activity said a retry cannot help, nor when the workflow is
// being cancelled.
func retryable(err error) bool {
	var ae *temporal.ApplicationError
	if errors.As(err, &ae) && ae.NonRetryable() {
		return false
	}
	var ce *temporal.CanceledError
	return !errors.As(err, &ce)
}

// linkOptions are the options of an activity that crosses the region
// link: it retries without end (a cut link is normal, and the step
// waits), pausing at most retryMax (0: DefaultReplicaRetryMax).
func linkOptions(ctx workflow.Context, retryMax time.Duration) workflow.Context {
	if retryMax <= 0 {
		retryMax = DefaultReplicaRetryMax
	}
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    100 * time.Millisecond,
			BackoffCoefficient: 2,
			MaximumInterval:    retryMax,
		},
	})
}

// SyncReplicaStep does one step of ReplicaSyncWorkflow: the replica's next
// missing version, or else the key's metadata.
func (a *Activities) SyncReplicaStep(ctx context.Context, p ReplicaSyncParams) (*ReplicaStepResult, error) {
	if a.Replicas == nil {
		return nil, temporal.NewNonRetryableApplicationError("this worker has no region link", string(kms.CodeUnsupportedOperation), nil)
	}
	c := kms.Caller{Tenant: p.Tenant, Principal: "keyflow-replication"}
	k, err := a.KMS.GetKey(ctx, c, p.KeyID)
	if err != nil {
		return nil, activityError(err)
	}
	if !k.MultiRegion {
		return &ReplicaStepResult{}, nil
	}
	if k.PrimaryRegion != a.KMS.Region() {
		// No longer the primary here: tell the new primary once (the
		// hand-over of update-primary-region); it refuses a repeat,
		// which is fine.
		if k.PrimaryRegion == p.Region {
			if _, err := a.Replicas.ApplyMetadata(ctx, p.Region, k); err != nil && !refused(err, kms.CodeInvalidState) {
				return nil, linkError(err)
			}
		}
		return &ReplicaStepResult{}, nil
	}
	r, ok := k.ReplicaIn(p.Region)
	if !ok || r.State == kms.ReplicaDestroyed {
		return &ReplicaStepResult{}, nil
	}
	if r.LastSyncedVersion < k.NewestVersion() {
		v := r.LastSyncedVersion + 1
		if _, ok := k.Version(v); !ok {
			return nil, temporal.NewNonRetryableApplicationError(fmt.Sprintf("key %s has no version %d to replicate", k.ID, v), string(kms.CodeInternal), nil)
		}
		pub, tok, err := a.Replicas.ImportParameters(ctx, p.Region, p.Tenant, p.KeyID)
		if err != nil {
			return nil, linkError(err)
		}
		rv, err := a.KMS.ExportReplicaVersion(ctx, c, kms.ExportReplicaParams{KeyID: k.ID, Region: p.Region, Version: v, PublicKey: pub})
		if err != nil {
			return nil, activityError(err)
		}
		if _, err := a.Replicas.ApplyVersion(ctx, p.Region, k, v, rv.Wrapped, tok); err != nil {
			return nil, linkError(err)
		}
		mc := c
		mc.IdempotencyKey = fmt.Sprintf("replica-synced/%s/%s/%s/v%d", p.Tenant, p.KeyID, p.Region, v)
		if _, err := a.KMS.MarkReplicaSynced(ctx, mc, kms.MarkReplicaParams{KeyID: k.ID, Region: p.Region, Version: v}); err != nil {
			return nil, activityError(err)
		}
		return &ReplicaStepResult{SentVersion: v, More: true}, nil
	}
	if _, err := a.Replicas.ApplyMetadata(ctx, p.Region, k); err != nil {
		return nil, linkError(err)
	}
	return &ReplicaStepResult{}, nil
}

// refused reports whether err is the other region's refusal with code.
func refused(err error, code kms.Code) bool {
	var r RegionRefusal
	return errors.As(err, &r) && r.RefusalCode() == code
}

// linkError keeps a link failure retryable (the region may be cut off)
// and stops on a refusal a retry cannot fix.
func linkError(err error) error {
	var r RegionRefusal
	if errors.As(err, &r) {
		switch r.RefusalCode() {
		case kms.CodeValidation, kms.CodeUnsupportedOperation:
			return temporal.NewNonRetryableApplicationError(err.Error(), string(r.RefusalCode()), nil)
		}
		return temporal.NewApplicationError(err.Error(), string(r.RefusalCode()))
	}
	return temporal.NewApplicationError(err.Error(), "RegionUnreachable")
}

// KickReplicaSync signals (or starts) the sync of every replica of a key.
func (a *Activities) KickReplicaSync(ctx context.Context, s KeyStep) error {
	k, err := a.KMS.GetKey(ctx, kms.Caller{Tenant: s.Tenant, Principal: "keyflow-replication"}, s.KeyID)
	if err != nil {
		return activityError(err)
	}
	for _, r := range k.Replicas {
		if err := StartReplicaSync(ctx, a.Temporal, ReplicaSyncParams{Tenant: s.Tenant, KeyID: s.KeyID, Region: r.Region, RetryMax: a.ReplicaRetryMax}); err != nil {
			return err
		}
	}
	return nil
}

// StartReplicaSync signals the sync workflow of one replica, starting it
// if it is not running. Transports call it after every change of a
// multi-region key (replicate, enable, disable, update-primary-region,
// replica deletion); rotations call it themselves.
func StartReplicaSync(ctx context.Context, tc client.Client, p ReplicaSyncParams) error {
	if tc == nil {
		return errors.New("workflows: no Temporal client to start the replica sync")
	}
	_, err := tc.SignalWithStartWorkflow(ctx, ReplicaSyncWorkflowID(p.Tenant, p.KeyID, p.Region), ReplicaSyncSignal, nil,
		client.StartWorkflowOptions{TaskQueue: TaskQueue}, ReplicaSyncWorkflow, p)
	if err != nil {
		return fmt.Errorf("failed to start the replica sync of key %s to region %s: %w", p.KeyID, p.Region, err)
	}
	return nil
}

// ReplicaWait is what a rotation of a multi-region key waits for.
type ReplicaWait struct {
	// Regions are the replica regions; empty for other keys.
	Regions []string
	Timeout time.Duration
}

// ReplicaWaitPlan returns the replicas a rotation waits for, and how long.
func (a *Activities) ReplicaWaitPlan(ctx context.Context, s KeyStep) (*ReplicaWait, error) {
	k, err := a.KMS.GetKey(ctx, kms.Caller{Tenant: s.Tenant, Principal: "keyflow-replication"}, s.KeyID)
	if err != nil {
		return nil, activityError(err)
	}
	if !k.MultiRegion || len(k.Replicas) == 0 {
		return &ReplicaWait{}, nil
	}
	t := a.ReplicaSwitchTimeout
	if t <= 0 {
		t = DefaultReplicaSwitchTimeout
	}
	w := &ReplicaWait{Timeout: t}
	for _, r := range k.Replicas {
		w.Regions = append(w.Regions, r.Region)
	}
	return w, nil
}

// ReplicaLaggards lists the replicas that lack version s.Version.
func (a *Activities) ReplicaLaggards(ctx context.Context, s KeyStep) ([]string, error) {
	k, err := a.KMS.GetKey(ctx, kms.Caller{Tenant: s.Tenant, Principal: "keyflow-replication"}, s.KeyID)
	if err != nil {
		return nil, activityError(err)
	}
	return kms.Laggards(k, s.Version), nil
}

// RecordReplicaLag records the regions a rotation did not wait for.
func (a *Activities) RecordReplicaLag(ctx context.Context, s KeyStep, laggards []string) error {
	c := caller(ctx, s)
	return activityError(a.KMS.RecordReplicaLag(ctx, c, s.KeyID, s.Version, laggards))
}

// multiRegionChange guards the rotation's wait for replicas (histories
// recorded before it have none).
const multiRegionChange = "multi-region"

// waitForReplicas is the rotation's step between the new version and its
// switch to primary: it sends the version to every replica and waits
// until all have it or the timeout passes. It returns the regions that
// lag at the switch (recorded by the caller after the switch).
func waitForReplicas(ctx workflow.Context, step KeyStep) (*ReplicaWait, []string, error) {
	if workflow.GetVersion(ctx, multiRegionChange, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return nil, nil, nil
	}
	var a *Activities
	var plan ReplicaWait
	if err := workflow.ExecuteActivity(ctx, a.ReplicaWaitPlan, step).Get(ctx, &plan); err != nil {
		return nil, nil, err
	}
	if len(plan.Regions) == 0 {
		return nil, nil, nil
	}
	if err := workflow.ExecuteActivity(ctx, a.KickReplicaSync, step).Get(ctx, nil); err != nil {
		return nil, nil, err
	}
	deadline := workflow.Now(ctx).Add(plan.Timeout)
	pause := 25 * time.Millisecond
	for {
		var laggards []string
		if err := workflow.ExecuteActivity(ctx, a.ReplicaLaggards, step).Get(ctx, &laggards); err != nil {
			return nil, nil, err
		}
		left := deadline.Sub(workflow.Now(ctx))
		if len(laggards) == 0 || left <= 0 {
			return &plan, laggards, nil
		}
		if err := workflow.Sleep(ctx, min(pause, left)); err != nil {
			return nil, nil, err
		}
		pause = min(pause*3/2, 2*time.Second)
	}
}

// afterReplicaSwitch tells the replicas the new primary version and
// records the laggards, if any.
func afterReplicaSwitch(ctx workflow.Context, step KeyStep, plan *ReplicaWait, laggards []string) error {
	if plan == nil {
		return nil
	}
	var a *Activities
	if len(laggards) > 0 {
		if err := workflow.ExecuteActivity(ctx, a.RecordReplicaLag, step, slices.Clone(laggards)).Get(ctx, nil); err != nil {
			return err
		}
	}
	return workflow.ExecuteActivity(ctx, a.KickReplicaSync, step).Get(ctx, nil)
}

// syncReplicas starts the replication of a changed multi-region key to
// every other region it lives in (KeyChanged).
func (c *Client) syncReplicas(ctx context.Context, k *kms.Key) error {
	if !k.MultiRegion {
		return nil
	}
	regions := []string{k.PrimaryRegion}
	for _, r := range k.Replicas {
		regions = append(regions, r.Region)
	}
	for _, r := range regions {
		if err := StartReplicaSync(ctx, c.Temporal, ReplicaSyncParams{Tenant: k.Tenant, KeyID: k.ID, Region: r}); err != nil {
			return err
		}
	}
	return nil
}

// WakeReplicaSyncs signals every running ReplicaSyncWorkflow of this
// region's keys towards region, so that one waiting out a pause because
// the link was down tries again at once (package region calls it when
// region announces itself over the link). It finds them with a
// visibility query on the workflow type and status, and the region in
// the workflow ID; a sync that ended meanwhile is skipped. It returns how
// many it signalled.
func (c *Client) WakeReplicaSyncs(ctx context.Context, region string) (int, error) {
	if c.Temporal == nil {
		return 0, errors.New("workflows: no Temporal client to wake the replica syncs")
	}
	suffix := "/" + region
	query := "WorkflowType = 'ReplicaSyncWorkflow' AND ExecutionStatus = 'Running'"
	n := 0
	var token []byte
	for {
		page, err := c.Temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: query, NextPageToken: token})
		if err != nil {
			return n, fmt.Errorf("failed to list the replica syncs to wake: %w", err)
		}
		for _, e := range page.GetExecutions() {
			id := e.GetExecution().GetWorkflowId()
			if !strings.HasPrefix(id, "replica-sync/") || !strings.HasSuffix(id, suffix) {
				continue
			}
			err := c.Temporal.SignalWorkflow(ctx, id, "", ReplicaSyncSignal, nil)
			var nf *serviceerror.NotFound
			switch {
			case errors.As(err, &nf):
			case err != nil:
				return n, fmt.Errorf("failed to wake the replica sync %s: %w", id, err)
			default:
				n++
			}
		}
		if token = page.GetNextPageToken(); len(token) == 0 {
			return n, nil
		}
	}
}
