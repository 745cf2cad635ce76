package roles

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/rpc"
	"github.com/keyflow/keyflow/workflows"
)

// rotator adapts the workflow client to the services' Rotator.
type rotator struct {
	c   *workflows.Client
	log *slog.Logger
}

func (r rotator) Rotate(ctx context.Context, c kms.Caller, keyID string) (*rpc.RotateResult, error) {
	return r.rotate(ctx, c, workflows.RotateKeyParams{Tenant: c.Tenant, KeyID: keyID, Principal: c.Principal, RequestID: c.RequestID})
}

// The rotator is also an rpc.RewrapRotator: rotation with rewrap, and the
// progress of a key's rewrap workflow (docs/lifecycle.md, "Rotation and
// rewrap").
var _ rpc.RewrapRotator = rotator{}

// RotateAndRewrap rotates the key and then rewraps its registered data
// keys to the new primary version.
func (r rotator) RotateAndRewrap(ctx context.Context, c kms.Caller, keyID string) (*rpc.RotateResult, error) {
	return r.rotate(ctx, c, workflows.RotateKeyParams{Tenant: c.Tenant, KeyID: keyID, Principal: c.Principal, RequestID: c.RequestID, Rewrap: true})
}

// RewrapProgress queries the key's rewrap workflow.
func (r rotator) RewrapProgress(ctx context.Context, c kms.Caller, keyID string) (*api.RewrapStatusReply, error) {
	pr, id, err := r.c.RewrapProgress(ctx, c.Tenant, keyID)
	if err != nil {
		var ke *kms.Error
		if errors.As(err, &ke) {
			return nil, ke
		}
		r.log.Error("rewrap progress query failed", "key", kms.ResourceName(c.Tenant, keyID), "err", err)
		return nil, &kms.Error{Code: kms.CodeInternal, Message: "failed to query the rewrap workflow"}
	}
	return &api.RewrapStatusReply{KeyID: keyID, WorkflowID: id, Rewrapped: pr.Rewrapped, Failed: pr.Failed, Skipped: pr.Skipped, Done: pr.Done}, nil
}

// rotate runs the rotation workflow and reports it, with the counts of the
// rewrap that followed (asked for, or the key's policy).
func (r rotator) rotate(ctx context.Context, c kms.Caller, p workflows.RotateKeyParams) (*rpc.RotateResult, error) {
	res, id, err := r.c.RotateKey(ctx, p)
	if errors.Is(err, workflows.ErrStillRunning) {
		return &rpc.RotateResult{KeyID: p.KeyID, WorkflowID: id, Running: true}, nil
	}
	if err != nil {
		var ke *kms.Error
		if !errors.As(err, &ke) {
			r.log.Error("rotation workflow failed", "key", kms.ResourceName(c.Tenant, p.KeyID), "err", err)
			ke = &kms.Error{Code: kms.CodeInternal, Message: "failed to run the rotation workflow"}
		}
		if errors.Is(err, workflows.ErrRotationNotStarted) {
			return nil, fmt.Errorf("%w: %w", rpc.ErrRotationNotStarted, ke)
		}
		return nil, ke
	}
	out := &rpc.RotateResult{KeyID: res.KeyID, PreviousVersion: res.PreviousVersion, NewVersion: res.NewVersion, WorkflowID: id}
	if res.Rewrap != nil || res.RewrapProblem != "" {
		out.Rewrap = &api.RewrapCounts{WorkflowID: workflows.RewrapWorkflowID(c.Tenant, p.KeyID), Problem: res.RewrapProblem}
		if rw := res.Rewrap; rw != nil {
			out.Rewrap.Rewrapped, out.Rewrap.Failed, out.Rewrap.Skipped, out.Rewrap.Remaining = rw.Rewrapped, rw.Failed, rw.Skipped, rw.Remaining
		}
	}
	return out, nil
}
