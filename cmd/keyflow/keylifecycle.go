package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/spf13/cobra"
)

// `keyflow key` lifecycle subcommands: state changes, scheduled deletion,
// compromise and automatic rotation (docs/lifecycle.md).

// lifecycleFlags are key create's lifecycle flags.
type lifecycleFlags struct {
	activation, rotation, cryptoperiod string
	rewrapOnRotation                   bool
}

func (f *lifecycleFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.activation, "activation-date", "", "keep the key PRE_ACTIVE until this time (RFC 3339, or +DURATION such as +2d or +36h)")
	cmd.Flags().StringVar(&f.rotation, "rotation-period", "", "rotate automatically every period (1d to 7y, e.g. 90d, 1y)")
	cmd.Flags().BoolVar(&f.rewrapOnRotation, "rewrap-on-rotation", false, "every rotation (scheduled or requested) rewraps the key's registered data keys")
	cmd.Flags().StringVar(&f.cryptoperiod, "cryptoperiod", "", "originator-usage period of each version (1d to 7y; default 2y, NIST SP 800-57 Table 1)")
}

func (f *lifecycleFlags) apply(r *api.CreateKeyRequest) error {
	if f.activation != "" {
		t, err := parseWhen(f.activation, time.Now())
		if err != nil {
			return err
		}
		r.ActivationDate = &t
	}
	r.RewrapOnRotation = f.rewrapOnRotation
	var err error
	if r.RotationPeriodInDays, err = parseDays("--rotation-period", f.rotation); err != nil {
		return err
	}
	r.CryptoperiodInDays, err = parseDays("--cryptoperiod", f.cryptoperiod)
	return err
}

// parseWhen reads an RFC 3339 time or +DURATION from now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if rest, ok := strings.CutPrefix(s, "+"); ok {
		if days, err := parseDays("--activation-date", rest); err == nil && strings.HasSuffix(rest, "d") {
			return now.Add(time.Duration(days) * 24 * time.Hour).UTC().Truncate(time.Second), nil
		}
		d, err := time.ParseDuration(rest)
		if err != nil || d <= 0 {
			return time.Time{}, usagef("--activation-date %q: want an RFC 3339 time or +DURATION (+2d, +36h)", s)
		}
		return now.Add(d).UTC().Truncate(time.Second), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, usagef("--activation-date %q: want an RFC 3339 time or +DURATION (+2d, +36h)", s)
	}
	return t, nil
}

