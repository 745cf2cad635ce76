package kms_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// A backup restores into a fresh store over the same root key: keys,
// versions, aliases, and old ciphertexts decrypt.
func TestBackupRestoreIntoFreshStore(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k := mustCreate(t, b.KMS, alice, "alias/billing")
	hm, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: "HMAC_256"})
	if err != nil {
		t.Fatal(err)
	}
	old, _ := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("v1 secret")})
	if _, err := b.KMS.CreateVersion(ctx, alice, kms.CreateVersionParams{KeyID: k.ID, Version: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.SetPrimaryVersion(ctx, alice, kms.SetPrimaryParams{KeyID: k.ID, Version: 2}); err != nil {
		t.Fatal(err)
	}
	cur, _ := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: "billing", Plaintext: []byte("v2 secret"), Context: kms.EncryptionContext{"a": "b"}})
	mac, err := b.KMS.GenerateMac(ctx, alice, kms.MACParams{KeyRef: hm.ID, Message: []byte("m"), Algorithm: "HMAC_SHA_256"})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, b.KMS, kms.Caller{Tenant: "beta", Principal: "bob"}, "alias/other-tenant")

	bk, err := b.KMS.CreateBackup(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if bk.Keys != 2 || bk.Versions != 3 {
		t.Fatalf("backup holds %d keys, %d versions; want 2, 3", bk.Keys, bk.Versions)
	}
	for _, secret := range [][]byte{[]byte("v1 secret"), []byte("billing")[:0]} {
		if len(secret) > 0 && bytes.Contains(bk.File, secret) {
			t.Fatal("the backup file holds plaintext")
		}
	}
	if bytes.Contains(bk.File, []byte("billing")) || bytes.Contains(bk.File, []byte(k.ID)) {
		t.Fatal("the backup payload is not encrypted: an alias or key ID is visible")
	}
	if n := len(b.EventsOfType("alpha", events.TypeBackupCreated)); n != 1 {
		t.Fatalf("%d backup.created events, want 1", n)
	}
	recs, err := b.KMS.ListBackups(ctx, alice)
	if err != nil || len(recs) != 1 || recs[0].ID != bk.ID || len(recs[0].KeyIDs) != 2 {
		t.Fatalf("registry: %+v, %v", recs, err)
	}

	// A fresh NATS and store on the same HSM: the disaster recovery case
	// once the root key is back.
	fresh := testbed.NewOn(t, b.HSM)
	if _, err := fresh.KMS.DescribeKey(ctx, alice, k.ID); !errors.Is(err, kms.ErrNotFound) {
		t.Fatalf("fresh store already has the key: %v", err)
	}
	if _, err := fresh.KMS.RestoreBackup(ctx, kms.Caller{Tenant: "beta", Principal: "bob"}, kms.RestoreBackupParams{File: bk.File}); !errors.Is(err, kms.ErrAccessDenied) {
		t.Fatalf("restore into another tenant: %v, want AccessDenied", err)
	}
	res, err := fresh.KMS.RestoreBackup(ctx, alice, kms.RestoreBackupParams{File: bk.File})
	if err != nil {
		t.Fatal(err)
	}
	if res.ID != bk.ID || res.Keys != 2 || res.Versions != 3 || res.Aliases != 1 {
		t.Fatalf("restore result %+v", res)
	}
	for _, c := range []struct {
		ct  []byte
		ec  kms.EncryptionContext
		msg string
	}{{old.Ciphertext, nil, "v1 secret"}, {cur.Ciphertext, kms.EncryptionContext{"a": "b"}, "v2 secret"}} {
		dec, err := fresh.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: c.ct, Context: c.ec})
		if err != nil || string(dec.Plaintext) != c.msg {
			t.Fatalf("decrypt after restore: %v, %v", dec, err)
		}
	}
	if _, err := fresh.KMS.VerifyMac(ctx, alice, kms.MACParams{KeyRef: hm.ID, Message: []byte("m"), MAC: mac.MAC, Algorithm: "HMAC_SHA_256"}); err != nil {
		t.Fatalf("verify MAC after restore: %v", err)
	}
	got, err := fresh.KMS.DescribeKey(ctx, alice, "alias/billing")
	if err != nil || got.ID != k.ID || got.PrimaryVersion != 2 {
		t.Fatalf("restored key: %+v, %v", got, err)
	}
	if _, err := fresh.KMS.DescribeKey(ctx, kms.Caller{Tenant: "beta", Principal: "bob"}, "alias/other-tenant"); !errors.Is(err, kms.ErrNotFound) {
		t.Fatalf("another tenant's key came with the backup: %v", err)
	}
	// Again: refused unless overwriting, and nothing changes.
	if _, err := fresh.KMS.RestoreBackup(ctx, alice, kms.RestoreBackupParams{File: bk.File}); !errors.Is(err, kms.ErrAlreadyExists) {
		t.Fatalf("second restore: %v, want AlreadyExists", err)
	}
	if _, err := fresh.KMS.RestoreBackup(ctx, alice, kms.RestoreBackupParams{File: bk.File, Overwrite: true}); err != nil {
		t.Fatalf("restore with overwrite: %v", err)
	}
	evs := fresh.EventsOfType("alpha", events.TypeBackupRestored)
	if len(evs) != 3 || evs[0].Outcome != events.OutcomeSuccess || evs[1].ErrorCode != string(kms.CodeAlreadyExists) || evs[0].Data["backupId"] != bk.ID {
		t.Fatalf("backup.restored events: %+v", evs)
	}
}

