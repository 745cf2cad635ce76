package devstack

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/kms"
)

// RegionLinkCredsFile is written under the data dir of a deployment that
// accepts region links (Config.LeafListen): the creds another region's
// `keyflow dev --link-creds` presents. They allow only the replication
// subjects (natsauth.RegionSubjects).
const RegionLinkCredsFile = natsserver.RegionLinkCredsName

// regionConfig turns the region flags into the NATS server's leaf-node
// configuration (docs/multi-region.md).
func regionConfig(cfg Config, n *natsserver.Config) error {
	if cfg.Region == "" {
		if cfg.LeafListen != "" || cfg.LinkTo != "" {
			return errors.New("devstack: a region link needs a region name (--region)")
		}
		return nil
	}
	if !kms.ValidRegion(cfg.Region) {
		return fmt.Errorf("devstack: %q is not a region name ([a-z0-9-], 1-63 characters)", cfg.Region)
	}
	n.JetStreamDomain, n.LeafListen = cfg.Region, cfg.LeafListen
	if cfg.LinkTo != "" {
		if cfg.LinkCreds == "" {
			return errors.New("devstack: --link-to needs --link-creds (the other region's region-link.creds)")
		}
		abs, err := filepath.Abs(cfg.LinkCreds)
		if err != nil {
			return fmt.Errorf("devstack: failed to resolve %s: %w", cfg.LinkCreds, err)
		}
		n.LeafRemotes = []natsserver.LeafRemote{{URL: cfg.LinkTo, CredentialsFile: abs}}
	}
	return nil
}

// writeLinkCreds writes DIR/region-link.creds when the stack accepts links.
func (s *Stack) writeLinkCreds() error {
	if s.cfg.LeafListen == "" {
		return nil
	}
	creds, err := s.Identity.RegionLinkCreds("region-link")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.cfg.DataDir, RegionLinkCredsFile), creds, 0o600); err != nil {
		return fmt.Errorf("failed to write %s: %w", RegionLinkCredsFile, err)
	}
	return nil
}

// LeafURL is where other regions link to this stack ("" when it does not
// accept links).
func (s *Stack) LeafURL() string { return natsserver.LeafURL(s.NATS) }
