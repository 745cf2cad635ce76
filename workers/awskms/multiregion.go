package awskms

import (
	"context"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
)

// AWS KMS multi-Region keys over keyflow's (docs/multi-region.md):
// CreateKey with MultiRegion=true, ReplicateKey, UpdatePrimaryRegion and
// DescribeKey's MultiRegionConfiguration. The regions are keyflow's
// region names (the deployments' --region), also in the ARNs of the
// configuration; the key ID is the same in every region.

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
	arn := func(region string) string {
		return "arn:aws:kms:" + region + ":" + AccountID(c.Tenant) + ":key/" + m.KeyID
	}
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
	replica.Arn = "arn:aws:kms:" + req.ReplicaRegion + ":" + AccountID(c.Tenant) + ":key/" + m.KeyID
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
