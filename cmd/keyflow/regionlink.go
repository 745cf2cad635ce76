package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

// `keyflow region link|unlink|show`: the region settings of the dev stack
// in --data-dir, saved in DIR/region.json, which `keyflow dev` reads at
// start whenever its --region, --leaf-listen, --link-to and --link-creds
// flags are not given. The link itself is NATS's own (a leaf node), so it
// takes effect at the next start of `keyflow dev` (docs/multi-region.md).

// regionFile is DIR/region.json.
const regionFile = "region.json"

// regionSettings are the saved region flags.
type regionSettings struct {
	Region     string `json:"region"`
	LeafListen string `json:"leafListen,omitempty"`
	LinkTo     string `json:"linkTo,omitempty"`
	LinkCreds  string `json:"linkCreds,omitempty"`
}

func loadRegionSettings(dir string) (*regionSettings, error) {
	b, err := os.ReadFile(filepath.Join(dir, regionFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", regionFile, err)
	}
	var s regionSettings
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s is not valid (remove it, or run keyflow region link again): %w", filepath.Join(dir, regionFile), err)
	}
	return &s, nil
}

func saveRegionSettings(dir string, s regionSettings) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("failed to create %s: %w", dir, err)
	}
	b, _ := json.MarshalIndent(s, "", "  ")
	return os.WriteFile(filepath.Join(dir, regionFile), append(b, '\n'), 0o600)
}

// applySaved fills the region flags not given on the command line from
// DIR/region.json.
func (f *regionFlags) applySaved(dir string) error {
	if f.region != "" || f.leafListen != "" || f.linkTo != "" || f.linkCreds != "" {
		return nil // flags win, whole
	}
	s, err := loadRegionSettings(dir)
	if err != nil || s == nil {
		return err
	}
	f.region, f.leafListen, f.linkTo, f.linkCreds = s.Region, s.LeafListen, s.LinkTo, s.LinkCreds
	return nil
}

func newRegionCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "region", Short: "Link this deployment's region to another one (multi-region keys): keyflow dev's settings, or keyflow serve's nats-server configuration", Args: noSubcommand, RunE: showHelp}
	var s regionSettings
	link := &cobra.Command{
		Use:   "link --region NAME [--to nats-leaf://HOST:PORT --creds FILE] [--leaf-listen ADDR]",
		Short: "Save this stack's region and its link; keyflow dev uses them from its next start",
		Long: `Save the region settings of the stack in --data-dir (DIR/region.json).

On the deployment others link to (the primary's, say):
  keyflow region link --region us-east --leaf-listen 0.0.0.0:7422
  keyflow dev            # writes DIR/region-link.creds: hand it to the other side
On the other deployment:
  keyflow region link --region eu-west --to nats-leaf://10.0.0.5:7422 --creds region-link.creds
  keyflow dev

The link is a NATS leaf node connection that carries only kf.region.v1.>
(wrapped material and metadata, never plaintext): docs/multi-region.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if s.Region == "" {
				return usagef("--region is required")
			}
			if (s.LinkTo == "") != (s.LinkCreds == "") {
				return usagef("--to and --creds go together")
			}
			if s.LinkCreds != "" {
				abs, err := filepath.Abs(s.LinkCreds)
				if err != nil {
					return usagef("--creds: %v", err)
				}
				if _, err := os.Stat(abs); err != nil {
					return usagef("--creds: %v", err)
				}
				s.LinkCreds = abs
			}
			if err := saveRegionSettings(g.dataDir, s); err != nil {
				return err
			}
			return g.printObj(cmd, s)
		},
	}
	link.Flags().StringVar(&s.Region, "region", "", "this deployment's region name, e.g. us-east")
	link.Flags().StringVar(&s.LinkTo, "to", "", "the other deployment's leaf address, e.g. nats-leaf://10.0.0.5:7422")
	link.Flags().StringVar(&s.LinkCreds, "creds", "", "the other deployment's region-link.creds")
	link.Flags().StringVar(&s.LeafListen, "leaf-listen", "", "accept other regions' links on this address")
	unlink := &cobra.Command{
		Use:   "unlink",
		Short: "Forget the link to another deployment (the region name stays); from keyflow dev's next start",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cur, err := loadRegionSettings(g.dataDir)
			if err != nil {
				return err
			}
			if cur == nil {
				return usagef("%s has no region settings", g.dataDir)
			}
			cur.LinkTo, cur.LinkCreds = "", ""
			if err := saveRegionSettings(g.dataDir, *cur); err != nil {
				return err
			}
			return g.printObj(cmd, cur)
		},
	}
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the saved region settings",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cur, err := loadRegionSettings(g.dataDir)
			if err != nil {
				return err
			}
			if cur == nil {
				cur = &regionSettings{}
			}
			return g.printObj(cmd, cur)
		},
	}
	cmd.AddCommand(link, unlink, show, newRegionNATSConfigCmd(g))
	return cmd
}