// parseDays reads a period in days: N, Nd, Nw or Ny (365 days); "" is 0
// and "off" is 0.
func parseDays(flag, s string) (int, error) {
	if s == "" || s == "off" || s == "0" {
		return 0, nil
	}
	unit := 1
	num := s
	switch {
	case strings.HasSuffix(s, "d"):
		num = strings.TrimSuffix(s, "d")
	case strings.HasSuffix(s, "w"):
		num, unit = strings.TrimSuffix(s, "w"), 7
	case strings.HasSuffix(s, "y"):
		num, unit = strings.TrimSuffix(s, "y"), 365
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 || n > 10000 {
		return 0, usagef("%s %q: want a number of days such as 90d, 12w or 2y", flag, s)
	}
	return n * unit, nil
}

// newLifecycleCmds are the key subcommands that move a key through its
// lifecycle.
func newLifecycleCmds(g *globals) []*cobra.Command {
	stateCmd := func(use, short, state string, withVersion bool) *cobra.Command {
		var reason string
		var version uint32
		cmd := &cobra.Command{
			Use:   use,
			Short: short,
			Args:  exactArgs(1, "KEY"),
			RunE: func(cmd *cobra.Command, args []string) error {
				return g.setState(cmd, api.SetKeyStateRequest{KeyID: args[0], State: state, Version: version, Reason: reason})
			},
		}
		cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit trail)")
		if withVersion {
			cmd.Flags().Uint32Var(&version, "version", 0, "change one version instead of the key")
		}
		return cmd
	}
	enable := stateCmd("enable KEY", "Make a key ACTIVE (AWS EnableKey; T4 from PRE_ACTIVE, T11 from SUSPENDED)", "ACTIVE", false)
	disable := stateCmd("disable KEY", "Suspend a key (AWS DisableKey; T7): it decrypts and verifies only", "SUSPENDED", false)
	suspend := stateCmd("suspend KEY", "Suspend a key (T7): it decrypts and verifies only", "SUSPENDED", false)
	resume := stateCmd("resume KEY", "Resume a suspended key (T11)", "ACTIVE", false)
	activate := stateCmd("activate KEY", "Activate a PRE_ACTIVE key now (T4)", "ACTIVE", false)
	deactivate := stateCmd("deactivate KEY", "Deactivate a key or version (T8, T12): it no longer encrypts or signs", "DEACTIVATED", true)

	var ssReason string
	var ssVersion uint32
	setState := &cobra.Command{
		Use:   "set-state KEY STATE",
		Short: "Move a key or version to STATE along a transition NIST SP 800-57 allows",
		Long: `Move a key (or, with --version, one version) to another lifecycle state.

States: PRE_ACTIVE, ACTIVE, SUSPENDED, DEACTIVATED, COMPROMISED. DESTROYED is
reached only through schedule-deletion. A transition the standard does not
allow is refused with KMSInvalidStateException naming the current state.`,
		Args: exactArgs(2, "KEY STATE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.setState(cmd, api.SetKeyStateRequest{KeyID: args[0], State: strings.ToUpper(args[1]), Version: ssVersion, Reason: ssReason})
		},
	}
	setState.Flags().StringVar(&ssReason, "reason", "", "why (recorded in the audit trail; required for COMPROMISED)")
	setState.Flags().Uint32Var(&ssVersion, "version", 0, "change one version instead of the key")

	var window string
	var cancelOnUse bool
	schedule := &cobra.Command{
		Use:   "schedule-deletion KEY [--window 7d..30d] [--cancel-on-use]",
		Short: "Destroy a key after a waiting period (default 30 days); every use meanwhile is refused and recorded",
		Args:  exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			days, err := parseDays("--window", window)
			if err != nil {
				return err
			}
			if days != 0 && (days < 7 || days > 30) {
				return usagef("--window must be 7d to 30d, not %s", window)
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.ScheduleDeletion(ctx, api.ScheduleDeletionRequest{KeyID: args[0], PendingWindowInDays: days, CancelOnUse: cancelOnUse})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), r)
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s is pending deletion; it will be destroyed at %s (workflow %s)\n", r.KeyID, r.DeletionDate.Format(time.RFC3339), r.WorkflowID)
				return err
			})
		},
	}
	schedule.Flags().StringVar(&window, "window", "30d", "waiting period, 7d to 30d")
	schedule.Flags().BoolVar(&cancelOnUse, "cancel-on-use", false, "cancel the deletion if anyone tries to use the key meanwhile")

	cancel := &cobra.Command{
		Use:   "cancel-deletion KEY",
		Short: "Cancel a pending deletion",
		Args:  exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				k, err := c.CancelDeletion(ctx, args[0])
				if err != nil {
					return err
				}
				return g.printKeys(cmd.OutOrStdout(), *k)
			})
		},
	}

	var cReason string
	var cVersion uint32
	compromise := &cobra.Command{
		Use:   "compromise KEY [--version N] --reason TEXT",
		Short: "Record a compromise; a remediation workflow rotates the key and rewraps its data keys",
		Args:  exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(cReason) == "" {
				return usagef("--reason is required")
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.Compromise(ctx, api.CompromiseRequest{KeyID: args[0], Version: cVersion, Reason: cReason})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), r)
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "version %d of %s is COMPROMISED; remediation: %s\n", r.Version, r.KeyID, r.RemediationWorkflowID)
				return err
			})
		},
	}
	compromise.Flags().StringVar(&cReason, "reason", "", "what happened (recorded in the audit trail)")
	compromise.Flags().Uint32Var(&cVersion, "version", 0, "the compromised version (default: the primary)")

	var period string
	var rewrapOn bool
	setRotation := &cobra.Command{
		Use:   "set-rotation KEY --period 90d|off [--rewrap-on-rotation[=false]]",
		Short: "Rotate a key automatically every period (1d to 7y), on a Temporal Schedule owned by the key",
		Args:  exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rewrapSet := cmd.Flags().Changed("rewrap-on-rotation")
			if period == "" && !rewrapSet {
				return usagef("--period is required (e.g. 90d, 1y, or off), or --rewrap-on-rotation=true|false")
			}
			days, err := parseDays("--period", period)
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				req := api.SetRotationRequest{KeyID: args[0], RotationPeriodInDays: days}
				if rewrapSet {
					req.RewrapOnRotation = &rewrapOn
				}
				if period == "" {
					// Only the rewrap setting changes: keep the period.
					k, err := c.DescribeKey(ctx, args[0])
					if err != nil {
						return err
					}
					req.RotationPeriodInDays = k.RotationPeriodInDays
				}
				k, err := c.SetRotation(ctx, req)
				if err != nil {
					return err
				}
				return g.printKeys(cmd.OutOrStdout(), *k)
			})
		},
	}
	setRotation.Flags().StringVar(&period, "period", "", "rotation period (1d to 7y, e.g. 90d, 1y), or off")
	setRotation.Flags().BoolVar(&rewrapOn, "rewrap-on-rotation", false, "rotations rewrap the key's registered data keys (=false turns it off)")

	return []*cobra.Command{enable, disable, suspend, resume, activate, deactivate, setState, schedule, cancel, compromise, setRotation}
}

func (g *globals) setState(cmd *cobra.Command, r api.SetKeyStateRequest) error {
	return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
		out, err := c.SetKeyState(ctx, r)
		if err != nil {
			return err
		}
		if g.output == "json" {
			return printJSON(cmd.OutOrStdout(), out)
		}
		what := out.Key.KeyID
		if r.Version != 0 {
			what = fmt.Sprintf("version %d of %s", r.Version, out.Key.KeyID)
		}
		if out.Transition == "" {
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s is already %s\n", what, out.PreviousState)
			return err
		}
		_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s: %s -> %s (%s)\n", what, out.PreviousState, r.State, out.Transition)
		return err
	})
}
