package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
)

// `keyflow cloud add|list|status|remove`: cloud destinations (tenant
// admins register them; docs/multi-cloud.md), and `keyflow key
// distribute|undistribute`: a key's copies in them (key admins).

func newCloudCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "cloud", Short: "Register cloud KMS destinations (AWS KMS, Cloud KMS, Key Vault) and see their health",
		Long: `cloud manages the destinations keys are distributed to (docs/multi-cloud.md):
an AWS account and region, a GCP key ring or an Azure vault. Registering
one is a tenant admin's act; 'keyflow key distribute KEY --to NAME' (a key
admin's) puts a key there through the provider's BYOK import.`,
		Args: noSubcommand, RunE: showHelp}

	var provider, drift string
	var settings []string
	var every time.Duration
	add := &cobra.Command{
		Use:   "add NAME --provider aws|gcp|azure [--setting K=V ...] [--drift report|repair] [--reconcile-every DUR]",
		Short: "Register (or replace) a destination",
		Long: `add registers a destination, or replaces the one of that name.

Settings name where the destination is and where its credentials come from,
never a credential (the provider SDK's own chain supplies those):
  aws:   region, endpoint, profile, credentialsFile
  gcp:   project, location, keyRing, endpoint, credentialsFile, protectionLevel
  azure: vaultURL

--drift says what the scheduled reconcile does with a difference it finds:
report it (io.keyflow.cloud.drift.v1), or repair it as well.
--reconcile-every schedules the reconcile (0: none); the tenant's schedule
runs at the shortest period of its destinations.`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if provider == "" {
				return usagef("--provider is required (aws, gcp or azure)")
			}
			req := api.CloudAddRequest{Name: args[0], Provider: provider, Drift: drift, ReconcileEverySeconds: int64(every / time.Second)}
			for _, s := range settings {
				k, v, ok := strings.Cut(s, "=")
				if !ok || k == "" {
					return usagef("--setting takes KEY=VALUE, not %q", s)
				}
				if req.Settings == nil {
					req.Settings = map[string]string{}
				}
				req.Settings[k] = v
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				d, err := c.AddCloudDestination(ctx, req)
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), d)
				}
				return printDestinations(cmd.OutOrStdout(), *d)
			})
		},
	}
	add.Flags().StringVar(&provider, "provider", "", "aws, gcp or azure")
	add.Flags().StringArrayVar(&settings, "setting", nil, "a setting, KEY=VALUE (repeatable)")
	add.Flags().StringVar(&drift, "drift", "report", "what the reconcile does with a difference: report or repair")
	add.Flags().DurationVar(&every, "reconcile-every", time.Hour, "how often the reconcile compares the destination with keyflow (1m to 720h; 0: no schedule)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's destinations",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.ListCloudDestinations(ctx)
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), r)
				}
				return printDestinations(cmd.OutOrStdout(), r.Destinations...)
			})
		},
	}

	var probe bool
	status := &cobra.Command{
		Use:   "status [NAME]",
		Short: "Show each destination's health and pending work",
		Long: `status shows, per destination, its health, how many keys are there, the ones
with work left (a step started and not finished, a keyflow version not yet
there, a state that differs from keyflow's, an error) and the last error.

Health comes from the placements' last provider calls; --probe asks each
provider one cheap question now (a Describe of a key that does not exist,
recorded like every provider call). A provider that did not answer is
"unreachable", one that refused is "error".`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.CloudStatus(ctx, name, probe)
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), r)
				}
				return printCloudStatus(cmd.OutOrStdout(), r)
			})
		},
	}
	status.Flags().BoolVar(&probe, "probe", false, "ask each provider a cheap question now")

	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Forget a destination (refused while keys are distributed there)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				if err := c.RemoveCloudDestination(ctx, args[0]); err != nil {
					return err
				}
				return g.printObj(cmd, struct {
					Name    string `json:"name"`
					Removed bool   `json:"removed"`
				}{args[0], true})
			})
		},
	}
	cmd.AddCommand(add, list, status, remove)
	return cmd
}

