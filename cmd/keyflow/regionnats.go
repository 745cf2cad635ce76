package main

import (
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/workers/natsauth"
)

// `keyflow region nats-config`: the region link of a production deployment
// (keyflow serve), which is nats-server's own leaf node. It writes the
// nats-server configuration to include, and, for a region that accepts
// links, the link creds to hand to the other regions
// (docs/multi-region.md, "Production").

// regionNATSConfig are the command's inputs.
type regionNATSConfig struct {
	config, region, identity  string
	leafListen, linkTo, creds string
	out                       string
}

// regionNATSFiles is what nats-config prints.
type regionNATSFiles struct {
	Region string `json:"region"`
	// JetStreamDomain is what every nats-server's jetstream block needs.
	JetStreamDomain string `json:"jetstreamDomain"`
	// NATSConfig is the leafnodes block to include from every nats-server.
	NATSConfig string `json:"natsConfig"`
	// LinkCreds, with --leaf-listen, are for the regions that link here.
	LinkCreds string `json:"linkCreds,omitempty"`
}

func newRegionNATSConfigCmd(g *globals) *cobra.Command {
	var f regionNATSConfig
	cmd := &cobra.Command{
		Use:   "nats-config --config keyflow.yaml [--leaf-listen HOST:PORT] [--link-to URL --link-creds FILE] [--out DIR]",
		Short: "Write the nats-server configuration of a production region link (keyflow serve)",
		Long: `Write the nats-server side of a region link for a deployment run with
keyflow serve, whose region is region.name of its configuration:

  DIR/nats-region.conf    a leafnodes block: include it from every nats-server
                          of this deployment, whose jetstream block must name
                          the region as its domain (jetstream { domain: NAME })
  DIR/region-link.creds   with --leaf-listen: the creds of the link user (may
                          publish and subscribe kf.region.v1.> only) that the
                          other regions' servers connect with; hand it over

On the region that accepts links (us-east, say):
  keyflow region nats-config --config keyflow.yaml --leaf-listen 0.0.0.0:7422
On a region that links to it (eu-west), with us-east's creds copied to the
path its nats-servers read:
  keyflow region nats-config --config keyflow.yaml \
    --link-to nats-leaf://nats.us-east.example:7422 --link-creds /etc/nats/us-east-link.creds

--region and --identity (the identity.json of keyflow operator init) replace
--config's region.name and nats.identity_file. See docs/multi-region.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, err := f.run()
			if err != nil {
				return err
			}
			return g.printObj(cmd, out)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.config, "config", "", "keyflow serve's configuration (region.name, nats.identity_file)")
	fl.StringVar(&f.region, "region", "", "this deployment's region (default: the configuration's region.name)")
	fl.StringVar(&f.identity, "identity", "", "this deployment's identity.json from keyflow operator init (default: the configuration's nats.identity_file)")
	fl.StringVar(&f.leafListen, "leaf-listen", "", "accept other regions' links on this address of every nats-server, e.g. 0.0.0.0:7422")
	fl.StringVar(&f.linkTo, "link-to", "", "link to another region's leaf address, e.g. nats-leaf://nats.us-east.example:7422")
	fl.StringVar(&f.creds, "link-creds", "", "with --link-to: the other region's region-link.creds, at the path the nats-servers read it")
	fl.StringVar(&f.out, "out", ".", "directory to write the files to")
	return cmd
}

func (f *regionNATSConfig) run() (*regionNATSFiles, error) {
	if f.config != "" {
		c, err := loadConfig(f.config)
		if err != nil {
			return nil, err
		}
		if f.region == "" {
			f.region = c.Region.Name
		}
		if f.identity == "" {
			f.identity = c.NATS.IdentityFile
		}
	}
	if f.region == "" {
		return nil, usagef("no region: set region.name in --config, or give --region")
	}
	if f.identity == "" {
		return nil, usagef("no identity: set nats.identity_file in --config, or give --identity (identity.json of keyflow operator init)")
	}
	if (f.linkTo == "") != (f.creds == "") {
		return nil, usagef("--link-to and --link-creds go together")
	}
	// natsauth.Load would create a new identity where there is none.
	if _, err := os.Stat(f.identity); err != nil {
		return nil, usagef("identity: %v", err)
	}
	id, err := natsauth.Load(f.identity)
	if err != nil {
		return nil, usagef("identity: %v", err)
	}
	link := natsserver.RegionLink{Region: f.region, LeafListen: f.leafListen}
	if f.linkTo != "" {
		abs, err := filepath.Abs(f.creds)
		if err != nil {
			return nil, usagef("--link-creds: %v", err)
		}
		b, err := os.ReadFile(abs)
		if err != nil {
			return nil, usagef("--link-creds: %v (copy the other region's region-link.creds there first)", err)
		}
		if err := natsauth.CheckRegionLinkCreds(b); err != nil {
			return nil, usagef("--link-creds %s: %v; use the region-link.creds the other region wrote (keyflow region nats-config --leaf-listen)", abs, err)
		}
		link.Remotes = []natsserver.LeafRemote{{URL: f.linkTo, CredentialsFile: abs, LocalAccount: id.ServiceAccount()}}
	}
	conf, err := natsserver.RegionConf(link)
	if err != nil {
		return nil, usagef("%v", err)
	}
	if err := os.MkdirAll(f.out, 0o700); err != nil {
		return nil, err
	}
	out := &regionNATSFiles{Region: f.region, JetStreamDomain: f.region, NATSConfig: filepath.Join(f.out, natsserver.RegionConfName)}
	if err := os.WriteFile(out.NATSConfig, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	if f.leafListen != "" {
		creds, err := id.RegionLinkCreds("region-link-" + f.region)
		if err != nil {
			return nil, err
		}
		out.LinkCreds = filepath.Join(f.out, natsserver.RegionLinkCredsName)
		if err := os.WriteFile(out.LinkCreds, creds, 0o600); err != nil {
			return nil, err
		}
	}
	return out, nil
}
