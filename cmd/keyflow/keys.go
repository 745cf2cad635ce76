package main

import (
	"context"
	"encoding/base64"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/workers/api"
	"github.com/keyflow/keyflow/workers/client"
)

func newKeyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "key", Short: "Create, inspect and rotate keys"}

	var alias, desc string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a symmetric AES-256 key and print its metadata",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				k, err := c.CreateKey(ctx, api.CreateKeyRequest{Alias: alias, Description: desc})
				if err != nil {
					return err
				}
				return g.printKeys(cmd.OutOrStdout(), *k)
			})
		},
	}
	create.Flags().StringVar(&alias, "alias", "", "alias for the key (e.g. app-secrets or alias/app-secrets)")
	create.Flags().StringVar(&desc, "description", "", "free-text description")

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
	rotate := &cobra.Command{
		Use:   "rotate KEY",
		Short: "Rotate a key now: run the rotation workflow and wait for it",
		Args:  exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.RotateKey(ctx, args[0])
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), r)
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "rotated %s: version %d -> %d (workflow %s)\n", r.KeyID, r.PreviousVersion, r.NewVersion, r.WorkflowID)
				return err
			})
		},
	}
	cmd.AddCommand(create, describe, list, rotate)
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
	var key, in string
	var ctxPairs []string
	cmd := &cobra.Command{
		Use:   "encrypt --key KEY [--context k=v]...",
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
				r, err := c.Encrypt(ctx, api.EncryptRequest{KeyID: key, Plaintext: pt, EncryptionContext: ec})
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
	cmd.Flags().StringArrayVar(&ctxPairs, "context", nil, "encryption context pair key=value (repeatable)")
	return cmd
}

func newDecryptCmd(g *globals) *cobra.Command {
	var key, in string
	var ctxPairs []string
	cmd := &cobra.Command{
		Use:   "decrypt [--context k=v]...",
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
				r, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct, EncryptionContext: ec, KeyID: key})
				if err != nil {
					return err
				}
				defer clear(r.Plaintext)
				_, err = cmd.OutOrStdout().Write(r.Plaintext)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "optional: refuse unless the ciphertext belongs to this key")
	cmd.Flags().StringVar(&in, "in", "", "read the ciphertext from this file instead of stdin")
	cmd.Flags().StringArrayVar(&ctxPairs, "context", nil, "encryption context pair key=value (repeatable)")
	return cmd
}

func newDataKeyCmd(g *globals) *cobra.Command {
	var key string
	var n int
	var ctxPairs []string
	cmd := &cobra.Command{
		Use:   "datakey --key KEY",
		Short: `Generate a data key; prints {"keyId","plaintext","ciphertextBlob"} (base64)`,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if key == "" {
				return usagef("--key is required")
			}
			ec, err := parseContext(ctxPairs)
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: key, NumberOfBytes: n, EncryptionContext: ec})
				if err != nil {
					return err
				}
				defer clear(r.Plaintext)
				return printJSON(cmd.OutOrStdout(), struct {
					KeyID          string `json:"keyId"`
					Plaintext      []byte `json:"plaintext"`
					CiphertextBlob []byte `json:"ciphertextBlob"`
				}{r.KeyID, r.Plaintext, r.CiphertextBlob})
			})
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "key ID or alias")
	cmd.Flags().IntVar(&n, "bytes", 32, "data key length in bytes (1-1024)")
	cmd.Flags().StringArrayVar(&ctxPairs, "context", nil, "encryption context pair key=value (repeatable)")
	return cmd
}
