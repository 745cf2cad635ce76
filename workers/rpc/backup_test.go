package rpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/schemas"
	"github.com/keyflow/keyflow/workers/rpc"
)

// syncArchiver runs archival and recovery in-line over the domain, as the
// Temporal workflows do step by step (those are tested in workflows/).
type syncArchiver struct {
	kms     *kms.Service
	pending map[string]string // key/version -> requester
}

func (a *syncArchiver) RunArchival(ctx context.Context, c kms.Caller, retention, interval time.Duration) (*rpc.ArchivalRun, error) {
	refs, err := a.kms.ListArchivable(ctx, c, retention)
	if err != nil {
		return nil, err
	}
	run := &rpc.ArchivalRun{WorkflowID: "archive/" + c.Tenant}
	for _, r := range refs {
		if err := a.kms.ArchiveVersion(ctx, c, kms.ArchiveVersionParams{KeyID: r.KeyID, Version: r.Version, Retention: retention}); err != nil {
			run.Failed = append(run.Failed, r)
			continue
		}
		run.Archived = append(run.Archived, r)
	}
	return run, nil
}

func (a *syncArchiver) StartRecovery(_ context.Context, c kms.Caller, keyID string, version uint32) (string, error) {
	a.pending[keyID] = c.Principal
	return "recover/" + keyID, nil
}

func (a *syncArchiver) DecideRecovery(ctx context.Context, c kms.Caller, keyID string, version uint32, approve bool) (*rpc.RecoveryOutcome, error) {
	requester, ok := a.pending[keyID]
	if !ok {
		return nil, &kms.Error{Code: kms.CodeNotFound, Message: "no restore is waiting"}
	}
	if err := a.kms.RecordRestoreDecision(ctx, c, keyID, version, requester, approve); err != nil {
		return nil, err
	}
	if !approve {
		return &rpc.RecoveryOutcome{Outcome: "REJECTED", DecidedBy: c.Principal}, nil
	}
	if err := a.kms.RestoreVersion(ctx, c, keyID, version); err != nil {
		return nil, err
	}
	return &rpc.RecoveryOutcome{Outcome: "RESTORED", DecidedBy: c.Principal}, nil
}

