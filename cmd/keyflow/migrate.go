package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/spf13/cobra"
)

// `keyflow migrate`: `migrate plan` lists the quantum-vulnerable keys with
// the spec each moves to; the campaign is `migrate start PLAN_FILE`,
// `migrate status [ID] [--watch]` and `migrate pause|resume|rollback|approve
// ID`. See docs/migration.md.

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

// addCampaignCmds adds the campaign subcommands to `keyflow migrate`.
func addCampaignCmds(m *cobra.Command, g *globals) {
	m.AddCommand(newMigrateStartCmd(g), newMigrateStatusCmd(g))
	for _, c := range []struct{ name, op, short string }{
		{"pause", api.OpMigratePause, "Hold a campaign between batches and steps"},
		{"resume", api.OpMigrateResume, "Let a paused campaign go on"},
		{"rollback", api.OpMigrateRollback, "Undo a campaign before retirement: sources get their aliases and ACTIVE state back"},
		{"approve", api.OpMigrateApprove, "Approve a campaign's cutover (the readiness gate)"},
	} {
		m.AddCommand(&cobra.Command{
			Use:   c.name + " CAMPAIGN_ID",
			Short: c.short,
			Args:  exactArgs(1, "CAMPAIGN_ID"),
			RunE: func(cmd *cobra.Command, args []string) error {
				return g.withClient(cmd, func(ctx context.Context, cl *client.Client) error {
					s, err := cl.ControlMigration(ctx, c.op, args[0])
					if err != nil {
						return err
					}
					return g.printStatus(cmd.OutOrStdout(), s)
				})
			},
		})
	}
}

// filterKeys keeps the keys whose alias or key ID matches one of the
// globs (all keys when there are none).
func filterKeys(keys []api.InventoryKey, globs []string) ([]api.InventoryKey, error) {
	if len(globs) == 0 {
		return keys, nil
	}
	for _, g := range globs {
		if _, err := path.Match(g, ""); err != nil {
			return nil, usagef("--key-filter %q is not a valid glob", g)
		}
	}
	var out []api.InventoryKey
	for _, k := range keys {
		for _, g := range globs {
			g = strings.TrimPrefix(g, "alias/")
			if ok, _ := path.Match(g, k.KeyID); ok {
				out = append(out, k)
				break
			}
			if ok, _ := path.Match(g, k.Alias); ok && k.Alias != "" {
				out = append(out, k)
				break
			}
		}
	}
	return out, nil
}

// campaignID derives a campaign's ID from its plan, so starting the same
// plan twice joins the first campaign instead of starting a second.
func campaignID(keys []api.MigrationKeyPlan) string {
	lines := make([]string, 0, len(keys))
	for _, k := range keys {
		lines = append(lines, k.KeyID+"="+k.TargetKeySpec)
	}
	slices.Sort(lines)
	sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return "pq-" + hex.EncodeToString(sum[:6])
}

func newMigrateStartCmd(g *globals) *cobra.Command {
	var id string
	var grace, dual time.Duration
	var batch int
	cmd := &cobra.Command{
		Use:   "start PLAN_FILE [--id ID] [--grace 168h] [--dual-signing 0s] [--batch-size 100]",
		Short: "Start a migration campaign from the JSON `keyflow migrate plan` printed",
		Long: `Start runs a migration campaign (a Temporal workflow) over the keys of a plan
that have a target:

  keyflow migrate plan --to ML_DSA_65 > plan.json
  keyflow migrate start plan.json

The campaign creates the target keys, links each source to its target
(signing keys dual-sign), rewraps every registered data key under the
targets, waits for 'keyflow migrate approve ID', cuts over (aliases move to
the targets; sources become decrypt/verify-only) and retires the sources
after --grace. Watch it with 'keyflow migrate status ID --watch'.

The campaign ID derives from the plan unless --id is given: starting the
same plan again joins the running campaign.`,
		Args: exactArgs(1, "PLAN_FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := os.ReadFile(args[0])
			if err != nil {
				return usagef("cannot read the plan: %v", err)
			}
			var plan migrationPlan
			if err := json.Unmarshal(raw, &plan); err != nil {
				return usagef("%s is not a plan printed by `keyflow migrate plan -o json`: %v", args[0], err)
			}
			req := api.MigrationStartRequest{CampaignID: id, GracePeriodSeconds: int64(grace / time.Second), DualSigningSeconds: int64(dual / time.Second), BatchSize: batch}
			for _, k := range plan.Keys {
				if k.TargetKeySpec != "" {
					req.Keys = append(req.Keys, api.MigrationKeyPlan{KeyID: k.KeyID, TargetKeySpec: k.TargetKeySpec})
				}
			}
			if len(req.Keys) == 0 {
				return usagef("the plan has no key with a target")
			}
			if req.CampaignID == "" {
				req.CampaignID = campaignID(req.Keys)
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				s, err := c.StartMigration(ctx, req)
				if err != nil {
					return err
				}
				return g.printStatus(cmd.OutOrStdout(), s)
			})
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "campaign ID (a-z, 0-9, -; default: derived from the plan)")
	cmd.Flags().DurationVar(&grace, "grace", 7*24*time.Hour, "grace period from cutover to retirement")
	cmd.Flags().DurationVar(&dual, "dual-signing", 0, "least time signing keys dual-sign before the rewrap")
	cmd.Flags().IntVar(&batch, "batch-size", 100, "registered data keys per rewrap batch")
	return cmd
}

