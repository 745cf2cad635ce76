package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"strings"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/spf13/cobra"
)

// `keyflow tenant`: tenants and their policy. The roles each command needs
// are checked by the worker (docs/security-model.md).

func newTenantCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "tenant", Short: "Create tenants and manage their policy", Args: noSubcommand, RunE: showHelp}
	cmd.AddCommand(newTenantPolicyCmd(g))
	var forbid []string
	var allowAny bool
	var adminName, out string
	create := &cobra.Command{
		Use:   "create NAME [--forbid ROLE+ROLE]... [--admin NAME] [--out FILE]",
		Short: "Create a tenant (a NATS account) and its first tenant admin; prints the admin's creds file",
		Long: `Create a tenant and its first principal, a tenant admin.

A tenant is a NATS account that imports the keyflow services, so the NATS
server keeps it apart from every other tenant. The new admin's key pair is
generated here: only its public key is sent, and the creds file (JWT and
private key) is written to --out (0600) or printed.

The tenant policy forbids combinations of roles on one principal; by
default key-admin+crypto-user (separation of duties). --forbid replaces the
default, --allow-any-roles drops it.`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := client.CreateTenantParams{Tenant: args[0], AllowAnyRoleCombination: allowAny, AdminName: adminName}
			for _, f := range forbid {
				set := strings.Split(f, "+")
				if len(set) < 2 {
					return usagef("--forbid wants ROLE+ROLE[+ROLE...], got %q", f)
				}
				p.ForbiddenRoleSets = append(p.ForbiddenRoleSets, set)
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, creds, err := c.CreateTenant(ctx, p)
				if err != nil {
					return err
				}
				if err := writeCreds(cmd.OutOrStdout(), out, creds); err != nil {
					return err
				}
				if out != "" && out != "-" {
					return printJSON(cmd.OutOrStdout(), map[string]any{"tenant": r.Tenant, "admin": r.Admin, "forbiddenRoleSets": r.ForbiddenRoleSets, "creds": out})
				}
				return nil
			})
		},
	}
	create.Flags().StringArrayVar(&forbid, "forbid", nil, "forbidden role combination, e.g. key-admin+crypto-user (repeatable)")
	create.Flags().BoolVar(&allowAny, "allow-any-roles", false, "forbid no role combination")
	create.Flags().StringVar(&adminName, "admin", "admin", "name of the tenant's first tenant admin")
	create.Flags().StringVar(&out, "out", "", "write the admin's creds file here (0600) instead of printing it")
	cmd.AddCommand(create)
	return cmd
}

// newTenantPolicyCmd is `keyflow tenant policy`.
func newTenantPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Get or set the tenant policy: approvals, quotas, algorithm profiles",
		Long: `The tenant policy (JSON, schema schemas/api/TenantPolicy.json):

  {
    "approvals": [{"operation": "schedule-deletion", "required": 2, "expiresAfter": "72h"}],
    "quotas": {"requestsPerSecond": 100, "burst": 200, "maxKeys": 1000},
    "profiles": ["cnsa2"],
    "minDeletionWindowDays": 14,
    "requiredOrigin": "EXTERNAL"
  }

Operations: schedule-deletion, disable, import, policy-change,
archive-restore-cancel, root-share-export, migration-cutover, rotate.
Profiles: cnsa2, nist-ir-8547.`,
		Args: noSubcommand, RunE: showHelp,
	}
	get := &cobra.Command{
		Use:   "get",
		Short: "Print the tenant policy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.GetTenantPolicy(ctx)
				if err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), r.Policy)
			})
		},
	}
	var file string
	set := &cobra.Command{
		Use:   "set --file F.json",
		Short: "Replace the tenant policy (needs approval if the policy lists policy-change)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usagef("--file is required (- for stdin)")
			}
			var raw []byte
			var err error
			if file == "-" {
				raw, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), 1<<20))
			} else {
				raw, err = os.ReadFile(file)
			}
			if err != nil {
				return usagef("cannot read --file: %v", err)
			}
			var p api.TenantPolicy
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&p); err != nil {
				return usagef("--file is not a tenant policy: %v", err)
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.SetTenantPolicy(ctx, p)
				if err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), r.Policy)
			})
		},
	}
	set.Flags().StringVarP(&file, "file", "f", "", "the policy document (JSON; - for stdin)")
	cmd.AddCommand(get, set)
	return cmd
}
