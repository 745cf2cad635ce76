package rpc

import (
	"context"
	"time"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
)

// Multi-region keys (docs/multi-region.md). The operations change the
// key on its primary and then tell the lifecycle (Config.Lifecycle), which
// starts the replication workflow that carries the change to the other
// regions.

func (s *Server) replicateKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.ReplicateKeyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyReplicate, err)
	}
	k, err := s.cfg.KMS.ReplicateKey(ctx, c, kms.ReplicateKeyParams{KeyRef: req.KeyID, Region: req.Region})
	if err != nil {
		return nil, err
	}
	return s.replicaChanged(ctx, c, k)
}

func (s *Server) updatePrimaryRegion(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	return s.regionChange(ctx, c, body, api.OpKeyUpdatePrimaryRegion, s.cfg.KMS.UpdatePrimaryRegion)
}

func (s *Server) cancelReplicaDeletion(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	return s.regionChange(ctx, c, body, api.OpKeyCancelReplicaDeletion, s.cfg.KMS.CancelReplicaDeletion)
}

// regionChange is an operation on a ReplicateKeyRequest (a key and a
// region) that changes the key on its primary.
func (s *Server) regionChange(ctx context.Context, c kms.Caller, body []byte, op string, change func(ctx context.Context, c kms.Caller, ref, region string) (*kms.Key, error)) (any, error) {
	var req api.ReplicateKeyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, op, err)
	}
	k, err := change(ctx, c, req.KeyID, req.Region)
	if err != nil {
		return nil, err
	}
	return s.replicaChanged(ctx, c, k)
}

func (s *Server) replicaDeletion(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.ReplicaDeletionRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyReplicaDeletion, err)
	}
	k, err := s.cfg.KMS.ScheduleReplicaDeletion(ctx, c, req.KeyID, req.Region, time.Duration(req.PendingWindowInDays)*kms.Day)
	if err != nil {
		return nil, err
	}
	return s.replicaChanged(ctx, c, k)
}

func (s *Server) replicaChanged(ctx context.Context, c kms.Caller, k *kms.Key) (any, error) {
	if err := s.keyChanged(ctx, c, k); err != nil {
		return nil, err
	}
	return Metadata(k), nil
}

// replicaMetadata adds a multi-region key's regions to its wire form.
func replicaMetadata(m *api.KeyMetadata, k *kms.Key) {
	if !k.MultiRegion {
		return
	}
	m.MultiRegion, m.PrimaryRegion = true, k.PrimaryRegion
	for _, r := range k.Replicas {
		m.Replicas = append(m.Replicas, api.ReplicaMetadata{Region: r.Region, State: string(r.State), LastSyncedVersion: r.LastSyncedVersion, DeletionDate: r.DeletionDate})
	}
}
