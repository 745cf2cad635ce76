package workflows

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/keyflow/keyflow/kms"
)

// Authorization tokens on signals and updates (kms/optoken.go).
//
// Every signal or update that changes security state carries a
// kms.OpToken: approval votes (UpdateApprove, UpdateDeny), a campaign's
// SignalPause, SignalResume, SignalRollback and SignalApprove, a
// deletion's SignalCancel and a recovery's SignalRestoreDecision. The
// senders in this package (Client, ApprovalEngine, and the approval
// workflow for a cutover) mint it through a TokenMinter, on the request
// path after kms.Authorize. The receiving workflow checks it with the
// CheckOpToken local activity before it acts, so the check is recorded
// in history and replays deterministically; a refusal is audited by the
// activity and the signal is ignored (an update fails). A token is
// single-use within a run (tokenLedger) and refused in a later run under
// the same workflow ID.

// TokenMinter mints operation tokens; *kms.Service is one.
type TokenMinter interface {
	MintOpToken(ctx context.Context, c kms.Caller, workflowID, operation, detail string) (*kms.OpToken, error)
}

// opTokenVersion gates the checks for runs started before tokens
// existed: they finish under the old rules.
const opTokenVersion = "op-token"

// tokensRequired reports whether this run checks tokens (every run
// started by this code does). Call it once, at the start of the run.
func tokensRequired(ctx workflow.Context) bool {
	return workflow.GetVersion(ctx, opTokenVersion, workflow.DefaultVersion, 1) >= 1
}

// spentToken is one token used in this run, kept until it expires.
type spentToken struct {
	MAC     []byte
	Expires time.Time
}

// tokenLedger is a run's record of the tokens it accepted, so a token
// copied out of history cannot be used again. Campaigns carry it across
// continue-as-new in their state.
type tokenLedger struct {
	Spent []spentToken `json:",omitempty"`
}

func (l *tokenLedger) spent(t *kms.OpToken) bool {
	if t == nil {
		return false
	}
	for _, s := range l.Spent {
		if bytes.Equal(s.MAC, t.MAC) {
			return true
		}
	}
	return false
}

// spend records t and forgets the tokens that expired by now.
func (l *tokenLedger) spend(t *kms.OpToken, now time.Time) {
	out := l.Spent[:0]
	for _, s := range l.Spent {
		if now.Before(s.Expires) {
			out = append(out, s)
		}
	}
	l.Spent = append(out, spentToken{MAC: t.MAC, Expires: t.Expires})
}

// tokenRequest is what a received signal or update claims.
type tokenRequest struct {
	Tenant, Principal, Operation, Detail string
	Token                                *kms.OpToken
}

// authorize checks a signal's or update's token with the CheckOpToken
// local activity and spends it. It reports false for a refused token (the
// activity recorded the attempt) and when the check itself could not be
// made (fail closed; the sender may retry).
//
// notBefore is when the workflow's life began (its run's start, or a
// campaign's first run's): older tokens were minted for an earlier
// workflow under the same ID.
func (l *tokenLedger) authorize(ctx workflow.Context, r tokenRequest, notBefore time.Time) bool {
	info := workflow.GetInfo(ctx)
	chk := kms.OpTokenCheck{WorkflowID: info.WorkflowExecution.ID, Operation: r.Operation, Tenant: r.Tenant,
		Principal: r.Principal, Detail: r.Detail, Token: r.Token, NotBefore: notBefore, Replayed: l.spent(r.Token)}
	lctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 10 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: 100 * time.Millisecond, MaximumAttempts: 5},
	})
	var a *Activities
	var ok bool
	if err := workflow.ExecuteLocalActivity(lctx, a.CheckOpToken, chk).Get(ctx, &ok); err != nil || !ok {
		return false
	}
	l.spend(r.Token, workflow.Now(ctx))
	return true
}

// refusedUpdate is what an update with a refused token returns.
func refusedUpdate(op string) error {
	return temporal.NewApplicationError("the "+op+" request carries no valid keyflow authorization token; use keyflow's API", string(kms.CodeAccessDenied))
}

// CheckOpToken verifies a token (kms.Service.VerifyOpToken): true when it
// authorizes the request; false when it was refused and the refusal
// recorded. Other errors (HSM, audit) are returned for a retry.
func (a *Activities) CheckOpToken(ctx context.Context, chk kms.OpTokenCheck) (bool, error) {
	info := activity.GetInfo(ctx)
	chk.IdempotencyKey = fmt.Sprintf("optoken/%s/%s", info.WorkflowExecution.RunID, info.ActivityID)
	err := a.KMS.VerifyOpToken(ctx, chk)
	switch {
	case err == nil:
		return true, nil
	case kms.CodeOf(err) == kms.CodeAccessDenied:
		return false, nil
	default:
		return false, err
	}
}

// mint is a sender's token.
func mint(ctx context.Context, m TokenMinter, c kms.Caller, workflowID, op, detail string) (*kms.OpToken, error) {
	if m == nil {
		return nil, &kms.Error{Code: kms.CodeInternal, Message: "this worker cannot authorize workflow signals (no token minter)"}
	}
	t, err := m.MintOpToken(ctx, c, workflowID, op, detail)
	if err != nil {
		return nil, fmt.Errorf("failed to mint the authorization token: %w", err)
	}
	return t, nil
}
