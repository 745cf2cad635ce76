package main

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"fmt"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/spf13/cobra"
)

// The single-request cryptographic verbs: encrypt, decrypt, reencrypt,
// sign, verify, mac, verify-mac, get-public-key and random.

func newCryptoCmds(g *globals) []*cobra.Command {
	return []*cobra.Command{newEncryptCmd(g), newDecryptCmd(g), newReEncryptCmd(g), newSignCmd(g), newVerifyCmd(g),
		newMacCmd(g), newVerifyMacCmd(g), newPublicKeyCmd(g), newRandomCmd(g)}
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
			return g.withBlob(cmd, in, 2<<20, ctxPairs, func(ctx context.Context, c *client.Client, ct []byte, ec map[string]string) error {
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

func newReEncryptCmd(g *globals) *cobra.Command {
	var src, dst, in string
	var srcCtx, dstCtx []string
	cmd := &cobra.Command{
		Use:   "reencrypt [--destination-key KEY] [--source-context k=v]... [--destination-context k=v]...",
		Short: "Re-encrypt base64 ciphertext from stdin under another key (or the same key's primary version)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dc, err := parseContext(dstCtx)
			if err != nil {
				return err
			}
			return g.withBlob(cmd, in, 2<<20, srcCtx, func(ctx context.Context, c *client.Client, ct []byte, sc map[string]string) error {
				r, err := c.ReEncrypt(ctx, api.ReEncryptRequest{CiphertextBlob: ct, SourceEncryptionContext: sc, SourceKeyID: src,
					DestinationKeyID: dst, DestinationEncryptionContext: dc})
				if err != nil {
					return err
				}
				return printB64(cmd, r.CiphertextBlob)
			})
		},
	}
	cmd.Flags().StringVar(&src, "source-key", "", "refuse unless the ciphertext belongs to this key")
	cmd.Flags().StringVar(&dst, "destination-key", "", "key to re-encrypt under (default: the source key)")
	cmd.Flags().StringVar(&in, "in", "", "read the ciphertext from this file instead of stdin")
	cmd.Flags().StringArrayVar(&srcCtx, "source-context", nil, "source encryption context key=value (repeatable)")
	cmd.Flags().StringArrayVar(&dstCtx, "destination-context", nil, "destination encryption context key=value (repeatable)")
	return cmd
}

// messageFlags are the flags of commands that read a message.
type messageFlags struct {
	key, alg, in, mtype string
}

func (m *messageFlags) add(cmd *cobra.Command, algHelp string, withType bool) {
	cmd.Flags().StringVar(&m.key, "key", "", "key ID or alias")
	cmd.Flags().StringVar(&m.alg, "algorithm", "", algHelp)
	cmd.Flags().StringVar(&m.in, "in", "", "read the message from this file instead of stdin")
	if withType {
		cmd.Flags().StringVar(&m.mtype, "message-type", "RAW", "RAW (the message) or DIGEST (its hash, computed by you)")
	}
}

func (m *messageFlags) read(cmd *cobra.Command) ([]byte, error) {
	if m.key == "" || m.alg == "" {
		return nil, usagef("--key and --algorithm are required")
	}
	return readInput(cmd, m.in, 1<<20)
}

func newSignCmd(g *globals) *cobra.Command {
	var m messageFlags
	var sigCtx string
	cmd := &cobra.Command{
		Use:   "sign --key KEY --algorithm ALG [--message-type RAW|DIGEST]",
		Short: "Sign stdin (or --in); prints the signature as base64 (DER for ECDSA)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			msg, err := m.read(cmd)
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.Sign(ctx, api.SignRequest{KeyID: m.key, Message: msg, MessageType: m.mtype, SigningAlgorithm: m.alg, SignatureContext: []byte(sigCtx)})
				if err != nil {
					return err
				}
				if g.output == "json" && cmd.Flags().Changed("output") {
					return printJSON(cmd.OutOrStdout(), r)
				}
				return printB64(cmd, r.Signature)
			})
		},
	}
	m.add(cmd, "ECDSA_SHA_256, ECDSA_SHA_384, RSASSA_PSS_SHA_256|384|512, RSASSA_PKCS1_V1_5_SHA_256|384|512, ED25519_SHA_512, ML_DSA_SHAKE_256, SLH_DSA_SHA2_128S|128F", true)
	cmd.Flags().StringVar(&sigCtx, "context", "", "ML-DSA / SLH-DSA signature context string (at most 255 bytes); verify needs the same")
	return cmd
}

