package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keyflow/keyflow/client"
	"github.com/spf13/cobra"
)

// `keyflow principal`: a tenant's principals and their roles.

func newPrincipalCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "principal", Short: "Create, list and disable principals (tenant admins)", Args: noSubcommand, RunE: showHelp}
	var tenant, out string
	var roles []string
	create := &cobra.Command{
		Use:   "create NAME --role ROLE [--role ROLE]... [--tenant T] [--out FILE]",
		Short: "Create a principal with roles; prints its creds file",
		Long: `Create a principal of your tenant with one or more roles:

  key-admin     create, describe, rotate keys, set key policies, manage grants;
                never encrypt, decrypt or sign
  crypto-user   use the keys its key policies and grants allow
  auditor       read the audit trail and the inventory
  approver      approve pending requests (dual control)
  tenant-admin  manage principals

The tenant policy may forbid some combinations (by default key-admin with
crypto-user). The key pair is generated here; keyflow signs a JWT for its
public key. The creds file is written to --out (0600) or printed.`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(roles) == 0 {
				return usagef("give at least one --role")
			}
			var rs []string
			for _, r := range roles {
				rs = append(rs, strings.Split(r, ",")...)
			}
			return g.withTenantClient(cmd, tenant, func(ctx context.Context, c *client.Client) error {
				p, creds, err := c.CreatePrincipal(ctx, args[0], rs)
				if err != nil {
					return err
				}
				if err := writeCreds(cmd.OutOrStdout(), out, creds); err != nil {
					return err
				}
				if out != "" && out != "-" {
					return printJSON(cmd.OutOrStdout(), map[string]any{"principal": p, "creds": out})
				}
				return nil
			})
		},
	}
	create.Flags().StringArrayVar(&roles, "role", nil, "role (repeatable, or comma-separated)")
	create.Flags().StringVar(&tenant, "tenant", "", "tenant (default: the tenant of --creds; only your own is reachable)")
	create.Flags().StringVar(&out, "out", "", "write the creds file here (0600) instead of printing it")

	var listTenant string
	list := &cobra.Command{
		Use:   "list [--tenant T]",
		Short: "List the tenant's principals and their roles",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withTenantClient(cmd, listTenant, func(ctx context.Context, c *client.Client) error {
				r, err := c.ListPrincipals(ctx)
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), r)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tROLES\tCREATED\tCREATED BY\tDISABLED")
				for _, p := range r.Principals {
					disabled := "-"
					if p.DisabledDate != nil {
						disabled = p.DisabledDate.Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Name, strings.Join(p.Roles, ","), p.CreationDate.Format(time.RFC3339), p.CreatedBy, disabled)
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().StringVar(&listTenant, "tenant", "", "tenant (default: the tenant of --creds)")

	var disTenant string
	disable := &cobra.Command{
		Use:   "disable NAME [--tenant T]",
		Short: "Disable a principal at once: workers refuse it and the NATS server revokes its creds",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withTenantClient(cmd, disTenant, func(ctx context.Context, c *client.Client) error {
				if err := c.DisablePrincipal(ctx, args[0]); err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), map[string]any{"name": args[0], "disabled": true})
			})
		},
	}
	disable.Flags().StringVar(&disTenant, "tenant", "", "tenant (default: the tenant of --creds)")
	cmd.AddCommand(create, list, disable)
	return cmd
}
