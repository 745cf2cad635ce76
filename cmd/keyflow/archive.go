package main

import (
	"context"
	"fmt"
	"time"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/spf13/cobra"
)

// `keyflow archive`: archival of deactivated versions, and their restore
// under dual control (docs/backup-and-recovery.md).

func newArchiveCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "archive", Short: "Archive deactivated key versions, and restore them with an approval", Args: noSubcommand, RunE: showHelp}

	var retention, every time.Duration
	run := &cobra.Command{
		Use:   "run [--retention 2160h] [--every 24h]",
		Short: "Archive deactivated versions older than the retention age (one pass, or recurring with --every)",
		Long: `Move the tenant's deactivated key versions that are older than --retention
(default 90 days) to the archive. An archived version cannot be used (its
ciphertexts fail with KMSInvalidStateException) until it is restored with
'keyflow archive restore' and another principal's 'keyflow archive approve'.
With --every, a recurring archival workflow is started (or found running)
that makes a pass at that interval.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if retention < 0 || every < 0 || (every > 0 && every < time.Minute) {
				return usagef("--retention must not be negative, and --every is at least 1m")
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.RunArchival(ctx, api.ArchiveRunRequest{RetentionSeconds: int64(retention / time.Second), IntervalSeconds: int64(every / time.Second)})
				if err != nil {
					return err
				}
				text := fmt.Sprintf("archived %d versions (%d failed), workflow %s", len(r.Archived), len(r.Failed), r.WorkflowID)
				if r.Scheduled {
					text = "recurring archival running as workflow " + r.WorkflowID
				}
				return g.print(cmd, r, text)
			})
		},
	}
	run.Flags().DurationVar(&retention, "retention", 0, "age a deactivated version must reach (default 2160h, 90 days)")
	run.Flags().DurationVar(&every, "every", 0, "run archival at this interval instead of once")

	var version uint32
	restore := &cobra.Command{
		Use:   "restore KEY --version N",
		Short: "Request the restore of an archived version; another principal must approve it",
		Args:  exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if version == 0 {
				return usagef("--version is required")
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.RequestVersionRestore(ctx, api.ArchiveRestoreRequest{KeyID: args[0], Version: version})
				if err != nil {
					return err
				}
				return g.print(cmd, r, fmt.Sprintf("restore of %s version %d requested (workflow %s); waiting for another principal's approval", r.KeyID, r.Version, r.WorkflowID))
			})
		},
	}
	restore.Flags().Uint32Var(&version, "version", 0, "the archived version")

	decide := func(approve bool) *cobra.Command {
		var v uint32
		use, short := "approve", "Approve a waiting restore (not your own) and wait until the version is restored"
		if !approve {
			use, short = "reject", "Reject a waiting restore"
		}
		c := &cobra.Command{
			Use:   use + " KEY --version N",
			Short: short,
			Args:  exactArgs(1, "KEY"),
			RunE: func(cmd *cobra.Command, args []string) error {
				if v == 0 {
					return usagef("--version is required")
				}
				return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
					r, err := c.DecideVersionRestore(ctx, api.ArchiveDecideRequest{KeyID: args[0], Version: v, Approve: approve})
					if err != nil {
						return err
					}
					return g.print(cmd, r, fmt.Sprintf("%s version %d: %s by %s", r.KeyID, r.Version, r.Outcome, r.DecidedBy))
				})
			},
		}
		c.Flags().Uint32Var(&v, "version", 0, "the archived version")
		return c
	}
	cmd.AddCommand(run, restore, decide(true), decide(false))
	return cmd
}
