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

// `keyflow inventory` lists the tenant's keys as crypto assets (or writes a
// CycloneDX 1.6 CBOM).

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
	fmt.Fprintln(tw, "KEY ID\tALIAS\tSPEC\tUSAGE\tSTATE\tVERSIONS\tQUANTUM-VULNERABLE\tEXPORTABLE\tTARGET\tCREATED\tRECENT PRINCIPALS")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%v\t%v\t%s\t%s\t%s\n", k.KeyID, dash(k.Alias), k.KeySpec, k.KeyUsage, k.KeyState,
			k.Versions, k.QuantumVulnerable, k.Exportable, dash(k.TargetKeySpec), k.CreationDate.Format(time.RFC3339), dash(strings.Join(k.RecentPrincipals, ",")))
	}
	return tw.Flush()
}
