package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
)

// newRegionKeyCmds are the multi-region key commands under "key"
// (docs/multi-region.md).
func newRegionKeyCmds(g *globals) []*cobra.Command {
	var region string
	run := func(call func(ctx context.Context, c *client.Client, key string) (*api.KeyMetadata, error)) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				k, err := call(ctx, c, args[0])
				if err != nil {
					return err
				}
				return g.printKeys(cmd.OutOrStdout(), *k)
			})
		}
	}
	replicate := &cobra.Command{
		Use:   "replicate KEY --region REGION",
		Short: "Replicate a multi-region key to another linked region",
		Long: `replicate adds REGION as a replica of the multi-region primary KEY (created
with 'key create --multi-region' in this region). The primary region's
replication workflow then sends every version, wrapped to the replica
HSM's wrapping key, over the region link; 'key describe' shows each
replica's state and last synced version. See docs/multi-region.md.`,
		Args: exactArgs(1, "KEY"),
		RunE: run(func(ctx context.Context, c *client.Client, key string) (*api.KeyMetadata, error) {
			return c.ReplicateKey(ctx, key, region)
		}),
	}
	replicate.Flags().StringVar(&region, "region", "", "the replica region (required)")
	_ = replicate.MarkFlagRequired("region")
	var to string
	update := &cobra.Command{
		Use:   "update-primary-region KEY --region REGION",
		Short: "Make a replica region the primary of a multi-region key",
		Long: `update-primary-region moves the primary of KEY to REGION, a replica that has
every version. From then on REGION rotates and changes the key, and this
region is a replica that refuses to rotate.`,
		Args: exactArgs(1, "KEY"),
		RunE: run(func(ctx context.Context, c *client.Client, key string) (*api.KeyMetadata, error) {
			return c.UpdatePrimaryRegion(ctx, key, to)
		}),
	}
	update.Flags().StringVar(&to, "region", "", "the new primary region (required)")
	_ = update.MarkFlagRequired("region")
	var gone string
	var days int
	del := &cobra.Command{
		Use:   "schedule-replica-deletion KEY --region REGION [--days N]",
		Short: "Schedule the deletion of one replica of a multi-region key",
		Long: `schedule-replica-deletion schedules, on the primary, the deletion of KEY's
replica in REGION after a waiting period of its own (7 to 30 days). The
replica refuses every use from the moment it learns of it; the primary and
the other replicas serve on. At the end of the window the replica region's
own deletion workflow destroys its material, and the primary shows the
replica DESTROYED. 'key cancel-replica-deletion' cancels it before then.`,
		Args: exactArgs(1, "KEY"),
		RunE: run(func(ctx context.Context, c *client.Client, key string) (*api.KeyMetadata, error) {
			return c.ScheduleReplicaDeletion(ctx, key, gone, days)
		}),
	}
	del.Flags().StringVar(&gone, "region", "", "the replica region (required)")
	del.Flags().IntVar(&days, "days", 30, "waiting period in days, 7 to 30")
	_ = del.MarkFlagRequired("region")
	var kept string
	cancel := &cobra.Command{
		Use:   "cancel-replica-deletion KEY --region REGION",
		Short: "Cancel the scheduled deletion of one replica of a multi-region key",
		Long: `cancel-replica-deletion cancels, on the primary, the scheduled deletion of
KEY's replica in REGION before its window ends. As with AWS KMS, the replica
becomes DISABLED: keyflow's disabled state there (SUSPENDED, as after 'key
disable': no new encryption, decryption still works), its material kept;
'key replicate KEY --region REGION' enables it again. The cancel reaches the replica region
over the link; a replica region cut off until after its window ended has
destroyed its material by then, and 'key describe' shows it DESTROYED once
the link is back.`,
		Args: exactArgs(1, "KEY"),
		RunE: run(func(ctx context.Context, c *client.Client, key string) (*api.KeyMetadata, error) {
			return c.CancelReplicaDeletion(ctx, key, kept)
		}),
	}
	cancel.Flags().StringVar(&kept, "region", "", "the replica region (required)")
	_ = cancel.MarkFlagRequired("region")
	return []*cobra.Command{replicate, update, del, cancel}
}

// printRegions prints a multi-region key's regions below its row.
func printRegions(w io.Writer, k api.KeyMetadata) error {
	if !k.MultiRegion {
		return nil
	}
	fmt.Fprintf(w, "\nmulti-region key, primary region %s\n", k.PrimaryRegion)
	if len(k.Replicas) == 0 {
		_, err := fmt.Fprintln(w, "no replicas")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPLICA REGION\tSTATE\tLAST SYNCED VERSION\tDELETION DATE")
	for _, r := range k.Replicas {
		date := "-"
		if !r.DeletionDate.IsZero() {
			date = r.DeletionDate.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", r.Region, r.State, r.LastSyncedVersion, date)
	}
	return tw.Flush()
}

// regionFlags are `keyflow dev`'s multi-region flags (docs/multi-region.md).
type regionFlags struct{ region, leafListen, linkTo, linkCreds string }

func (f *regionFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.region, "region", "", "this deployment's region name for multi-region keys, e.g. us-east (also its JetStream domain); see docs/multi-region.md")
	cmd.Flags().StringVar(&f.leafListen, "leaf-listen", "", "with --region: accept other regions' links (NATS leaf nodes) on this address, and write DIR/region-link.creds for them")
	cmd.Flags().StringVar(&f.linkTo, "link-to", "", "with --region: link to another region's --leaf-listen address, e.g. nats-leaf://10.0.0.5:7422")
	cmd.Flags().StringVar(&f.linkCreds, "link-creds", "", "with --link-to: the other region's region-link.creds")
}
