package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/spf13/cobra"
)

// `keyflow key`: create, describe, list and rotate keys, and retire old
// versions. Its lifecycle subcommands are in keylifecycle.go, its policy
// subcommands in keypolicy.go, its alias subcommands in keyalias.go.

func newKeyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "key", Short: "Create, inspect and rotate keys", Args: noSubcommand, RunE: showHelp}

	var alias, desc, spec, usage, origin string
	var tagArgs []string
	var life lifecycleFlags
	var multiRegion, exportable bool
	create := withRaw(&cobra.Command{
		Use:   "create [--spec SPEC] [--usage USAGE]",
		Short: "Create a key (AES-256 by default) and print its metadata",
		Long: `Create a key and print its metadata (-o raw: only its key ID).

Specs and usages (AWS KMS names):
  SYMMETRIC_DEFAULT (AES-256-GCM, default)  ENCRYPT_DECRYPT
  HMAC_256                                  GENERATE_VERIFY_MAC
  RSA_3072, RSA_4096                        ENCRYPT_DECRYPT or SIGN_VERIFY
  ECC_NIST_P256, ECC_NIST_P384              SIGN_VERIFY
  ECC_NIST_EDWARDS25519 (Ed25519)           SIGN_VERIFY`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				req := api.CreateKeyRequest{Alias: alias, Description: desc, KeySpec: spec, KeyUsage: usage, Origin: origin, MultiRegion: multiRegion, Exportable: exportable}
				var err error
				if req.Tags, err = parseTags(tagArgs); err != nil {
					return err
				}
				if err := life.apply(&req); err != nil {
					return err
				}
				k, err := c.CreateKey(ctx, req)
				if err != nil {
					return err
				}
				if g.output == "raw" { // the bare key ID, for $(...)
					_, err = fmt.Fprintln(cmd.OutOrStdout(), k.KeyID)
					return err
				}
				return g.printKeys(cmd.OutOrStdout(), *k)
			})
		},
	})
	create.Flags().StringVar(&alias, "alias", "", "alias for the key (e.g. app-secrets or alias/app-secrets)")
	create.Flags().StringVar(&desc, "description", "", "free-text description")
	create.Flags().StringVar(&spec, "spec", "", "key spec (default SYMMETRIC_DEFAULT)")
	create.Flags().StringVar(&usage, "usage", "", "key usage (default: the spec's first usage)")
	create.Flags().StringArrayVar(&tagArgs, "tag", nil, "a tag, TAGKEY=VALUE (repeatable)")
	create.Flags().StringVar(&origin, "origin", "", "AWS_KMS (default: generated in the HSM) or EXTERNAL (no material: import it, see 'keyflow import-params')")
	create.Flags().BoolVar(&multiRegion, "multi-region", false, "make a multi-region primary key in this deployment's region (SYMMETRIC_DEFAULT or HMAC_256; see 'key replicate' and docs/multi-region.md)")
	create.Flags().BoolVar(&exportable, "exportable", false, "keep a releasable copy of the material, so the key may be distributed to cloud KMSs (key distribute) or fetched over KMIP (SYMMETRIC_DEFAULT, HMAC_256, or an RSA_3072, RSA_4096, ECC_NIST_P256 or ECC_NIST_P384 key pair; fixed at creation)")
	life.add(create)

	describe := &cobra.Command{
		Use:   "describe KEY",
		Short: "Show one key (KEY is a key ID or alias)",
		Args:  exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				k, err := c.DescribeKey(ctx, args[0])
				if err != nil {
					return err
				}
				return g.printKeys(cmd.OutOrStdout(), *k)
			})
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's keys",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.ListKeys(ctx)
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), r)
				}
				return g.printKeys(cmd.OutOrStdout(), r.Keys...)
			})
		},
	}
	var rewrap bool
	rotate := &cobra.Command{
		Use:   "rotate KEY",
		Short: "Rotate a key now: run the rotation workflow and wait for it",
		Long: `rotate runs the key's rotation workflow and waits for it. A workflow that
outlives the server's wait (about 20 s) is not cut short: the command prints
"still running: WORKFLOW_ID" and exits with code 5, and the workflow records
its outcome in the audit trail (io.keyflow.key.rotated.v1 or
io.keyflow.key.rotation.failed.v1). A second rotate while one runs is refused
(ConflictException naming the running workflow).`,
		Args: exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				stop := showProgress(cmd, waiting("rotating "+args[0]+" (the rotation workflow runs)"))
				r, err := c.RotateKeyWith(ctx, api.RotateKeyRequest{KeyID: args[0], Rewrap: rewrap})
				stop()
				if err != nil {
					return err
				}
				if r.Running {
					// The workflow outlived the server's wait: it goes
					// on, and records its own outcome (exit code 5).
					if g.output == "json" {
						if err := printJSON(cmd.OutOrStdout(), r); err != nil {
							return err
						}
					}
					return stillRunning{r.WorkflowID}
				}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), r)
				}
				return printRotation(cmd.OutOrStdout(), r)
			})
		},
	}
	rotate.Flags().BoolVar(&rewrap, "rewrap", false, "then rewrap the key's registered data keys to the new version and print the counts")
	cmd.AddCommand(create, describe, list, rotate, newRetireVersionCmd(g), newKeyAliasCmd(g))
	cmd.AddCommand(newKeyPolicyCmds(g)...)
	cmd.AddCommand(newKeyTagCmds(g)...)
	cmd.AddCommand(newLifecycleCmds(g)...)
	cmd.AddCommand(newRegionKeyCmds(g)...)
	cmd.AddCommand(newCloudKeyCmds(g)...)
	return cmd
}

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
	var window string
	var now, cancel bool
	cmd := &cobra.Command{
		Use:   "retire-version KEY --version N [--window 7d..30d | --now | --cancel]",
		Short: "Retire an old version after a waiting period (default 30 days), once no registered data key uses it",
		Long: `retire-version retires an old (non-primary) version. By default the version
becomes pending retirement for a waiting period (--window, 7d to 30d,
default 30d), like schedule-deletion for a key: every use of it meanwhile
is refused and recorded (io.keyflow.key.use.refused.v1), --cancel ends the
wait, and at the end its material is destroyed and the version becomes
DESTROYED (DESTROYED_COMPROMISED if it was compromised). --now destroys it
at once; a tenant policy that lists "retire-version-now" puts that under
dual control (exit 4, pending approval).

Ciphertexts under a destroyed version can no longer be decrypted, so
retirement is refused (KMSInvalidStateException, with their count) while
registered data keys still use the version: rewrap them first with
"key rotate --rewrap" (or a key with --rewrap-on-rotation). The primary
version never retires.`,
		Args: exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if version == 0 {
				return usagef("--version is required")
			}
			days, err := parseDays("--window", window)
			if err != nil {
				return err
			}
			if days != 0 && (days < 7 || days > 30) {
				return usagef("--window must be 7d to 30d, not %s", window)
			}
			if (now && cancel) || (cmd.Flags().Changed("window") && (now || cancel)) {
				return usagef("--window, --now and --cancel exclude each other")
			}
			if now || cancel {
				days = 0
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.RetireVersion(ctx, api.RetireVersionRequest{KeyID: args[0], Version: version, PendingWindowInDays: days, Now: now, Cancel: cancel})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), r)
				}
				out := cmd.OutOrStdout()
				switch {
				case cancel:
					_, err = fmt.Fprintf(out, "version %d of %s: retirement cancelled; it is %s\n", r.Version, r.Key.KeyID, r.State)
				case r.RetirementDate != nil:
					_, err = fmt.Fprintf(out, "version %d of %s is pending retirement; it will be destroyed at %s (workflow %s)\n", r.Version, r.Key.KeyID, r.RetirementDate.Format(time.RFC3339), r.WorkflowID)
				default:
					t := r.Transition
					if t == "" {
						t = "already"
					}
					_, err = fmt.Fprintf(out, "version %d of %s: %s -> %s (%s)\n", r.Version, r.Key.KeyID, r.PreviousState, r.State, t)
				}
				return err
			})
		},
	}
	cmd.Flags().Uint32Var(&version, "version", 0, "the version to retire (not the primary)")
	cmd.Flags().StringVar(&window, "window", "30d", "waiting period before the material is destroyed, 7d to 30d")
	cmd.Flags().BoolVar(&now, "now", false, "destroy the material at once, with no waiting period (dual control if the tenant policy lists retire-version-now)")
	cmd.Flags().BoolVar(&cancel, "cancel", false, "cancel the version's pending retirement")
	return cmd
}
