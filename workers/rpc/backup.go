package rpc

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
)

// Archiver runs the archival and recovery workflows (Temporal, in
// production) for the archive.* endpoints.
type Archiver interface {
	// RunArchival runs one archival pass and reports it, or with an
	// interval starts the recurring run and returns at once.
	RunArchival(ctx context.Context, c kms.Caller, retention, interval time.Duration) (*ArchivalRun, error)
	// StartRecovery starts (or finds) the recovery of an archived
	// version, which waits for an approval, and returns its workflow ID.
	StartRecovery(ctx context.Context, c kms.Caller, keyID string, version uint32) (string, error)
	// DecideRecovery sends c's decision and reports how the recovery
	// ended; the requester's own decision is AccessDenied.
	DecideRecovery(ctx context.Context, c kms.Caller, keyID string, version uint32, approve bool) (*RecoveryOutcome, error)
}

// ArchivalRun is what an archival pass did.
type ArchivalRun struct {
	WorkflowID string
	Scheduled  bool
	Archived   []kms.VersionRef
	Failed     []kms.VersionRef
}

// RecoveryOutcome is how a recovery ended.
type RecoveryOutcome struct {
	Outcome   string
	DecidedBy string
}

func (s *Server) backupOps() map[string]handlerFunc {
	return map[string]handlerFunc{"create": s.backupCreate, "restore": s.backupRestore, "list": s.backupList}
}

func (s *Server) archiveOps() map[string]handlerFunc {
	return map[string]handlerFunc{"run": s.archiveRun, "restore": s.archiveRestore, "decide": s.archiveDecide}
}

func (s *Server) backupCreate(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct{}
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpBackupCreate, err)
	}
	res, err := s.cfg.KMS.CreateBackup(ctx, c)
	if err != nil {
		return nil, err
	}
	return api.BackupCreateReply{BackupID: res.ID, Keys: res.Keys, Versions: res.Versions, Backup: res.File}, nil
}

func (s *Server) backupRestore(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.BackupRestoreRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpBackupRestore, err)
	}
	res, err := s.cfg.KMS.RestoreBackup(ctx, c, kms.RestoreBackupParams{File: req.Backup, Overwrite: req.Overwrite})
	if err != nil {
		return nil, err
	}
	var failed []string
	for _, k := range res.Restored {
		if err := s.restartTimers(ctx, c, k); err != nil {
			s.cfg.Logger.Error("lifecycle timers of a restored key not started", "key", k.ResourceName(), "err", err)
			failed = append(failed, k.ID)
		}
	}
	if len(failed) > 0 {
		return nil, &kms.Error{Code: kms.CodeInternal, Message: fmt.Sprintf("the backup is restored, but the lifecycle timers of %d keys (%s) could not be started; restore again with overwrite to retry",
			len(failed), strings.Join(failed, ", "))}
	}
	return api.BackupRestoreReply{BackupID: res.ID, Keys: res.Keys, Versions: res.Versions, Aliases: res.Aliases}, nil
}

// restartTimers gives a restored key the lifecycle timers and schedules
// it would have after creation and the requests that made its metadata:
// the activation timer, the cryptoperiod timer and the rotation schedule
// (KeyChanged), the deletion window of a key pending deletion, the
// retirement window of each version pending retirement, and the expiry of
// imported material. Dates already past fire at once, as they would have
// on the original stack. Every start is idempotent (same workflow IDs), so
// a restore retried with overwrite starts no second timer.
func (s *Server) restartTimers(ctx context.Context, c kms.Caller, k *kms.Key) error {
	if l := s.cfg.Lifecycle; l != nil {
		if err := l.KeyChanged(ctx, c, k); err != nil {
			return err
		}
		if k.Lifecycle.PendingDeletion {
			if _, err := l.ScheduleDeletion(ctx, c, k); err != nil {
				return err
			}
		}
		for _, v := range kms.PendingRetirements(k) {
			if _, err := l.ScheduleRetirement(ctx, c, k.ID, v.Number, v.RetirementDate); err != nil {
				return err
			}
		}
	}
	if imp := k.Import; s.cfg.Imports != nil && imp != nil && imp.ImportID != "" && !imp.ValidTo.IsZero() {
		if _, err := s.cfg.Imports.ScheduleExpiry(ctx, c, k.ID, imp.ImportID, imp.ValidTo); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) backupList(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct{}
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpBackupList, err)
	}
	recs, err := s.cfg.KMS.ListBackups(ctx, c)
	if err != nil {
		return nil, err
	}
	out := api.BackupListReply{Backups: make([]api.BackupInfo, 0, len(recs))}
	for _, r := range recs {
		b := api.BackupInfo{BackupID: r.ID, CreationDate: r.CreatedAt, CreatedBy: r.CreatedBy, KeyIDs: r.KeyIDs,
			Bytes: r.Bytes, SHA256: r.SHA256, Revoked: r.Revoked, RevokedForKey: r.RevokedForKey}
		if b.KeyIDs == nil {
			b.KeyIDs = []string{}
		}
		if !r.RevokedAt.IsZero() {
			t := r.RevokedAt
			b.RevokedAt = &t
		}
		out.Backups = append(out.Backups, b)
	}
	return out, nil
}

