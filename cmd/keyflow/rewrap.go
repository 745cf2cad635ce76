package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/spf13/cobra"
)

// `keyflow rewrap`, and `rewrap status` for the rewrap workflow a rotation
// starts (docs/lifecycle.md, "Rotation and rewrap").

func newRewrapCmd(g *globals) *cobra.Command {
	var dst, in, key, alg string
	var ctxPairs []string
	cmd := &cobra.Command{
		Use:   "rewrap [--destination-key KEY] [--context k=v]... < ciphertexts.b64",
		Short: "Move ciphertexts (base64, one per line) to the current primary version; prints one per line",
		Long: `Rewrap re-encrypts each ciphertext (base64, one per line on stdin or --in)
under the current primary version of its own key, or of --destination-key,
keeping its encryption context. The plaintext never leaves keyflow. Output:
one line per input line, the new ciphertext in base64, or "ERROR <code>".
For registered data keys, the rewrap workflows do this by themselves.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ec, err := parseContext(ctxPairs)
			if err != nil {
				return err
			}
			raw, err := readInput(cmd, in, 16<<20)
			if err != nil {
				return err
			}
			var req api.RewrapRequest
			req.DestinationKeyID = dst
			for _, line := range strings.Split(string(raw), "\n") {
				if strings.TrimSpace(line) == "" {
					continue
				}
				ct, err := decodeBase64Input([]byte(line))
				if err != nil {
					return err
				}
				req.Items = append(req.Items, api.RewrapItem{CiphertextBlob: ct, EncryptionContext: ec, KeyID: key, EncryptionAlgorithm: alg})
			}
			if len(req.Items) == 0 || len(req.Items) > api.MaxBatchItems {
				return usagef("give 1 to %d ciphertexts", api.MaxBatchItems)
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.Rewrap(ctx, req)
				if err != nil {
					return err
				}
				if g.output == "json" && cmd.Flags().Changed("output") {
					return printJSON(cmd.OutOrStdout(), r)
				}
				failed := 0
				for _, res := range r.Results {
					if res.Error != nil {
						failed++
						fmt.Fprintf(cmd.OutOrStdout(), "ERROR %s\n", res.Error.Code)
						continue
					}
					if err := printB64(cmd, res.Result.CiphertextBlob); err != nil {
						return err
					}
				}
				if failed > 0 {
					return fmt.Errorf("%d of %d ciphertexts could not be rewrapped", failed, len(r.Results))
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&dst, "destination-key", "", "key to rewrap under (default: each ciphertext's own key)")
	cmd.Flags().StringVar(&in, "in", "", "read the ciphertexts from this file instead of stdin")
	cmd.Flags().StringArrayVar(&ctxPairs, "context", nil, "encryption context of every ciphertext, key=value (repeatable)")
	cmd.Flags().StringVar(&key, "key", "", "source key (raw RSA-OAEP ciphertexts only)")
	cmd.Flags().StringVar(&alg, "algorithm", "", "RSAES_OAEP_SHA_256 or RSAES_OAEP_SHA_1 (raw RSA-OAEP ciphertexts only)")
	cmd.AddCommand(newRewrapStatusCmd(g))
	return cmd
}

func newRewrapStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status KEY",
		Short: "Show the progress of the key's rewrap workflow (started by key rotate --rewrap)",
		Args:  exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.RewrapStatus(ctx, args[0])
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), r)
				}
				state := "running"
				if r.Done {
					state = "done"
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s: %s, %d rewrapped, %d failed, %d already current (workflow %s)\n", r.KeyID, state, r.Rewrapped, r.Failed, r.Skipped, r.WorkflowID)
				return err
			})
		},
	}
}