func startWithArchiver(t *testing.T, b *testbed.Bed) {
	t.Helper()
	srv, err := rpc.Start(rpc.Config{Conn: b.Conn, KMS: b.KMS, Tenants: b.Identity, JS: b.JS, Workers: 8,
		Archiver: &syncArchiver{kms: b.KMS, pending: map[string]string{}},
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
}

// rawSend sends a JSON body as alice and checks the reply against its
// schema (or ErrorReply's).
func rawSend(t *testing.T, nc *nats.Conn, op, body, replySchema string) []byte {
	t.Helper()
	msg := nats.NewMsg(api.Subject("alpha", op))
	msg.Data = []byte(body)
	reply, err := signedRequest(nc, msg, 20*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
	if reply.Header.Get(api.HeaderErrorCode) != "" {
		replySchema = "ErrorReply"
	}
	if err := schemas.ValidateAPI(replySchema, reply.Data); err != nil {
		t.Errorf("%s reply %s: %v", op, reply.Data, err)
	}
	return reply.Data
}

// Backup and restore over NATS into a fresh stack on the same HSM, and the
// archive endpoints, with every message checked against its schema.
func TestBackupAndArchiveOverNATS(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	startWithArchiver(t, b)
	alice := b.Client("alpha", "alice")
	k, err := alice.CreateKey(ctx, api.CreateKeyRequest{Alias: "alias/app"})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := alice.Encrypt(ctx, api.EncryptRequest{KeyID: "alias/app", Plaintext: []byte("over the wire")})
	if err != nil {
		t.Fatal(err)
	}
	creds, _ := b.Identity.UserCreds("alpha", "alice")
	nc, err := connectSigned(b.NATS, creds, "alice")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var bk api.BackupCreateReply
	if err := json.Unmarshal(rawSend(t, nc, api.OpBackupCreate, `{}`, "BackupCreateReply"), &bk); err != nil || bk.Keys != 1 || len(bk.Backup) == 0 {
		t.Fatalf("backup.create: %+v, %v", bk, err)
	}
	var list api.BackupListReply
	if err := json.Unmarshal(rawSend(t, nc, api.OpBackupList, `{}`, "BackupListReply"), &list); err != nil || len(list.Backups) != 1 || list.Backups[0].BackupID != bk.BackupID {
		t.Fatalf("backup.list: %+v, %v", list, err)
	}
	rawSend(t, nc, api.OpBackupCreate, `{"extra":1}`, "ErrorReply")

	// Another tenant cannot restore it.
	beta := b.Client("beta", "bob")
	if _, err := beta.RestoreBackup(ctx, api.BackupRestoreRequest{Backup: bk.Backup}); !isCode(err, kms.CodeAccessDenied) {
		t.Fatalf("beta restoring alpha's backup: %v", err)
	}

	fresh := testbed.NewOn(t, b.HSM)
	startWithArchiver(t, fresh)
	fc := fresh.Client("alpha", "alice")
	res, err := fc.RestoreBackup(ctx, api.BackupRestoreRequest{Backup: bk.Backup})
	if err != nil || res.Keys != 1 || res.Aliases != 1 || res.BackupID != bk.BackupID {
		t.Fatalf("restore: %+v, %v", res, err)
	}
	dec, err := fc.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob})
	if err != nil || string(dec.Plaintext) != "over the wire" {
		t.Fatalf("decrypt after restore: %v", err)
	}
	tampered := append([]byte(nil), bk.Backup...)
	tampered[len(tampered)-1] ^= 1
	if _, err := fc.RestoreBackup(ctx, api.BackupRestoreRequest{Backup: tampered, Overwrite: true}); !isCode(err, kms.CodeInvalidCiphertext) {
		t.Fatalf("tampered restore: %v", err)
	}
	if _, err := fc.RestoreBackup(ctx, api.BackupRestoreRequest{Backup: bk.Backup}); !isCode(err, kms.CodeAlreadyExists) {
		t.Fatalf("second restore: %v", err)
	}

	// Archive endpoints: nothing is due for a fresh key; restoring a live
	// version is refused; deciding with nothing waiting is NotFound.
	var run api.ArchiveRunReply
	if err := json.Unmarshal(rawSend(t, nc, api.OpArchiveRun, `{"retentionSeconds":1}`, "ArchiveRunReply"), &run); err != nil || len(run.Archived) != 0 {
		t.Fatalf("archive.run: %+v, %v", run, err)
	}
	rawSend(t, nc, api.OpArchiveRun, `{"intervalSeconds":5}`, "ErrorReply")
	rawSend(t, nc, api.OpArchiveRestore, `{"keyId":"alias/app","version":1}`, "ErrorReply")
	rawSend(t, nc, api.OpArchiveDecide, `{"keyId":"`+k.KeyID+`","version":1,"approve":true}`, "ErrorReply")

	// Deactivate the key, as if long ago, and run archival for real.
	kk, rev, err := b.Store.GetKey(ctx, "alpha", k.KeyID)
	if err != nil {
		t.Fatal(err)
	}
	kk.State = kms.StateDeactivated
	kk.Versions[0].CreatedAt = kk.Versions[0].CreatedAt.Add(-time.Hour)
	if _, err := b.Store.UpdateKey(ctx, kk, rev); err != nil {
		t.Fatal(err)
	}
	b.KMS.Invalidate("alpha", k.KeyID)
	if err := json.Unmarshal(rawSend(t, nc, api.OpArchiveRun, `{"retentionSeconds":60}`, "ArchiveRunReply"), &run); err != nil || len(run.Archived) != 1 {
		t.Fatalf("archive.run of a deactivated key: %+v, %v", run, err)
	}
	var rr api.ArchiveRestoreReply
	if err := json.Unmarshal(rawSend(t, nc, api.OpArchiveRestore, `{"keyId":"alias/app","version":1}`, "ArchiveRestoreReply"), &rr); err != nil || rr.Status != "PENDING_APPROVAL" {
		t.Fatalf("archive.restore: %+v, %v", rr, err)
	}
	if _, err := alice.DecideVersionRestore(ctx, api.ArchiveDecideRequest{KeyID: "alias/app", Version: 1, Approve: true}); !isCode(err, kms.CodeAccessDenied) {
		t.Fatalf("self-approval: %v", err)
	}
	bob := b.Client("alpha", "bob")
	out, err := bob.DecideVersionRestore(ctx, api.ArchiveDecideRequest{KeyID: "alias/app", Version: 1, Approve: true})
	if err != nil || out.Outcome != "RESTORED" || out.DecidedBy != "bob" {
		t.Fatalf("approval: %+v, %v", out, err)
	}
}

func isCode(err error, code kms.Code) bool {
	var ce *client.Error
	return errors.As(err, &ce) && ce.Code == string(code)
}

// emitArchiveEvents makes the domain emit every archival and recovery event
// type once (successes and refusals) for TestSchemaWireMessages.
func emitArchiveEvents(t *testing.T, b *testbed.Bed, keyID string) {
	t.Helper()
	ctx := context.Background()
	alice := kms.Caller{Tenant: "alpha", Principal: "alice", RequestID: "r-archive"}
	bob := kms.Caller{Tenant: "alpha", Principal: "bob", RequestID: "r-archive"}
	if err := b.KMS.ArchiveVersion(ctx, alice, kms.ArchiveVersionParams{KeyID: keyID, Version: 1}); !errors.Is(err, kms.ErrInvalidState) {
		t.Fatalf("archive of an active primary: %v", err)
	}
	if _, err := b.KMS.RequestVersionRestore(ctx, alice, keyID, 1); !errors.Is(err, kms.ErrInvalidState) {
		t.Fatalf("restore request of a live version: %v", err)
	}
	if err := b.KMS.RecordRestoreDecision(ctx, alice, keyID, 1, "alice", true); !errors.Is(err, kms.ErrAccessDenied) {
		t.Fatalf("self-approval: %v", err)
	}
	if err := b.KMS.RecordRestoreDecision(ctx, bob, keyID, 1, "alice", false); err != nil {
		t.Fatal(err)
	}
	if err := b.KMS.RecordRestoreExpired(ctx, alice, keyID, 1, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := b.KMS.RestoreVersion(ctx, bob, keyID, 1); err != nil { // not archived: a no-op
		t.Fatal(err)
	}
	if _, err := b.KMS.DestroyArchivedMaterial(ctx, bob, keyID); err != nil {
		t.Fatal(err)
	}
}
