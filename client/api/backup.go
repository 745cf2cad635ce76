package api

import "time"

// Backups, archival and recovery (docs/backup-and-recovery.md):
//
//	kf.v1.<tenant>.backup.create    write a backup of the tenant's keys (the file in the reply)
//	kf.v1.<tenant>.backup.restore   restore a backup file into the tenant
//	kf.v1.<tenant>.backup.list      the registry's backups of the tenant
//	kf.v1.<tenant>.archive.run      archive deactivated versions past the retention age
//	kf.v1.<tenant>.archive.restore  request the restore of an archived version
//	kf.v1.<tenant>.archive.decide   approve or reject a waiting restore
//
// The root key share ceremony has no API: it runs offline, against the
// token, with the security officer present (keyflow root export-shares,
// keyflow root import-shares).

// Operations.
const (
	OpBackupCreate   = "backup.create"
	OpBackupRestore  = "backup.restore"
	OpBackupList     = "backup.list"
	OpArchiveRun     = "archive.run"
	OpArchiveRestore = "archive.restore"
	OpArchiveDecide  = "archive.decide"
)

// BackupCreateReply is a finished backup: the file (encrypted and
// integrity-protected; safe to store anywhere) and what it holds.
type BackupCreateReply struct {
	BackupID string `json:"backupId"`
	Keys     int    `json:"keys"`
	Versions int    `json:"versions"`
	Backup   []byte `json:"backup"`
}

// BackupRestoreRequest restores a backup file. Without Overwrite, a backup
// that would replace an existing key or alias is refused before anything
// is written.
type BackupRestoreRequest struct {
	Backup    []byte `json:"backup"`
	Overwrite bool   `json:"overwrite,omitempty"`
}

// BackupRestoreReply reports what the restore wrote.
type BackupRestoreReply struct {
	BackupID string `json:"backupId"`
	Keys     int    `json:"keys"`
	Versions int    `json:"versions"`
	Aliases  int    `json:"aliases"`
}

// BackupInfo is one registered backup.
type BackupInfo struct {
	BackupID      string     `json:"backupId"`
	CreationDate  time.Time  `json:"creationDate"`
	CreatedBy     string     `json:"createdBy,omitempty"`
	KeyIDs        []string   `json:"keyIds"`
	Bytes         int        `json:"bytes"`
	SHA256        string     `json:"sha256"`
	Revoked       bool       `json:"revoked,omitempty"`
	RevokedAt     *time.Time `json:"revokedAt,omitempty"`
	RevokedForKey string     `json:"revokedForKey,omitempty"`
}

// BackupListReply lists the tenant's registered backups, oldest first.
type BackupListReply struct {
	Backups []BackupInfo `json:"backups"`
}

// ArchiveRunRequest runs archival. RetentionSeconds is the age a
// deactivated version must reach (default 90 days). With IntervalSeconds,
// a recurring archival is started (or found running) instead of one pass.
type ArchiveRunRequest struct {
	RetentionSeconds int64 `json:"retentionSeconds,omitempty"`
	IntervalSeconds  int64 `json:"intervalSeconds,omitempty"`
}

// VersionRef names one version of one key.
type VersionRef struct {
	KeyID   string `json:"keyId"`
	Version uint32 `json:"version"`
}

// ArchiveRunReply reports one pass (or the recurring run's workflow).
type ArchiveRunReply struct {
	WorkflowID string       `json:"workflowId"`
	Scheduled  bool         `json:"scheduled,omitempty"`
	Archived   []VersionRef `json:"archived"`
	Failed     []VersionRef `json:"failed"`
}

// ArchiveRestoreRequest asks to restore an archived version; KeyID is an
// ID or alias.
type ArchiveRestoreRequest struct {
	KeyID   string `json:"keyId"`
	Version uint32 `json:"version"`
}

// ArchiveRestoreReply says the request waits for an approval.
type ArchiveRestoreReply struct {
	KeyID      string `json:"keyId"`
	Version    uint32 `json:"version"`
	WorkflowID string `json:"workflowId"`
	Status     string `json:"status"` // PENDING_APPROVAL
}

// ArchiveDecideRequest approves (or, with Approve false, rejects) a waiting
// restore. The requester cannot decide their own request.
type ArchiveDecideRequest struct {
	KeyID   string `json:"keyId"`
	Version uint32 `json:"version"`
	Approve bool   `json:"approve"`
}

// ArchiveDecideReply is how the restore ended: RESTORED or REJECTED.
type ArchiveDecideReply struct {
	KeyID     string `json:"keyId"`
	Version   uint32 `json:"version"`
	Outcome   string `json:"outcome"`
	DecidedBy string `json:"decidedBy"`
}
