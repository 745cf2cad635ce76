package main

import (
	"context"
	"encoding/base64"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
)

func newKeyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "key", Short: "Create, inspect and rotate keys", Args: noSubcommand, RunE: showHelp}

	var alias, desc, spec, usage, origin string
	var life lifecycleFlags
	create := &cobra.Command{
		Use:   "create [--spec SPEC] [--usage USAGE]",
		Short: "Create a key (AES-256 by default) and print its metadata",
		Long: `Create a key and print its metadata.

Specs and usages (AWS KMS names):
  SYMMETRIC_DEFAULT (AES-256-GCM, default)  ENCRYPT_DECRYPT
  HMAC_256                                  GENERATE_VERIFY_MAC
  RSA_3072, RSA_4096                        ENCRYPT_DECRYPT or SIGN_VERIFY
  ECC_NIST_P256, ECC_NIST_P384              SIGN_VERIFY
  ECC_NIST_EDWARDS25519 (Ed25519)           SIGN_VERIFY`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				req := api.CreateKeyRequest{Alias: alias, Description: desc, KeySpec: spec, KeyUsage: usage, Origin: origin}
				if err := life.apply(&req); err != nil {
					return err
				}
				k, err := c.CreateKey(ctx, req)
				if err != nil {
					return err
				}
				return g.printKeys(cmd.OutOrStdout(), *k)
			})
		},
	}
	create.Flags().StringVar(&alias, "alias", "", "alias for the key (e.g. app-secrets or alias/app-secrets)")
	create.Flags().StringVar(&desc, "description", "", "free-text description")
	create.Flags().StringVar(&spec, "spec", "", "key spec (default SYMMETRIC_DEFAULT)")
	create.Flags().StringVar(&usage, "usage", "", "key usage (default: the spec's first usage)")
	create.Flags().StringVar(&origin, "origin", "", "AWS_KMS (default: generated in the HSM) or EXTERNAL (no material: import it, see 'keyflow import-params')")
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
		Args:  exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.RotateKeyWith(ctx, api.RotateKeyRequest{KeyID: args[0], Rewrap: rewrap})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), r)
				}
				return printRotation(cmd.OutOrStdout(), r)
			})
		},
	}
	rotate.Flags().BoolVar(&rewrap, "rewrap", false, "then rewrap the key's registered data keys to the new version and print the counts")
	cmd.AddCommand(create, describe, list, rotate, newRetireVersionCmd(g))
	cmd.AddCommand(newKeyPolicyCmds(g)...)
	cmd.AddCommand(newLifecycleCmds(g)...)
	return cmd
}

func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("want %s, got %d argument(s)", names, len(args))
		}
		return nil
	}
}

func newEncryptCmd(g *globals) *cobra.Command {
	var key, in, alg string
	var ctxPairs []string
	cmd := &cobra.Command{
		Use:   "encrypt --key KEY [--context k=v]... [--algorithm RSAES_OAEP_SHA_256]",
		Short: "Encrypt stdin (or --in) and print the ciphertext as base64",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if key == "" {
				return usagef("--key is required")
			}
			ec, err := parseContext(ctxPairs)
			if err != nil {
				return err
			}
			pt, err := readInput(cmd, in, 1<<20)
			if err != nil {
				return err
			}
			defer clear(pt)
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.Encrypt(ctx, api.EncryptRequest{KeyID: key, Plaintext: pt, EncryptionContext: ec, EncryptionAlgorithm: alg})
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(cmd.OutOrStdout(), base64.StdEncoding.EncodeToString(r.CiphertextBlob))
				return err
			})
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "key ID or alias")
	cmd.Flags().StringVar(&in, "in", "", "read the plaintext from this file instead of stdin")
	cmd.Flags().StringVar(&alg, "algorithm", "", "SYMMETRIC_DEFAULT (default), or RSAES_OAEP_SHA_256 / RSAES_OAEP_SHA_1 for RSA keys (raw RSA ciphertext, no keyflow header)")
	cmd.Flags().StringArrayVar(&ctxPairs, "context", nil, "encryption context pair key=value (repeatable)")
	return cmd
}

func newDecryptCmd(g *globals) *cobra.Command {
	var key, in, alg string
	var ctxPairs []string
	var allowCompromised bool
	cmd := &cobra.Command{
		Use:   "decrypt [--context k=v]... [--key KEY --algorithm RSAES_OAEP_SHA_256]",
		Short: "Decrypt base64 ciphertext from stdin (or --in) and write the plaintext to stdout",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ec, err := parseContext(ctxPairs)
			if err != nil {
				return err
			}
			raw, err := readInput(cmd, in, 2<<20)
			if err != nil {
				return err
			}
			ct, err := decodeBase64Input(raw)
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct, EncryptionContext: ec, KeyID: key, EncryptionAlgorithm: alg, AllowCompromised: allowCompromised})
				if err != nil {
					return err
				}
				defer clear(r.Plaintext)
				_, err = cmd.OutOrStdout().Write(r.Plaintext)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "refuse unless the ciphertext belongs to this key (required for RSA)")
	cmd.Flags().StringVar(&alg, "algorithm", "", "RSAES_OAEP_SHA_256 or RSAES_OAEP_SHA_1 for RSA ciphertexts")
	cmd.Flags().StringVar(&in, "in", "", "read the ciphertext from this file instead of stdin")
	cmd.Flags().StringArrayVar(&ctxPairs, "context", nil, "encryption context pair key=value (repeatable)")
	cmd.Flags().BoolVar(&allowCompromised, "allow-compromised", false, "decrypt even under a COMPROMISED key or version (recorded in the audit trail)")
	return cmd
}

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
				if register { // see datakeys.go
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
