package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// The cobra root: the global flags and the command tree (see doc.go for
// the layout and the verb-or-noun rule).

type globals struct {
	server    string
	creds     string
	credsFlag bool // --creds was given (else creds is KEYFLOW_CREDS)
	dataDir   string
	output    string
	timeout   time.Duration
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "keyflow",
		Short: "keyflow: key management with durable, audited lifecycles",
		Long: `keyflow is a key management system for cloud workloads.

Start a development stack with 'keyflow dev', then use the other commands
against it. They find the dev stack's credentials by themselves.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          noSubcommand,
		RunE:          showHelp,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			g.credsFlag = cmd.Flags().Changed("creds")
			switch {
			case g.output == "raw" && cmd.Annotations[rawOutput] == "":
				return usagef("%s has no raw output; use -o json or -o table", cmd.CommandPath())
			case g.output != "json" && g.output != "table" && g.output != "raw":
				return usagef("--output must be json, table or raw, not %q", g.output)
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err.Error()} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", envOr("KEYFLOW_SERVER", "nats://127.0.0.1:4222"), "NATS URL of the keyflow stack (env KEYFLOW_SERVER)")
	pf.StringVar(&g.creds, "creds", os.Getenv("KEYFLOW_CREDS"), "creds file of the principal (env KEYFLOW_CREDS; default: the dev stack's admin creds)")
	pf.StringVar(&g.dataDir, "data-dir", envOr("KEYFLOW_DATA_DIR", ".keyflow"), "data directory of the dev stack (env KEYFLOW_DATA_DIR)")
	pf.StringVarP(&g.output, "output", "o", "json", "output format: json, table, or raw (the bare base64, PEM or bytes of a crypto command, for pipes)")
	pf.DurationVar(&g.timeout, "timeout", 60*time.Second, "timeout of each request")

	// Top-level verbs: one request on data or key material (doc.go).
	root.AddCommand(newCryptoCmds(g)...)
	root.AddCommand(newDataKeyCmd(g), newDataKeyPairCmd(g), newRewrapCmd(g))
	root.AddCommand(newPQCmds(g)...)
	root.AddCommand(newImportCmds(g)...)
	root.AddCommand(newInventoryCmd(g), newDevCmd(g), newServeCmd(), newBootstrapCmd(g))
	// Noun groups: a thing with a life of its own, `keyflow NOUN VERB`.
	root.AddCommand(newKeyCmd(g), newGrantCmd(g), newApprovalCmd(g), newAuditCmd(g))
	root.AddCommand(newBackupCmd(g), newArchiveCmd(g), newRootKeyCmd(g), newMigrateCmd(g))
	root.AddCommand(newTenantCmd(g), newPrincipalCmd(g), newAccessKeyCmd(g), newKMIPCmd(g), newConfigCmd())
	root.AddCommand(newOperatorCmd(), newRegionCmd(g), newCloudCmd(g))
	usageArgs(root)
	root.Version = buildVersion()
	for _, c := range root.Commands() {
		switch c.Name() {
		case "encrypt", "decrypt", "reencrypt", "sign", "verify", "mac", "verify-mac", "get-public-key", "random",
			"seal", "open", "decapsulate", "rewrap":
			withRaw(c)
		}
	}
	return root
}

// noSubcommand makes a mistyped subcommand a usage error (exit 2) instead of
// cobra's default of printing help and exiting 0, which lets a typo in a
// script pass silently.
func noSubcommand(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
		if c.SuggestionsMinimumDistance <= 0 {
			c.SuggestionsMinimumDistance = 2
		}
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return usageError{msg}
	}
	return nil
}

// usageArgs makes every command's argument errors usage errors (exit 2):
// cobra's own checks (cobra.NoArgs: "unknown command ... for ...") return
// plain errors.
func usageArgs(c *cobra.Command) {
	if check := c.Args; check != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			err := check(cmd, args)
			var ue usageError
			switch {
			case err == nil || errors.As(err, &ue):
				return err
			case !cmd.HasSubCommands() && len(args) > 0 && strings.HasPrefix(err.Error(), "unknown command"):
				return usagef("%s takes no arguments, got %q (input comes from stdin, --in or flags)", cmd.CommandPath(), args[0])
			}
			return usageError{err.Error()}
		}
	}
	for _, sub := range c.Commands() {
		usageArgs(sub)
	}
}

// version is set at build time (-ldflags "-X main.version=v1.2.3"); else
// the module version from the build info, or "devel".
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}

func showHelp(c *cobra.Command, _ []string) error { return c.Help() }

func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("want %s, got %d argument(s)", names, len(args))
		}
		return nil
	}
}
