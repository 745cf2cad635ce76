package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/deploy/config"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check or print keyflow serve's configuration",
		Args:  noSubcommand,
		RunE:  showHelp,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "check FILE",
		Short: "Check a configuration file (and the KEYFLOW_* environment) without starting anything",
		Long: `Check a configuration file as keyflow serve would read it, with the
KEYFLOW_* environment applied: every problem is printed, one a line, and the
files it names must exist. Exit code 0 when it is fine, 2 otherwise.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loadConfig(args[0])
			if err != nil {
				return err
			}
			if err := c.Err(); err != nil {
				return usageError{err.Error()}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", args[0])
			return nil
		},
	}, &cobra.Command{
		Use:   "example",
		Short: "Print a commented configuration file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprint(cmd.OutOrStdout(), config.Example())
			return err
		},
	})
	return cmd
}
