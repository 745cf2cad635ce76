package rpc_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// BenchmarkEncryptNATSInbox measures what per-user reply inboxes cost
// (issue 12): encrypt from 8 requesters, each on its own connection, with
// creds confined to _INBOX_<user>.> (inbox=own, what keyflow issues) and
// with the shared _INBOX.> keyflow issued before (inbox=shared). Both run
// in one process against the same worker and key; compare the ops/s of
// the pair (expected about 1.0x: the server checks subscribe permissions
// when a subscription is made, not per reply). Requests go unsigned here
// (rpc.Config.TestingUnsignedRequests), since the shared-inbox creds are
// not ones keyflow records; BenchmarkEncryptNATSSigned measures signatures.
func BenchmarkEncryptNATSInbox(b *testing.B) {
	bed := testbed.New(b)
	startBenchRPC(b, bed, true)
	ctx := context.Background()
	k, err := inboxClient(b, bed, bed.PrincipalCreds("alpha", "bench-admin", keypolicy.RoleKeyAdmin)).CreateKey(ctx, api.CreateKeyRequest{Alias: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	const requesters = 8
	for round, variant := range []string{"own", "shared", "own", "shared"} {
		clients := make([]*client.Client, requesters)
		for i := range clients {
			var creds []byte
			if variant == "own" {
				creds = bed.PrincipalCreds("alpha", fmt.Sprintf("bench-%d-%d", round, i), keypolicy.RoleCryptoUser)
			} else {
				if creds, err = bed.Identity.TestingSharedInboxCreds("alpha", "bench-shared"); err != nil {
					b.Fatal(err)
				}
			}
			clients[i] = inboxClient(b, bed, creds)
		}
		b.Run("inbox="+variant+"/requesters=8", func(b *testing.B) {
			benchEncrypt(b, clients, k.KeyID)
		})
	}
}

func inboxClient(b *testing.B, bed *testbed.Bed, creds []byte) *client.Client {
	b.Helper()
	nc, err := natsserver.Connect(bed.NATS, creds, "bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	c, err := client.Dial(context.Background(), client.Options{Conn: nc, Tenant: "alpha", Timeout: 20 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	return c
}
