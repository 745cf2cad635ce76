package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
)

type globals struct {
	server  string
	creds   string
	dataDir string
	output  string
	timeout time.Duration
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
			if g.output != "json" && g.output != "table" {
				return usagef("--output must be json or table, not %q", g.output)
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err.Error()} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", envOr("KEYFLOW_SERVER", "nats://127.0.0.1:4222"), "NATS URL of the keyflow stack (env KEYFLOW_SERVER)")
	pf.StringVar(&g.creds, "creds", os.Getenv("KEYFLOW_CREDS"), "creds file of the principal (env KEYFLOW_CREDS; default: the dev stack's admin creds)")
	pf.StringVar(&g.dataDir, "data-dir", envOr("KEYFLOW_DATA_DIR", ".keyflow"), "data directory of the dev stack (env KEYFLOW_DATA_DIR)")
	pf.StringVarP(&g.output, "output", "o", "json", "output format: json or table")
	pf.DurationVar(&g.timeout, "timeout", 60*time.Second, "timeout of each request")

	root.AddCommand(newDevCmd(g), newKeyCmd(g), newEncryptCmd(g), newDecryptCmd(g), newDataKeyCmd(g), newAuditCmd(g))
	root.AddCommand(newCoreOpsCmds(g)...)
	root.AddCommand(newPQCmds(g)...)
	root.AddCommand(newInventoryCmd(g), newMigrateCmd(g))
	root.AddCommand(newBackupCmds(g)...)
	root.AddCommand(newApprovalCmd(g))
	root.AddCommand(newImportCmds(g)...)
	root.AddCommand(newTenantCmd(g), newPrincipalCmd(g), newGrantCmd(g))
	root.AddCommand(newRewrapCmd(g))
	root.AddCommand(newServeCmd(), newConfigCmd(), newBootstrapCmd(g))
	return root
}

// dial connects as the configured principal.
func (g *globals) dial(ctx context.Context) (*client.Client, error) {
	creds := g.creds
	if creds == "" {
		creds = filepath.Join(g.dataDir, "admin.creds")
	}
	tenant, err := client.TenantFromCreds(creds)
	if err != nil {
		return nil, fmt.Errorf("%w: %w (start `keyflow dev` or pass --creds)", errUnreachable, err)
	}
	c, err := client.Dial(ctx, client.Options{Server: g.server, CredsFile: creds, Tenant: tenant, Timeout: g.timeout, Name: "keyflow-cli"})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUnreachable, err)
	}
	return c, nil
}

// withClient runs fn with a connected client.
func (g *globals) withClient(cmd *cobra.Command, fn func(ctx context.Context, c *client.Client) error) error {
	ctx := cmd.Context()
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(ctx, c)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (g *globals) printKeys(w io.Writer, keys ...api.KeyMetadata) error {
	if g.output == "json" {
		if len(keys) == 1 {
			return printJSON(w, keys[0])
		}
		return printJSON(w, api.ListKeysReply{Keys: keys})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY ID\tALIAS\tSPEC\tSTATE\tPRIMARY\tVERSIONS\tCREATED")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", k.KeyID, dash(k.Alias), k.KeySpec, k.KeyState, k.PrimaryVersion, len(k.Versions), k.CreationDate.Format(time.RFC3339))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// readInput reads --in FILE, or stdin.
func readInput(cmd *cobra.Command, in string, limit int64) ([]byte, error) {
	var r io.Reader = cmd.InOrStdin()
	if in != "" && in != "-" {
		f, err := os.Open(in)
		if err != nil {
			return nil, usagef("cannot read --in: %v", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read input: %w", err)
	}
	return b, nil
}

// parseContext turns repeated --context k=v into an encryption context.
func parseContext(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, usagef("--context wants key=value, got %q", p)
		}
		if _, dup := out[k]; dup {
			return nil, usagef("--context key %q given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

func decodeBase64Input(b []byte) ([]byte, error) {
	s := strings.Join(strings.Fields(string(b)), "")
	out, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, usagef("input is not valid base64")
	}
	return out, nil
}

// noSubcommand makes a mistyped subcommand a usage error (exit 2) instead of
// cobra's default of printing help and exiting 0, which lets a typo in a
// script pass silently.
func noSubcommand(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unknown command %q for %q", args[0], c.CommandPath())
	}
	return nil
}

func showHelp(c *cobra.Command, _ []string) error { return c.Help() }
