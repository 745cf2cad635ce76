package workflows

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/keyflow/keyflow/kms"
)

// FleetRotateParams start (or continue) the rotation of every key of a
// tenant. Since, Cursor and the counters carry the campaign across
// ContinueAsNew; leave them zero to start.
type FleetRotateParams struct {
	Tenant    string
	Principal string
	RequestID string
	// BatchSize is how many keys one activity rotates (default 500);
	// Concurrency how many of those it rotates at once (default 16).
	BatchSize   int
	Concurrency int

	Since   time.Time
	Cursor  string
	Rotated int
	Skipped int
	Failed  int
}

// FleetRotateResult counts the keys rotated, skipped (not ACTIVE, or
// already rotated since the campaign began) and failed.
type FleetRotateResult struct {
	Rotated int
	Skipped int
	Failed  int
}

// fleetBatchesPerRun bounds one run's history; the campaign continues as
// new after that many batches.
const fleetBatchesPerRun = 50

// FleetRotateWorkflow rotates every key of a tenant, in batches of
// BatchSize keys per activity with bounded concurrency inside each batch.
// It is a campaign: it pages through the keys by ID with a cursor, continues
// as new to keep its history short, and is safe to retry or resume at any
// point, because each key is rotated at most once since the campaign
// began (kms.CampaignTarget) with the same idempotent steps, and the same
// audit event IDs, as RotateKeyWorkflow.
func FleetRotateWorkflow(ctx workflow.Context, p FleetRotateParams) (*FleetRotateResult, error) {
	if p.Since.IsZero() {
		p.Since = workflow.Now(ctx)
	}
	if p.BatchSize <= 0 {
		p.BatchSize = 500
	}
	if p.Concurrency <= 0 {
		p.Concurrency = 16
	}
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 10 * time.Minute,
		HeartbeatTimeout:    time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 30 * time.Second, MaximumAttempts: 10,
		},
	})
	var a *Activities
	for range fleetBatchesPerRun {
		var r RotateBatchResult
		err := workflow.ExecuteActivity(actx, a.RotateBatch, RotateBatchStep{
			Tenant: p.Tenant, Principal: p.Principal, RequestID: p.RequestID, Since: p.Since,
			After: p.Cursor, Limit: p.BatchSize, Concurrency: p.Concurrency,
		}).Get(ctx, &r)
		if err != nil {
			return nil, err
		}
		p.Rotated += r.Rotated
		p.Skipped += r.Skipped
		p.Failed += r.Failed
		p.Cursor = r.Next
		if r.Done {
			return &FleetRotateResult{Rotated: p.Rotated, Skipped: p.Skipped, Failed: p.Failed}, nil
		}
	}
	return nil, workflow.NewContinueAsNewError(ctx, FleetRotateWorkflow, p)
}

// RotateBatchStep is the input of RotateBatch.
type RotateBatchStep struct {
	Tenant      string
	Principal   string
	RequestID   string
	Since       time.Time
	After       string
	Limit       int
	Concurrency int
}

// RotateBatchResult is one batch's outcome and where the next starts.
type RotateBatchResult struct {
	Rotated int
	Skipped int
	Failed  int
	Next    string
	Done    bool
}

// RotateBatch rotates the next Limit keys after After, Concurrency at a
// time, heartbeating its progress. A key that is not ACTIVE is skipped; a
// key whose rotation fails is counted, and the batch goes on.
func (a *Activities) RotateBatch(ctx context.Context, s RotateBatchStep) (*RotateBatchResult, error) {
	c := kms.Caller{Tenant: s.Tenant, Principal: s.Principal, RequestID: s.RequestID}
	ids, err := a.KMS.ListKeyIDs(ctx, c, s.After, s.Limit)
	if err != nil {
		return nil, activityError(err)
	}
	res := &RotateBatchResult{Done: len(ids) < s.Limit}
	if len(ids) > 0 {
		res.Next = ids[len(ids)-1]
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(s.Concurrency, 1))
	for i, id := range ids {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			rotated, err := a.rotateOnce(ctx, s, id)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && rotated:
				res.Rotated++
			case err == nil, kms.CodeOf(err) == kms.CodeInvalidState, kms.CodeOf(err) == kms.CodeNotFound:
				res.Skipped++
			default:
				res.Failed++
				activity.GetLogger(ctx).Warn("key not rotated", "key", kms.ResourceName(s.Tenant, id), "err", err)
			}
		}()
		if i%50 == 49 {
			activity.RecordHeartbeat(ctx, i+1)
		}
	}
	wg.Wait()
	return res, nil
}

// rotateOnce rotates one key for the campaign: the same two domain steps
// as RotateKeyWorkflow, under the same idempotency keys.
func (a *Activities) rotateOnce(ctx context.Context, s RotateBatchStep, keyID string) (bool, error) {
	base := kms.Caller{Tenant: s.Tenant, Principal: s.Principal, RequestID: s.RequestID}
	k, err := a.KMS.GetKey(ctx, base, keyID)
	if err != nil {
		return false, err
	}
	if k.State != kms.StateActive || k.Lifecycle.PendingDeletion {
		return false, nil
	}
	v, done := kms.CampaignTarget(k, s.Since)
	if done {
		return false, nil
	}
	c := base
	c.IdempotencyKey = fmt.Sprintf("%s/%s/v%d/%s", s.Tenant, keyID, v, "CreateVersion")
	if _, err := a.KMS.CreateVersion(ctx, c, kms.CreateVersionParams{KeyID: keyID, Version: v}); err != nil {
		return false, err
	}
	c.IdempotencyKey = fmt.Sprintf("%s/%s/v%d/%s", s.Tenant, keyID, v, "SetPrimaryVersion")
	if _, err := a.KMS.SetPrimaryVersion(ctx, c, kms.SetPrimaryParams{KeyID: keyID, Version: v}); err != nil {
		return false, err
	}
	return true, nil
}

// FleetRotateWorkflowID is one fleet rotation per tenant at a time.
func FleetRotateWorkflowID(tenant string) string { return "fleet-rotate/" + tenant }

// RotateFleet runs a fleet rotation of the tenant and waits for it.
func (c *Client) RotateFleet(ctx context.Context, p FleetRotateParams) (*FleetRotateResult, error) {
	run, err := c.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: FleetRotateWorkflowID(p.Tenant), TaskQueue: TaskQueue,
	}, FleetRotateWorkflow, p)
	if err != nil {
		return nil, fmt.Errorf("failed to start the fleet rotation: %w", err)
	}
	var res FleetRotateResult
	if err := run.Get(ctx, &res); err != nil {
		return nil, DomainError(err)
	}
	return &res, nil
}
