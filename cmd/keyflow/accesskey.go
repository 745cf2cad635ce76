package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/workers/awskms"
)

// newAccessKeyCmd manages the access keys of the AWS KMS API (tenant
// admins): SigV4 credentials issued to a principal.
func newAccessKeyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "access-key", Short: "Create, list, disable and delete access keys for the AWS KMS API (tenant admins)", Args: noSubcommand, RunE: showHelp}
	var tenant string
	var env bool
	create := &cobra.Command{
		Use:   "create PRINCIPAL [--tenant T] [--env]",
		Short: "Issue an access key to a principal; the secret is shown this once",
		Long: `Issue an AWS-style access key (AKIA…) and secret to a principal of your
tenant, for the AWS KMS API (keyflow dev --aws-listen; docs/aws-api.md).
Requests signed with it act as that principal, with its roles. The secret
is printed once and stored only sealed under the HSM root key. With --env
it is printed as shell exports for the AWS CLI and SDKs:

  eval "$(keyflow access-key create app --env)"`,
		Args: exactArgs(1, "PRINCIPAL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withTenantClient(cmd, tenant, func(ctx context.Context, c *client.Client) error {
				k, err := c.CreateAccessKey(ctx, args[0])
				if err != nil {
					return err
				}
				if g.output == "json" && !env {
					return printJSON(cmd.OutOrStdout(), map[string]any{"AccessKeyId": k.AccessKeyID, "SecretAccessKey": k.SecretAccessKey,
						"Principal": k.Principal, "Tenant": k.Tenant, "AccountId": awskms.AccountID(k.Tenant)})
				}
				fmt.Fprintf(cmd.OutOrStdout(), "export AWS_ACCESS_KEY_ID=%s\nexport AWS_SECRET_ACCESS_KEY=%s\n# principal %s of tenant %s (account %s); the secret is not shown again\n",
					k.AccessKeyID, k.SecretAccessKey, k.Principal, k.Tenant, awskms.AccountID(k.Tenant))
				return nil
			})
		},
	}
	create.Flags().StringVar(&tenant, "tenant", "", "tenant (default: the tenant of --creds)")
	create.Flags().BoolVar(&env, "env", false, "print shell exports (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) instead of JSON")

	var listTenant string
	list := &cobra.Command{
		Use:   "list [--tenant T]",
		Short: "List the tenant's access keys (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withTenantClient(cmd, listTenant, func(ctx context.Context, c *client.Client) error {
				r, err := c.ListAccessKeys(ctx)
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), r)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ACCESS KEY ID\tPRINCIPAL\tCREATED\tCREATED BY\tSTATUS")
				for _, k := range r.AccessKeys {
					status := "Active"
					if k.DisabledAt != nil {
						status = "Disabled " + k.DisabledAt.Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.AccessKeyID, k.Principal, k.CreatedAt.Format(time.RFC3339), k.CreatedBy, status)
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().StringVar(&listTenant, "tenant", "", "tenant (default: the tenant of --creds)")

	change := func(use, short string, do func(*client.Client, context.Context, string) error, field string) *cobra.Command {
		var t string
		c := &cobra.Command{
			Use: use + " ACCESS_KEY_ID [--tenant T]", Short: short, Args: exactArgs(1, "ACCESS_KEY_ID"),
			RunE: func(cmd *cobra.Command, args []string) error {
				return g.withTenantClient(cmd, t, func(ctx context.Context, c *client.Client) error {
					if err := do(c, ctx, args[0]); err != nil {
						return err
					}
					return printJSON(cmd.OutOrStdout(), map[string]any{"accessKeyId": args[0], field: true})
				})
			},
		}
		c.Flags().StringVar(&t, "tenant", "", "tenant (default: the tenant of --creds)")
		return c
	}
	cmd.AddCommand(create, list,
		change("disable", "Disable an access key: the AWS KMS API refuses it from then on", (*client.Client).DisableAccessKey, "disabled"),
		change("delete", "Delete an access key", (*client.Client).DeleteAccessKey, "deleted"))
	return cmd
}
