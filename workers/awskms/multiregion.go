package awskms

import (
	"context"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
)

// AWS KMS multi-Region keys over keyflow's (docs/multi-region.md):
// CreateKey with MultiRegion=true, ReplicateKey, UpdatePrimaryRegion,
// DescribeKey's MultiRegionConfiguration, and ScheduleKeyDeletion and
// CancelKeyDeletion of a replica. The regions are keyflow's region names
// (the deployments' --region), also in the ARNs (the gateway's region is
// its deployment's, see New); the key ID is the same in every region.
//
// A replica's deletion: in AWS KMS, ScheduleKeyDeletion with the replica's
// ARN, sent to the replica's region, deletes the replica. In keyflow the
// primary's region decides a replica's deletion (kms.ScheduleReplicaDeletion)
// and carries it over the link, and a replica region refuses to schedule
// its own; a gateway cannot reach another region's API. So the primary
// region's gateway takes the replica's ARN (arn:aws:kms:<replica region>:
// ...:key/<id>, as DescribeKey's ReplicaKeys list it): ScheduleKeyDeletion
// and CancelKeyDeletion on such an ARN are the replica's deletion and its
// cancel (replicaDeletion); the same calls in the replica's region are
// refused with a message naming the primary's region. A key ARN of
// another region names no key for every other operation (NotFound, as
// in AWS).

func init() {
	operations["ReplicateKey"] = (*Server).replicateKey
	operations["UpdatePrimaryRegion"] = (*Server).updatePrimaryRegion
}

// MultiRegionKey is AWS's MultiRegionKey structure.
type MultiRegionKey struct {
	Arn    string `json:"Arn"`
	Region string `json:"Region"`
}

// MultiRegionConfiguration is AWS's structure of the same name.
type MultiRegionConfiguration struct {
	MultiRegionKeyType string           `json:"MultiRegionKeyType"`
	PrimaryKey         MultiRegionKey   `json:"PrimaryKey"`
	ReplicaKeys        []MultiRegionKey `json:"ReplicaKeys"`
}

// multiRegionConfig is m's configuration, nil for a single-region key.
func (s *Server) multiRegionConfig(c kms.Caller, m api.KeyMetadata) *MultiRegionConfiguration {
	if !m.MultiRegion {
		return nil
	}
	arn := func(region string) string { return regionKeyARN(region, c.Tenant, m.KeyID) }
	cfg := &MultiRegionConfiguration{MultiRegionKeyType: "REPLICA", PrimaryKey: MultiRegionKey{Arn: arn(m.PrimaryRegion), Region: m.PrimaryRegion}, ReplicaKeys: []MultiRegionKey{}}
	if s.kms != nil && s.kms.Region() == m.PrimaryRegion {
		cfg.MultiRegionKeyType = "PRIMARY"
	}
	for _, r := range m.Replicas {
		if r.State == string(kms.ReplicaDestroyed) {
			continue // AWS lists no deleted replica
		}
		cfg.ReplicaKeys = append(cfg.ReplicaKeys, MultiRegionKey{Arn: arn(r.Region), Region: r.Region})
	}
	return cfg
}

func (s *Server) replicateKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		KeyID                          string `json:"KeyId"`
		ReplicaRegion                  string `json:"ReplicaRegion"`
		Description                    string `json:"Description"`
		Policy                         string `json:"Policy"`
		BypassPolicyLockoutSafetyCheck bool   `json:"BypassPolicyLockoutSafetyCheck"`
		Tags                           []tag  `json:"Tags"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	if req.Policy != "" || len(req.Tags) > 0 || req.Description != "" {
		return nil, clientError("UnsupportedOperationException", "a keyflow replica takes its primary's metadata: Policy, Tags and Description are not set per replica")
	}
	ref, err := s.ref(c, req.KeyID)
	if err != nil {
		return nil, err
	}
	m, err := callAs[api.KeyMetadata](s, ctx, c, api.OpKeyReplicate, api.ReplicateKeyRequest{KeyID: ref, Region: req.ReplicaRegion})
	if err != nil {
		return nil, err
	}
	replica := s.metadata(c, m)
	replica.Arn = regionKeyARN(req.ReplicaRegion, c.Tenant, m.KeyID)
	if replica.MultiRegionConfiguration != nil {
		replica.MultiRegionConfiguration.MultiRegionKeyType = "REPLICA"
	}
	return map[string]any{"ReplicaKeyMetadata": replica, "ReplicaTags": []tag{}}, nil
}

func (s *Server) updatePrimaryRegion(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		KeyID         string `json:"KeyId"`
		PrimaryRegion string `json:"PrimaryRegion"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	ref, err := s.ref(c, req.KeyID)
	if err != nil {
		return nil, err
	}
	if _, err := s.call(ctx, c, api.OpKeyUpdatePrimaryRegion, api.ReplicateKeyRequest{KeyID: ref, Region: req.PrimaryRegion}); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// replicaDeletion is ScheduleKeyDeletion (window > 0 days, or 0 for
// AWS's default of 30) or CancelKeyDeletion (cancel) on the ARN of a
// replica region of keyID, sent to this (the primary's) region's gateway.
// The reply is AWS's, for the replica: its ARN and, when scheduled, its
// own deletion date.
func (s *Server) replicaDeletion(ctx context.Context, c kms.Caller, keyID, region string, window int, cancel bool) (any, error) {
	arn := regionKeyARN(region, c.Tenant, keyID)
	if cancel {
		if _, err := s.call(ctx, c, api.OpKeyCancelReplicaDeletion, api.ReplicateKeyRequest{KeyID: keyID, Region: region}); err != nil {
			return nil, err
		}
		return map[string]any{"KeyId": arn}, nil
	}
	if window == 0 {
		window = 30
	}
	m, err := callAs[api.KeyMetadata](s, ctx, c, api.OpKeyReplicaDeletion, api.ReplicaDeletionRequest{KeyID: keyID, Region: region, PendingWindowInDays: window})
	if err != nil {
		return nil, err
	}
	out := map[string]any{"KeyId": arn, "KeyState": "PendingDeletion", "PendingWindowInDays": window}
	for _, r := range m.Replicas {
		if r.Region == region {
			out["DeletionDate"] = epoch(r.DeletionDate)
		}
	}
	return out, nil
}
