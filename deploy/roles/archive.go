package roles

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/rpc"
	"github.com/keyflow/keyflow/workflows"
)

// archiver adapts the workflow client to the services' Archiver.
type archiver struct {
	c   *workflows.Client
	log *slog.Logger
}

func (a archiver) domainError(what string, err error) error {
	var ke *kms.Error
	if errors.As(err, &ke) {
		return ke
	}
	a.log.Error(what+" workflow failed", "err", err)
	return &kms.Error{Code: kms.CodeInternal, Message: "failed to run the " + what + " workflow"}
}

func (a archiver) RunArchival(ctx context.Context, c kms.Caller, retention, interval time.Duration) (*rpc.ArchivalRun, error) {
	res, id, err := a.c.RunArchival(ctx, workflows.ArchivalParams{Tenant: c.Tenant, Principal: c.Principal, RequestID: c.RequestID, Retention: retention, Interval: interval})
	if err != nil {
		return nil, a.domainError("archival", err)
	}
	if res == nil {
		return &rpc.ArchivalRun{WorkflowID: id, Scheduled: true}, nil
	}
	return &rpc.ArchivalRun{WorkflowID: id, Archived: res.Archived, Failed: res.Failed}, nil
}

func (a archiver) StartRecovery(ctx context.Context, c kms.Caller, keyID string, version uint32) (string, error) {
	id, err := a.c.StartRecovery(ctx, workflows.RecoveryParams{Tenant: c.Tenant, KeyID: keyID, Version: version, Principal: c.Principal, RequestID: c.RequestID})
	if err != nil {
		return "", a.domainError("recovery", err)
	}
	return id, nil
}

func (a archiver) DecideRecovery(ctx context.Context, c kms.Caller, keyID string, version uint32, approve bool) (*rpc.RecoveryOutcome, error) {
	res, err := a.c.DecideRecovery(ctx, c.Tenant, keyID, version, workflows.RestoreDecision{Principal: c.Principal, RequestID: c.RequestID, Approve: approve})
	if err != nil {
		return nil, a.domainError("recovery", err)
	}
	return &rpc.RecoveryOutcome{Outcome: res.Outcome, DecidedBy: res.DecidedBy}, nil
}
