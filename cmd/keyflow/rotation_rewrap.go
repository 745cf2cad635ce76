package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
)

// Rotation with rewrap, the rewrap's progress, and retirement of old
// versions (docs/lifecycle.md, "Rotation and rewrap").

// printRotation prints a finished rotation for humans, with the counts of
// the rewrap that followed it.
func printRotation(w io.Writer, r *api.RotateKeyReply) error {
	if _, err := fmt.Fprintf(w, "rotated %s: version %d -> %d (workflow %s)\n", r.KeyID, r.PreviousVersion, r.NewVersion, r.WorkflowID); err != nil {
		return err
	}
	if rw := r.Rewrap; rw != nil {
		if _, err := fmt.Fprintf(w, "rewrapped %d registered data keys to version %d (%d failed, %d already current, %d remaining; workflow %s)\n",
			rw.Rewrapped, r.NewVersion, rw.Failed, rw.Skipped, rw.Remaining, rw.WorkflowID); err != nil {
			return err
		}
		if rw.Problem != "" {
			_, err := fmt.Fprintf(w, "the rewrap did not finish: %s\n", rw.Problem)
			return err
		}
	}
	return nil
}

func newRetireVersionCmd(g *globals) *cobra.Command {
	var version uint32
	cmd := &cobra.Command{
		Use:   "retire-version KEY --version N",
		Short: "Destroy an old version's material once no registered data key uses it",
		Long: `retire-version destroys the material of an old (non-primary) version and
records the version as DESTROYED (DESTROYED_COMPROMISED if it was
compromised). Ciphertexts under it can no longer be decrypted, so it is
refused (KMSInvalidStateException, with their count) while registered data
keys still use the version: rewrap them first with "key rotate --rewrap"
(or a key with --rewrap-on-rotation). The primary version never retires.`,
		Args: exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if version == 0 {
				return usagef("--version is required")
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.RetireVersion(ctx, api.RetireVersionRequest{KeyID: args[0], Version: version})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), r)
				}
				t := r.Transition
				if t == "" {
					t = "already"
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "version %d of %s: %s -> %s (%s)\n", r.Version, r.Key.KeyID, r.PreviousState, r.State, t)
				return err
			})
		},
	}
	cmd.Flags().Uint32Var(&version, "version", 0, "the version to retire (not the primary)")
	return cmd
}

func newRewrapStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status KEY",
		Short: "Show the progress of the key's rewrap workflow (started by key rotate --rewrap)",
		Args:  exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.RewrapStatus(ctx, args[0])
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), r)
				}
				state := "running"
				if r.Done {
					state = "done"
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s: %s, %d rewrapped, %d failed, %d already current (workflow %s)\n", r.KeyID, state, r.Rewrapped, r.Failed, r.Skipped, r.WorkflowID)
				return err
			})
		},
	}
}
