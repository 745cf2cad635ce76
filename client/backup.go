package client

import (
	"context"

	"github.com/keyflow/keyflow/client/api"
)

// CreateBackup writes a backup of the tenant's keys and returns the file.
func (c *Client) CreateBackup(ctx context.Context) (*api.BackupCreateReply, error) {
	return call[api.BackupCreateReply](ctx, c, api.OpBackupCreate, struct{}{})
}

// RestoreBackup restores a backup file into the tenant.
func (c *Client) RestoreBackup(ctx context.Context, r api.BackupRestoreRequest) (*api.BackupRestoreReply, error) {
	return call[api.BackupRestoreReply](ctx, c, api.OpBackupRestore, r)
}

// ListBackups lists the tenant's registered backups.
func (c *Client) ListBackups(ctx context.Context) (*api.BackupListReply, error) {
	return call[api.BackupListReply](ctx, c, api.OpBackupList, struct{}{})
}

// RunArchival archives deactivated versions past the retention age (one
// pass), or starts the recurring archival.
func (c *Client) RunArchival(ctx context.Context, r api.ArchiveRunRequest) (*api.ArchiveRunReply, error) {
	return call[api.ArchiveRunReply](ctx, c, api.OpArchiveRun, r)
}

// RequestVersionRestore asks for an archived version back; it waits for
// another principal's approval.
func (c *Client) RequestVersionRestore(ctx context.Context, r api.ArchiveRestoreRequest) (*api.ArchiveRestoreReply, error) {
	return call[api.ArchiveRestoreReply](ctx, c, api.OpArchiveRestore, r)
}

// DecideVersionRestore approves or rejects a waiting restore.
func (c *Client) DecideVersionRestore(ctx context.Context, r api.ArchiveDecideRequest) (*api.ArchiveDecideReply, error) {
	return call[api.ArchiveDecideReply](ctx, c, api.OpArchiveDecide, r)
}
