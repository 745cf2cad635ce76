package main

import (
	"context"
	"encoding/json"

	"github.com/keyflow/keyflow/client"
	"github.com/spf13/cobra"
)

// `keyflow key set-policy|get-policy`. The roles each command needs are
// checked by the worker (docs/security-model.md).

// newKeyPolicyCmds are `key set-policy` and `key get-policy`.
func newKeyPolicyCmds(g *globals) []*cobra.Command {
	var file string
	set := &cobra.Command{
		Use:   "set-policy KEY --file POLICY.json",
		Short: "Replace a key's policy (key admins); the document is checked against schemas/policy/KeyPolicy.json",
		Long: `Replace a key's policy. Example:

  {"version": "2026-11-01", "statements": [
    {"sid": "Admins", "effect": "Allow", "principals": ["role:key-admin"],
     "operations": ["DescribeKey", "RotateKey", "CreateGrant", "ListGrants", "RevokeGrant"]},
    {"sid": "App", "effect": "Allow", "principals": ["svc-billing"],
     "operations": ["Encrypt", "Decrypt", "GenerateDataKey"],
     "conditions": {"encryptionContextSubset": {"app": "billing"}}}]}

An explicit Deny wins; else an Allow statement or a grant allows; else the
request is denied. Roles are checked first in every case, and set-policy
and get-policy are governed by roles only, so a key admin cannot be locked
out.`,
		Args: exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usagef("--file is required")
			}
			doc, err := readInput(cmd, file, 64<<10)
			if err != nil {
				return err
			}
			if !json.Valid(doc) {
				return usagef("the policy document is not JSON")
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.SetKeyPolicy(ctx, args[0], doc)
				if err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), r)
			})
		},
	}
	set.Flags().StringVar(&file, "file", "", "policy document (JSON; - for stdin)")
	get := &cobra.Command{
		Use:   "get-policy KEY",
		Short: "Show a key's policy (\"default\": true when it has none)",
		Args:  exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.GetKeyPolicy(ctx, args[0])
				if err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), r)
			})
		},
	}
	return []*cobra.Command{set, get}
}
