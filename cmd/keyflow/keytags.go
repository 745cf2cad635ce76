package main

import (
	"context"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
)

// `keyflow key tag|untag|update-description`: a key's tags and
// description after its creation (key admins). Tags follow AWS KMS's
// rules: at most 50 per key, keys of 1-128 characters not starting with
// aws:, values of 0-256.

// parseTags turns TAGKEY=VALUE arguments into tags.
func parseTags(args []string) ([]api.Tag, error) {
	tags := make([]api.Tag, 0, len(args))
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, usagef("a tag is TAGKEY=VALUE (VALUE may be empty), got %q", a)
		}
		tags = append(tags, api.Tag{TagKey: k, TagValue: v})
	}
	return tags, nil
}

func newKeyTagCmds(g *globals) []*cobra.Command {
	change := func(use, short string, args cobra.PositionalArgs, do func(context.Context, *client.Client, string, []string) (*api.KeyMetadata, error)) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: args,
			RunE: func(cmd *cobra.Command, args []string) error {
				return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
					k, err := do(ctx, c, args[0], args[1:])
					if err != nil {
						return err
					}
					return g.printKeys(cmd.OutOrStdout(), *k)
				})
			},
		}
	}
	tag := change("tag KEY TAGKEY=VALUE...", "Set tags on a key (a tag key it has gets the new value)", cobra.MinimumNArgs(2),
		func(ctx context.Context, c *client.Client, key string, rest []string) (*api.KeyMetadata, error) {
			tags, err := parseTags(rest)
			if err != nil {
				return nil, err
			}
			return c.TagKey(ctx, key, tags)
		})
	untag := change("untag KEY TAGKEY...", "Remove tags from a key (tag keys it does not have are ignored)", cobra.MinimumNArgs(2),
		func(ctx context.Context, c *client.Client, key string, rest []string) (*api.KeyMetadata, error) {
			return c.UntagKey(ctx, key, rest)
		})
	desc := change("update-description KEY DESCRIPTION", "Replace a key's description", exactArgs(2, "KEY DESCRIPTION"),
		func(ctx context.Context, c *client.Client, key string, rest []string) (*api.KeyMetadata, error) {
			return c.SetDescription(ctx, key, rest[0])
		})
	return []*cobra.Command{tag, untag, desc}
}
