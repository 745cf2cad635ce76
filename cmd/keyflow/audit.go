package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/workers/api"
	"github.com/keyflow/keyflow/workers/client"
)

func newAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read the audit trail", Args: noSubcommand, RunE: showHelp}
	var follow bool
	var limit int
	tail := &cobra.Command{
		Use:   "tail [--follow]",
		Short: "Print the tenant's audit events, one CloudEvent JSON per line",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				var after uint64
				printed := 0
				for {
					req := api.AuditTailRequest{AfterSeq: after, Limit: 500}
					if follow {
						req.WaitMillis = 5000
					}
					r, err := c.AuditTail(ctx, req)
					if err != nil {
						if ctx.Err() != nil {
							return nil // interrupted while following
						}
						return err
					}
					for _, e := range r.Events {
						if _, err := fmt.Fprintln(cmd.OutOrStdout(), string(e.Event)); err != nil {
							return err
						}
						after = e.Seq
						printed++
						if limit > 0 && printed >= limit {
							return nil
						}
					}
					if len(r.Events) == 0 && !follow {
						return nil
					}
				}
			})
		},
	}
	tail.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events as they arrive")
	tail.Flags().IntVar(&limit, "limit", 0, "stop after this many events (0: no limit)")
	cmd.AddCommand(tail)
	return cmd
}
