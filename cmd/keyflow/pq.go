package main

import (
	"context"
	"crypto/hpke"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
)

// The post-quantum commands: HPKE seal and open, and raw KEM encapsulation
// and decapsulation, on KEY_ENCAPSULATION keys (ML_KEM_768, ML_KEM_1024,
// X_WING).
//
// `keyflow seal` seals locally by default, with Go's crypto/hpke and the
// key's public key, exactly as any third party would: it asks keyflow only
// for the public key (crypto.publickey), and with --public-key it needs no
// keyflow at all. --remote asks keyflow to seal instead (crypto.seal), which
// leaves an audit record of the sealing. Either way the result is the same
// HPKE payload (base mode, the key's KEM, HKDF-SHA256, AES-256-GCM, no
// additional data), and only keyflow can open it.

func newPQCmds(g *globals) []*cobra.Command {
	return []*cobra.Command{newSealCmd(g), newOpenCmd(g), newEncapsulateCmd(g), newDecapsulateCmd(g)}
}

// maxSealPlaintext is what crypto.seal accepts; local sealing keeps the
// same limit, so every payload can be sealed either way.
const maxSealPlaintext = 64 * 1024

// hpkeKEMs maps the specs of KEY_ENCAPSULATION keys, and the OIDs of their
// SubjectPublicKeyInfo, to crypto/hpke's KEMs.
var hpkeKEMs = []struct {
	spec string
	oid  asn1.ObjectIdentifier
	kem  func() hpke.KEM
}{
	{"ML_KEM_768", asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 4, 2}, hpke.MLKEM768},
	{"ML_KEM_1024", asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 4, 3}, hpke.MLKEM1024},
	{"X_WING", asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62253, 25722}, hpke.MLKEM768X25519},
}

// hpkePublicKey reads a DER SubjectPublicKeyInfo of a KEM key (as
// crypto.publickey returns it). spec, when not empty, must match its OID.
func hpkePublicKey(der []byte, spec string) (hpke.PublicKey, error) {
	var spki struct {
		Algorithm struct {
			Algorithm  asn1.ObjectIdentifier
			Parameters asn1.RawValue `asn1:"optional"`
		}
		PublicKey asn1.BitString
	}
	rest, err := asn1.Unmarshal(der, &spki)
	if err != nil || len(rest) != 0 || spki.PublicKey.BitLength%8 != 0 {
		return nil, fmt.Errorf("the public key is not a DER SubjectPublicKeyInfo")
	}
	for _, k := range hpkeKEMs {
		if !k.oid.Equal(spki.Algorithm.Algorithm) {
			continue
		}
		if spec != "" && spec != k.spec {
			return nil, fmt.Errorf("the %s key's public key has the OID of %s", spec, k.spec)
		}
		pk, err := k.kem().NewPublicKey(spki.PublicKey.Bytes)
		if err != nil {
			return nil, fmt.Errorf("the %s public key does not decode: %w", k.spec, err)
		}
		return pk, nil
	}
	if spec != "" {
		// What crypto.seal would answer, so both ways fail alike.
		return nil, &client.Error{Code: "InvalidKeyUsageException", Message: "a " + spec + " key cannot seal; use an ML_KEM_768, ML_KEM_1024 or X_WING key"}
	}
	return nil, usagef("the public key (OID %s) is not an ML-KEM-768, ML-KEM-1024 or X-Wing key", spki.Algorithm.Algorithm)
}

// readPublicKeyFile reads a PEM "PUBLIC KEY" (as get-public-key prints it)
// or raw DER.
func readPublicKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("cannot read --public-key: %v", err)
	}
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != "PUBLIC KEY" {
			return nil, usagef("--public-key holds a PEM %q block, want \"PUBLIC KEY\"", blk.Type)
		}
		return blk.Bytes, nil
	}
	return b, nil
}

