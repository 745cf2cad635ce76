package workflows

import (
	"context"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/keyflow/keyflow/kms"
)

// RewrapParams start a rewrap of the registered wrapped data keys of one
// key: every registered ciphertext made under one of FromVersions (all
// versions other than the primary when empty) is re-encrypted under
// DestinationKeyID's primary version (the same key when empty). Cursor and
// the counters carry progress across ContinueAsNew.
//
// This is the contract shared by rotation, compromise remediation and the
// crypto-agility migration campaign.
type RewrapParams struct {
	Tenant           string
	KeyID            string
	FromVersions     []uint32
	DestinationKeyID string
	Principal        string
	RequestID        string
	BatchSize        int // default 100
	// AllowCompromised lets the rewrap open data keys under a COMPROMISED
	// version: compromise remediation sets it to move them away.
	AllowCompromised bool

	Cursor    string
	Rewrapped int
	Failed    int

	// Skipped counts registrations found already under the destination.
	Skipped int
	// MaxBatchesPerRun bounds the history of one run: after that many
	// batches the workflow continues as new with its cursor (default 50).
	MaxBatchesPerRun int
}

// RewrapResult reports how many registered data keys moved, how many could
// not, and how many still use the source versions afterwards.
type RewrapResult struct {
	Rewrapped int
	Failed    int
	Remaining int

	Skipped int
}

// RewrapProgress is what the rewrap's progress query answers.
type RewrapProgress struct {
	Rewrapped int
	Failed    int
	Skipped   int
	Cursor    string
	Done      bool
}

// QueryProgress is the name of the rewrap workflow's progress query.
const QueryProgress = "progress"

// RewrapWorkflowID is one rewrap per key at a time.
func RewrapWorkflowID(tenant, keyID string) string { return "rewrap/" + tenant + "/" + keyID }

// Defaults of a rewrap.
const (
	defaultBatchSize        = 100
	defaultMaxBatchesPerRun = 50
)

// rewrapActivityOptions bound one batch: it heartbeats after every item, so
// a worker that dies mid-batch is noticed within the heartbeat timeout and
// the batch is retried (from the same cursor; finished items are skipped).
var rewrapActivityOptions = workflow.ActivityOptions{
	StartToCloseTimeout: 10 * time.Minute,
	HeartbeatTimeout:    30 * time.Second,
	RetryPolicy: &temporal.RetryPolicy{
		InitialInterval:    200 * time.Millisecond,
		BackoffCoefficient: 2,
		MaximumInterval:    10 * time.Second,
		MaximumAttempts:    50,
	},
}

// RewrapWorkflow rewraps registered data keys in batches. Each batch is one
// activity that heartbeats per item; after MaxBatchesPerRun batches the
// workflow continues as new, carrying its cursor and counters, so its
// history stays small whatever the size of the registry. Items are
// idempotent (a registration already under the destination is skipped), so
// a retried batch or a replayed run does no work twice.
func RewrapWorkflow(ctx workflow.Context, p RewrapParams) (*RewrapResult, error) {
	if p.BatchSize <= 0 {
		p.BatchSize = defaultBatchSize
	}
	if p.MaxBatchesPerRun <= 0 {
		p.MaxBatchesPerRun = defaultMaxBatchesPerRun
	}
	done := false
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (RewrapProgress, error) {
		return RewrapProgress{Rewrapped: p.Rewrapped, Failed: p.Failed, Skipped: p.Skipped, Cursor: p.Cursor, Done: done}, nil
	}); err != nil {
		return nil, err
	}
	actx := workflow.WithActivityOptions(ctx, rewrapActivityOptions)
	var a *Activities
	tag := "rewrap/" + workflow.GetInfo(ctx).WorkflowExecution.ID
	for batch := 0; ; batch++ {
		if batch >= p.MaxBatchesPerRun {
			return nil, workflow.NewContinueAsNewError(ctx, RewrapWorkflow, p)
		}
		var page RewrapBatchResult
		err := workflow.ExecuteActivity(actx, a.RewrapBatch, RewrapBatchParams{
			Tenant: p.Tenant, Principal: p.Principal, RequestID: p.RequestID, Tag: tag,
			KeyID: p.KeyID, FromVersions: p.FromVersions, DestinationKeyID: p.DestinationKeyID,
			Cursor: p.Cursor, Limit: p.BatchSize, AllowCompromised: p.AllowCompromised,
		}).Get(ctx, &page)
		if err != nil {
			return nil, err
		}
		p.Rewrapped += page.Rewrapped
		p.Failed += page.Failed
		p.Skipped += page.Skipped
		if page.NextCursor != "" {
			p.Cursor = page.NextCursor
		}
		if page.Done {
			break
		}
	}
	done = true
	var remaining int
	step := RewrapBatchParams{Tenant: p.Tenant, Principal: p.Principal, RequestID: p.RequestID, KeyID: p.KeyID, FromVersions: p.FromVersions, DestinationKeyID: p.DestinationKeyID}
	if err := workflow.ExecuteActivity(actx, a.RemainingDataKeys, step).Get(ctx, &remaining); err != nil {
		return nil, err
	}
	return &RewrapResult{Rewrapped: p.Rewrapped, Failed: p.Failed, Skipped: p.Skipped, Remaining: remaining}, nil
}

