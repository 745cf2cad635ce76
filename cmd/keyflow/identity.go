package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
)

// Identity and access commands: tenants, principals, key policies and
// grants. The roles each needs are checked by the worker (see
// docs/security-model.md).

// withTenantClient is withClient for commands that take --tenant: the
// client addresses that tenant's subjects, which the NATS server lets a
// principal reach only for its own tenant.
func (g *globals) withTenantClient(cmd *cobra.Command, tenant string, fn func(ctx context.Context, c *client.Client) error) error {
	if tenant == "" {
		return g.withClient(cmd, fn)
	}
	ctx := cmd.Context()
	creds := g.creds
	if creds == "" {
		creds = filepath.Join(g.dataDir, "admin.creds")
	}
	c, err := client.Dial(ctx, client.Options{Server: g.server, CredsFile: creds, Tenant: tenant, Timeout: g.timeout, Name: "keyflow-cli"})
	if err != nil {
		return fmt.Errorf("%w: %w", errUnreachable, err)
	}
	defer c.Close()
	return fn(ctx, c)
}

// writeCreds writes a creds file (0600, refusing to overwrite), or prints
// it to stdout when out is "" or "-".
func writeCreds(w io.Writer, out string, creds []byte) error {
	if out == "" || out == "-" {
		_, err := w.Write(creds)
		return err
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return usagef("cannot write --out: %v", err)
	}
	if _, err := f.Write(creds); err != nil {
		f.Close()
		return fmt.Errorf("failed to write creds: %w", err)
	}
	return f.Close()
}

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
				return printJSON(cmd.OutOrStdout(), gr)
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
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), r)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "GRANT ID\tGRANTEE\tOPERATIONS\tEXPIRES\tCREATED BY")
				for _, gr := range r.Grants {
					exp := "-"
					if gr.Constraints != nil && gr.Constraints.NotAfter != nil {
						exp = gr.Constraints.NotAfter.Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", gr.GrantID, gr.Grantee, strings.Join(gr.Operations, ","), exp, gr.CreatedBy)
				}
				return tw.Flush()
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
					return printJSON(cmd.OutOrStdout(), api.GrantRequest{KeyID: args[0], GrantID: args[1]})
				})
			},
		}
	}
	retire := end("retire", "Retire a grant (its grantee, retiring principal or a key admin)", (*client.Client).RetireGrant)
	revoke := end("revoke", "Revoke a grant (key admins)", (*client.Client).RevokeGrant)
	cmd.AddCommand(create, list, retire, revoke)
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
