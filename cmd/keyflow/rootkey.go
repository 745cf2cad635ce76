package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/rootceremony"
	"github.com/spf13/cobra"
)

// `keyflow root`: the root-key ceremony, offline against the dev stack's
// data directory (docs/backup-and-recovery.md).

func newRootKeyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "root",
		Short: "The root key ceremony: export the root key as M-of-N custodian shares, import it into a new HSM",
		Long: `The root key ceremony runs offline, against the dev stack's token under
--data-dir, with the stack stopped: both commands refuse while the data directory is in
use. See docs/backup-and-recovery.md.`,
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

It refuses while a keyflow dev runs on --data-dir (the ceremony works on the
token offline), and keyflow dev cannot start on it while the ceremony runs.`,
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
			release, err := holdDataDir(g.dataDir)
			if err != nil {
				return err
			}
			defer release()
			var soPIN string
			if soPINFile != "" {
				b, rerr := os.ReadFile(soPINFile)
				if rerr != nil {
					return usagef("cannot read --so-pin-file: %v", rerr)
				}
				soPIN = strings.TrimSpace(string(b))
			} else if soPIN, err = devSOPIN(g.dataDir); err != nil {
				return usagef("%v", err)
			}
			ctx := cmd.Context()
			tok, err := devOpenToken(ctx, g.dataDir, false)
			if err != nil {
				return err
			}
			defer tok.Close()
			c, err := rootceremony.Export(ctx, tok, rootceremony.ExportParams{RootKeyLabel: devRootKeyLabel, M: m, N: n, SOPIN: soPIN})
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
			if err := os.MkdirAll(g.dataDir, 0o700); err != nil {
				return fmt.Errorf("failed to create --data-dir: %w", err)
			}
			release, err := holdDataDir(g.dataDir)
			if err != nil {
				return err
			}
			defer release()
			ctx := cmd.Context()
			tok, err := devOpenToken(ctx, g.dataDir, true)
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

// holdDataDir takes the data directory's lock (the one keyflow dev holds
// while it runs, deploy/devstack) for an offline command, or refuses
// (ConflictException) while a stack holds it.
func holdDataDir(dir string) (release func(), err error) {
	release, err = devLockDataDir(dir)
	if errors.Is(err, errDevDataDirLocked) {
		return nil, &client.Error{Code: "ConflictException", Message: fmt.Sprintf(
			"%v; the root-key ceremony works on the token offline", err)}
	}
	return release, err
}
