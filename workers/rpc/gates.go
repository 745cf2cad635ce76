package rpc

import (
	"context"

	"github.com/keyflow/keyflow/kms"
)

// Dual-control gates of the key lifecycle handlers. Each checks the
// request first (kms.Service.Prepare*: nothing changes, a refusal is
// recorded as the operation's), then asks approvalGate; the approved
// operation is run by the approval workflow (workflows/gates.go) from the
// target, which carries the request's parameters.

// gateDeletion guards keys.scheduledeletion (schedule-deletion). It runs
// the checks only when the tenant policy lists the operation, so an
// ungoverned deletion costs no extra read.
func (s *Server) gateDeletion(ctx context.Context, c kms.Caller, p kms.ScheduleDeletionParams) error {
	if !s.cfg.KMS.NeedsApproval(ctx, c, kms.ApprovalScheduleDeletion) {
		return nil
	}
	target, err := s.cfg.KMS.PrepareScheduleDeletion(ctx, c, p)
	if err != nil {
		return err
	}
	return s.approvalGate(ctx, c, kms.ApprovalScheduleDeletion, target)
}

// gateDisable guards keys.setstate to SUSPENDED (disable; the CLI's `key
// disable` and `key suspend`).
func (s *Server) gateDisable(ctx context.Context, c kms.Caller, p kms.SetStateParams) error {
	if !s.cfg.KMS.NeedsApproval(ctx, c, kms.ApprovalDisable) {
		return nil
	}
	target, err := s.cfg.KMS.PrepareDisable(ctx, c, p)
	if err != nil || target == "" {
		return err
	}
	return s.approvalGate(ctx, c, kms.ApprovalDisable, target)
}

// cutoverVoted answers `migrate approve` counted as a vote on the
// campaign's cutover approval request: the vote's refusal, or the
// campaign's status.
func (s *Server) cutoverVoted(ctx context.Context, c kms.Caller, campaignID string, _ *kms.Approval, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return s.cfg.Migrator.MigrationStatus(ctx, c, campaignID)
}
