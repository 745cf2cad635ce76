package kmip

import (
	"context"
	"fmt"
	"time"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/kmip/ttlv"
)

// Activate, Revoke, Destroy and Re-key: KMIP's lifecycle operations on
// keyflow's SP 800-57 transitions.

func (s *Server) activate(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	id, err := s.authorizedKey(ctx, cl, p)
	if err != nil {
		return ttlv.Item{}, err
	}
	res, err := s.o.KMS.SetState(ctx, cl.c, kms.SetStateParams{KeyRef: id, To: kms.StateActive, Reason: "KMIP Activate"})
	if err != nil {
		return ttlv.Item{}, err
	}
	return payload(ttlv.Text(tagUniqueIdentifier, res.Key.ID)), nil
}

// revoke maps KMIP's revocation reasons onto keyflow transitions: Key
// Compromise and CA Compromise record a compromise of the primary version
// (which starts remediation); every other reason deactivates the key.
func (s *Server) revoke(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	id, err := uid(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	rr := p.Find(tagRevocationReason)
	code, ok := rr.EnumOf(tagRevocationReasonCode)
	if !ok {
		return ttlv.Item{}, missing("Revocation Reason")
	}
	msg, _ := rr.TextOf(tagRevocationMessage)
	reason := fmt.Sprintf("KMIP Revoke (reason 0x%02x) %s", code, msg)
	if err := s.authorize(ctx, cl, cl.op, id); err != nil {
		return ttlv.Item{}, err
	}
	var res *kms.SetStateResult
	if code == revokeKeyCompromise || code == revokeCACompromise {
		res, err = s.o.KMS.Compromise(ctx, cl.c, kms.CompromiseParams{KeyRef: id, Reason: reason})
	} else {
		res, err = s.o.KMS.SetState(ctx, cl.c, kms.SetStateParams{KeyRef: id, To: kms.StateDeactivated, Reason: reason})
	}
	if err != nil {
		return ttlv.Item{}, err
	}
	return payload(ttlv.Text(tagUniqueIdentifier, res.Key.ID)), nil
}

// destroy schedules the key's destruction with the tenant's shortest
// deletion window; the deletion workflow destroys every copy of the
// material when it ends (keyflow never destroys material at once).
func (s *Server) destroy(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	id, err := s.authorizedKey(ctx, cl, p)
	if err != nil {
		return ttlv.Item{}, err
	}
	if s.o.Lifecycle == nil {
		return ttlv.Item{}, &opError{reasonGeneralFailure, "destruction needs the lifecycle workflows, which this server has not"}
	}
	window := kms.MinDeletionWindow
	if pol, err := s.o.KMS.TenantPolicyFor(ctx, cl.c.Tenant); err == nil && pol != nil && pol.MinDeletionWindowDays > 0 {
		window = time.Duration(pol.MinDeletionWindowDays) * kms.Day
	}
	sp := kms.ScheduleDeletionParams{KeyRef: id, Window: window}
	if s.o.KMS.NeedsApproval(ctx, cl.c, kms.ApprovalScheduleDeletion) {
		// Dual control, as on NATS: the approval workflow schedules the
		// deletion once approvers agree.
		target, err := s.o.KMS.PrepareScheduleDeletion(ctx, cl.c, sp)
		if err != nil {
			return ttlv.Item{}, err
		}
		if err := s.approvalGate(ctx, cl.c, kms.ApprovalScheduleDeletion, target); err != nil {
			return ttlv.Item{}, err
		}
	}
	k, err := s.o.KMS.ScheduleDeletion(ctx, cl.c, sp)
	if err != nil {
		return ttlv.Item{}, err
	}
	if _, err := s.o.Lifecycle.ScheduleDeletion(ctx, cl.c, k); err != nil {
		return ttlv.Item{}, &opError{reasonGeneralFailure, "the deletion is recorded but its workflow did not start; retry Destroy"}
	}
	return payload(ttlv.Text(tagUniqueIdentifier, k.ID)), nil
}

// approvalGate asks for dual control where the tenant policy wants it: a
// pending approval is refused with its ID (the approval workflow runs the
// operation once approvers agree).
func (s *Server) approvalGate(ctx context.Context, c kms.Caller, kind kms.ApprovalKind, target string) error {
	id, pending, err := s.o.KMS.RequireApproval(ctx, c, kind, target)
	if err != nil {
		return err
	}
	if pending {
		return kms.PendingApprovalError(id)
	}
	return nil
}

// rekey rotates the key: a new version becomes primary, old ciphertexts
// still decrypt. keyflow keeps the key's ID across versions, so the
// Unique Identifier returned is the same (KMIP's Re-key makes a new
// object; see docs/kmip.md).
func (s *Server) rekey(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	id, err := s.authorizedKey(ctx, cl, p)
	if err != nil {
		return ttlv.Item{}, err
	}
	if s.o.Rotator == nil {
		return ttlv.Item{}, &opError{reasonGeneralFailure, "rotation needs the lifecycle workflows, which this server has not"}
	}
	keyID, err := s.o.KMS.RequestRotation(ctx, cl.c, id)
	if err != nil {
		return ttlv.Item{}, err
	}
	if s.o.KMS.NeedsApproval(ctx, cl.c, kms.ApprovalRotate) {
		if err := s.approvalGate(ctx, cl.c, kms.ApprovalRotate, keyID); err != nil {
			return ttlv.Item{}, err
		}
	}
	if _, err := s.o.Rotator(ctx, cl.c, keyID); err != nil {
		return ttlv.Item{}, s.o.KMS.RecordRotationFailed(ctx, cl.c, keyID, err)
	}
	if k, err := s.o.KMS.GetKey(ctx, cl.c, keyID); err == nil {
		s.keyChanged(ctx, cl.c, k) // the new version's cryptoperiod timer
	}
	return payload(ttlv.Text(tagUniqueIdentifier, keyID)), nil
}
