package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
)

func newAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read the audit trail", Args: noSubcommand, RunE: showHelp}
	var follow bool
	var limit int
	var typ, key, tenant string
	tail := &cobra.Command{
		Use:   "tail [--follow] [--type GLOB] [--key KEY] [--limit N]",
		Short: "Print the tenant's audit events, one CloudEvent JSON per line",
		Long: `Print the tenant's audit events in stream order, one CloudEvent JSON per line.

The filters run on the server (they are NATS subject filters over the audit
stream), so only matching events travel:

  --key KEY     events about one key (key ID, alias or alias/NAME)
  --type GLOB   events whose type matches GLOB: dot-separated parts, each a
                literal or "*" (one part); a final "*" matches the rest,
                e.g. io.keyflow.crypto.* or io.keyflow.key.*.v1

A GLOB that cannot be evaluated that way (such as "io.keyflow.crypto.enc*")
is refused with ValidationException. Reading the trail is itself recorded: each
page that returns events leaves one io.keyflow.audit.read.v1 record naming the
events it returned (by event ID), as does resolving an alias given to --key.
Pages go by opaque cursors, never by the audit stream's sequence numbers, which
would tell a tenant how busy the others are.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usagef("--limit must be 0 or more")
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				after := "" // an opaque cursor
				printed := 0
				keyID := key
				for {
					req := api.AuditTailRequest{After: after, Limit: 500, KeyID: keyID, Type: typ, Tenant: tenant}
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
					if r.KeyID != "" {
						keyID = r.KeyID // resolve an alias once
					}
					if r.Next != "" {
						after = r.Next
					}
					for _, e := range r.Events {
						if _, err := fmt.Fprintln(cmd.OutOrStdout(), string(e.Event)); err != nil {
							return err
						}
						after = e.Cursor
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
	tail.Flags().StringVar(&typ, "type", "", "only events whose type matches GLOB (e.g. io.keyflow.crypto.*)")
	tail.Flags().StringVar(&key, "key", "", "only events about this key (ID, alias or alias/NAME)")
	tail.Flags().StringVar(&tenant, "tenant", "", "the tenant whose trail to read (default: the creds' tenant; only your own tenant is allowed)")
	cmd.AddCommand(tail, newAuditForwardCmd(g))
	cmd.AddCommand(newAuditChainCmds(g)...) // verify, export, pubkeys: auditverify.go
	return cmd
}
