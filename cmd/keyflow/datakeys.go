package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/spf13/cobra"
)

// `keyflow datakey` and `datakey-pair`, and the data-key registry
// (`keyflow datakey register|get|list|deregister`).

func newDataKeyCmd(g *globals) *cobra.Command {
	var key string
	var n int
	var noPlain, register bool
	var ctxPairs []string
	cmd := &cobra.Command{
		Use:   "datakey --key KEY [--without-plaintext] [--register]",
		Short: `Generate a data key; prints {"keyId","plaintext","ciphertextBlob"} (base64)`,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if key == "" {
				return usagef("--key is required")
			}
			if n < 1 || n > 1024 {
				return usagef("--bytes must be between 1 and 1024, not %d", n)
			}
			ec, err := parseContext(ctxPairs)
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: key, NumberOfBytes: n, EncryptionContext: ec, WithoutPlaintext: noPlain})
				if err != nil {
					return err
				}
				defer clear(r.Plaintext)
				var regID string
				if register { // the registry, below
					reg, err := c.RegisterDataKey(ctx, api.RegisterDataKeyRequest{CiphertextBlob: r.CiphertextBlob, EncryptionContext: ec})
					if err != nil {
						return err
					}
					regID = reg.RegistrationID
				}
				return printJSON(cmd.OutOrStdout(), struct {
					KeyID          string `json:"keyId"`
					Plaintext      []byte `json:"plaintext,omitempty"`
					CiphertextBlob []byte `json:"ciphertextBlob"`
					RegistrationID string `json:"registrationId,omitempty"`
				}{r.KeyID, r.Plaintext, r.CiphertextBlob, regID})
			})
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "key ID or alias")
	cmd.Flags().IntVar(&n, "bytes", 32, "data key length in bytes (1-1024)")
	cmd.Flags().BoolVar(&noPlain, "without-plaintext", false, "return only the encrypted data key")
	cmd.Flags().StringArrayVar(&ctxPairs, "context", nil, "encryption context pair key=value (repeatable)")
	cmd.Flags().BoolVar(&register, "register", false, "also register the wrapped data key, so keyflow keeps it current (prints registrationId)")
	addRegistryCmds(cmd, g)
	return cmd
}

func newDataKeyPairCmd(g *globals) *cobra.Command {
	var key, spec string
	var noPlain bool
	var ctxPairs []string
	cmd := &cobra.Command{
		Use:   "datakey-pair --key KEY --spec ECC_NIST_P256|RSA_3072 [--without-plaintext]",
		Short: "Generate a key pair for client-side use, its private key encrypted under KEY; prints JSON",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if key == "" || spec == "" {
				return usagef("--key and --spec are required")
			}
			ec, err := parseContext(ctxPairs)
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.GenerateDataKeyPair(ctx, api.DataKeyPairRequest{KeyID: key, KeyPairSpec: spec, EncryptionContext: ec, WithoutPlaintext: noPlain})
				if err != nil {
					return err
				}
				defer clear(r.PrivateKeyPlaintext)
				return printJSON(cmd.OutOrStdout(), r)
			})
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "symmetric key that encrypts the private key")
	cmd.Flags().StringVar(&spec, "spec", "", "ECC_NIST_P256 or RSA_3072")
	cmd.Flags().BoolVar(&noPlain, "without-plaintext", false, "return only the public key and the encrypted private key")
	cmd.Flags().StringArrayVar(&ctxPairs, "context", nil, "encryption context pair key=value (repeatable)")
	return cmd
}

// addRegistryCmds adds the registry subcommands to `keyflow datakey`.
func addRegistryCmds(dk *cobra.Command, g *globals) {
	dk.AddCommand(newDataKeyRegisterCmd(g), newDataKeyGetCmd(g), newDataKeyListCmd(g), newDataKeyDeregisterCmd(g))
}

