package roles

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/rpc"
	"github.com/keyflow/keyflow/workflows"
)

// migrator adapts the workflow client to the services' Migrator.
type migrator struct {
	c   *workflows.Client
	log *slog.Logger
}

var _ rpc.Migrator = migrator{}

func (m migrator) StartMigration(ctx context.Context, c kms.Caller, req api.MigrationStartRequest) (*api.MigrationStatus, error) {
	p := workflows.MigrationParams{
		CampaignID: req.CampaignID, Tenant: c.Tenant, Principal: c.Principal, RequestID: c.RequestID,
		GracePeriod:       time.Duration(req.GracePeriodSeconds) * time.Second,
		DualSigningPeriod: time.Duration(req.DualSigningSeconds) * time.Second,
		BatchSize:         req.BatchSize,
	}
	for _, k := range req.Keys {
		p.Keys = append(p.Keys, workflows.MigrationKey{SourceKeyID: k.KeyID, TargetSpec: k.TargetKeySpec})
	}
	if _, err := m.c.StartMigration(ctx, p); err != nil {
		return nil, m.domain("start", err)
	}
	return m.MigrationStatus(ctx, c, req.CampaignID)
}

func (m migrator) SignalMigration(ctx context.Context, c kms.Caller, campaignID, action string) error {
	signal := map[string]string{
		kms.ControlPause: workflows.SignalPause, kms.ControlResume: workflows.SignalResume,
		kms.ControlRollback: workflows.SignalRollback, kms.ControlApprove: workflows.SignalApprove,
	}[action]
	err := m.c.SignalMigration(ctx, c.Tenant, campaignID, signal, workflows.ControlSignal{Principal: c.Principal, RequestID: c.RequestID})
	return m.domain("signal", err)
}

func (m migrator) MigrationStatus(ctx context.Context, c kms.Caller, campaignID string) (*api.MigrationStatus, error) {
	s, err := m.c.MigrationStatus(ctx, c.Tenant, campaignID)
	if err != nil {
		return nil, m.domain("query", err)
	}
	out := &api.MigrationStatus{
		CampaignID: s.CampaignID, WorkflowID: workflows.MigrationWorkflowID(c.Tenant, campaignID), Phase: s.Phase,
		Paused: s.Paused, Done: s.Done, Approvals: []string{}, RequiredApprovals: s.RequiredApprovals,
		Keys: make([]api.MigrationKeyStatus, 0, len(s.Keys)), Total: s.Total, Rewrapped: s.Rewrapped, Failed: s.Failed,
		Skipped: s.Skipped, RatePerSecond: s.RatePerSecond, EtaSeconds: s.ETASeconds, StartedAt: s.StartedAt,
		GraceEndsAt: s.GraceEndsAt, Error: s.Error,
	}
	for _, a := range s.Approvals {
		out.Approvals = append(out.Approvals, a.Principal)
	}
	for _, k := range s.Keys {
		out.Keys = append(out.Keys, api.MigrationKeyStatus{
			SourceKeyID: k.SourceKeyID, TargetKeyID: k.TargetKeyID, TargetKeySpec: k.TargetSpec, Signing: k.Signing,
			Total: k.Total, Rewrapped: k.Rewrapped, Failed: k.Failed, Skipped: k.Skipped, Retired: k.Retired, RetireBlocked: k.RetireBlocked,
		})
	}
	return out, nil
}

// domain keeps keyflow errors and hides Temporal's.
func (m migrator) domain(what string, err error) error {
	if err == nil {
		return nil
	}
	var ke *kms.Error
	if errors.As(err, &ke) {
		return ke
	}
	m.log.Error("migration workflow call failed", "call", what, "err", err)
	return &kms.Error{Code: kms.CodeInternal, Message: "failed to " + what + " the migration campaign"}
}
