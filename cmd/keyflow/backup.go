package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
	"github.com/spf13/cobra"
)

// `keyflow backup`: encrypted backups of a tenant's keys (docs/backup-and-recovery.md).

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
