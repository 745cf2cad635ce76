package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/deploy/devstack"
)

func newDevCmd(g *globals) *cobra.Command {
	var natsListen, temporalListen string
	cmd := &cobra.Command{
		Use:   "dev [--data-dir DIR]",
		Short: "Run keyflow with its embedded stack (NATS JetStream, Temporal on SQLite, a SoftHSM token)",
		Long: `Run keyflow with everything it needs in one process, state under --data-dir.

On the first run it initialises a SoftHSM token (the PIN is generated and kept
in DIR/hsm/pin, mode 0600, never printed), creates the default tenant and an
admin principal, and writes DIR/admin.creds, which the other commands use by
default. Started again on the same directory, it comes back with every key,
version, workflow and audit record. SIGINT or SIGTERM stops it cleanly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			st, err := devstack.Start(ctx, devstack.Config{
				DataDir: g.dataDir, NATSListen: natsListen, TemporalListen: temporalListen, Logger: log,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "keyflow ready nats=%s temporal=%s creds=%s tenant=%s\n",
				st.NATSURL(), st.Temporal.HostPort(), st.AdminCreds(), devstack.DefaultTenant)
			<-ctx.Done()
			fmt.Fprintln(cmd.OutOrStdout(), "keyflow stopping")
			st.Stop()
			fmt.Fprintln(cmd.OutOrStdout(), "keyflow stopped")
			return nil
		},
	}
	cmd.Flags().StringVar(&natsListen, "nats-listen", devstack.DefaultNATSListen, "address of the NATS listener")
	cmd.Flags().StringVar(&temporalListen, "temporal-listen", devstack.DefaultTemporalListen, "address of the Temporal frontend")
	return cmd
}
