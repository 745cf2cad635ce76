package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
)

// `keyflow key alias create|update|delete|list`: aliases after a key's
// creation (key admins). A keyflow key has at most one alias, so create
// on a key that has one is refused (LimitExceededException), and list
// reads the key list.

func newKeyAliasCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "alias", Short: "Create, move, delete and list aliases (at most one per key)", Args: noSubcommand, RunE: showHelp}

	set := func(use, short string, do func(*client.Client, context.Context, string, string) (*api.KeyMetadata, error)) *cobra.Command {
		var key string
		c := &cobra.Command{
			Use: use + " ALIAS --key KEY", Short: short, Args: exactArgs(1, "ALIAS"),
			RunE: func(cmd *cobra.Command, args []string) error {
				if key == "" {
					return usagef("--key is required")
				}
				return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
					k, err := do(c, ctx, args[0], key)
					if err != nil {
						return err
					}
					return g.printKeys(cmd.OutOrStdout(), *k)
				})
			},
		}
		c.Flags().StringVar(&key, "key", "", "the key the alias is to name (key ID, or the alias/ARN of the key)")
		return c
	}
	del := &cobra.Command{
		Use:   "delete ALIAS",
		Short: "Delete an alias; its key keeps working by its ID",
		Args:  exactArgs(1, "ALIAS"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				if err := c.DeleteAlias(ctx, args[0]); err != nil {
					return err
				}
				return g.printObj(cmd, struct {
					Alias   string `json:"alias"`
					Deleted bool   `json:"deleted"`
				}{"alias/" + strings.TrimPrefix(args[0], "alias/"), true})
			})
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's aliases and the keys they name",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.ListAliases(ctx)
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), r)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ALIAS\tKEY ID")
				for _, a := range r.Aliases {
					fmt.Fprintf(tw, "%s\t%s\n", a.Alias, a.KeyID)
				}
				return tw.Flush()
			})
		},
	}
	cmd.AddCommand(
		set("create", "Give a key that has no alias a new alias (refused if the alias is taken)", (*client.Client).CreateAlias),
		set("update", "Move an existing alias to another key (which must have no other alias)", (*client.Client).UpdateAlias),
		del, list)
	return cmd
}
