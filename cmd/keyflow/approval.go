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

// `keyflow approval`: dual control (docs/dual-control.md).

func newApprovalCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "approval",
		Short: "Dual control: list, show, approve and deny approval requests",
		Long: `Dual control (M-of-N approvals).

When the tenant policy puts an operation under dual control, requesting it
opens an approval request instead of running it: the command prints the
approval ID and exits with code 4. M distinct approvers other than the
requester then approve it (one denial ends it; it expires after the
policy's expiresAfter), and keyflow runs the operation.`,
		Args: noSubcommand, RunE: showHelp,
	}
	var state string
	list := &cobra.Command{
		Use:   "list [--state STATE]",
		Short: "List approval requests, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.ListApprovals(ctx, strings.ToUpper(state))
				if err != nil {
					return err
				}
				return g.printApprovals(cmd.OutOrStdout(), r.Approvals, true)
			})
		},
	}
	list.Flags().StringVar(&state, "state", "", "only requests in this state: pending, approved, completed, failed, denied, expired")
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one approval request and its votes",
		Args:  exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				a, err := c.ShowApproval(ctx, args[0])
				if err != nil {
					return err
				}
				return g.printApprovals(cmd.OutOrStdout(), []api.Approval{*a}, false)
			})
		},
	}
	var comment string
	approve := &cobra.Command{
		Use:   "approve ID [--comment TEXT]",
		Short: "Approve a request (not your own; once per principal)",
		Args:  exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				a, err := c.Approve(ctx, args[0], comment)
				if err != nil {
					return err
				}
				return g.printApprovals(cmd.OutOrStdout(), []api.Approval{*a}, false)
			})
		},
	}
	approve.Flags().StringVar(&comment, "comment", "", "a comment for the audit trail")
	var reason string
	deny := &cobra.Command{
		Use:   "deny ID --reason TEXT",
		Short: "Deny a request: it ends, and the operation never runs",
		Args:  exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return usagef("--reason is required to deny")
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				a, err := c.Deny(ctx, args[0], reason)
				if err != nil {
					return err
				}
				return g.printApprovals(cmd.OutOrStdout(), []api.Approval{*a}, false)
			})
		},
	}
	deny.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit trail; required)")
	cmd.AddCommand(list, show, approve, deny)
	return cmd
}

func (g *globals) printApprovals(w io.Writer, as []api.Approval, asList bool) error {
	if g.output == "json" {
		if asList {
			if as == nil {
				as = []api.Approval{}
			}
			return printJSON(w, api.ApprovalListReply{Approvals: as})
		}
		return printJSON(w, as[0])
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APPROVAL ID\tOPERATION\tTARGET\tREQUESTER\tSTATE\tAPPROVALS\tEXPIRES")
	for _, a := range as {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\n", a.ApprovalID, a.Operation, a.Target, a.Requester, a.State, a.Approvals, a.Required, a.ExpiresAt.Format(time.RFC3339))
	}
	if !asList && len(as) == 1 {
		for _, v := range as[0].Votes {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", v.Decision, v.Principal, v.At.Format(time.RFC3339), v.Comment)
		}
		if as[0].ErrorCode != "" {
			fmt.Fprintf(tw, "  FAILED\t%s\t%s\n", as[0].ErrorCode, as[0].Message)
		}
	}
	return tw.Flush()
}
