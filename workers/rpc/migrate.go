package rpc

import (
	"context"
	"strings"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
)

// Migrator runs post-quantum migration campaigns (the Temporal
// MigrationWorkflow, in production): it starts one, signals it and asks
// for its status. Requests are checked and audited by the domain first;
// the campaign's own steps are audited by the workflow.
type Migrator interface {
	StartMigration(ctx context.Context, c kms.Caller, req api.MigrationStartRequest) (*api.MigrationStatus, error)
	SignalMigration(ctx context.Context, c kms.Caller, campaignID, action string) error
	MigrationStatus(ctx context.Context, c kms.Caller, campaignID string) (*api.MigrationStatus, error)
}

var errNoMigrator = &kms.Error{Code: kms.CodeInternal, Message: "migration campaigns are not available on this worker"}

func (s *Server) migrateStart(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.MigrationStartRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpMigrateStart, err)
	}
	if s.cfg.Migrator == nil {
		return nil, s.rejectWith(ctx, c, api.OpMigrateStart, errNoMigrator)
	}
	plan := make([]kms.MigrationKeyParams, 0, len(req.Keys))
	for _, k := range req.Keys {
		plan = append(plan, kms.MigrationKeyParams{CampaignID: req.CampaignID, SourceKeyID: k.KeyID, TargetSpec: kms.KeySpec(k.TargetKeySpec)})
	}
	if err := s.cfg.KMS.RequestMigration(ctx, c, req.CampaignID, plan); err != nil {
		return nil, err
	}
	return s.cfg.Migrator.StartMigration(ctx, c, req)
}

func (s *Server) migrateStatus(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.MigrationRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpMigrateStatus, err)
	}
	if s.cfg.Migrator == nil {
		return nil, s.rejectWith(ctx, c, api.OpMigrateStatus, errNoMigrator)
	}
	id := req.CampaignID
	if id == "" {
		ids, err := s.cfg.KMS.Campaigns(ctx, c)
		if err != nil {
			return nil, s.rejectWith(ctx, c, api.OpMigrateStatus, err)
		}
		switch len(ids) {
		case 0:
			return nil, s.rejectWith(ctx, c, api.OpMigrateStatus, &kms.Error{Code: kms.CodeNotFound, Message: "no campaign is in progress; name one with its ID"})
		case 1:
			id = ids[0]
		default:
			return nil, s.rejectWith(ctx, c, api.OpMigrateStatus, &kms.Error{Code: kms.CodeValidation, Message: "several campaigns are in progress (" + strings.Join(ids, ", ") + "); name one"})
		}
	}
	if !kms.ValidCampaignID(id) {
		return nil, s.rejectWith(ctx, c, api.OpMigrateStatus, &kms.Error{Code: kms.CodeValidation, Message: "not a campaign ID"})
	}
	return s.cfg.Migrator.MigrationStatus(ctx, c, id)
}

// migrateControl serves pause, resume, rollback and approve.
func (s *Server) migrateControl(action, op string) handlerFunc {
	return func(ctx context.Context, c kms.Caller, body []byte) (any, error) {
		var req api.MigrationRequest
		if err := decode(body, &req); err != nil {
			return nil, s.rejectWith(ctx, c, op, err)
		}
		if s.cfg.Migrator == nil {
			return nil, s.rejectWith(ctx, c, op, errNoMigrator)
		}
		if err := s.cfg.KMS.RequestMigrationControl(ctx, c, req.CampaignID, action); err != nil {
			return nil, err
		}
		if action == kms.ControlApprove { // dual control: a vote on the cutover request (gates.go)
			if a, err := s.cfg.KMS.CutoverVote(ctx, c, req.CampaignID); err != nil || a != nil {
				return s.cutoverVoted(ctx, c, req.CampaignID, a, err)
			}
		}
		if err := s.cfg.Migrator.SignalMigration(ctx, c, req.CampaignID, action); err != nil {
			return nil, err
		}
		return s.cfg.Migrator.MigrationStatus(ctx, c, req.CampaignID)
	}
}
