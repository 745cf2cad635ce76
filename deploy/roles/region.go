package roles

import (
	"github.com/keyflow/keyflow/region"
	"github.com/keyflow/keyflow/workflows"
)

// startRegion makes the lifecycle role a member of a multi-region
// deployment (docs/multi-region.md): it answers the other regions'
// replication requests and sends this region's over the link.
func (n *Node) startRegion(acts *workflows.Activities, name string) error {
	if name == "" {
		return nil
	}
	cfg := region.ResponderConfig{Conn: n.Conn, KMS: n.KMS, Logger: n.infra.Logger}
	if n.Workflows != nil {
		// A replica's scheduled deletion runs on this region's Temporal.
		cfg.Deletions = n.Workflows
	}
	r, err := region.Serve(cfg)
	if err != nil {
		return err
	}
	n.closers = append(n.closers, r.Stop)
	acts.Replicas = &region.Peer{Conn: n.Conn, From: name}
	return nil
}
