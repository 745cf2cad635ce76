package client

import (
	"context"

	"github.com/keyflow/keyflow/client/api"
)

// StartMigration starts a migration campaign.
func (c *Client) StartMigration(ctx context.Context, r api.MigrationStartRequest) (*api.MigrationStatus, error) {
	return call[api.MigrationStatus](ctx, c, api.OpMigrateStart, r)
}

// MigrationStatus returns a campaign's progress ("" for the one in
// progress).
func (c *Client) MigrationStatus(ctx context.Context, campaignID string) (*api.MigrationStatus, error) {
	return call[api.MigrationStatus](ctx, c, api.OpMigrateStatus, api.MigrationRequest{CampaignID: campaignID})
}

// ControlMigration pauses, resumes, rolls back or approves a campaign:
// op is one of api.OpMigratePause, OpMigrateResume, OpMigrateRollback and
// OpMigrateApprove.
func (c *Client) ControlMigration(ctx context.Context, op, campaignID string) (*api.MigrationStatus, error) {
	return call[api.MigrationStatus](ctx, c, op, api.MigrationRequest{CampaignID: campaignID})
}