func newMigrateStatusCmd(g *globals) *cobra.Command {
	var watch bool
	var every time.Duration
	cmd := &cobra.Command{
		Use:   "status [CAMPAIGN_ID] [--watch]",
		Short: "Show a campaign's progress; --watch follows it with a progress bar until it ends",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				if !watch {
					s, err := c.MigrationStatus(ctx, id)
					if err != nil {
						return err
					}
					return g.printStatus(cmd.OutOrStdout(), s)
				}
				return watchStatus(ctx, cmd.OutOrStdout(), c, id, every)
			})
		},
	}
	cmd.Flags().BoolVar(&watch, "watch", false, "follow the campaign until it is done (a live bar on a terminal, a line per change otherwise)")
	cmd.Flags().DurationVar(&every, "interval", time.Second, "how often --watch asks")
	return cmd
}

// watchStatus follows a campaign: on a terminal one bar redrawn in place,
// otherwise one line per change (for logs and CI).
func watchStatus(ctx context.Context, w io.Writer, c *client.Client, id string, every time.Duration) error {
	tty := isTerminal(w)
	last := ""
	for {
		s, err := c.MigrationStatus(ctx, id)
		if err != nil {
			return err
		}
		id = s.CampaignID
		line := progressLine(s)
		switch {
		case tty:
			fmt.Fprintf(w, "\r\033[K%s", line)
		case line != last:
			fmt.Fprintln(w, line)
		}
		last = line
		if s.Done {
			if tty {
				fmt.Fprintln(w)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progressLine is one line of status: phase, a bar of the rewrap, counts,
// rate and ETA.
func progressLine(s *api.MigrationStatus) string {
	const width = 30
	done := s.Rewrapped + s.Failed + s.Skipped
	frac := 1.0
	if s.Total > 0 {
		frac = min(float64(done)/float64(s.Total), 1)
	} else if s.Phase == "creating-targets" || s.Phase == "dual-signing" {
		frac = 0
	}
	n := int(frac * width)
	bar := strings.Repeat("#", n) + strings.Repeat(".", width-n)
	state := s.Phase
	if s.Paused {
		state += " (paused)"
	}
	if s.Phase == "awaiting-approval" {
		state += fmt.Sprintf(" %d/%d approvals", len(s.Approvals), s.RequiredApprovals)
	}
	eta := "-"
	if s.EtaSeconds > 0 {
		eta = (time.Duration(s.EtaSeconds) * time.Second).String()
	}
	return fmt.Sprintf("%s [%s] %3.0f%% %d/%d rewrapped, %d failed, %.1f/s, ETA %s  %s",
		s.CampaignID, bar, frac*100, s.Rewrapped, s.Total, s.Failed, s.RatePerSecond, eta, state)
}

func (g *globals) printStatus(w io.Writer, s *api.MigrationStatus) error {
	if g.output == "json" {
		return printJSON(w, s)
	}
	fmt.Fprintln(w, progressLine(s))
	for _, k := range s.Keys {
		fmt.Fprintf(w, "  %s -> %s (%s): %d/%d rewrapped, %d failed, retired %v\n", k.SourceKeyID, dash(k.TargetKeyID), k.TargetKeySpec, k.Rewrapped, k.Total, k.Failed, k.Retired)
	}
	return nil
}