// RewrapBatchParams are one batch of a rewrap. Tag names the rewrap (it
// becomes the idempotency key of the audit records), the same for every
// batch and retry of it.
type RewrapBatchParams struct {
	Tenant           string
	Principal        string
	RequestID        string
	Tag              string
	KeyID            string
	FromVersions     []uint32
	DestinationKeyID string
	Cursor           string
	Limit            int
	AllowCompromised bool
}

// RewrapBatchResult is what one batch did.
type RewrapBatchResult struct {
	Rewrapped  int
	Skipped    int
	Failed     int
	NextCursor string
	Done       bool
}

// RewrapBatch rewraps one page of the registry, heartbeating after each
// item with the cursor reached.
func (a *Activities) RewrapBatch(ctx context.Context, p RewrapBatchParams) (*RewrapBatchResult, error) {
	c := kms.Caller{Tenant: p.Tenant, Principal: p.Principal, RequestID: p.RequestID, IdempotencyKey: p.Tag}
	page, err := a.KMS.RewrapRegistered(ctx, c, kms.RewrapRegisteredParams{
		KeyID: p.KeyID, FromVersions: p.FromVersions, DestinationKeyID: p.DestinationKeyID,
		After: p.Cursor, Limit: p.Limit, AllowCompromised: p.AllowCompromised,
		Progress: func(done int, cursor string) { activity.RecordHeartbeat(ctx, done, cursor) },
	})
	if err != nil {
		return nil, activityError(err)
	}
	return &RewrapBatchResult{Rewrapped: page.Rewrapped, Skipped: page.Skipped, Failed: page.Failed, NextCursor: page.NextCursor, Done: page.Done}, nil
}

// RemainingDataKeys counts the registrations a rewrap has still to move.
func (a *Activities) RemainingDataKeys(ctx context.Context, p RewrapBatchParams) (int, error) {
	c := kms.Caller{Tenant: p.Tenant, Principal: p.Principal, RequestID: p.RequestID}
	n, err := a.KMS.RemainingDataKeys(ctx, c, p.KeyID, p.FromVersions, p.DestinationKeyID)
	if err != nil {
		return 0, activityError(err)
	}
	return n, nil
}

// Rewrap runs a rewrap of one key's registered data keys and waits for it.
func (c *Client) Rewrap(ctx context.Context, p RewrapParams) (*RewrapResult, string, error) {
	id := RewrapWorkflowID(p.Tenant, p.KeyID)
	run, err := c.Temporal.ExecuteWorkflow(ctx, startOptions(id), RewrapWorkflow, p)
	if err != nil {
		return nil, id, fmt.Errorf("failed to start the rewrap: %w", err)
	}
	var res RewrapResult
	if err := run.Get(ctx, &res); err != nil {
		return nil, id, DomainError(err)
	}
	return &res, id, nil
}
