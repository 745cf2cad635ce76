package natsserver

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/keyflow/keyflow/kms"
)

// RegionConfName is the file `keyflow region nats-config` writes: the
// region link of a production deployment, for every nats-server of it to
// include.
const RegionConfName = "nats-region.conf"

// RegionLinkCredsName is the file of a region link's creds, which the
// region that accepts links writes for the others (keyflow dev
// --leaf-listen, keyflow region nats-config --leaf-listen).
const RegionLinkCredsName = "region-link.creds"

// RegionLink is a region link in production (docs/multi-region.md): what
// Config's JetStreamDomain, LeafListen and LeafRemotes do for the
// embedded server of `keyflow dev`, written as nats-server configuration
// by RegionConf.
type RegionLink struct {
	// Region is the deployment's region name, its JetStream domain.
	Region string
	// LeafListen is host:port where other regions' servers connect.
	LeafListen string
	// Remotes are the other regions this one links to. Each needs the
	// local keyflow account (LocalAccount, the public key of the
	// service account: natsauth.Identity.ServiceAccount) and the path of
	// the link creds as the nats-server host sees it.
	Remotes []LeafRemote
}

// RegionConf is the nats-server configuration of a region link: a
// leafnodes block with the listener and the remotes, preceded by what the
// operator changes by hand (the JetStream domain, which lives in the
// server's own jetstream block, and unique server names).
func RegionConf(l RegionLink) (string, error) {
	if !kms.ValidRegion(l.Region) {
		return "", fmt.Errorf("%q is not a region name (lower-case letters, digits and '-', 1 to 63 characters, e.g. eu-west)", l.Region)
	}
	if l.LeafListen == "" && len(l.Remotes) == 0 {
		return "", errors.New("a region link needs a leaf listener (this region accepts links), a remote (it links to another), or both")
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# keyflow region %[1]s: the region link of every nats-server of this
# deployment (keyflow region nats-config; docs/multi-region.md).
# In each server's configuration:
#   1. the jetstream block names the region as the JetStream domain
#        jetstream { store_dir: ..., domain: %[1]s }
#      (keyflow serve with region.name %[1]s refuses to start without it);
#   2. server_name is unique across all linked regions (e.g. %[1]s-nats-0);
#   3. this file is included:  include "%[2]s"
# The link carries only kf.region.v1.> and its replies: the permissions
# of the link user in the creds.
leafnodes {
`, l.Region, RegionConfName)
	if l.LeafListen != "" {
		host, port, err := net.SplitHostPort(l.LeafListen)
		if p, perr := strconv.Atoi(port); err != nil || perr != nil || p < 1 || p > 65535 {
			return "", fmt.Errorf("leaf listen address %q is not host:port (e.g. 0.0.0.0:7422)", l.LeafListen)
		}
		fmt.Fprintf(&b, `  # Other regions' servers connect here with this region's region-link.creds.
  # Across networks, add TLS: tls { cert_file: "...", key_file: "..." }
  listen: %q
  # They dial this address only, never the cluster's own addresses.
  no_advertise: true
`, net.JoinHostPort(host, port))
	}
	if len(l.Remotes) > 0 {
		b.WriteString("  # Links to other regions, as their link user, bound to this deployment's\n  # keyflow account.\n  remotes: [\n")
		for _, r := range l.Remotes {
			u, err := url.Parse(r.URL)
			if err != nil || u.Host == "" || !strings.HasPrefix(u.Scheme, "nats") && u.Scheme != "tls" {
				return "", fmt.Errorf("link URL %q is not a leaf-node URL (nats-leaf://host:7422, tls://host:7422)", r.URL)
			}
			if !filepath.IsAbs(r.CredentialsFile) {
				return "", fmt.Errorf("link creds %q: give the absolute path on the nats-server host", r.CredentialsFile)
			}
			if r.LocalAccount == "" {
				return "", errors.New("a link needs the local keyflow account (the identity file's service account)")
			}
			fmt.Fprintf(&b, "    { url: %q, credentials: %q, account: %q }\n", r.URL, r.CredentialsFile, r.LocalAccount)
		}
		b.WriteString("  ]\n")
	}
	b.WriteString("}\n")
	return b.String(), nil
}
