package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/spf13/cobra"
)

// `keyflow grant`: temporary, narrow use of a key by another principal.

func newGrantCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "grant", Short: "Give principals temporary, narrow use of a key", Args: noSubcommand, RunE: showHelp}
	var grantee, ops, expires, retiring string
	var ctxSubset, ctxEquals, sources []string
	create := &cobra.Command{
		Use:   "create KEY --grantee P --operations Encrypt,Decrypt [--context k=v]... [--expires 24h|RFC3339]",
		Short: "Create a grant (key admins)",
		Args:  exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if grantee == "" || ops == "" {
				return usagef("--grantee and --operations are required")
			}
			req := api.CreateGrantRequest{KeyID: args[0], Grantee: grantee, Operations: strings.Split(ops, ","), RetiringPrincipal: retiring}
			var cons api.GrantConstraints
			var err error
			if cons.EncryptionContextSubset, err = parseContext(ctxSubset); err != nil {
				return err
			}
			if cons.EncryptionContextEquals, err = parseContext(ctxEquals); err != nil {
				return err
			}
			cons.SourcePrincipals = sources
			if expires != "" {
				t, err := parseExpiry(expires, time.Now())
				if err != nil {
					return err
				}
				cons.NotAfter = &t
			}
			if cons.EncryptionContextSubset != nil || cons.EncryptionContextEquals != nil || cons.SourcePrincipals != nil || cons.NotAfter != nil {
				req.Constraints = &cons
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				gr, err := c.CreateGrant(ctx, req)
				if err != nil {
					return err
				}
				return g.printObj(cmd, gr)
			})
		},
	}
	f := create.Flags()
	f.StringVar(&grantee, "grantee", "", "principal of your tenant who gets the grant")
	f.StringVar(&ops, "operations", "", "comma-separated operations, e.g. Encrypt,Decrypt,GenerateDataKey")
	f.StringArrayVar(&ctxSubset, "context", nil, "encryption context pair the request must contain, k=v (repeatable)")
	f.StringArrayVar(&ctxEquals, "context-equals", nil, "encryption context pair; the request's context must be exactly these (repeatable)")
	f.StringArrayVar(&sources, "source-principal", nil, "the calling principal must match (name or prefix*; repeatable)")
	f.StringVar(&expires, "expires", "", "expiry: a duration from now (24h) or an RFC 3339 time")
	f.StringVar(&retiring, "retiring-principal", "", "another principal allowed to retire the grant")

	list := &cobra.Command{
		Use:   "list KEY",
		Short: "List a key's live grants",
		Args:  exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.ListGrants(ctx, args[0])
				if err != nil {
					return err
				}
				return g.printGrants(cmd.OutOrStdout(), r)
			})
		},
	}
	retirable := &cobra.Command{
		Use:   "list-retirable PRINCIPAL",
		Short: "List the grants PRINCIPAL may retire, across the tenant's keys (yourself; key admins and auditors: anyone)",
		Args:  exactArgs(1, "PRINCIPAL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.ListRetirableGrants(ctx, args[0])
				if err != nil {
					return err
				}
				return g.printGrants(cmd.OutOrStdout(), r)
			})
		},
	}
	end := func(use, short string, fn func(*client.Client, context.Context, string, string) error) *cobra.Command {
		return &cobra.Command{
			Use: use + " KEY GRANT_ID", Short: short, Args: exactArgs(2, "KEY GRANT_ID"),
			RunE: func(cmd *cobra.Command, args []string) error {
				return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
					if err := fn(c, ctx, args[0], args[1]); err != nil {
						return err
					}
					return g.printObj(cmd, api.GrantRequest{KeyID: args[0], GrantID: args[1]})
				})
			},
		}
	}
	retire := end("retire", "Retire a grant (its grantee, retiring principal or a key admin)", (*client.Client).RetireGrant)
	revoke := end("revoke", "Revoke a grant (key admins)", (*client.Client).RevokeGrant)
	cmd.AddCommand(create, list, retirable, retire, revoke)
	return cmd
}

// parseExpiry reads a duration from now or an RFC 3339 time.
func parseExpiry(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, usagef("--expires must be in the future")
		}
		return now.Add(d).UTC().Truncate(time.Second), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, usagef("--expires wants a duration (24h) or an RFC 3339 time, got %q", s)
	}
	return t, nil
}

// printGrants prints grants as JSON, or as a table.
func (g *globals) printGrants(w io.Writer, r *api.ListGrantsReply) error {
	if g.output == "json" {
		return printJSON(w, r)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GRANT ID\tKEY ID\tGRANTEE\tOPERATIONS\tEXPIRES\tCREATED BY")
	for _, gr := range r.Grants {
		exp := "-"
		if gr.Constraints != nil && gr.Constraints.NotAfter != nil {
			exp = gr.Constraints.NotAfter.Format(time.RFC3339)
			if gr.Constraints.NotAfter.Before(time.Now()) {
				exp += " (EXPIRED)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", gr.GrantID, gr.KeyID, gr.Grantee, strings.Join(gr.Operations, ","), exp, gr.CreatedBy)
	}
	return tw.Flush()
}
