package kms

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"time"

	"github.com/keyflow/keyflow/events"
)

// Operation tokens: the authorization a security-relevant Temporal signal
// or update carries.
//
// Temporal is not a trust boundary: whoever reaches its frontend can
// signal or update any workflow. So every signal or update that changes
// security state (an approval vote, a campaign's pause, resume, rollback
// or cutover approval, a deletion's cancellation, a restore decision)
// carries an OpToken that keyflow mints on the request path, after
// kms.Authorize accepted the caller, and that the workflow checks
// (VerifyOpToken, from a local activity) before it acts. The token is an
// HMAC-SHA256, computed in the HSM under a deployment key that never
// leaves it (systemMAC), over public fields only: the workflow ID, the
// operation, the tenant, the principal and an expiry. It holds no secret,
// so it may sit in workflow history; and it cannot be forged by someone
// with Temporal access alone, since that needs the HSM.

// OpTokenTTL is how long a minted token is accepted. A signal waits in
// Temporal until a worker processes it, so the window covers a short
// worker outage; a token is bound to one workflow, operation and
// principal, so a replay within the window can only repeat what that
// principal was allowed to do there.
const OpTokenTTL = 10 * time.Minute

// opTokenSkew is the clock difference tolerated between the host that
// minted a token and the Temporal server that stamped the run's start.
const opTokenSkew = time.Second

// OpToken authorizes one operation on one workflow for one principal.
type OpToken struct {
	WorkflowID string
	Operation  string
	Tenant     string
	Principal  string
	// Detail binds what else the payload says that matters (a cutover
	// signal's approval ID), so a token copied out of history cannot
	// carry a changed payload.
	Detail  string `json:",omitempty"`
	Expires time.Time
	MAC     []byte
}

var opTokenLabel = []byte("keyflow/op-token/v1\x00")

// opTokenPayload is the canonical, length-prefixed encoding of a token's
// fields (no field can bleed into the next).
func opTokenPayload(t *OpToken) []byte {
	var b []byte
	for _, f := range []string{t.WorkflowID, t.Operation, t.Tenant, t.Principal, t.Detail} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return binary.BigEndian.AppendUint64(b, uint64(t.Expires.UnixNano()))
}

// MintOpToken issues a token for c to perform operation on workflowID. The
// caller must have authorized c for the operation (kms.Authorize and the
// operation's own checks) first: minting checks nothing but the caller's
// shape.
func (s *Service) MintOpToken(ctx context.Context, c Caller, workflowID, operation, detail string) (*OpToken, error) {
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	t := &OpToken{WorkflowID: workflowID, Operation: operation, Tenant: c.Tenant, Principal: c.Principal, Detail: detail,
		Expires: s.now().Add(OpTokenTTL).UTC().Truncate(time.Millisecond)}
	mac, err := s.systemMAC(ctx, opTokenKeyID, opTokenLabel, opTokenPayload(t))
	if err != nil {
		return nil, err
	}
	t.MAC = mac
	return t, nil
}

// OpTokenCheck is what a workflow expects of the token a signal or update
// carried: its own ID, the operation, and the tenant and principal the
// payload names (unverified until the token matches them).
type OpTokenCheck struct {
	WorkflowID string
	Operation  string
	Tenant     string
	Principal  string
	Detail     string
	Token      *OpToken
	// NotBefore is the workflow run's start: a token minted before it
	// was meant for an earlier run under the same ID.
	NotBefore time.Time
	// Replayed is set by the workflow when this token was already used
	// in this run (tokens are single-use; the workflow keeps the ledger).
	Replayed bool
	// IdempotencyKey makes the refusal record's ID stable across retries.
	IdempotencyKey string
}

// VerifyOpToken checks a token against what the workflow expects. A
// refusal is recorded (io.keyflow.workflow.signal.refused.v1, outcome
// denied, principal "unauthenticated": the named principal is only a
// claim) and returned as AccessDeniedException; every kind of bad token
// is the same error to the sender. An error that is not AccessDenied
// (the HSM or the audit trail unavailable) means nothing was decided.
func (s *Service) VerifyOpToken(ctx context.Context, chk OpTokenCheck) error {
	reason := s.opTokenFault(ctx, chk)
	if reason == "" {
		return nil
	}
	if reason == "internal" {
		return newError(CodeInternal, "the authorization token could not be checked")
	}
	refused := newError(CodeAccessDenied, "the %s request to workflow %s carries no valid keyflow authorization token; it was ignored and recorded",
		truncate(chk.Operation, 64), truncate(chk.WorkflowID, 256))
	c := Caller{Tenant: chk.Tenant, Principal: "unauthenticated", IdempotencyKey: chk.IdempotencyKey}
	data := map[string]any{"workflowId": truncate(chk.WorkflowID, 256), "operation": truncate(chk.Operation, 64),
		"claimedPrincipal": truncate(chk.Principal, 128), "reason": reason}
	// No subject: a workflow is not a resource name (the ID is in data).
	return s.emit(ctx, c, events.TypeWorkflowSignalRefused, "", data, refused)
}

// opTokenFault names what is wrong with a token ("" when it is valid).
// The MAC is compared in constant time, and only after the cheap checks.
func (s *Service) opTokenFault(ctx context.Context, chk OpTokenCheck) string {
	t := chk.Token
	switch {
	case t == nil || len(t.MAC) == 0:
		return "missing"
	case t.WorkflowID != chk.WorkflowID || t.Operation != chk.Operation || t.Tenant != chk.Tenant ||
		t.Principal != chk.Principal || t.Detail != chk.Detail:
		return "mismatch"
	case !s.now().Before(t.Expires):
		return "expired"
	case chk.Replayed || t.Expires.Add(-OpTokenTTL).Before(chk.NotBefore.Add(-opTokenSkew)):
		return "replayed"
	}
	want, err := s.systemMAC(ctx, opTokenKeyID, opTokenLabel, opTokenPayload(t))
	if err != nil {
		s.log.Error("operation token not checked", "err", err)
		return "internal"
	}
	if subtle.ConstantTimeCompare(want, t.MAC) != 1 {
		return "forged"
	}
	return ""
}