// A file that is changed anywhere, cut short or made under another root key
// is refused with a clear error, and nothing is written.
func TestBackupTamperingIsRefused(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	for i := range 3 {
		k := mustCreate(t, b.KMS, alice, "")
		_ = i
		_ = k
	}
	bk, err := b.KMS.CreateBackup(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	fresh := testbed.NewOn(t, b.HSM)
	hdrEnd := bytes.Index(bk.File, []byte("}")) + 1
	cases := map[string][]byte{
		"truncated":         bk.File[:len(bk.File)-1],
		"last chunk gone":   bk.File[:hdrEnd],
		"extra byte":        append(bytes.Clone(bk.File), 0),
		"flip in a chunk":   flip(bk.File, len(bk.File)-20),
		"flip in an IV":     flip(bk.File, hdrEnd+5),
		"header changed":    bytes.Replace(bk.File, []byte(`"keys":3`), []byte(`"keys":4`), 1),
		"wrapped key flip":  bytes.Replace(bk.File, []byte(`"wrappedDataKey":"`), []byte(`"wrappedDataKey":"A`), 1),
		"not a backup file": []byte("hello, world, this is not a backup"),
	}
	for name, file := range cases {
		_, err := fresh.KMS.RestoreBackup(ctx, alice, kms.RestoreBackupParams{File: file})
		code := kms.CodeOf(err)
		if err == nil || (code != kms.CodeInvalidCiphertext && code != kms.CodeValidation && code != kms.CodeInvalidState) {
			t.Errorf("%s: restore = %v, want a refusal", name, err)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
	if keys, _ := fresh.KMS.ListKeys(ctx, alice); len(keys) != 0 {
		t.Fatalf("a refused restore wrote %d keys", len(keys))
	}
	_, err = fresh.KMS.RestoreBackup(ctx, alice, kms.RestoreBackupParams{File: flip(bk.File, len(bk.File)-20)})
	if !errors.Is(err, kms.ErrInvalidCiphertext) || !strings.Contains(err.Error(), "integrity") {
		t.Fatalf("flipped chunk: %v, want InvalidCiphertext naming the integrity check", err)
	}
	// Another deployment's root key cannot open it.
	other := testbed.New(t)
	if _, err := other.KMS.RestoreBackup(ctx, alice, kms.RestoreBackupParams{File: bk.File}); !errors.Is(err, kms.ErrInvalidState) || !strings.Contains(err.Error(), "root key") {
		t.Fatalf("restore under another root key: %v, want InvalidState naming the root key", err)
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}

// clockKMS is a second service over b's HSM and store with a clock the
// test moves.
func clockKMS(t *testing.T, b *testbed.Bed) (*kms.Service, *atomic.Int64) {
	var offset atomic.Int64
	s, err := kms.New(context.Background(), kms.Config{
		HSM: b.HSM, Store: b.Store, Audit: b.Audit, Source: "/keyflow/test",
		Now:    func() time.Time { return time.Now().Add(time.Duration(offset.Load())) },
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, &offset
}

// deactivateVersion sets a version's state the way the lifecycle state
// machine will, straight in the store.
func deactivateVersion(t *testing.T, b *testbed.Bed, tenant, keyID string, version uint32) {
	t.Helper()
	k, rev, err := b.Store.GetKey(context.Background(), tenant, keyID)
	if err != nil {
		t.Fatal(err)
	}
	for i := range k.Versions {
		if k.Versions[i].Number == version {
			k.Versions[i].State = kms.StateDeactivated
		}
	}
	if _, err := b.Store.UpdateKey(context.Background(), k, rev); err != nil {
		t.Fatal(err)
	}
	b.KMS.Invalidate(tenant, keyID)
}

// rotatedKey makes a key with two versions, v2 primary, v1 deactivated,
// and a ciphertext under v1.
func rotatedKey(t *testing.T, b *testbed.Bed) (*kms.Key, []byte) {
	t.Helper()
	ctx := context.Background()
	k := mustCreate(t, b.KMS, alice, "")
	enc, err := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("archived secret")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.CreateVersion(ctx, alice, kms.CreateVersionParams{KeyID: k.ID, Version: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.SetPrimaryVersion(ctx, alice, kms.SetPrimaryParams{KeyID: k.ID, Version: 2}); err != nil {
		t.Fatal(err)
	}
	deactivateVersion(t, b, "alpha", k.ID, 1)
	return k, enc.Ciphertext
}

func TestArchiveAndRestoreVersion(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k, ct := rotatedKey(t, b)
	s, offset := clockKMS(t, b)

	// Too young, and the primary: refused.
	if err := s.ArchiveVersion(ctx, alice, kms.ArchiveVersionParams{KeyID: k.ID, Version: 1}); !errors.Is(err, kms.ErrInvalidState) {
		t.Fatalf("archive of a young version: %v, want InvalidState", err)
	}
	if refs, _ := s.ListArchivable(ctx, alice, 0); len(refs) != 0 {
		t.Fatalf("archivable before the retention age: %v", refs)
	}
	offset.Store(int64(91 * 24 * time.Hour))
	if err := s.ArchiveVersion(ctx, alice, kms.ArchiveVersionParams{KeyID: k.ID, Version: 2}); !errors.Is(err, kms.ErrInvalidState) {
		t.Fatalf("archive of the primary: %v, want InvalidState", err)
	}
	refs, err := s.ListArchivable(ctx, alice, 0)
	if err != nil || len(refs) != 1 || refs[0] != (kms.VersionRef{KeyID: k.ID, Version: 1}) {
		t.Fatalf("archivable: %v, %v", refs, err)
	}
	// Load v1 into the caches of the main service first: archival must
	// make it unloadable there too.
	if _, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: ct}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // idempotent
		if err := s.ArchiveVersion(ctx, alice, kms.ArchiveVersionParams{KeyID: k.ID, Version: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Store.GetMaterial(ctx, "alpha", k.ID, 1); !errors.Is(err, kms.ErrStoreNotFound) {
		t.Fatalf("live material after archival: %v", err)
	}
	if _, err := b.Store.GetArchived(ctx, "alpha", k.ID, 1); err != nil {
		t.Fatalf("archive after archival: %v", err)
	}
	b.KMS.Invalidate("alpha", k.ID) // the KV watch does this in a stack
	_, err = b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: ct})
	if !errors.Is(err, kms.ErrInvalidState) || !strings.Contains(err.Error(), "archived") {
		t.Fatalf("decrypt under an archived version: %v, want KMSInvalidStateException naming archived", err)
	}
	got, _ := b.KMS.DescribeKey(ctx, alice, k.ID)
	if v, _ := got.Version(1); !v.Archived || v.ArchivedAt.IsZero() {
		t.Fatalf("version 1 after archival: %+v", v)
	}

	// A backup carries the archive; restore the version.
	if _, err := s.RequestVersionRestore(ctx, alice, k.ID, 2); !errors.Is(err, kms.ErrInvalidState) {
		t.Fatalf("restore request of a live version: %v", err)
	}
	if id, err := s.RequestVersionRestore(ctx, alice, k.ID, 1); err != nil || id != k.ID {
		t.Fatalf("restore request: %q, %v", id, err)
	}
	if err := s.RecordRestoreDecision(ctx, alice, k.ID, 1, "alice", true); !errors.Is(err, kms.ErrAccessDenied) {
		t.Fatalf("self-approval: %v, want AccessDenied", err)
	}
	bob := kms.Caller{Tenant: "alpha", Principal: "bob"}
	if err := s.RecordRestoreDecision(ctx, bob, k.ID, 1, "alice", true); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.RestoreVersion(ctx, bob, k.ID, 1); err != nil {
			t.Fatal(err)
		}
	}
	b.KMS.Invalidate("alpha", k.ID)
	dec, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: ct})
	if err != nil || string(dec.Plaintext) != "archived secret" {
		t.Fatalf("decrypt after restore: %v", err)
	}
	if _, err := b.Store.GetArchived(ctx, "alpha", k.ID, 1); !errors.Is(err, kms.ErrStoreNotFound) {
		t.Fatalf("archive entry after restore: %v", err)
	}
	for typ, n := range map[string]int{
		events.TypeKeyVersionArchived:         4, // two refusals and two successes (no idempotency key outside a workflow)
		events.TypeKeyVersionRestoreRequested: 2, events.TypeKeyVersionRestoreApproved: 2, events.TypeKeyVersionRestored: 2,
	} {
		if got := len(b.EventsOfType("alpha", typ)); got != n {
			t.Errorf("%d %s events, want %d", got, typ, n)
		}
	}
}

// Destroying a key's managed copies empties its archive entries and revokes
// the registered backups that hold it, which then cannot be restored here.
func TestDestroyArchivedMaterial(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k, _ := rotatedKey(t, b)
	keep := mustCreate(t, b.KMS, alice, "")
	s, offset := clockKMS(t, b)
	offset.Store(int64(100 * 24 * time.Hour))
	if err := s.ArchiveVersion(ctx, alice, kms.ArchiveVersionParams{KeyID: k.ID, Version: 1}); err != nil {
		t.Fatal(err)
	}
	bk, err := s.CreateBackup(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.DestroyArchivedMaterial(ctx, alice, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.ArchivedVersions) != 1 || res.ArchivedVersions[0] != 1 || len(res.Backups) != 1 || res.Backups[0] != bk.ID {
		t.Fatalf("destroyed %+v", res)
	}
	if _, err := b.Store.GetArchived(ctx, "alpha", k.ID, 1); !errors.Is(err, kms.ErrStoreNotFound) {
		t.Fatalf("archive entry after destruction: %v", err)
	}
	if _, err := s.RestoreBackup(ctx, alice, kms.RestoreBackupParams{File: bk.File, Overwrite: true}); !errors.Is(err, kms.ErrInvalidState) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("restore of a revoked backup: %v", err)
	}
	// Idempotent; a key in no backup revokes nothing.
	if res, err := s.DestroyArchivedMaterial(ctx, alice, k.ID); err != nil || len(res.ArchivedVersions) != 0 {
		t.Fatalf("second destruction: %+v, %v", res, err)
	}
	if res, err := s.DestroyArchivedMaterial(ctx, alice, keep.ID); err != nil || len(res.ArchivedVersions) != 0 {
		t.Fatalf("destruction of a key with no archive: %+v, %v", res, err)
	}
}