func newDataKeyRegisterCmd(g *globals) *cobra.Command {
	var in, key, alg, label string
	var ctxPairs []string
	cmd := &cobra.Command{
		Use:   "register [--context k=v]... [--label L] < ciphertext.b64",
		Short: "Register a wrapped data key (base64 on stdin or --in) so keyflow keeps it current; prints the registration",
		Long: `Register a wrapped data key: keyflow checks that it opens (with the
encryption context given), stores it, and rewraps it whenever its key is
rotated, remediated or migrated. Keep the registrationId next to your data and
fetch the current blob with 'keyflow datakey get ID'.

Raw RSA-OAEP ciphertexts carry no header: give --key and --algorithm.

  keyflow datakey --key alias/app --without-plaintext | jq -r .ciphertextBlob | keyflow datakey register`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withBlob(cmd, in, 2<<20, ctxPairs, func(ctx context.Context, c *client.Client, ct []byte, ec map[string]string) error {
				r, err := c.RegisterDataKey(ctx, api.RegisterDataKeyRequest{CiphertextBlob: ct, EncryptionContext: ec, KeyID: key, EncryptionAlgorithm: alg, Label: label})
				if err != nil {
					return err
				}
				return g.printRegistrations(cmd, *r)
			})
		},
	}
	cmd.Flags().StringVar(&in, "in", "", "read the base64 ciphertext from this file instead of stdin")
	cmd.Flags().StringArrayVar(&ctxPairs, "context", nil, "encryption context pair key=value the blob was made with (repeatable)")
	cmd.Flags().StringVar(&key, "key", "", "the key (raw RSA-OAEP ciphertexts only)")
	cmd.Flags().StringVar(&alg, "algorithm", "", "RSAES_OAEP_SHA_256 or RSAES_OAEP_SHA_1 (raw RSA-OAEP ciphertexts only)")
	cmd.Flags().StringVar(&label, "label", "", "your own name for it (at most 256 characters; not secret)")
	return cmd
}

func newDataKeyGetCmd(g *globals) *cobra.Command {
	var blob bool
	cmd := &cobra.Command{
		Use:   "get REGISTRATION_ID [--blob]",
		Short: "Show a registration with its current blob (--blob: just the base64 blob)",
		Args:  exactArgs(1, "REGISTRATION_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.GetDataKey(ctx, args[0])
				if err != nil {
					return err
				}
				if blob {
					return printB64(cmd, r.CiphertextBlob)
				}
				return g.printRegistrations(cmd, *r)
			})
		},
	}
	cmd.Flags().BoolVar(&blob, "blob", false, "print only the current ciphertext blob, base64")
	return cmd
}

func newDataKeyListCmd(g *globals) *cobra.Command {
	var key, cursor string
	var versions []uint
	var limit int
	var all bool
	cmd := &cobra.Command{
		Use:   "list --key KEY [--version N]... [--cursor C] [--limit N] [--all]",
		Short: "List a key's registrations (a page, or --all), with counts per version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if key == "" {
				return usagef("--key is required")
			}
			req := api.ListDataKeysRequest{KeyID: key, Cursor: cursor, Limit: limit}
			for _, v := range versions {
				req.Versions = append(req.Versions, uint32(v))
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				var out api.ListDataKeysReply
				for {
					r, err := c.ListDataKeys(ctx, req)
					if err != nil {
						return err
					}
					out.KeyID, out.Counts, out.NextCursor = r.KeyID, r.Counts, r.NextCursor
					out.Registrations = append(out.Registrations, r.Registrations...)
					if !all || r.NextCursor == "" {
						break
					}
					req.Cursor = r.NextCursor
				}
				if out.Registrations == nil {
					out.Registrations = []api.DataKeyRegistration{}
				}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), out)
				}
				if err := g.printRegistrations(cmd, out.Registrations...); err != nil {
					return err
				}
				var parts []string
				for v, n := range out.Counts {
					parts = append(parts, "v"+v+": "+strconv.Itoa(n))
				}
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "\nregistered per version: %s\n", dash(strings.Join(parts, ", ")))
				return err
			})
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "key ID or alias")
	cmd.Flags().UintSliceVar(&versions, "version", nil, "only registrations under this version (repeatable)")
	cmd.Flags().StringVar(&cursor, "cursor", "", "nextCursor of the previous page")
	cmd.Flags().IntVar(&limit, "limit", 0, "page size (default 100, at most 1000)")
	cmd.Flags().BoolVar(&all, "all", false, "follow the cursor to the last page")
	return cmd
}

func newDataKeyDeregisterCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "deregister REGISTRATION_ID",
		Short: "Forget a registration (its blob keeps working while its key version does)",
		Args:  exactArgs(1, "REGISTRATION_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				if err := c.DeregisterDataKey(ctx, args[0]); err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), api.RegistrationRequest{RegistrationID: args[0]})
			})
		},
	}
}

func (g *globals) printRegistrations(cmd *cobra.Command, regs ...api.DataKeyRegistration) error {
	w := cmd.OutOrStdout()
	if g.output == "json" {
		if len(regs) == 1 {
			return printJSON(w, regs[0])
		}
		return printJSON(w, regs)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGISTRATION ID\tKEY ID\tVERSION\tLABEL\tREWRAPS\tUPDATED")
	for _, r := range regs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\n", r.RegistrationID, r.KeyID, r.KeyVersion, dash(r.Label), r.Rewraps, r.UpdatedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}
