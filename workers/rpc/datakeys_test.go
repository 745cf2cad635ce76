package rpc_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"slices"
	"testing"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/rpc"
)

// syncMigrator is a Migrator without Temporal (workers may not import the
// workflows): it runs a campaign's first steps synchronously through the
// same domain calls the workflow's activities make, so the NATS surface
// and the audit records are the real ones. The workflow itself is tested
// in package workflows and end to end in e2e.
type syncMigrator struct{ kms *kms.Service }

func (m syncMigrator) StartMigration(ctx context.Context, c kms.Caller, req api.MigrationStartRequest) (*api.MigrationStatus, error) {
	if err := m.kms.RecordMigrationEvent(ctx, c, events.TypeMigrationStarted, req.CampaignID, map[string]any{"keys": len(req.Keys)}); err != nil {
		return nil, err
	}
	for _, k := range req.Keys {
		p := kms.MigrationKeyParams{CampaignID: req.CampaignID, SourceKeyID: k.KeyID, TargetSpec: kms.KeySpec(k.TargetKeySpec)}
		t, err := m.kms.CreateMigrationTarget(ctx, c, p)
		if err != nil {
			return nil, err
		}
		p.TargetKeyID, p.Phase = t.ID, kms.PhaseDualSigning
		if err := m.kms.LinkMigration(ctx, c, p); err != nil {
			return nil, err
		}
	}
	if err := m.kms.RecordMigrationEvent(ctx, c, events.TypeMigrationPhase, req.CampaignID, map[string]any{"phase": "dual-signing", "paused": false}); err != nil {
		return nil, err
	}
	return m.MigrationStatus(ctx, c, req.CampaignID)
}

func (m syncMigrator) SignalMigration(ctx context.Context, c kms.Caller, campaignID, action string) error {
	return nil
}

func (m syncMigrator) MigrationStatus(ctx context.Context, c kms.Caller, campaignID string) (*api.MigrationStatus, error) {
	return &api.MigrationStatus{CampaignID: campaignID, WorkflowID: "sync/" + campaignID, Phase: "dual-signing", Approvals: []string{}, RequiredApprovals: 1, Keys: []api.MigrationKeyStatus{}}, nil
}

