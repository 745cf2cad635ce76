package kvstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/kvstore"
	"github.com/keyflow/keyflow/workers/natsauth"
)

// The archive's own access rule, enforced by the NATS server: a worker
// whose creds deny the archive bucket's subjects reads live material but
// can neither read nor watch nor write the archive, while the lifecycle
// worker (full service creds) can.
func TestArchiveBucketIsFencedByNATS(t *testing.T) {
	ctx := context.Background()
	id, err := natsauth.Load(t.TempDir() + "/identity.json")
	if err != nil {
		t.Fatal(err)
	}
	ns, err := natsserver.Start(natsserver.Config{StoreDir: t.TempDir(), Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })

	lc, err := natsserver.ConnectService(ns, id, "lifecycle")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lc.Close)
	ljs, _ := jetstream.New(lc)
	store, err := kvstore.Open(ctx, ljs)
	if err != nil {
		t.Fatal(err)
	}
	m := &kms.VersionMaterial{Tenant: "alpha", KeyID: "k1", Version: 1, Algorithm: "AES_256_GCM", Wrapped: []byte("wrapped-blob")}
	if err := store.PutMaterial(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := store.PutArchived(ctx, m); err != nil {
		t.Fatal(err)
	}
	if _, err := store.GetArchived(ctx, "alpha", "k1", 1); err != nil {
		t.Fatalf("lifecycle worker reading the archive: %v", err)
	}

	creds, err := id.ServiceCredsDenying("crypto-worker", natsauth.BucketSubjects(kvstore.BucketArchive))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := natsserver.Connect(ns, creds, "crypto-worker")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Close)
	cjs, _ := jetstream.New(cc)
	mat, err := cjs.KeyValue(ctx, kvstore.BucketMaterial)
	if err != nil {
		t.Fatalf("crypto worker opening kf_material: %v", err)
	}
	if _, err := mat.Get(ctx, "alpha.k1.1"); err != nil {
		t.Fatalf("crypto worker reading live material: %v", err)
	}
	// Denied requests get no answer; bound the wait.
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := cjs.KeyValue(dctx, kvstore.BucketArchive); err == nil {
		t.Fatal("crypto worker opened kf_archive")
	}
	if _, err := cjs.Publish(dctx, "$KV."+kvstore.BucketArchive+".alpha.k2.1", []byte("x")); err == nil {
		t.Fatal("crypto worker wrote into kf_archive")
	}
	// Subscribing is denied too (a subscriber to $KV.kf_archive.> would
	// see each value as it is written): the user JWT says so, and the
	// server enforces what the JWT says.
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	if !uc.Sub.Deny.Contains("$KV."+kvstore.BucketArchive+".>") || !uc.Pub.Deny.Contains("$JS.API.DIRECT.GET.KV_"+kvstore.BucketArchive+".>") {
		t.Fatalf("crypto worker permissions: pub deny %v, sub deny %v", uc.Pub.Deny, uc.Sub.Deny)
	}
}
