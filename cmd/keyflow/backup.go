package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/deploy/devstack"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/rootceremony"
)

// newBackupCmds returns the backup, archive and root commands
// (docs/backup-and-recovery.md).
func newBackupCmds(g *globals) []*cobra.Command {
	return []*cobra.Command{newBackupCmd(g), newArchiveCmd(g), newRootKeyCmd(g)}
}

func newBackupCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "backup", Short: "Back up the tenant's keys to a file, and restore them", Args: noSubcommand, RunE: showHelp}

	var out string
	var force bool
	create := &cobra.Command{
		Use:   "create --out FILE",
		Short: "Write an encrypted, integrity-protected backup of the tenant's keys to FILE",
		Long: `Write a backup of the tenant's keys (metadata, aliases, wrapped material and
archived material) to FILE, mode 0600. The file is encrypted and integrity-
protected under a backup key that only this deployment's root key opens, so
it is safe to store anywhere; restoring it elsewhere needs the root key
(keyflow root export-shares / import-shares). The backup is registered, so
destroying a key later revokes the backups that hold it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usagef("--out is required")
			}
			flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
			if force {
				flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			}
			// Claim the file first, so a backup is never made (and
			// registered) only to be thrown away.
			f, err := os.OpenFile(out, flags, 0o600)
			if errors.Is(err, os.ErrExist) {
				return usagef("%s exists; choose another --out or pass --force", out)
			}
			if err != nil {
				return usagef("cannot write --out: %v", err)
			}
			ok := false
			defer func() {
				f.Close()
				if !ok {
					os.Remove(out)
				}
			}()
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.CreateBackup(ctx)
				if err != nil {
					return err
				}
				if _, err := f.Write(r.Backup); err != nil {
					return fmt.Errorf("failed to write the backup: %w", err)
				}
				if err := f.Close(); err != nil {
					return fmt.Errorf("failed to write the backup: %w", err)
				}
				ok = true
				sum := sha256.Sum256(r.Backup)
				return g.print(cmd, map[string]any{"backupId": r.BackupID, "keys": r.Keys, "versions": r.Versions, "file": out, "bytes": len(r.Backup), "sha256": hex.EncodeToString(sum[:])},
					fmt.Sprintf("backup %s: %d keys, %d versions -> %s", r.BackupID, r.Keys, r.Versions, out))
			})
		},
	}
	create.Flags().StringVar(&out, "out", "", "file to write the backup to")
	create.Flags().BoolVar(&force, "force", false, "replace --out if it exists")

	var in string
	var overwrite bool
	restore := &cobra.Command{
		Use:   "restore --in FILE [--overwrite]",
		Short: "Restore a backup file into the tenant",
		Long: `Restore a backup made by 'keyflow backup create'. The deployment must hold the
root key that made it: the same HSM token, or one into which the root key
was imported with 'keyflow root import-shares'. A file that was changed,
cut short or made under another root key is refused, and nothing is
written. Keys and aliases that exist are not replaced unless --overwrite.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if in == "" {
				return usagef("--in is required")
			}
			b, err := os.ReadFile(in)
			if err != nil {
				return usagef("cannot read --in: %v", err)
			}
			if len(b) > kms.MaxBackupBytes {
				return usagef("%s is %d bytes; a backup is at most %d", in, len(b), kms.MaxBackupBytes)
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.RestoreBackup(ctx, api.BackupRestoreRequest{Backup: b, Overwrite: overwrite})
				if err != nil {
					return err
				}
				return g.print(cmd, r, fmt.Sprintf("restored backup %s: %d keys, %d versions, %d aliases", r.BackupID, r.Keys, r.Versions, r.Aliases))
			})
		},
	}
	restore.Flags().StringVar(&in, "in", "", "backup file to restore")
	restore.Flags().BoolVar(&overwrite, "overwrite", false, "replace keys and aliases that exist")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's registered backups",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.ListBackups(ctx)
				if err != nil {
					return err
				}
				var lines []string
				for _, b := range r.Backups {
					state := "ok"
					if b.Revoked {
						state = "REVOKED (key " + b.RevokedForKey + " destroyed)"
					}
					lines = append(lines, fmt.Sprintf("%s  %s  %d keys  %d bytes  sha256 %s  %s", b.BackupID, b.CreationDate.Format(time.RFC3339), len(b.KeyIDs), b.Bytes, b.SHA256[:16], state))
				}
				return g.print(cmd, r, strings.Join(lines, "\n"))
			})
		},
	}
	cmd.AddCommand(create, restore, list)
	return cmd
}

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

func newRootKeyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "root",
		Short: "The root key ceremony: export the root key as M-of-N custodian shares, import it into a new HSM",
		Long: `The root key ceremony runs offline, against the dev stack's token under
--data-dir, with the stack stopped. See docs/backup-and-recovery.md.`,
		Args: noSubcommand, RunE: showHelp,
	}
	var m, n int
	var outDir, soPINFile string
	export := &cobra.Command{
		Use:   "export-shares --out-dir DIR [--m 3] [--n 5]",
		Short: "Export the root key wrapped under a ceremony key split into N shares, M of which restore it",
		Long: `Export the root key for disaster recovery. The HSM wraps the root key under a
fresh 256-bit ceremony key, which only the security officer can make
(--so-pin-file, default DIR/hsm/so-pin of the dev stack). The ceremony key
is split into --n Shamir shares, any --m of which rebuild it, and forgotten.

Writes into --out-dir (which must be new or empty), each file mode 0600:
  root-wrapped.json        the wrapped root key; useless without M shares
  share-<i>-of-<n>.json    one per custodian; hand each to its custodian

Run it with the stack stopped.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if outDir == "" {
				return usagef("--out-dir is required")
			}
			if m < 2 || n < m || n > 255 {
				return usagef("need 2 <= --m <= --n <= 255, got --m %d --n %d", m, n)
			}
			if entries, err := os.ReadDir(outDir); err == nil && len(entries) > 0 {
				return usagef("--out-dir %s is not empty; give each ceremony a new directory", outDir)
			}
			var soPIN string
			var err error
			if soPINFile != "" {
				b, rerr := os.ReadFile(soPINFile)
				if rerr != nil {
					return usagef("cannot read --so-pin-file: %v", rerr)
				}
				soPIN = strings.TrimSpace(string(b))
			} else if soPIN, err = devstack.SOPIN(g.dataDir); err != nil {
				return usagef("%v", err)
			}
			ctx := cmd.Context()
			tok, err := devstack.OpenToken(ctx, g.dataDir, false)
			if err != nil {
				return err
			}
			defer tok.Close()
			c, err := rootceremony.Export(ctx, tok, rootceremony.ExportParams{RootKeyLabel: devstack.RootKeyLabel, M: m, N: n, SOPIN: soPIN})
			if err != nil {
				return offlineError(err)
			}
			if err := os.MkdirAll(outDir, 0o700); err != nil {
				return fmt.Errorf("failed to create --out-dir: %w", err)
			}
			wrappedPath := filepath.Join(outDir, "root-wrapped.json")
			if err := writeJSONFile(wrappedPath, c.Wrapped); err != nil {
				return err
			}
			var paths []string
			for _, s := range c.Shares {
				p := filepath.Join(outDir, fmt.Sprintf("share-%d-of-%d.json", s.Index, s.N))
				if err := writeJSONFile(p, s); err != nil {
					return err
				}
				paths = append(paths, p)
			}
			return g.print(cmd, map[string]any{"ceremonyId": c.ID, "m": m, "n": n, "wrappedRoot": wrappedPath, "shares": paths},
				fmt.Sprintf("ceremony %s: root key wrapped into %s; %d shares, any %d of which restore it:\n  %s", c.ID, wrappedPath, n, m, strings.Join(paths, "\n  ")))
		},
	}
	export.Flags().IntVar(&m, "m", rootceremony.DefaultM, "shares needed to restore the root key")
	export.Flags().IntVar(&n, "n", rootceremony.DefaultN, "shares to make (one per custodian)")
	export.Flags().StringVar(&outDir, "out-dir", "", "directory for the wrapped root key and the share files")
	export.Flags().StringVar(&soPINFile, "so-pin-file", "", "file holding the token's security officer PIN (default: the dev stack's)")

	var shares, wrapped string
	imp := &cobra.Command{
		Use:   "import-shares --shares A,B,C --wrapped-root FILE",
		Short: "Rebuild the root key from M custodian shares into the token of a fresh --data-dir",
		Long: `Import the root key exported by 'keyflow root export-shares' into the token
under --data-dir, creating the token if the directory is new. Give at least
M share files of one ceremony and its root-wrapped.json. Fewer than M, a
share of another ceremony or a corrupt share are refused, and nothing is
imported. Then start 'keyflow dev' on the directory and restore a backup.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if shares == "" || wrapped == "" {
				return usagef("--shares and --wrapped-root are required")
			}
			wb, err := os.ReadFile(wrapped)
			if err != nil {
				return usagef("cannot read --wrapped-root: %v", err)
			}
			w, err := rootceremony.ParseWrappedRootFile(wrapped, wb)
			if err != nil {
				return offlineError(err)
			}
			p := rootceremony.ImportParams{Wrapped: w}
			for _, name := range strings.Split(shares, ",") {
				name = strings.TrimSpace(name)
				if name == "" {
					continue
				}
				b, err := os.ReadFile(name)
				if err != nil {
					return usagef("cannot read share %s: %v", name, err)
				}
				s, err := rootceremony.ParseShareFile(name, b)
				clear(b)
				if err != nil {
					return offlineError(err)
				}
				p.Shares, p.ShareNames = append(p.Shares, s), append(p.ShareNames, name)
			}
			ctx := cmd.Context()
			tok, err := devstack.OpenToken(ctx, g.dataDir, true)
			if err != nil {
				return err
			}
			defer tok.Close()
			if err := rootceremony.Import(ctx, tok, p); err != nil {
				return offlineError(err)
			}
			return g.print(cmd, map[string]any{"ceremonyId": w.CeremonyID, "rootKeyLabel": w.RootKeyLabel, "sharesUsed": len(p.Shares), "dataDir": g.dataDir},
				fmt.Sprintf("root key %q of ceremony %s imported into %s from %d shares", w.RootKeyLabel, w.CeremonyID, g.dataDir, len(p.Shares)))
		},
	}
	imp.Flags().StringVar(&shares, "shares", "", "comma-separated share files (at least M)")
	imp.Flags().StringVar(&wrapped, "wrapped-root", "", "the ceremony's root-wrapped.json")
	cmd.AddCommand(export, imp)
	return cmd
}

// offlineError presents a domain refusal of an offline command like a
// server's refusal: "keyflow: <Code>: <message>", exit 1.
func offlineError(err error) error {
	var ke *kms.Error
	if errors.As(err, &ke) {
		return &client.Error{Code: string(ke.Code), Message: kms.PublicMessage(ke)}
	}
	return err
}

func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return nil
}

// print writes v as JSON, or text for --output table.
func (g *globals) print(cmd *cobra.Command, v any, text string) error {
	if g.output == "json" {
		return printJSON(cmd.OutOrStdout(), v)
	}
	_, err := fmt.Fprintln(cmd.OutOrStdout(), text)
	return err
}
