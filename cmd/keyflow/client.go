package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/client"
)

// Connecting to keyflow: every command that talks to the stack goes through
// dial, and the commands that send a base64 blob through withBlob.

// dial connects as the configured principal. The client addresses tenant's
// subjects, or, when tenant is "", the tenant named in the creds file. A
// creds problem is named as such (credsError), not as an unreachable
// server.
func (g *globals) dial(ctx context.Context, tenant string) (*client.Client, error) {
	creds, err := g.principalCreds()
	if err != nil {
		return nil, err
	}
	if tenant == "" {
		if tenant, err = credsTenant(creds); err != nil {
			return nil, err
		}
	}
	c, err := client.Dial(ctx, client.Options{Server: g.server, CredsFile: creds.path, Tenant: tenant, Timeout: g.timeout, Name: "keyflow-cli"})
	var ke *client.Error
	switch {
	case errors.As(err, &ke):
		return nil, &credsError{code: "CredentialsRefused", exit: exitCredsRefused,
			msg: fmt.Sprintf("%s (%s): %s", creds.path, creds.from, ke.Message)}
	case err != nil:
		return nil, fmt.Errorf("%w: %w (is `keyflow dev` running? --server or KEYFLOW_SERVER names the NATS URL, now %s)", errUnreachable, err, g.server)
	}
	return c, nil
}

// withClient runs fn with a connected client.
func (g *globals) withClient(cmd *cobra.Command, fn func(ctx context.Context, c *client.Client) error) error {
	return g.withTenantClient(cmd, "", fn)
}

// withTenantClient is withClient for commands that take --tenant: the
// client addresses that tenant's subjects, which the NATS server lets a
// principal reach only for its own tenant.
func (g *globals) withTenantClient(cmd *cobra.Command, tenant string, fn func(ctx context.Context, c *client.Client) error) error {
	ctx, flush := traceCLI(cmd.Context()) // tracing.go
	defer flush()
	c, err := g.dial(ctx, tenant)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(ctx, c)
}

// withBlob is the path of the commands that send a blob (a ciphertext, a
// sealed payload): it parses the --context pairs (none: a nil context),
// reads base64 from --in or stdin (at most limit bytes before decoding),
// decodes it, and runs fn with a connected client. Usage errors come
// before the connection, so a typo needs no running stack.
func (g *globals) withBlob(cmd *cobra.Command, in string, limit int64, ctxPairs []string,
	fn func(ctx context.Context, c *client.Client, blob []byte, ec map[string]string) error) error {
	ec, err := parseContext(ctxPairs)
	if err != nil {
		return err
	}
	raw, err := readInput(cmd, in, limit)
	if err != nil {
		return err
	}
	blob, err := decodeBase64Input(raw)
	if err != nil {
		return err
	}
	if len(blob) == 0 {
		return usagef("no input: give the base64 on stdin or with --in")
	}
	return g.withClient(cmd, func(ctx context.Context, c *client.Client) error { return fn(ctx, c, blob, ec) })
}