func newVerifyCmd(g *globals) *cobra.Command {
	var m messageFlags
	var sig, sigCtx string
	var allowCompromised bool
	cmd := &cobra.Command{
		Use:   "verify --key KEY --algorithm ALG --signature B64 [--message-type RAW|DIGEST]",
		Short: "Verify a signature over stdin (or --in); exit 0 when valid, 1 when not",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := decodeFlagB64("signature", sig)
			if err != nil {
				return err
			}
			msg, err := m.read(cmd)
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.Verify(ctx, api.VerifyRequest{KeyID: m.key, Message: msg, MessageType: m.mtype, SigningAlgorithm: m.alg, Signature: s, SignatureContext: []byte(sigCtx), AllowCompromised: allowCompromised})
				if err != nil {
					return err
				}
				if g.output == "json" && cmd.Flags().Changed("output") {
					return printJSON(cmd.OutOrStdout(), r)
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "valid (key version %d)\n", r.KeyVersion)
				return err
			})
		},
	}
	m.add(cmd, "the signing algorithm", true)
	cmd.Flags().StringVar(&sig, "signature", "", "the signature, base64")
	cmd.Flags().StringVar(&sigCtx, "context", "", "the ML-DSA / SLH-DSA signature context the signature was made with")
	cmd.Flags().BoolVar(&allowCompromised, "allow-compromised", false, "verify even with a COMPROMISED key or version (recorded in the audit trail)")
	return cmd
}

func newMacCmd(g *globals) *cobra.Command {
	var m messageFlags
	cmd := &cobra.Command{
		Use:   "mac --key KEY --algorithm HMAC_SHA_256",
		Short: "Compute an HMAC of stdin (or --in); prints it as base64",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			msg, err := m.read(cmd)
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.GenerateMac(ctx, api.MacRequest{KeyID: m.key, Message: msg, MacAlgorithm: m.alg})
				if err != nil {
					return err
				}
				return printB64(cmd, r.Mac)
			})
		},
	}
	m.add(cmd, "HMAC_SHA_256", false)
	return cmd
}

func newVerifyMacCmd(g *globals) *cobra.Command {
	var m messageFlags
	var mac string
	cmd := &cobra.Command{
		Use:   "verify-mac --key KEY --algorithm HMAC_SHA_256 --mac B64",
		Short: "Verify an HMAC of stdin (or --in) in constant time; exit 0 when valid, 1 when not",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			want, err := decodeFlagB64("mac", mac)
			if err != nil {
				return err
			}
			msg, err := m.read(cmd)
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.VerifyMac(ctx, api.MacRequest{KeyID: m.key, Message: msg, MacAlgorithm: m.alg, Mac: want})
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "valid (key version %d)\n", r.KeyVersion)
				return err
			})
		},
	}
	m.add(cmd, "HMAC_SHA_256", false)
	cmd.Flags().StringVar(&mac, "mac", "", "the MAC, base64")
	return cmd
}

func newPublicKeyCmd(g *globals) *cobra.Command {
	var version uint32
	cmd := &cobra.Command{
		Use:   "get-public-key KEY",
		Short: "Print an asymmetric key's public key as PEM (SubjectPublicKeyInfo); -o json adds DER base64",
		Args:  exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.GetPublicKey(ctx, api.PublicKeyRequest{KeyID: args[0], KeyVersion: version})
				if err != nil {
					return err
				}
				if g.output == "json" && cmd.Flags().Changed("output") {
					return printJSON(cmd.OutOrStdout(), r)
				}
				return pem.Encode(cmd.OutOrStdout(), &pem.Block{Type: "PUBLIC KEY", Bytes: r.PublicKey})
			})
		},
	}
	cmd.Flags().Uint32Var(&version, "version", 0, "key version (default: the primary)")
	return cmd
}

func newRandomCmd(g *globals) *cobra.Command {
	var n int
	cmd := &cobra.Command{
		Use:   "random --bytes N",
		Short: "Print N (1-1024) random bytes from the HSM as base64",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.GenerateRandom(ctx, n)
				if err != nil {
					return err
				}
				defer clear(r.Plaintext)
				return printB64(cmd, r.Plaintext)
			})
		},
	}
	cmd.Flags().IntVar(&n, "bytes", 32, "number of bytes")
	return cmd
}
