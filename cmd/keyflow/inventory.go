package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
)

// The crypto-agility commands: `keyflow inventory` lists the tenant's keys
// as crypto assets (or writes a CycloneDX 1.6 CBOM), and `keyflow migrate
// plan` lists the quantum-vulnerable ones with the spec each moves to.

func newInventoryCmd(g *globals) *cobra.Command {
	var format string
	var from []string
	cmd := &cobra.Command{
		Use:   "inventory [--format json|table|cyclonedx] [--from SPEC]...",
		Short: "List the tenant's keys as crypto assets, or write a CycloneDX CBOM",
		Long: `Inventory lists the tenant's keys with what a post-quantum migration needs:
spec, usage, state, versions, whether a quantum computer breaks the key
(RSA, ECC and Ed25519 do; AES-256, HMAC and the NIST PQC algorithms do not),
the recommended target (X_WING for encryption, ML_DSA_65 for signatures), and
the principals seen using the key in the most recent audit records.

--format cyclonedx writes a CycloneDX 1.6 cryptographic bill of materials:

  keyflow inventory --format cyclonedx > cbom.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format == "" {
				format = g.output
			}
			if format != "json" && format != "table" && format != api.InventoryFormatCycloneDX {
				return usagef("--format must be json, table or cyclonedx, not %q", format)
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				req := api.InventoryRequest{FromAlgorithms: from}
				if format == api.InventoryFormatCycloneDX {
					req.Format = api.InventoryFormatCycloneDX
				}
				r, err := c.Inventory(ctx, req)
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				switch format {
				case api.InventoryFormatCycloneDX:
					_, err := fmt.Fprintf(w, "%s\n", r.Cbom)
					return err
				case "table":
					return printInventory(w, r.Keys)
				}
				if r.Keys == nil {
					r.Keys = []api.InventoryKey{}
				}
				return printJSON(w, r)
			})
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "json, table or cyclonedx (default: --output)")
	cmd.Flags().StringArrayVar(&from, "from", nil, "only keys of this spec (repeatable)")
	return cmd
}

func printInventory(w io.Writer, keys []api.InventoryKey) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY ID\tALIAS\tSPEC\tUSAGE\tSTATE\tVERSIONS\tQUANTUM-VULNERABLE\tTARGET\tCREATED\tRECENT PRINCIPALS")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%v\t%s\t%s\t%s\n", k.KeyID, dash(k.Alias), k.KeySpec, k.KeyUsage, k.KeyState,
			k.Versions, k.QuantumVulnerable, dash(k.TargetKeySpec), k.CreationDate.Format(time.RFC3339), dash(strings.Join(k.RecentPrincipals, ",")))
	}
	return tw.Flush()
}

// migrationPlan is what `keyflow migrate plan` prints as JSON.
type migrationPlan struct {
	Keys   []api.InventoryKey `json:"keys"`
	Counts planCounts         `json:"counts"`
}

type planCounts struct {
	Inventoried   int            `json:"inventoried"`
	Vulnerable    int            `json:"vulnerable"`
	WithTarget    int            `json:"withTarget"`
	WithoutTarget int            `json:"withoutTarget"`
	DataKeys      int            `json:"registeredDataKeys"`
	BySpec        map[string]int `json:"bySpec"`
	ByTarget      map[string]int `json:"byTarget"`
}

func newMigrateCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "migrate", Short: "Plan the move of quantum-vulnerable keys to post-quantum specs", Args: noSubcommand, RunE: showHelp}
	var from, filters []string
	var to string
	plan := &cobra.Command{
		Use:   "plan [--from SPEC]... [--key-filter GLOB]... [--to SPEC]",
		Short: "List the quantum-vulnerable keys with the spec each moves to, and counts",
		Long: `Plan lists the tenant's quantum-vulnerable keys (RSA, ECC, Ed25519), limited
to --from specs when given, with the spec each should move to: --to when it
can take over the key's role, else the recommended one (X_WING for
encryption, ML_DSA_65 for signatures). A key that --to cannot replace has no
target and is counted as withoutTarget. It changes nothing.

  keyflow migrate plan --to ML_DSA_65`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.Inventory(ctx, api.InventoryRequest{FromAlgorithms: from, To: to})
				if err != nil {
					return err
				}
				keys, err := filterKeys(r.Keys, filters) // migrate.go
				if err != nil {
					return err
				}
				p := buildPlan(keys)
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), p)
				}
				return printPlan(cmd.OutOrStdout(), p)
			})
		},
	}
	plan.Flags().StringArrayVar(&from, "from", nil, "only keys of this spec (repeatable)")
	plan.Flags().StringVar(&to, "to", "", "target spec (default: the recommended one per key)")
	plan.Flags().StringArrayVar(&filters, "key-filter", nil, "only keys whose alias or key ID matches this glob, e.g. 'payments/*' (repeatable)")
	cmd.AddCommand(plan)
	addCampaignCmds(cmd, g) // migrate.go
	return cmd
}

func buildPlan(keys []api.InventoryKey) migrationPlan {
	p := migrationPlan{Keys: []api.InventoryKey{}, Counts: planCounts{Inventoried: len(keys), BySpec: map[string]int{}, ByTarget: map[string]int{}}}
	for _, k := range keys {
		if !k.QuantumVulnerable {
			continue
		}
		p.Keys = append(p.Keys, k)
		p.Counts.Vulnerable++
		p.Counts.BySpec[k.KeySpec]++
		p.Counts.DataKeys += k.RegisteredDataKeys
		if k.TargetKeySpec == "" {
			p.Counts.WithoutTarget++
			continue
		}
		p.Counts.WithTarget++
		p.Counts.ByTarget[k.TargetKeySpec]++
	}
	return p
}

func printPlan(w io.Writer, p migrationPlan) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY ID\tALIAS\tSPEC\tUSAGE\tSTATE\tTARGET\tDATA KEYS\tRECENT PRINCIPALS")
	for _, k := range p.Keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", k.KeyID, dash(k.Alias), k.KeySpec, k.KeyUsage, k.KeyState,
			dash(k.TargetKeySpec), k.RegisteredDataKeys, dash(strings.Join(k.RecentPrincipals, ",")))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	c := p.Counts
	fmt.Fprintf(w, "\n%d of %d keys are quantum-vulnerable; %d have a target, %d have none; %d registered data keys to rewrap.\n", c.Vulnerable, c.Inventoried, c.WithTarget, c.WithoutTarget, c.DataKeys)
	for _, s := range slices.Sorted(maps.Keys(c.ByTarget)) {
		fmt.Fprintf(w, "  -> %s: %d\n", s, c.ByTarget[s])
	}
	return nil
}
