package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/deploy/roles"
)

func newBootstrapCmd(g *globals) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "bootstrap --config FILE",
		Short: "Create or update keyflow's streams and KV buckets, and report what changed",
		Long: `Create or update every JetStream stream and KV bucket keyflow uses, with
the configuration's replicas (nats.replicas: 1 for one server, 3 for a
cluster), JetStream domain and audit retention, and print one line per
stream created or updated. Running it again changes nothing and says so.
It connects with --creds if given, else nats.creds_file: a keyflow-account
user allowed to manage streams.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(file)
			if err != nil {
				return err
			}
			// Only the NATS and audit settings matter here.
			if p := slices.DeleteFunc(c.Problems(), func(p string) bool {
				return !strings.HasPrefix(p, "nats.") && !strings.HasPrefix(p, "audit")
			}); len(p) > 0 {
				return usagef("invalid configuration:\n  %s", strings.Join(p, "\n  "))
			}
			if g.creds != "" {
				c.NATS.CredsFile = g.creds
			}
			ctx := cmd.Context()
			in, closeInfra, err := roles.Dial(ctx, c, nil, nil)
			if err != nil {
				return err
			}
			defer closeInfra()
			nc, err := in.Connect(ctx, "", "keyflow-bootstrap")
			if err != nil {
				return err
			}
			defer nc.Close()
			js, err := in.JetStream(nc)
			if err != nil {
				return fmt.Errorf("failed to open JetStream: %w", err)
			}
			o, err := roles.OptionsFrom(c, nil)
			if err != nil {
				return err
			}
			changes, err := roles.Bootstrap(ctx, js, o)
			for _, ch := range changes {
				fmt.Fprintln(cmd.OutOrStdout(), ch)
			}
			if err != nil {
				return err
			}
			if len(changes) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no change")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "config", "", "configuration file (YAML; see keyflow config example)")
	return cmd
}