var errNoArchiver = &kms.Error{Code: kms.CodeInternal, Message: "archival and recovery are not available on this worker"}

func (s *Server) archiveRun(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.ArchiveRunRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpArchiveRun, err)
	}
	if req.RetentionSeconds < 0 || req.IntervalSeconds < 0 || (req.IntervalSeconds > 0 && req.IntervalSeconds < 60) {
		return nil, s.rejectWith(ctx, c, api.OpArchiveRun, &kms.Error{Code: kms.CodeValidation, Message: "retentionSeconds must not be negative, and intervalSeconds is 0 (one pass) or at least 60"})
	}
	if s.cfg.Archiver == nil {
		return nil, s.rejectWith(ctx, c, api.OpArchiveRun, errNoArchiver)
	}
	// Each version's archival is audited by the workflow's activity.
	run, err := s.cfg.Archiver.RunArchival(ctx, c, time.Duration(req.RetentionSeconds)*time.Second, time.Duration(req.IntervalSeconds)*time.Second)
	if err != nil {
		return nil, err
	}
	return api.ArchiveRunReply{WorkflowID: run.WorkflowID, Scheduled: run.Scheduled, Archived: wireRefs(run.Archived), Failed: wireRefs(run.Failed)}, nil
}

func wireRefs(refs []kms.VersionRef) []api.VersionRef {
	out := make([]api.VersionRef, 0, len(refs))
	for _, r := range refs {
		out = append(out, api.VersionRef{KeyID: r.KeyID, Version: r.Version})
	}
	return out
}

func (s *Server) archiveRestore(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.ArchiveRestoreRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpArchiveRestore, err)
	}
	if s.cfg.Archiver == nil {
		return nil, s.rejectWith(ctx, c, api.OpArchiveRestore, errNoArchiver)
	}
	keyID, err := s.cfg.KMS.RequestVersionRestore(ctx, c, req.KeyID, req.Version)
	if err != nil {
		return nil, err
	}
	id, err := s.cfg.Archiver.StartRecovery(ctx, c, keyID, req.Version)
	if err != nil {
		return nil, err
	}
	return api.ArchiveRestoreReply{KeyID: keyID, Version: req.Version, WorkflowID: id, Status: "PENDING_APPROVAL"}, nil
}

func (s *Server) archiveDecide(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.ArchiveDecideRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpArchiveDecide, err)
	}
	if s.cfg.Archiver == nil {
		return nil, s.rejectWith(ctx, c, api.OpArchiveDecide, errNoArchiver)
	}
	keyID := req.KeyID
	if !kms.ValidKeyID(keyID) {
		k, err := s.cfg.KMS.DescribeKey(ctx, c, keyID)
		if err != nil {
			return nil, err
		}
		keyID = k.ID
	}
	// The decision itself is audited by the workflow's activity
	// (approved, rejected, or denied for the requester).
	out, err := s.cfg.Archiver.DecideRecovery(ctx, c, keyID, req.Version, req.Approve)
	if err != nil {
		return nil, err
	}
	return api.ArchiveDecideReply{KeyID: keyID, Version: req.Version, Outcome: out.Outcome, DecidedBy: out.DecidedBy}, nil
}
