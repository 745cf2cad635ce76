package rpc

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
)

// ImportExpirer schedules the deletion of imported key material at its
// validTo (a Temporal workflow with a durable timer, in production).
type ImportExpirer interface {
	// ScheduleExpiry starts the timer for one import and returns its
	// workflow ID.
	ScheduleExpiry(ctx context.Context, c kms.Caller, keyID, importID string, validTo time.Time) (string, error)
}

func (s *Server) importParams(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.ImportParamsRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyImportParams, err)
	}
	res, err := s.cfg.KMS.GetParametersForImport(ctx, c, kms.GetImportParamsParams{
		KeyRef: req.KeyID, Algorithm: kms.WrappingAlgorithm(req.WrappingAlgorithm), Spec: kms.WrappingKeySpec(req.WrappingKeySpec),
	})
	if err != nil {
		return nil, err
	}
	return api.ImportParamsReply{
		KeyID: res.KeyID, WrappingAlgorithm: string(res.Algorithm), WrappingKeySpec: string(res.Spec),
		PublicKey: res.PublicKey, ImportToken: res.ImportToken, ParametersValidTo: res.ValidTo,
	}, nil
}

// importKey imports material. With a validTo, the material's expiry must
// be scheduled: if that fails, the import just made is undone (only that
// import: ExpireImportedKeyMaterial names it), so no material ever lives
// past its validTo without a timer.
//
// Dual control: kms.Service.SetImportApprover is the hook; the service
// calls it inside ImportKeyMaterial, before the HSM is touched.
func (s *Server) importKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.ImportRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyImport, err)
	}
	p := kms.ImportParams{
		KeyRef: req.KeyID, WrappedMaterial: req.EncryptedKeyMaterial, ImportToken: req.ImportToken,
		Algorithm: kms.WrappingAlgorithm(req.WrappingAlgorithm), ImportID: uuid.NewString(),
	}
	if req.ValidTo != nil {
		if s.cfg.Imports == nil {
			return nil, s.rejectWith(ctx, c, api.OpKeyImport, &kms.Error{Code: kms.CodeUnsupportedOperation, Message: "expiring key material needs the lifecycle workflows, which this worker does not run; import without validTo"})
		}
		p.ValidTo = *req.ValidTo
	}
	res, err := s.cfg.KMS.ImportKeyMaterial(ctx, c, p)
	if err != nil {
		return nil, err
	}
	reply := api.ImportReply{KeyMetadata: Metadata(res.Key), ImportID: res.ImportID, Reimport: res.Reimport}
	if req.ValidTo != nil {
		id, err := s.cfg.Imports.ScheduleExpiry(ctx, c, res.Key.ID, res.ImportID, p.ValidTo)
		if err != nil {
			s.cfg.Logger.Error("failed to schedule the expiry of imported key material; undoing the import", "key", res.Key.ResourceName(), "err", err)
			undo := c
			undo.IdempotencyKey = c.Tenant + "/" + res.Key.ID + "/import/" + res.ImportID + "/undo"
			if _, uerr := s.cfg.KMS.ExpireImportedKeyMaterial(context.WithoutCancel(ctx), undo, kms.ExpireImportParams{KeyID: res.Key.ID, ImportID: res.ImportID}); uerr != nil {
				s.cfg.Logger.Error("FAILED TO UNDO an import whose expiry is not scheduled: delete its material by hand", "key", res.Key.ResourceName(), "importId", res.ImportID, "err", uerr)
			}
			return nil, &kms.Error{Code: kms.CodeInternal, Message: "failed to schedule the expiry of the key material, so the import was undone; retry"}
		}
		reply.WorkflowID = id
	}
	return reply, nil
}

func (s *Server) deleteImport(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.KeyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyDeleteImport, err)
	}
	k, err := s.cfg.KMS.DeleteImportedKeyMaterial(ctx, c, req.KeyID)
	if err != nil {
		return nil, err
	}
	return Metadata(k), nil
}

// importMetadata adds origin and expiry to a key's wire form.
func importMetadata(k *kms.Key, m *api.KeyMetadata) {
	m.Origin = string(k.KeyOrigin())
	if k.Import != nil && k.Import.ExpirationModel != "" {
		m.ExpirationModel = string(k.Import.ExpirationModel)
		if !k.Import.ValidTo.IsZero() {
			t := k.Import.ValidTo
			m.ValidTo = &t
		}
	}
}