// startRPCWithMigrator serves the NATS API with a rotator and the
// synchronous migrator.
func startRPCWithMigrator(t *testing.T, b *testbed.Bed, rot rpc.Rotator) {
	t.Helper()
	srv, err := rpc.Start(rpc.Config{Conn: b.Conn, KMS: b.KMS, Tenants: b.Identity, JS: b.JS, Rotator: rot, Migrator: syncMigrator{b.KMS}, Workers: 16,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
}

// wireRegistryAndMigration sends the registry, rewrap and migration
// messages through TestSchemaWireMessages's checks.
func wireRegistryAndMigration(t *testing.T, svc *kms.Service, ok func(op, reqSchema, body, replySchema string) []byte, refused func(op, reqSchema, body string, code kms.Code)) {
	t.Helper()
	b64 := base64.StdEncoding.EncodeToString
	var dk api.DataKeyReply
	if err := json.Unmarshal(ok(api.OpDataKey, "DataKeyRequest", `{"keyId":"wire","encryptionContext":{"row":"1"}}`, "DataKeyReply"), &dk); err != nil {
		t.Fatal(err)
	}
	var reg api.DataKeyRegistration
	if err := json.Unmarshal(ok(api.OpDataKeyRegister, "RegisterDataKeyRequest", `{"ciphertextBlob":"`+b64(dk.CiphertextBlob)+`","encryptionContext":{"row":"1"},"label":"row-1"}`, "DataKeyRegistration"), &reg); err != nil {
		t.Fatal(err)
	}
	refused(api.OpDataKeyRegister, "RegisterDataKeyRequest", `{"ciphertextBlob":"`+b64(dk.CiphertextBlob)+`"}`, kms.CodeInvalidCiphertext)
	ok(api.OpDataKeyGet, "RegistrationRequest", `{"registrationId":"`+reg.RegistrationID+`"}`, "DataKeyRegistration")
	refused(api.OpDataKeyGet, "", `{"registrationId":"nope"}`, kms.CodeValidation)
	// The registry rewrap (workflows drive it) records each move.
	var dest api.KeyMetadata
	if err := json.Unmarshal(ok(api.OpKeyCreate, "CreateKeyRequest", `{"alias":"wire-dest"}`, "KeyMetadata"), &dest); err != nil {
		t.Fatal(err)
	}
	alice := kms.Caller{Tenant: "alpha", Principal: "alice", IdempotencyKey: "wire-rewrap"}
	if page, err := svc.RewrapRegistered(context.Background(), alice, kms.RewrapRegisteredParams{KeyID: reg.KeyID, DestinationKeyID: dest.KeyID}); err != nil || page.Rewrapped != 1 {
		t.Fatalf("registry rewrap: %+v %v", page, err)
	}
	ok(api.OpDataKeyList, "ListDataKeysRequest", `{"keyId":"wire","limit":10}`, "ListDataKeysReply")
	ok(api.OpDataKeyList, "ListDataKeysRequest", `{"keyId":"wire","versions":[1,2],"cursor":"3"}`, "ListDataKeysReply")
	refused(api.OpDataKeyList, "", `{"keyId":"wire","cursor":"not-a-cursor"}`, kms.CodeValidation)
	ok(api.OpRewrap, "RewrapRequest", `{"items":[{"ciphertextBlob":"`+b64(dk.CiphertextBlob)+`","encryptionContext":{"row":"1"}},{"ciphertextBlob":"AQID"}],"destinationKeyId":"alias/wire"}`, "RewrapReply")
	refused(api.OpRewrap, "", `{"items":[]}`, kms.CodeValidation)
	ok(api.OpDataKeyDeregister, "RegistrationRequest", `{"registrationId":"`+reg.RegistrationID+`"}`, "RegistrationRequest")
	refused(api.OpDataKeyDeregister, "RegistrationRequest", `{"registrationId":"`+reg.RegistrationID+`"}`, kms.CodeNotFound)

	// A campaign over the wire (synchronous migrator): its requests, the
	// steps' records, and the dual signature in the sign reply.
	var key api.KeyMetadata
	if err := json.Unmarshal(ok(api.OpKeyCreate, "CreateKeyRequest", `{"alias":"wire-migrating","keySpec":"ECC_NIST_P256"}`, "KeyMetadata"), &key); err != nil {
		t.Fatal(err)
	}
	ok(api.OpMigrateStart, "MigrationStartRequest", `{"campaignId":"wire-pq","keys":[{"keyId":"`+key.KeyID+`","targetKeySpec":"ML_DSA_65"}]}`, "MigrationStatus")
	refused(api.OpMigrateStart, "MigrationStartRequest", `{"campaignId":"wire-pq2","keys":[{"keyId":"`+key.KeyID+`","targetKeySpec":"X_WING"}]}`, kms.CodeConflict)
	refused(api.OpMigrateStart, "", `{"campaignId":"Not Valid","keys":[]}`, kms.CodeValidation)
	var sig api.SignReply
	if err := json.Unmarshal(ok(api.OpSign, "SignRequest", `{"keyId":"alias/wire-migrating","message":"aGVsbG8=","signingAlgorithm":"ECDSA_SHA_256"}`, "SignReply"), &sig); err != nil || len(sig.AdditionalSignatures) != 1 {
		t.Fatalf("dual signing over the wire: %v %+v", err, sig)
	}
	ok(api.OpVerify, "VerifyRequest", `{"keyId":"wire-migrating","message":"aGVsbG8=","signingAlgorithm":"ML_DSA_SHAKE_256","signature":"`+b64(sig.AdditionalSignatures[0].Signature)+`"}`, "VerifyReply")
	ok(api.OpMigrateStatus, "MigrationRequest", `{}`, "MigrationStatus")
	ok(api.OpMigratePause, "MigrationRequest", `{"campaignId":"wire-pq"}`, "MigrationStatus")
	refused(api.OpMigrateApprove, "", `{"campaignId":"NOPE"}`, kms.CodeValidation)
	refused(api.OpMigrateRollback, "", `{"campaign":"wire-pq"}`, kms.CodeValidation)
}

// The registry over NATS: register, fetch, page with a cursor, count per
// version, rewrap after a rotation, deregister; tenants are apart.
func TestDataKeyRegistryOverNATS(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	b.StartRPC(evtRotator{b.KMS})
	c := b.Client("alpha", "alice")
	k, err := c.CreateKey(ctx, api.CreateKeyRequest{Alias: "reg"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 5 {
		dk, err := c.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: "alias/reg", WithoutPlaintext: true})
		if err != nil {
			t.Fatal(err)
		}
		r, err := c.RegisterDataKey(ctx, api.RegisterDataKeyRequest{CiphertextBlob: dk.CiphertextBlob})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.RegistrationID)
	}
	// Pages of two follow the cursor through all five, in registration
	// order; the first page has the counts.
	var got []string
	cursor := ""
	for {
		page, err := c.ListDataKeys(ctx, api.ListDataKeysRequest{KeyID: "alias/reg", Cursor: cursor, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if cursor == "" && page.Counts["1"] != 5 {
			t.Fatalf("counts %v, want 5 under version 1", page.Counts)
		}
		for _, r := range page.Registrations {
			got = append(got, r.RegistrationID)
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("paged %v, want %v", got, ids)
	}
	// After a rotation, rewrap over the API moves one blob to version 2.
	if _, err := c.RotateKey(ctx, k.KeyID); err != nil {
		t.Fatal(err)
	}
	first, _ := c.GetDataKey(ctx, ids[0])
	rw, err := c.Rewrap(ctx, api.RewrapRequest{Items: []api.RewrapItem{{CiphertextBlob: first.CiphertextBlob}}})
	if err != nil || rw.Results[0].Result == nil || rw.Results[0].Result.KeyVersion != 2 || rw.Results[0].Result.SourceKeyVersion != 1 {
		t.Fatalf("rewrap: %+v %v", rw, err)
	}
	// Another tenant cannot see or remove alpha's registrations.
	other := b.Client("beta", "bob")
	var ce *client.Error
	if _, err := other.GetDataKey(ctx, ids[0]); !errors.As(err, &ce) || ce.Code != string(kms.CodeNotFound) {
		t.Fatalf("beta reading alpha's registration: %v", err)
	}
	if err := other.DeregisterDataKey(ctx, ids[0]); !errors.As(err, &ce) || ce.Code != string(kms.CodeNotFound) {
		t.Fatalf("beta removing alpha's registration: %v", err)
	}
	if err := c.DeregisterDataKey(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if page, _ := c.ListDataKeys(ctx, api.ListDataKeysRequest{KeyID: "alias/reg"}); page.Counts["1"] != 4 || len(page.Registrations) != 4 {
		t.Fatalf("after deregister: %v, %d listed", page.Counts, len(page.Registrations))
	}
	if n := len(b.EventsOfType("alpha", events.TypeDataKeyRegistered)); n != 5 {
		t.Fatalf("%d registered records, want 5", n)
	}
	if n := len(b.EventsOfType("alpha", events.TypeDataKeyDeregistered)); n != 1 {
		t.Fatalf("%d deregistered records, want 1", n)
	}
}