func newSealCmd(g *globals) *cobra.Command {
	var recipient, pubFile, info, in string
	var remote bool
	cmd := &cobra.Command{
		Use:   "seal (--recipient KEY | --public-key FILE) [--info S] [--remote]",
		Short: "HPKE-encrypt stdin (or --in) to a KEM key's public key; prints the sealed payload as base64",
		Long: `Seal encrypts stdin (or --in, 1 byte to 64 KiB) to the public key of an
ML_KEM_768, ML_KEM_1024 or X_WING key with HPKE (RFC 9180 base mode, the key's
KEM, HKDF-SHA256, AES-256-GCM), and prints enc || ciphertext as base64.
Only keyflow can open it ('keyflow open').

By default the payload is sealed here, with Go's crypto/hpke and the
recipient key's public key: keyflow is asked only for the public key. With
--public-key FILE (PEM or DER, as 'keyflow get-public-key' prints it),
nothing asks keyflow at all. With --remote, keyflow seals (crypto.seal) and
records the sealing in its audit trail.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (recipient == "") == (pubFile == "") {
				return usagef("give exactly one of --recipient and --public-key")
			}
			if remote && pubFile != "" {
				return usagef("--remote needs --recipient, not --public-key")
			}
			pt, err := readInput(cmd, in, maxSealPlaintext)
			if err != nil {
				return err
			}
			defer clear(pt)
			if len(pt) == 0 || len(pt) > maxSealPlaintext {
				return usagef("the plaintext must be 1 to %d bytes", maxSealPlaintext)
			}
			if pubFile != "" {
				der, err := readPublicKeyFile(pubFile)
				if err != nil {
					return err
				}
				pk, err := hpkePublicKey(der, "")
				if err != nil {
					return err
				}
				sealed, err := hpke.Seal(pk, hpke.HKDFSHA256(), hpke.AES256GCM(), []byte(info), pt)
				if err != nil {
					return fmt.Errorf("failed to seal: %w", err)
				}
				return printB64(cmd, sealed)
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				var r *api.SealReply
				if remote {
					if r, err = c.Seal(ctx, api.SealRequest{KeyID: recipient, Plaintext: pt, Info: []byte(info)}); err != nil {
						return err
					}
				} else if r, err = sealLocally(ctx, c, recipient, []byte(info), pt); err != nil {
					return err
				}
				if g.output == "json" && cmd.Flags().Changed("output") {
					return printJSON(cmd.OutOrStdout(), r)
				}
				return printB64(cmd, r.Sealed)
			})
		},
	}
	cmd.Flags().StringVar(&recipient, "recipient", "", "the KEY_ENCAPSULATION key (ID or alias) to seal to")
	cmd.Flags().StringVar(&pubFile, "public-key", "", "seal offline to this public key (PEM or DER SubjectPublicKeyInfo)")
	cmd.Flags().StringVar(&info, "info", "", "HPKE info string; open needs the same")
	cmd.Flags().StringVar(&in, "in", "", "read the plaintext from this file instead of stdin")
	cmd.Flags().BoolVar(&remote, "remote", false, "have keyflow seal (audited) instead of sealing here")
	return cmd
}

// sealLocally fetches the recipient's public key and seals with crypto/hpke.
func sealLocally(ctx context.Context, c *client.Client, recipient string, info, pt []byte) (*api.SealReply, error) {
	pub, err := c.GetPublicKey(ctx, api.PublicKeyRequest{KeyID: recipient})
	if err != nil {
		return nil, err
	}
	pk, err := hpkePublicKey(pub.PublicKey, pub.KeySpec)
	if err != nil {
		return nil, err
	}
	sealed, err := hpke.Seal(pk, hpke.HKDFSHA256(), hpke.AES256GCM(), info, pt)
	if err != nil {
		return nil, fmt.Errorf("failed to seal: %w", err)
	}
	return &api.SealReply{KeyID: pub.KeyID, KeyVersion: pub.KeyVersion, Sealed: sealed}, nil
}

func newOpenCmd(g *globals) *cobra.Command {
	var key, info, in string
	cmd := &cobra.Command{
		Use:   "open --key KEY [--info S]",
		Short: "Open a base64 HPKE payload from stdin (or --in) sealed to KEY; writes the plaintext to stdout",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if key == "" {
				return usagef("--key is required")
			}
			return g.withBlob(cmd, in, 2<<20, nil, func(ctx context.Context, c *client.Client, sealed []byte, _ map[string]string) error {
				r, err := c.Open(ctx, api.OpenRequest{KeyID: key, Sealed: sealed, Info: []byte(info)})
				if err != nil {
					return err
				}
				defer clear(r.Plaintext)
				_, err = cmd.OutOrStdout().Write(r.Plaintext)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "the KEY_ENCAPSULATION key (ID or alias) the payload was sealed to")
	cmd.Flags().StringVar(&info, "info", "", "the HPKE info string the payload was sealed with")
	cmd.Flags().StringVar(&in, "in", "", "read the sealed payload from this file instead of stdin")
	return cmd
}

func newEncapsulateCmd(g *globals) *cobra.Command {
	var key string
	cmd := &cobra.Command{
		Use:   "encapsulate --key KEY",
		Short: "Encapsulate a fresh shared secret to a KEM key; prints JSON with the ciphertext and the secret (base64)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if key == "" {
				return usagef("--key is required")
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.Encapsulate(ctx, key)
				if err != nil {
					return err
				}
				defer clear(r.SharedSecret)
				return printJSON(cmd.OutOrStdout(), r)
			})
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "the KEY_ENCAPSULATION key (ID or alias)")
	return cmd
}

func newDecapsulateCmd(g *globals) *cobra.Command {
	var key, in string
	var version uint32
	cmd := &cobra.Command{
		Use:   "decapsulate --key KEY [--version N]",
		Short: "Decapsulate a base64 KEM ciphertext from stdin (or --in); prints the shared secret as base64",
		Long: `Decapsulate recovers the shared secret of a KEM ciphertext made for KEY
(by 'keyflow encapsulate', or by anyone with the public key). ML-KEM rejects
implicitly: a ciphertext of the right length that was not made for this key
version gives an unrelated secret, not an error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if key == "" {
				return usagef("--key is required")
			}
			return g.withBlob(cmd, in, 64<<10, nil, func(ctx context.Context, c *client.Client, ct []byte, _ map[string]string) error {
				r, err := c.Decapsulate(ctx, api.DecapsulateRequest{KeyID: key, KeyVersion: version, Ciphertext: ct})
				if err != nil {
					return err
				}
				defer clear(r.SharedSecret)
				if g.output == "json" && cmd.Flags().Changed("output") {
					return printJSON(cmd.OutOrStdout(), r)
				}
				// Encode into a buffer that is wiped, not a string.
				out := make([]byte, base64.StdEncoding.EncodedLen(len(r.SharedSecret))+1)
				defer clear(out)
				base64.StdEncoding.Encode(out, r.SharedSecret)
				out[len(out)-1] = '\n'
				_, err = cmd.OutOrStdout().Write(out)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "the KEY_ENCAPSULATION key (ID or alias)")
	cmd.Flags().Uint32Var(&version, "version", 0, "the key version the ciphertext was made for (default: the primary)")
	cmd.Flags().StringVar(&in, "in", "", "read the ciphertext from this file instead of stdin")
	return cmd
}