// newCloudKeyCmds are `keyflow key distribute|undistribute`.
func newCloudKeyCmds(g *globals) []*cobra.Command {
	var to, from string
	var wait, waitOut bool
	run := func(dest *string, flag string, call func(*client.Client, context.Context, string, string, bool) (*api.CloudDistributeReply, error), wait *bool) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			if *dest == "" {
				return usagef("--%s NAME is required", flag)
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				var stop func()
				if *wait {
					stop = showProgress(cmd, waiting("waiting for the cloud workflow"))
				}
				r, err := call(c, ctx, args[0], *dest, *wait)
				if stop != nil {
					stop()
				}
				if err != nil {
					return err
				}
				if g.output == "json" {
					if err := printJSON(cmd.OutOrStdout(), r); err != nil {
						return err
					}
				} else if err := printDistribution(cmd.OutOrStdout(), r); err != nil {
					return err
				}
				if *wait && r.Running {
					return stillRunning{r.WorkflowID} // exit code 5, as key rotate
				}
				return nil
			})
		}
	}
	distribute := &cobra.Command{
		Use:   "distribute KEY --to NAME [--wait]",
		Short: "Put a key into a cloud destination through the provider's BYOK import",
		Long: `distribute starts the workflow that creates the key in the destination's
provider and imports its primary version, wrapped for the provider's own
wrapping key (docs/multi-cloud.md). Only keys created --exportable may
leave keyflow. Without --wait it prints the workflow ID at once; with
--wait it waits (about 20 s at most) and prints where the key now lives,
or exits with code 5 while the workflow still runs (a provider that is
down is retried with backoff; 'keyflow cloud status' shows its error).`,
		Args: exactArgs(1, "KEY"),
		RunE: run(&to, "to", (*client.Client).DistributeKey, &wait),
	}
	distribute.Flags().StringVar(&to, "to", "", "the destination (keyflow cloud list)")
	distribute.Flags().BoolVar(&wait, "wait", false, "wait for the workflow and print the placement")
	undistribute := &cobra.Command{
		Use:   "undistribute KEY --from NAME [--wait]",
		Short: "Take a key out of a cloud destination (the provider deletes it after its own window)",
		Long: `undistribute schedules the deletion of the key's copy in the destination
with the provider's own deletion window (AWS 7-30 days, Cloud KMS the key's
destroy_scheduled_duration, Key Vault the vault's soft-delete retention),
and forgets the placement. keyflow's key is untouched.`,
		Args: exactArgs(1, "KEY"),
		RunE: run(&from, "from", (*client.Client).UndistributeKey, &waitOut),
	}
	undistribute.Flags().StringVar(&from, "from", "", "the destination")
	undistribute.Flags().BoolVar(&waitOut, "wait", false, "wait for the workflow")
	return []*cobra.Command{distribute, undistribute}
}

func printDestinations(w io.Writer, ds ...api.CloudDestination) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPROVIDER\tDRIFT\tRECONCILE\tSETTINGS")
	for _, d := range ds {
		var s []string
		for k, v := range d.Settings {
			s = append(s, k+"="+v)
		}
		every := "-"
		if d.ReconcileEverySeconds > 0 {
			every = (time.Duration(d.ReconcileEverySeconds) * time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Name, d.Provider, d.Drift, every, dash(strings.Join(slices.Sorted(slices.Values(s)), " ")))
	}
	return tw.Flush()
}

func printCloudStatus(w io.Writer, r *api.CloudStatusReply) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPROVIDER\tHEALTH\tKEYS\tPENDING\tLAST ERROR")
	for _, d := range r.Destinations {
		last := "-"
		if d.Probe != nil && d.Probe.ErrorCode != "" {
			last = d.Probe.ErrorCode + " (probe)"
		} else if d.LastErrorCode != "" {
			last = d.LastErrorCode
			if d.LastErrorAt != nil {
				last += " at " + d.LastErrorAt.Format(time.RFC3339)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", d.Name, d.Provider, d.Health, d.Placements, len(d.Pending), last)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, d := range r.Destinations {
		for _, p := range d.Pending {
			fmt.Fprintf(w, "%s: key %s: %s\n", d.Name, p.KeyID, strings.Join(p.Why, "; "))
		}
	}
	return nil
}

func printDistribution(w io.Writer, r *api.CloudDistributeReply) error {
	switch {
	case r.Placement != nil:
		fmt.Fprintf(w, "key %s is in %s: %s (version %d, provider version %s), %s\n", r.KeyID, r.Destination,
			r.Placement.Resource, r.Placement.KeyVersion, r.Placement.ProviderVersion, r.Placement.State)
	case r.Running:
		fmt.Fprintf(w, "workflow %s started for key %s and %s\n", r.WorkflowID, r.KeyID, r.Destination)
	default:
		fmt.Fprintf(w, "workflow %s done for key %s and %s\n", r.WorkflowID, r.KeyID, r.Destination)
	}
	return nil
}

// printClouds prints where a described key lives in cloud KMSs.
func printClouds(w io.Writer, k api.KeyMetadata) error {
	if len(k.Clouds) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLOUD DESTINATION\tPROVIDER\tRESOURCE\tVERSION\tPROVIDER VERSION\tSTATE\tLAST SYNC\tLAST ERROR")
	for _, p := range k.Clouds {
		sync, last := "-", "-"
		if p.LastSync != nil {
			sync = p.LastSync.Format(time.RFC3339)
		}
		if p.LastErrorCode != "" {
			last = p.LastErrorCode
		}
		state := p.State
		if p.Pending != "" {
			state += " (" + p.Pending + " pending)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", p.Destination, p.Provider, dash(p.Resource), p.KeyVersion, dash(p.ProviderVersion), state, sync, last)
	}
	return tw.Flush()
}
