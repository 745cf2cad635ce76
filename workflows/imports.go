package workflows

import (
	"context"
	"fmt"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/keyflow/keyflow/kms"
)

// ImportExpiryParams start the expiry of one import of key material
// (BYOK). IDs and a time only: never material.
type ImportExpiryParams struct {
	Tenant    string
	KeyID     string
	ImportID  string
	ValidTo   time.Time
	Principal string // who imported, for the audit record of the expiry
	RequestID string
}

// ImportExpiryResult reports whether the expiry deleted the material (it
// does not when a later import or a deletion came first).
type ImportExpiryResult struct {
	Deleted bool
}

// ImportExpiryWorkflow waits, on a durable timer, until the import's
// validTo, then deletes the material of that import and takes the key back
// to PENDING_IMPORT (kms.Service.ExpireImportedKeyMaterial, which is a
// no-op if the import is no longer current). The timer survives worker
// and server restarts; it is the only thing that runs for the months a
// validTo may be away.
func ImportExpiryWorkflow(ctx workflow.Context, p ImportExpiryParams) (*ImportExpiryResult, error) {
	if d := p.ValidTo.Sub(workflow.Now(ctx)); d > 0 {
		if err := workflow.Sleep(ctx, d); err != nil {
			return nil, err
		}
	}
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    time.Second,
			BackoffCoefficient: 2,
			MaximumInterval:    time.Minute,
			// Expiry must happen: keep trying (an HSM or store outage)
			// until a non-retryable domain error.
		},
	})
	var a *Activities
	var deleted bool
	step := ImportStep{Tenant: p.Tenant, KeyID: p.KeyID, ImportID: p.ImportID, Principal: p.Principal, RequestID: p.RequestID}
	if err := workflow.ExecuteActivity(ctx, a.ExpireImportedMaterial, step).Get(ctx, &deleted); err != nil {
		return nil, err
	}
	return &ImportExpiryResult{Deleted: deleted}, nil
}

// ImportStep is the input of the expiry activity.
type ImportStep struct {
	Tenant    string
	KeyID     string
	ImportID  string
	Principal string
	RequestID string
}

// ExpireImportedMaterial deletes the material of s.ImportID if it is still
// the key's current import. Retried or re-run, it emits the same audit
// event ID (the fact is "this import expired").
func (a *Activities) ExpireImportedMaterial(ctx context.Context, s ImportStep) (bool, error) {
	c := kms.Caller{
		Tenant: s.Tenant, Principal: s.Principal, RequestID: s.RequestID,
		IdempotencyKey: fmt.Sprintf("%s/%s/import/%s/expire", s.Tenant, s.KeyID, s.ImportID),
	}
	deleted, err := a.KMS.ExpireImportedKeyMaterial(ctx, c, kms.ExpireImportParams{KeyID: s.KeyID, ImportID: s.ImportID})
	return deleted, activityError(err)
}

// ImportExpiryWorkflowID names one import's expiry.
func ImportExpiryWorkflowID(tenant, keyID, importID string) string {
	return "import-expiry/" + tenant + "/" + keyID + "/" + importID
}

// ScheduleImportExpiry starts the expiry workflow of one import and
// returns its ID without waiting for it. Starting it twice is harmless:
// the second start joins the first.
func (c *Client) ScheduleImportExpiry(ctx context.Context, p ImportExpiryParams) (string, error) {
	id := ImportExpiryWorkflowID(p.Tenant, p.KeyID, p.ImportID)
	_, err := c.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                       id,
		TaskQueue:                TaskQueue,
		WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
	}, ImportExpiryWorkflow, p)
	if err != nil {
		return id, fmt.Errorf("failed to schedule the expiry of imported key material: %w", err)
	}
	return id, nil
}
