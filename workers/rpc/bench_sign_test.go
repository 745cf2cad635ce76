package rpc_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms/keypolicy"
	"github.com/keyflow/keyflow/workers/rpc"
)

// startBenchRPC serves the NATS API over bed.KMS, with or without request
// signatures, and returns a function that stops it.
func startBenchRPC(b *testing.B, bed *testbed.Bed, unsigned bool) func() {
	b.Helper()
	srv, err := rpc.Start(rpc.Config{Conn: bed.Conn, KMS: bed.KMS, Tenants: bed.Identity, JS: bed.JS, Workers: 16,
		TestingUnsignedRequests: unsigned,
		Logger:                  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Stop)
	return srv.Stop
}

// BenchmarkEncryptNATSSigned measures what request signatures cost (issue
// 12): encrypt from 8 requesters, each a principal on its own connection,
// with every request signed by the client (Ed25519) and checked by the
// worker (issued key, signature, window, nonce) — sig=on, what keyflow
// does — and with neither (sig=off, rpc.Config.TestingUnsignedRequests).
// The variants alternate in one process against the same key; compare the
// ops/s of each pair.
func BenchmarkEncryptNATSSigned(b *testing.B) {
	bed := testbed.New(b)
	ctx := context.Background()
	const requesters = 8
	var keyID string
	for round, variant := range []string{"on", "off", "on", "off", "on", "off"} {
		stop := startBenchRPC(b, bed, variant == "off")
		clients := make([]*client.Client, requesters)
		for i := range clients {
			creds := bed.PrincipalCreds("alpha", fmt.Sprintf("sig-%d-%d", round, i), keypolicy.RoleCryptoUser, keypolicy.RoleKeyAdmin)
			nc, err := natsserver.Connect(bed.NATS, creds, "bench")
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(nc.Close)
			o := client.Options{Conn: nc, Tenant: "alpha", Timeout: 20 * time.Second}
			if variant == "on" {
				o.Creds = creds
			}
			if clients[i], err = client.Dial(ctx, o); err != nil {
				b.Fatal(err)
			}
		}
		if keyID == "" {
			k, err := clients[0].CreateKey(ctx, api.CreateKeyRequest{Alias: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			keyID = k.KeyID
		}
		b.Run("sig="+variant+"/requesters=8", func(b *testing.B) {
			benchEncrypt(b, clients, keyID)
		})
		stop()
	}
}
