package natsserver

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/keyflow/keyflow/workers/natsauth"
)

// publishClaims connects a system-account user in-process and makes it the
// identity's claims publisher: an updated account JWT (a revoked principal)
// goes to $SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE, which every server of a
// cluster that uses this resolver applies at once, closing the revoked
// users' connections. The same request works against a NATS cluster with
// a memory or full resolver.
func publishClaims(ns *server.Server, id *natsauth.Identity) error {
	creds, err := id.SystemCreds("keyflow-claims")
	if err != nil {
		return err
	}
	opt, err := natsauth.CredsOption(creds)
	if err != nil {
		return err
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns), opt, nats.Name("keyflow-claims"), nats.NoReconnect())
	if err != nil {
		return fmt.Errorf("failed to connect the system account: %w", err)
	}
	PublishClaimsOver(nc, id)
	return nil
}

// PublishClaimsOver makes nc, a system-account connection (to this
// process's server or to a cluster), the identity's claims publisher.
func PublishClaimsOver(nc *nats.Conn, id *natsauth.Identity) {
	id.SetClaimsPublisher(func(ctx context.Context, account, token string) error {
		msg, err := nc.RequestWithContext(ctx, "$SYS.REQ.ACCOUNT."+account+".CLAIMS.UPDATE", []byte(token))
		if err != nil {
			return fmt.Errorf("failed to push account claims: %w", err)
		}
		var resp server.ServerAPIClaimUpdateResponse
		if err := json.Unmarshal(msg.Data, &resp); err != nil {
			return fmt.Errorf("failed to read the claims update response: %w", err)
		}
		if resp.Error != nil {
			return fmt.Errorf("the server refused the account claims: %s", resp.Error.Description)
		}
		return nil
	})
}
