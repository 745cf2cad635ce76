package roles

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/region"
	"github.com/keyflow/keyflow/workflows"
)

// checkRegionDomain refuses to start a region (Options.Region) whose
// JetStream is not in the domain named after it. The dev stack sets its
// embedded server's domain itself; a production deployment's nats-servers
// need jetstream { domain: NAME }. One domain per region keeps each
// region's JetStream addressable apart across the leaf link
// ($JS.<domain>.API, and the sourcing across domains that NATS offers),
// and the check proves that the process talks to its own region's
// servers, not to another region's by a wrong URL.
func checkRegionDomain(ctx context.Context, js jetstream.JetStream, name string) error {
	if name == "" {
		return nil
	}
	if !kms.ValidRegion(name) {
		return fmt.Errorf("roles: %q is not a region name ([a-z0-9-], 1-63 characters)", name)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := js.AccountInfo(ctx)
	if err != nil {
		return fmt.Errorf("region %s: failed to read the NATS server's JetStream domain: %w", name, err)
	}
	if info.Domain != name {
		return fmt.Errorf("region %s: the NATS server's JetStream domain is %q, and a region's must be its name: set jetstream { domain: %s } in every nats-server of this deployment (docs/multi-region.md)", name, info.Domain, name)
	}
	return nil
}

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
		// A region whose link comes back wakes the syncs towards it.
		cfg.Wake = n.Workflows
	}
	r, err := region.Serve(cfg)
	if err != nil {
		return err
	}
	n.closers = append(n.closers, r.Stop)
	acts.Replicas = &region.Peer{Conn: n.Conn, From: name}
	return nil
}
