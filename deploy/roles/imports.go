package roles

import (
	"context"
	"time"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

// importExpirer adapts the workflow client to the services' ImportExpirer.
type importExpirer struct {
	c *workflows.Client
}

func (e importExpirer) ScheduleExpiry(ctx context.Context, c kms.Caller, keyID, importID string, validTo time.Time) (string, error) {
	return e.c.ScheduleImportExpiry(ctx, workflows.ImportExpiryParams{
		Tenant: c.Tenant, KeyID: keyID, ImportID: importID, ValidTo: validTo, Principal: c.Principal, RequestID: c.RequestID,
	})
}
