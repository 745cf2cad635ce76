package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
)

// BYOK (External Key Origination): import-params, import,
// delete-imported-material. See docs/byok.md.

// Files that import-params writes, named as in AWS's documentation.
const (
	publicKeyFile   = "PublicKey.bin"
	importTokenFile = "ImportToken.bin"
)

func newImportCmds(g *globals) []*cobra.Command {
	var alg, spec, outDir string
	params := &cobra.Command{
		Use:   "import-params KEY --wrapping-alg ALG [--wrapping-spec RSA_3072|RSA_4096] [--out DIR]",
		Short: "Get a wrapping public key and an import token for an EXTERNAL key",
		Long: `Get import parameters for a key created with 'keyflow key create --origin EXTERNAL'.

Writes two files into --out (default: the current directory):
  PublicKey.bin    the wrapping public key: DER SubjectPublicKeyInfo for RSA
                   (openssl: -pubin -keyform DER), the raw X-Wing key for XWING_HPKE
  ImportToken.bin  the import token: give it back to 'keyflow import'
and prints the parameters. They are valid for 24 hours.

Wrapping algorithms:
  RSAES_OAEP_SHA_256        RSA-OAEP, SHA-256 and MGF1-SHA-256 (material up to 318 bytes with RSA_3072)
  RSAES_OAEP_SHA_1          RSA-OAEP, SHA-1
  RSA_AES_KEY_WRAP_SHA_256  RSA-OAEP (SHA-256) of a fresh AES-256 key, then AES-KWP (RFC 5649) of the material
  RSA_AES_KEY_WRAP_SHA_1    the same with SHA-1
  XWING_HPKE                HPKE with X-Wing (ML-KEM-768 + X25519), HKDF-SHA256, AES-256-GCM: post-quantum

RSA_3072 and RSA_4096 keys import your private key (PKCS#8 DER) and take
RSA_AES_KEY_WRAP_SHA_256 or RSA_AES_KEY_WRAP_SHA_1 only.`,
		Args: exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if alg == "" {
				return usagef("--wrapping-alg is required")
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.GetParametersForImport(ctx, api.ImportParamsRequest{KeyID: args[0], WrappingAlgorithm: alg, WrappingKeySpec: spec})
				if err != nil {
					return err
				}
				pk, tok := filepath.Join(outDir, publicKeyFile), filepath.Join(outDir, importTokenFile)
				if err := os.WriteFile(pk, r.PublicKey, 0o644); err != nil {
					return fmt.Errorf("failed to write %s: %w", pk, err)
				}
				if err := os.WriteFile(tok, r.ImportToken, 0o600); err != nil {
					return fmt.Errorf("failed to write %s: %w", tok, err)
				}
				out := struct {
					KeyID             string    `json:"keyId"`
					WrappingAlgorithm string    `json:"wrappingAlgorithm"`
					WrappingKeySpec   string    `json:"wrappingKeySpec"`
					ParametersValidTo time.Time `json:"parametersValidTo"`
					PublicKeyFile     string    `json:"publicKeyFile"`
					ImportTokenFile   string    `json:"importTokenFile"`
				}{r.KeyID, r.WrappingAlgorithm, r.WrappingKeySpec, r.ParametersValidTo, pk, tok}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), out)
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "wrap the key material for %s with %s to %s (%s), then run\n  keyflow import %s --material-file WRAPPED --token-file %s\nbefore %s\n",
					r.KeyID, r.WrappingAlgorithm, pk, r.WrappingKeySpec, r.KeyID, tok, r.ParametersValidTo.Format(time.RFC3339))
				return err
			})
		},
	}
	params.Flags().StringVar(&alg, "wrapping-alg", "", "wrapping algorithm (see above)")
	params.Flags().StringVar(&spec, "wrapping-spec", "", "wrapping key spec: RSA_3072 (default) or RSA_4096; X_WING for XWING_HPKE")
	params.Flags().StringVar(&outDir, "out", ".", "directory to write PublicKey.bin and ImportToken.bin into")

	var materialFile, tokenFile, validTo, importAlg string
	imp := &cobra.Command{
		Use:   "import KEY --material-file F --token-file T [--valid-to DATE]",
		Short: "Import wrapped key material into an EXTERNAL key; the key becomes ACTIVE",
		Long: `Import key material wrapped to the public key from 'keyflow import-params'.

--material-file is the wrapped material as raw bytes (what openssl writes);
--token-file is ImportToken.bin. The material is unwrapped inside the HSM
and stored like any keyflow key. With --valid-to (RFC 3339, or a date
YYYY-MM-DD meaning its midnight UTC) the material expires then: the
lifecycle workflow deletes it and the key returns to PENDING_IMPORT.
Only the same material can ever be imported again into the key.`,
		Args: exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if materialFile == "" || tokenFile == "" {
				return usagef("--material-file and --token-file are required")
			}
			wrapped, err := os.ReadFile(materialFile)
			if err != nil {
				return usagef("cannot read --material-file: %v", err)
			}
			token, err := os.ReadFile(tokenFile)
			if err != nil {
				return usagef("cannot read --token-file: %v", err)
			}
			req := api.ImportRequest{KeyID: args[0], EncryptedKeyMaterial: wrapped, ImportToken: token, WrappingAlgorithm: importAlg}
			if validTo != "" {
				t, err := parseValidTo(validTo)
				if err != nil {
					return err
				}
				req.ValidTo = &t
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.ImportKeyMaterial(ctx, req)
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), r)
				}
				return g.printKeys(cmd.OutOrStdout(), r.KeyMetadata)
			})
		},
	}
	imp.Flags().StringVar(&materialFile, "material-file", "", "the wrapped key material (raw bytes)")
	imp.Flags().StringVar(&tokenFile, "token-file", "", "the import token (ImportToken.bin)")
	imp.Flags().StringVar(&validTo, "valid-to", "", "when the material expires (RFC 3339 or YYYY-MM-DD); default: never")
	imp.Flags().StringVar(&importAlg, "wrapping-alg", "", "optional: refuse unless the token is for this wrapping algorithm")

	del := &cobra.Command{
		Use:   "delete-imported-material KEY",
		Short: "Delete an EXTERNAL key's imported material now; the key returns to PENDING_IMPORT",
		Args:  exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				k, err := c.DeleteImportedKeyMaterial(ctx, args[0])
				if err != nil {
					return err
				}
				return g.printKeys(cmd.OutOrStdout(), *k)
			})
		},
	}
	return []*cobra.Command{params, imp, del}
}

func parseValidTo(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t.UTC(), nil
	}
	return time.Time{}, usagef("--valid-to must be RFC 3339 (2027-01-31T00:00:00Z) or a date (2027-01-31), not %q", s)
}
