package schemas_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/schemas"
)

func TestSchemasCompile(t *testing.T) {
	if err := schemas.Compile(); err != nil {
		t.Fatal(err)
	}
	n := 0
	err := fs.WalkDir(schemas.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		doc := readSchema(t, p)
		if doc["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $schema is %v, want draft 2020-12", p, doc["$schema"])
		}
		if doc["$id"] != schemas.BaseURI+p {
			t.Errorf("%s: $id is %v, want %s", p, doc["$id"], schemas.BaseURI+p)
		}
		if s, _ := doc["description"].(string); s == "" {
			t.Errorf("%s: no description", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// defs.json, the envelope, one per event type, one per API message and
	// one per policy document.
	if want := 2 + len(schemas.EventTypes()) + len(schemas.APIMessages()) + len(schemas.PolicyDocuments()); n != want {
		t.Errorf("FS holds %d files, want %d: a file outside defs.json, api/ and events/?", n, want)
	}
}

// TestSchemaEnvelopeDispatchesEveryType checks that events/cloudevent.json
// checks the data of every type that has a schema, so that validating an
// event against the envelope alone (as an auditor's generic tool does)
// checks it completely.
func TestSchemaEnvelopeDispatchesEveryType(t *testing.T) {
	env := readSchema(t, schemas.EnvelopeFile)
	var dispatched []string
	for _, c := range env["allOf"].([]any) {
		c := c.(map[string]any)
		typ, ok := dig(c, "if", "properties", "type", "const").(string)
		if !ok {
			continue
		}
		if ref := dig(c, "then", "properties", "data", "$ref"); ref != typ+".json" {
			t.Errorf("type %s dispatches to %v, want %s.json", typ, ref, typ)
		}
		dispatched = append(dispatched, typ)
	}
	slices.Sort(dispatched)
	if got := schemas.EventTypes(); !slices.Equal(dispatched, got) {
		t.Errorf("cloudevent.json dispatches\n%v\nbut the event schemas are\n%v", dispatched, got)
	}
}

// TestSchemaAPIMirrorsGoTypes checks every API schema against its Go type
// in client/api: the same JSON names, required exactly when Go always
// writes the field (no omitempty), closed objects.
func TestSchemaAPIMirrorsGoTypes(t *testing.T) {
	cases := []struct {
		v       any
		file    string
		pointer []string // inside the file
		name    string   // the message name, when the Go type's is not (generics)
	}{
		{api.EncryptRequest{}, "api/EncryptRequest.json", nil, ""},
		{api.EncryptReply{}, "api/EncryptReply.json", nil, ""},
		{api.DecryptRequest{}, "api/DecryptRequest.json", nil, ""},
		{api.DecryptReply{}, "api/DecryptReply.json", nil, ""},
		{api.DataKeyRequest{}, "api/DataKeyRequest.json", nil, ""},
		{api.DataKeyReply{}, "api/DataKeyReply.json", nil, ""},
		{api.CreateKeyRequest{}, "api/CreateKeyRequest.json", nil, ""},
		{api.KeyRequest{}, "api/KeyRequest.json", nil, ""},
		{api.KeyMetadata{}, "api/KeyMetadata.json", nil, ""},
		{api.KeyVersion{}, "api/KeyMetadata.json", []string{"$defs", "KeyVersion"}, ""},
		{api.ListKeysReply{}, "api/ListKeysReply.json", nil, ""},
		{api.RotateKeyReply{}, "api/RotateKeyReply.json", nil, ""},
		{api.AuditTailRequest{}, "api/AuditTailRequest.json", nil, ""},
		{api.AuditTailReply{}, "api/AuditTailReply.json", nil, ""},
		{api.AuditEvent{}, "api/AuditTailReply.json", []string{"properties", "events", "items"}, ""},
		{api.ErrorReply{}, "api/ErrorReply.json", nil, ""},
		{api.ErrorBody{}, "api/ErrorReply.json", []string{"properties", "error"}, ""},
		{api.SignRequest{}, "api/SignRequest.json", nil, ""},
		{api.SignReply{}, "api/SignReply.json", nil, ""},
		{api.VerifyRequest{}, "api/VerifyRequest.json", nil, ""},
		{api.VerifyReply{}, "api/VerifyReply.json", nil, ""},
		{api.MacRequest{}, "api/MacRequest.json", nil, ""},
		{api.MacReply{}, "api/MacReply.json", nil, ""},
		{api.PublicKeyRequest{}, "api/PublicKeyRequest.json", nil, ""},
		{api.PublicKeyReply{}, "api/PublicKeyReply.json", nil, ""},
		{api.RandomRequest{}, "api/RandomRequest.json", nil, ""},
		{api.RandomReply{}, "api/RandomReply.json", nil, ""},
		{api.AccessKeyRequest{}, "api/AccessKeyRequest.json", nil, ""},
		{api.AccessKey{}, "api/AccessKey.json", nil, ""},
		{api.ListAccessKeysReply{}, "api/ListAccessKeysReply.json", nil, ""},
		{api.SetAliasRequest{}, "api/SetAliasRequest.json", nil, ""},
		{api.AliasRequest{}, "api/AliasRequest.json", nil, ""},
		{api.TagKeyRequest{}, "api/TagKeyRequest.json", nil, ""},
		{api.UntagKeyRequest{}, "api/UntagKeyRequest.json", nil, ""},
		{api.SetDescriptionRequest{}, "api/SetDescriptionRequest.json", nil, ""},
		{api.ListRetirableGrantsRequest{}, "api/ListRetirableGrantsRequest.json", nil, ""},
		{api.ReEncryptRequest{}, "api/ReEncryptRequest.json", nil, ""},
		{api.ReEncryptReply{}, "api/ReEncryptReply.json", nil, ""},
		{api.DataKeyPairRequest{}, "api/DataKeyPairRequest.json", nil, ""},
		{api.DataKeyPairReply{}, "api/DataKeyPairReply.json", nil, ""},
		{api.BatchEncryptRequest{}, "api/BatchEncryptRequest.json", nil, ""},
		{api.BatchDecryptRequest{}, "api/BatchDecryptRequest.json", nil, ""},
		{api.BatchDataKeyRequest{}, "api/BatchDataKeyRequest.json", nil, ""},
		{api.BatchReply[api.EncryptReply]{}, "api/BatchEncryptReply.json", nil, "BatchEncryptReply"},
		{api.BatchResult[api.EncryptReply]{}, "api/BatchEncryptReply.json", []string{"$defs", "BatchResult"}, "BatchEncryptResult"},
		{api.BatchReply[api.DecryptReply]{}, "api/BatchDecryptReply.json", nil, "BatchDecryptReply"},
		{api.BatchResult[api.DecryptReply]{}, "api/BatchDecryptReply.json", []string{"$defs", "BatchResult"}, "BatchDecryptResult"},
		{api.BatchReply[api.DataKeyReply]{}, "api/BatchDataKeyReply.json", nil, "BatchDataKeyReply"},
		{api.BatchResult[api.DataKeyReply]{}, "api/BatchDataKeyReply.json", []string{"$defs", "BatchResult"}, "BatchDataKeyResult"},

		{api.SealRequest{}, "api/SealRequest.json", nil, ""},
		{api.SealReply{}, "api/SealReply.json", nil, ""},
		{api.OpenRequest{}, "api/OpenRequest.json", nil, ""},
		{api.OpenReply{}, "api/OpenReply.json", nil, ""},
		{api.EncapsulateRequest{}, "api/EncapsulateRequest.json", nil, ""},
		{api.EncapsulateReply{}, "api/EncapsulateReply.json", nil, ""},
		{api.DecapsulateRequest{}, "api/DecapsulateRequest.json", nil, ""},
		{api.DecapsulateReply{}, "api/DecapsulateReply.json", nil, ""},

		{api.InventoryRequest{}, "api/InventoryRequest.json", nil, ""},
		{api.InventoryReply{}, "api/InventoryReply.json", nil, ""},
		{api.InventoryKey{}, "api/InventoryReply.json", []string{"$defs", "InventoryKey"}, ""},

		{api.BackupCreateReply{}, "api/BackupCreateReply.json", nil, ""},
		{api.BackupRestoreRequest{}, "api/BackupRestoreRequest.json", nil, ""},
		{api.BackupRestoreReply{}, "api/BackupRestoreReply.json", nil, ""},
		{api.BackupListReply{}, "api/BackupListReply.json", nil, ""},
		{api.BackupInfo{}, "api/BackupListReply.json", []string{"$defs", "BackupInfo"}, ""},
		{api.ArchiveRunRequest{}, "api/ArchiveRunRequest.json", nil, ""},
		{api.ArchiveRunReply{}, "api/ArchiveRunReply.json", nil, ""},
		{api.VersionRef{}, "api/ArchiveRunReply.json", []string{"$defs", "VersionRef"}, ""},
		{api.ArchiveRestoreRequest{}, "api/ArchiveRestoreRequest.json", nil, ""},
		{api.ArchiveRestoreReply{}, "api/ArchiveRestoreReply.json", nil, ""},
		{api.ArchiveDecideRequest{}, "api/ArchiveDecideRequest.json", nil, ""},
		{api.ArchiveDecideReply{}, "api/ArchiveDecideReply.json", nil, ""},
		{api.ApprovalListRequest{}, "api/ApprovalListRequest.json", nil, ""},
		{api.ApprovalListReply{}, "api/ApprovalListReply.json", nil, ""},
		{api.ApprovalRequest{}, "api/ApprovalRequest.json", nil, ""},
		{api.ApprovalDecisionRequest{}, "api/ApprovalDecisionRequest.json", nil, ""},
		{api.Approval{}, "api/Approval.json", nil, ""},
		{api.ApprovalVote{}, "api/Approval.json", []string{"$defs", "ApprovalVote"}, ""},
		{api.TenantPolicy{}, "api/TenantPolicy.json", nil, ""},
		{api.ApprovalRule{}, "api/TenantPolicy.json", []string{"$defs", "ApprovalRule"}, ""},
		{api.Quotas{}, "api/TenantPolicy.json", []string{"$defs", "Quotas"}, ""},
		{api.SetTenantPolicyRequest{}, "api/SetTenantPolicyRequest.json", nil, ""},
		{api.TenantPolicyReply{}, "api/TenantPolicyReply.json", nil, ""},
		{api.ImportParamsRequest{}, "api/ImportParamsRequest.json", nil, ""},
		{api.ImportParamsReply{}, "api/ImportParamsReply.json", nil, ""},
		{api.ImportRequest{}, "api/ImportRequest.json", nil, ""},
		{api.ImportReply{}, "api/ImportReply.json", nil, ""},
		{api.SetKeyPolicyRequest{}, "api/SetKeyPolicyRequest.json", nil, ""},
		{api.KeyPolicyReply{}, "api/KeyPolicyReply.json", nil, ""},
		{api.CreateGrantRequest{}, "api/CreateGrantRequest.json", nil, ""},
		{api.GrantConstraints{}, "api/CreateGrantRequest.json", []string{"$defs", "GrantConstraints"}, ""},
		{api.Grant{}, "api/Grant.json", nil, ""},
		{api.ListGrantsReply{}, "api/ListGrantsReply.json", nil, ""},
		{api.GrantRequest{}, "api/GrantRequest.json", nil, ""},
		{api.CreateTenantRequest{}, "api/CreateTenantRequest.json", nil, ""},
		{api.CreateTenantReply{}, "api/CreateTenantReply.json", nil, ""},
		{api.CreatePrincipalRequest{}, "api/CreatePrincipalRequest.json", nil, ""},
		{api.CreatePrincipalReply{}, "api/CreatePrincipalReply.json", nil, ""},
		{api.Principal{}, "api/Principal.json", nil, ""},
		{api.ListPrincipalsReply{}, "api/ListPrincipalsReply.json", nil, ""},
		{api.PrincipalRequest{}, "api/PrincipalRequest.json", nil, ""},
		{api.SetKeyStateRequest{}, "api/SetKeyStateRequest.json", nil, ""},
		{api.SetKeyStateReply{}, "api/SetKeyStateReply.json", nil, ""},
		{api.ScheduleDeletionRequest{}, "api/ScheduleDeletionRequest.json", nil, ""},
		{api.ScheduleDeletionReply{}, "api/ScheduleDeletionReply.json", nil, ""},
		{api.CompromiseRequest{}, "api/CompromiseRequest.json", nil, ""},
		{api.CompromiseReply{}, "api/CompromiseReply.json", nil, ""},
		{api.SetRotationRequest{}, "api/SetRotationRequest.json", nil, ""},
		{api.RotateKeyRequest{}, "api/RotateKeyRequest.json", nil, ""},
		{api.RewrapCounts{}, "api/RotateKeyReply.json", []string{"$defs", "RewrapCounts"}, ""},
		{api.RewrapStatusReply{}, "api/RewrapStatusReply.json", nil, ""},
		{api.RetireVersionRequest{}, "api/RetireVersionRequest.json", nil, ""},
		{api.ReplicateKeyRequest{}, "api/ReplicateKeyRequest.json", nil, ""},
		{api.ReplicaDeletionRequest{}, "api/ReplicaDeletionRequest.json", nil, ""},
		{api.ReplicaMetadata{}, "api/KeyMetadata.json", []string{"$defs", "ReplicaMetadata"}, ""},
		{api.RetireVersionReply{}, "api/RetireVersionReply.json", nil, ""},
		{api.RegisterDataKeyRequest{}, "api/RegisterDataKeyRequest.json", nil, ""},
		{api.DataKeyRegistration{}, "api/DataKeyRegistration.json", nil, ""},
		{api.RegistrationRequest{}, "api/RegistrationRequest.json", nil, ""},
		{api.ListDataKeysRequest{}, "api/ListDataKeysRequest.json", nil, ""},
		{api.ListDataKeysReply{}, "api/ListDataKeysReply.json", nil, ""},
		{api.RewrapRequest{}, "api/RewrapRequest.json", nil, ""},
		{api.RewrapItem{}, "api/RewrapRequest.json", []string{"$defs", "RewrapItem"}, ""},
		{api.BatchReply[api.ReEncryptReply]{}, "api/RewrapReply.json", nil, "RewrapReply"},
		{api.BatchResult[api.ReEncryptReply]{}, "api/RewrapReply.json", []string{"$defs", "BatchResult"}, "RewrapResult"},
		{api.MigrationStartRequest{}, "api/MigrationStartRequest.json", nil, ""},
		{api.MigrationKeyPlan{}, "api/MigrationStartRequest.json", []string{"$defs", "MigrationKeyPlan"}, ""},
		{api.MigrationRequest{}, "api/MigrationRequest.json", nil, ""},
		{api.MigrationStatus{}, "api/MigrationStatus.json", nil, ""},
		{api.MigrationKeyStatus{}, "api/MigrationStatus.json", []string{"$defs", "MigrationKeyStatus"}, ""},
		{api.AdditionalSignature{}, "api/SignReply.json", []string{"$defs", "AdditionalSignature"}, ""},
		{api.CloudPlacement{}, "api/KeyMetadata.json", []string{"$defs", "CloudPlacement"}, ""},
		{api.CloudDestination{}, "api/CloudDestination.json", nil, ""},
		{api.CloudAddRequest{}, "api/CloudAddRequest.json", nil, ""},
		{api.CloudListReply{}, "api/CloudListReply.json", nil, ""},
		{api.CloudNameRequest{}, "api/CloudNameRequest.json", nil, ""},
		{api.CloudStatusRequest{}, "api/CloudStatusRequest.json", nil, ""},
		{api.CloudStatusReply{}, "api/CloudStatusReply.json", nil, ""},
		{api.CloudDestinationStatus{}, "api/CloudStatusReply.json", []string{"$defs", "CloudDestinationStatus"}, ""},
		{api.CloudProbe{}, "api/CloudStatusReply.json", []string{"$defs", "CloudProbe"}, ""},
		{api.CloudDistributeRequest{}, "api/CloudDistributeRequest.json", nil, ""},
		{api.CloudDistributeReply{}, "api/CloudDistributeReply.json", nil, ""},
	}
	var names []string
	for _, c := range cases {
		typ := reflect.TypeOf(c.v)
		name := c.name
		if name == "" {
			name = typ.Name()
		}
		t.Run(name, func(t *testing.T) {
			node, _ := dig(readSchema(t, c.file), c.pointer...).(map[string]any)
			if node == nil {
				t.Fatalf("%s has nothing at %v", c.file, c.pointer)
			}
			props, _ := node["properties"].(map[string]any)
			var required []string
			if r, ok := node["required"].([]any); ok {
				for _, s := range r {
					required = append(required, s.(string))
				}
			}
			var fields, always []string
			for i := range typ.NumField() {
				f := typ.Field(i)
				name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
				fields = append(fields, name)
				if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") {
					always = append(always, name)
				}
			}
			var propNames []string
			for p := range props {
				propNames = append(propNames, p)
			}
			slices.Sort(fields)
			slices.Sort(propNames)
			slices.Sort(always)
			slices.Sort(required)
			if !slices.Equal(fields, propNames) {
				t.Errorf("properties %v, Go fields %v", propNames, fields)
			}
			if !slices.Equal(always, required) {
				t.Errorf("required %v, Go fields without omitempty %v", required, always)
			}
			if node["additionalProperties"] != false {
				t.Errorf("additionalProperties is %v, want false", node["additionalProperties"])
			}
		})
		if c.pointer == nil {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if got := schemas.APIMessages(); !slices.Equal(names, got) {
		t.Errorf("APIMessages() = %v, want %v", got, names)
	}
}

// TestSchemaAPIAcceptsGoValues marshals realistic values of the Go types
// and validates them, which catches a mismatch in how Go writes a field
// (base64, RFC 3339 times, null slices).
func TestSchemaAPIAcceptsGoValues(t *testing.T) {
	const id = "0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b"
	now := time.Now()
	meta := api.KeyMetadata{
		KeyID: id, Arn: "kf:alpha:key/" + id, Alias: "app", KeySpec: "SYMMETRIC_DEFAULT",
		KeyUsage: "ENCRYPT_DECRYPT", KeyState: "ACTIVE", CreationDate: now, CreatedBy: "alice",
		PrimaryVersion: 2, LastRotationDate: &now,
		Versions: []api.KeyVersion{
			{Version: 1, State: "ACTIVE", Algorithm: "AES_256_GCM", CreationDate: now},
			{Version: 2, State: "ACTIVE", Algorithm: "AES_256_GCM", CreationDate: now},
		},
	}
	approval := api.Approval{ApprovalID: id, Operation: "rotate", Target: id, Requester: "alice", State: "APPROVED", Required: 2, Approvals: 2,
		Approvers: []string{"bob", "carol"}, CreatedAt: now, ExpiresAt: now, UpdatedAt: now, Votes: []api.ApprovalVote{
			{Principal: "bob", Decision: "APPROVE", At: now}, {Principal: "carol", Decision: "APPROVE", Comment: "ok", At: now}}}
	policy := api.TenantPolicy{
		Approvals: []api.ApprovalRule{{Operation: "schedule-deletion", Required: 2, Approvers: []string{"bob", "carol", "dave"}, ExpiresAfter: "72h"}},
		Quotas:    &api.Quotas{RequestsPerSecond: 12.5, Burst: 20, MaxKeys: 100}, Profiles: []string{"cnsa2", "nist-ir-8547"},
		MinDeletionWindowDays: 14, RequiredOrigin: "EXTERNAL",
	}
	lifeMeta := meta
	lifeMeta.ActivationDate, lifeMeta.DeletionDate, lifeMeta.PendingDeletion = &now, &now, true
	lifeMeta.RotationPeriodInDays, lifeMeta.CryptoperiodInDays = 90, 730
	lifeMeta.Versions = []api.KeyVersion{{Version: 1, State: "DESTROYED_COMPROMISED", Algorithm: "AES_256_GCM", CreationDate: now, DeactivationDate: &now}}
	event := json.RawMessage(`{"specversion":"1.0","id":"e1","source":"/keyflow","type":"io.keyflow.key.listed.v1","time":"2026-01-02T03:04:05.123456789Z","datacontenttype":"application/json","data":{"count":1},"tenant":"alpha","principal":"alice","outcome":"success","requestid":"r1"}`)
	cases := map[string]any{
		"EncryptRequest":   api.EncryptRequest{KeyID: "alias/app", Plaintext: []byte("hello"), EncryptionContext: map[string]string{"purpose": "test"}},
		"EncryptReply":     api.EncryptReply{KeyID: id, KeyVersion: 1, CiphertextBlob: []byte{1, 2, 3, 4, 5}},
		"DecryptRequest":   api.DecryptRequest{CiphertextBlob: []byte{1, 2, 3}},
		"DecryptReply":     api.DecryptReply{KeyID: id, KeyVersion: 1, Plaintext: []byte("hello")},
		"DataKeyRequest":   api.DataKeyRequest{KeyID: id, NumberOfBytes: 16},
		"DataKeyReply":     api.DataKeyReply{KeyID: id, KeyVersion: 1, Plaintext: make([]byte, 32), CiphertextBlob: make([]byte, 80)},
		"CreateKeyRequest": api.CreateKeyRequest{Alias: "alias/app", Description: "the app's key", KeySpec: "SYMMETRIC_DEFAULT", KeyUsage: "ENCRYPT_DECRYPT"},
		"KeyRequest":       api.KeyRequest{KeyID: id},
		"KeyMetadata":      meta,
		"ListKeysReply":    api.ListKeysReply{Keys: []api.KeyMetadata{meta}},
		"RotateKeyReply": api.RotateKeyReply{KeyID: id, PreviousVersion: 1, NewVersion: 2, WorkflowID: "rotate-" + id,
			Rewrap: &api.RewrapCounts{WorkflowID: "rewrap/alpha/" + id, Rewrapped: 3, Remaining: 0, Problem: ""}},
		"RotateKeyRequest":       api.RotateKeyRequest{KeyID: "alias/app", Rewrap: true},
		"RewrapStatusReply":      api.RewrapStatusReply{KeyID: id, WorkflowID: "rewrap/alpha/" + id, Rewrapped: 10, Skipped: 1, Done: true},
		"RetireVersionRequest":   api.RetireVersionRequest{KeyID: "alias/app", Version: 1},
		"ReplicateKeyRequest":    api.ReplicateKeyRequest{KeyID: "alias/app", Region: "eu-west"},
		"ReplicaDeletionRequest": api.ReplicaDeletionRequest{KeyID: "alias/app", Region: "eu-west", PendingWindowInDays: 7},
		"RetireVersionReply":     api.RetireVersionReply{Key: meta, Version: 1, PreviousState: "ACTIVE", State: "DESTROYED", Transition: "T5"},
		"AuditTailRequest":       api.AuditTailRequest{After: "q8bV2m1xJ0aR3tYkPzL0cWn4sEo9uHgI5fDjA7bC1e2", Limit: 10, WaitMillis: 500, KeyID: "alias/app", Type: "io.keyflow.crypto.*", Tenant: "alpha"},
		"AuditTailReply":         api.AuditTailReply{Events: []api.AuditEvent{{Cursor: "q8bV2m1xJ0aR3tYkPzL0cWn4sEo9uHgI5fDjA7bC1e2", Event: event}}, KeyID: id, Next: "q8bV2m1xJ0aR3tYkPzL0cWn4sEo9uHgI5fDjA7bC1e2"},
		"ErrorReply":             api.ErrorReply{Error: api.ErrorBody{Code: "PendingApprovalException", Message: "the operation needs approval", RequestID: "r1", ApprovalID: id, RetryAfterMillis: 0}},

		"ApprovalListRequest":     api.ApprovalListRequest{State: "PENDING"},
		"ApprovalListReply":       api.ApprovalListReply{Approvals: []api.Approval{approval}},
		"ApprovalRequest":         api.ApprovalRequest{ApprovalID: id},
		"ApprovalDecisionRequest": api.ApprovalDecisionRequest{ApprovalID: id, Comment: "change ticket CHG-1"},
		"Approval":                approval,
		"TenantPolicy":            policy,
		"SetTenantPolicyRequest":  api.SetTenantPolicyRequest{Policy: policy},
		"TenantPolicyReply":       api.TenantPolicyReply{Policy: &api.TenantPolicy{UpdatedAt: &now, UpdatedBy: "alice"}},

		"SignRequest": api.SignRequest{KeyID: "alias/signer", Message: []byte("message"), SigningAlgorithm: "ECDSA_SHA_256"},
		"SignReply": api.SignReply{KeyID: id, KeyVersion: 1, SigningAlgorithm: "ECDSA_SHA_256", Signature: make([]byte, 71),
			AdditionalSignatures: []api.AdditionalSignature{{KeyID: id, KeyVersion: 1, SigningAlgorithm: "ML_DSA_SHAKE_256", Signature: make([]byte, 3309)}}},
		"VerifyRequest":      api.VerifyRequest{KeyID: id, KeyVersion: 2, Message: make([]byte, 32), MessageType: "DIGEST", SigningAlgorithm: "RSASSA_PSS_SHA_256", Signature: make([]byte, 512)},
		"VerifyReply":        api.VerifyReply{KeyID: id, KeyVersion: 2, SignatureValid: true, SigningAlgorithm: "RSASSA_PSS_SHA_256"},
		"MacRequest":         api.MacRequest{KeyID: "mac", Message: []byte("m"), MacAlgorithm: "HMAC_SHA_256", Mac: make([]byte, 32)},
		"MacReply":           api.MacReply{KeyID: id, KeyVersion: 1, MacAlgorithm: "HMAC_SHA_256", Mac: make([]byte, 32)},
		"PublicKeyRequest":   api.PublicKeyRequest{KeyID: "signer", KeyVersion: 3},
		"PublicKeyReply":     api.PublicKeyReply{KeyID: id, KeyVersion: 1, KeySpec: "ECC_NIST_P256", KeyUsage: "SIGN_VERIFY", PublicKey: make([]byte, 91), SigningAlgorithms: []string{"ECDSA_SHA_256"}},
		"RandomRequest":      api.RandomRequest{NumberOfBytes: 1024},
		"RandomReply":        api.RandomReply{Plaintext: make([]byte, 1024)},
		"ReEncryptRequest":   api.ReEncryptRequest{CiphertextBlob: make([]byte, 80), SourceEncryptionContext: map[string]string{"a": "b"}, SourceKeyID: "a", DestinationKeyID: id, DestinationEncryptionContext: map[string]string{"c": "d"}},
		"ReEncryptReply":     api.ReEncryptReply{SourceKeyID: id, SourceKeyVersion: 1, KeyID: id, KeyVersion: 2, CiphertextBlob: make([]byte, 80)},
		"DataKeyPairRequest": api.DataKeyPairRequest{KeyID: "app", KeyPairSpec: "RSA_3072", EncryptionContext: map[string]string{"a": "b"}, WithoutPlaintext: true},
		"DataKeyPairReply":   api.DataKeyPairReply{KeyID: id, KeyVersion: 1, KeyPairSpec: "ECC_NIST_P256", PublicKey: make([]byte, 91), PrivateKeyPlaintext: make([]byte, 138), PrivateKeyCiphertextBlob: make([]byte, 200)},

		"SealRequest":        api.SealRequest{KeyID: "alias/xwing", Plaintext: []byte("hello"), Info: []byte("app/v1")},
		"SealReply":          api.SealReply{KeyID: id, KeyVersion: 1, Sealed: make([]byte, 1120+5+16)},
		"OpenRequest":        api.OpenRequest{KeyID: "xwing", Sealed: make([]byte, 1120+5+16)},
		"OpenReply":          api.OpenReply{KeyID: id, KeyVersion: 2, Plaintext: []byte("hello")},
		"EncapsulateRequest": api.EncapsulateRequest{KeyID: "alias/kem"},
		"EncapsulateReply":   api.EncapsulateReply{KeyID: id, KeyVersion: 1, Ciphertext: make([]byte, 1088), SharedSecret: make([]byte, 32)},
		"DecapsulateRequest": api.DecapsulateRequest{KeyID: "kem", KeyVersion: 1, Ciphertext: make([]byte, 1088)},
		"DecapsulateReply":   api.DecapsulateReply{KeyID: id, KeyVersion: 1, SharedSecret: make([]byte, 32)},
		"InventoryRequest":   api.InventoryRequest{FromAlgorithms: []string{"RSA_3072", "ECC_NIST_P256"}, To: "ML_DSA_65", Format: "cyclonedx"},
		"InventoryReply": api.InventoryReply{Keys: []api.InventoryKey{
			{KeyID: id, Alias: "app", KeySpec: "RSA_3072", KeyUsage: "SIGN_VERIFY", KeyState: "ACTIVE", Versions: 2, PrimaryVersion: 2, CreationDate: now, QuantumVulnerable: true, TargetKeySpec: "ML_DSA_65", RecentPrincipals: []string{"alice"}},
			{KeyID: id, KeySpec: "SYMMETRIC_DEFAULT", KeyUsage: "ENCRYPT_DECRYPT", KeyState: "ACTIVE", Versions: 1, PrimaryVersion: 1, CreationDate: now, RecentPrincipals: []string{}}}},
		"ImportParamsRequest": api.ImportParamsRequest{KeyID: "alias/byok", WrappingAlgorithm: "RSA_AES_KEY_WRAP_SHA_256", WrappingKeySpec: "RSA_4096"},
		"ImportParamsReply":   api.ImportParamsReply{KeyID: id, WrappingAlgorithm: "XWING_HPKE", WrappingKeySpec: "X_WING", PublicKey: make([]byte, 1216), ImportToken: make([]byte, 3000), ParametersValidTo: now},
		"ImportRequest":       api.ImportRequest{KeyID: id, EncryptedKeyMaterial: make([]byte, 384), ImportToken: make([]byte, 3000), WrappingAlgorithm: "RSAES_OAEP_SHA_256", ValidTo: &now},
		"ImportReply": api.ImportReply{KeyMetadata: func() api.KeyMetadata {
			m := meta
			m.Origin, m.ExpirationModel, m.ValidTo = "EXTERNAL", "KEY_MATERIAL_EXPIRES", &now
			return m
		}(), ImportID: id, Reimport: true, WorkflowID: "import-expiry/alpha/" + id},
		"BatchEncryptRequest": api.BatchEncryptRequest{Items: []api.EncryptRequest{
			{KeyID: "app", Plaintext: []byte("a")}, {KeyID: id, Plaintext: []byte("b"), EncryptionAlgorithm: "RSAES_OAEP_SHA_256"}}},
		"BatchDecryptRequest": api.BatchDecryptRequest{Items: []api.DecryptRequest{{CiphertextBlob: []byte{1}}}},
		"BatchDataKeyRequest": api.BatchDataKeyRequest{Items: []api.DataKeyRequest{{KeyID: "app", WithoutPlaintext: true}}},
		"BatchEncryptReply": api.BatchReply[api.EncryptReply]{Results: []api.BatchResult[api.EncryptReply]{
			{Result: &api.EncryptReply{KeyID: id, KeyVersion: 1, CiphertextBlob: []byte{1, 2, 3}}},
			{Error: &api.ErrorBody{Code: "NotFoundException", Message: "alias \"x\" does not exist"}}}},
		"BatchDecryptReply": api.BatchReply[api.DecryptReply]{Results: []api.BatchResult[api.DecryptReply]{
			{Error: &api.ErrorBody{Code: "InvalidCiphertextException", Message: "the ciphertext could not be decrypted"}},
			{Result: &api.DecryptReply{KeyID: id, KeyVersion: 1, Plaintext: []byte("x")}}}},
		"RegisterDataKeyRequest": api.RegisterDataKeyRequest{CiphertextBlob: make([]byte, 80), EncryptionContext: map[string]string{"row": "7"}, Label: "orders/7"},
		"DataKeyRegistration": api.DataKeyRegistration{RegistrationID: id, KeyID: id, KeyVersion: 2, EncryptionAlgorithm: "RSAES_OAEP_SHA_256",
			CiphertextBlob: make([]byte, 384), Label: "orders/7", CreatedAt: now, UpdatedAt: now, Rewraps: 1},
		"RegistrationRequest": api.RegistrationRequest{RegistrationID: id},
		"ListDataKeysRequest": api.ListDataKeysRequest{KeyID: "alias/app", Versions: []uint32{1, 2}, Cursor: "1207", Limit: 10},
		"ListDataKeysReply": api.ListDataKeysReply{KeyID: id, Registrations: []api.DataKeyRegistration{{RegistrationID: id, KeyID: id, KeyVersion: 1,
			CiphertextBlob: make([]byte, 80), EncryptionContext: map[string]string{"a": "b"}, CreatedAt: now, UpdatedAt: now}}, NextCursor: "1207", Counts: map[string]int{"1": 3, "2": 0}},
		"RewrapRequest": api.RewrapRequest{Items: []api.RewrapItem{{CiphertextBlob: make([]byte, 80), EncryptionContext: map[string]string{"a": "b"}},
			{CiphertextBlob: make([]byte, 384), KeyID: id, EncryptionAlgorithm: "RSAES_OAEP_SHA_256"}}, DestinationKeyID: "alias/pq"},
		"RewrapReply": api.BatchReply[api.ReEncryptReply]{Results: []api.BatchResult[api.ReEncryptReply]{
			{Result: &api.ReEncryptReply{SourceKeyID: id, SourceKeyVersion: 1, KeyID: id, KeyVersion: 2, CiphertextBlob: make([]byte, 80)}},
			{Error: &api.ErrorBody{Code: "InvalidCiphertextException", Message: "the ciphertext could not be decrypted"}}}},
		"MigrationStartRequest": api.MigrationStartRequest{CampaignID: "pq-0a1b2c3d4e5f", Keys: []api.MigrationKeyPlan{{KeyID: id, TargetKeySpec: "X_WING"}},
			GracePeriodSeconds: 604800, DualSigningSeconds: 3600, BatchSize: 100},
		"MigrationRequest": api.MigrationRequest{CampaignID: "pq-0a1b2c3d4e5f"},
		"MigrationStatus": api.MigrationStatus{CampaignID: "pq-0a1b2c3d4e5f", WorkflowID: "migration/alpha/pq-0a1b2c3d4e5f", Phase: "rewrapping",
			Approvals: []string{"carol"}, RequiredApprovals: 1, Keys: []api.MigrationKeyStatus{{SourceKeyID: id, TargetKeyID: id, TargetKeySpec: "X_WING", Total: 10, Rewrapped: 4}},
			Total: 10, Rewrapped: 4, RatePerSecond: 120.5, EtaSeconds: 0.05, StartedAt: now},
		"BatchDataKeyReply": api.BatchReply[api.DataKeyReply]{Results: []api.BatchResult[api.DataKeyReply]{
			{Result: &api.DataKeyReply{KeyID: id, KeyVersion: 1, CiphertextBlob: []byte{1, 2, 3}}}, // withoutPlaintext: "plaintext":null
			{Result: &api.DataKeyReply{KeyID: id, KeyVersion: 1, Plaintext: make([]byte, 32), CiphertextBlob: []byte{1, 2, 3}}}}},

		"SetKeyStateRequest":      api.SetKeyStateRequest{KeyID: "alias/app", State: "SUSPENDED", Version: 2, Reason: "investigation"},
		"SetKeyStateReply":        api.SetKeyStateReply{Key: lifeMeta, PreviousState: "ACTIVE", Transition: "T7"},
		"ScheduleDeletionRequest": api.ScheduleDeletionRequest{KeyID: id, PendingWindowInDays: 7, CancelOnUse: true},
		"ScheduleDeletionReply":   api.ScheduleDeletionReply{KeyID: id, KeyState: "ACTIVE", DeletionDate: now, WorkflowID: "deletion/alpha/" + id},
		"CompromiseRequest":       api.CompromiseRequest{KeyID: id, Version: 1, Reason: "leaked"},
		"CompromiseReply":         api.CompromiseReply{KeyID: id, Version: 1, PreviousState: "ACTIVE", Transition: "T6", RemediationWorkflowID: "remediate/alpha/" + id + "/v1"},
		"SetRotationRequest":      api.SetRotationRequest{KeyID: id, RotationPeriodInDays: 90},
	}
	revoked := now
	cases["BackupCreateReply"] = api.BackupCreateReply{BackupID: id, Keys: 2, Versions: 3, Backup: make([]byte, 4096)}
	cases["BackupRestoreRequest"] = api.BackupRestoreRequest{Backup: make([]byte, 4096), Overwrite: true}
	cases["BackupRestoreReply"] = api.BackupRestoreReply{BackupID: id, Keys: 2, Versions: 3, Aliases: 1}
	cases["BackupListReply"] = api.BackupListReply{Backups: []api.BackupInfo{
		{BackupID: id, CreationDate: now, CreatedBy: "alice", KeyIDs: []string{id}, Bytes: 4096, SHA256: strings.Repeat("ab", 32)},
		{BackupID: id, CreationDate: now, KeyIDs: []string{}, Bytes: 1, SHA256: strings.Repeat("0", 64), Revoked: true, RevokedAt: &revoked, RevokedForKey: id}}}
	cases["ArchiveRunRequest"] = api.ArchiveRunRequest{RetentionSeconds: 86400, IntervalSeconds: 3600}
	cases["ArchiveRunReply"] = api.ArchiveRunReply{WorkflowID: "archive/alpha", Archived: []api.VersionRef{{KeyID: id, Version: 1}}, Failed: []api.VersionRef{}}
	cases["ArchiveRestoreRequest"] = api.ArchiveRestoreRequest{KeyID: "alias/app", Version: 1}
	cases["ArchiveRestoreReply"] = api.ArchiveRestoreReply{KeyID: id, Version: 1, WorkflowID: "recover/alpha/" + id + "/v1", Status: "PENDING_APPROVAL"}
	cases["ArchiveDecideRequest"] = api.ArchiveDecideRequest{KeyID: id, Version: 1, Approve: true}
	cases["ArchiveDecideReply"] = api.ArchiveDecideReply{KeyID: id, Version: 1, Outcome: "RESTORED", DecidedBy: "bob"}
	cloudPlacement := api.CloudPlacement{KeyID: id, Destination: "aws-prod", Provider: "aws", Resource: "alias/keyflow/" + id, KeyVersion: 2,
		ProviderVersion: "arn:aws:kms:us-east-1:111122223333:key/1", State: "ENABLED", LastSync: &now, Pending: "rotate",
		LastErrorCode: "Unavailable", LastError: "the provider did not answer", LastErrorAt: &now, Why: []string{"step rotate started and not finished"}}
	cloudDest := api.CloudDestination{Name: "aws-prod", Provider: "aws", Settings: map[string]string{"region": "us-east-1"}, Drift: "repair", ReconcileEverySeconds: 3600, CreationDate: now}
	cloudMeta := meta
	cloudMeta.Exportable, cloudMeta.Clouds = true, []api.CloudPlacement{cloudPlacement}
	cases["KeyMetadata"] = cloudMeta
	cases["CloudDestination"] = cloudDest
	cases["CloudAddRequest"] = api.CloudAddRequest{Name: "aws-prod", Provider: "aws", Settings: map[string]string{"region": "us-east-1", "profile": "kf"}, Drift: "report", ReconcileEverySeconds: 600}
	cases["CloudListReply"] = api.CloudListReply{Destinations: []api.CloudDestination{cloudDest}}
	cases["CloudNameRequest"] = api.CloudNameRequest{Name: "aws-prod"}
	cases["CloudStatusRequest"] = api.CloudStatusRequest{Name: "aws-prod", Probe: true}
	cases["CloudStatusReply"] = api.CloudStatusReply{Destinations: []api.CloudDestinationStatus{
		{Name: "aws-prod", Provider: "aws", Drift: "report", Health: "unreachable", Probe: &api.CloudProbe{At: now, LatencyMillis: 3, ErrorCode: "Unavailable", Error: "connection refused"},
			Placements: 2, Pending: []api.CloudPlacement{cloudPlacement}, LastErrorCode: "Unavailable", LastError: "x", LastErrorAt: &now},
		{Name: "gcp", Provider: "gcp", Drift: "repair", Health: "unknown", Pending: []api.CloudPlacement{}}}}
	cases["CloudDistributeRequest"] = api.CloudDistributeRequest{KeyID: "alias/app", Destination: "aws-prod", Wait: true}
	cases["CloudDistributeReply"] = api.CloudDistributeReply{KeyID: id, Destination: "aws-prod", WorkflowID: "cloud-sync/alpha/" + id, Placement: &cloudPlacement}
	keyPolicy := json.RawMessage(`{"version":"2026-11-01","statements":[{"sid":"UseInApp","effect":"Allow","principals":["role:crypto-user","svc-app"],"operations":["Encrypt","Decrypt"],"conditions":{"encryptionContextSubset":{"app":"billing"},"notAfter":"2027-01-01T00:00:00Z"}}]}`)
	later := now.Add(time.Hour)
	grant := api.Grant{GrantID: id, KeyID: id, Grantee: "bob", Operations: []string{"Decrypt"}, CreationDate: now, CreatedBy: "carol",
		Constraints: &api.GrantConstraints{EncryptionContextEquals: map[string]string{"app": "billing"}, NotAfter: &later}, RetiringPrincipal: "bob"}
	principal := api.Principal{Name: "bob", Roles: []string{"crypto-user"}, CreationDate: now, CreatedBy: "admin", DisabledDate: &later}
	const userKey = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"
	for name, v := range map[string]any{
		"SetKeyPolicyRequest":        api.SetKeyPolicyRequest{KeyID: "alias/app", Policy: keyPolicy},
		"KeyPolicyReply":             api.KeyPolicyReply{KeyID: id, Policy: keyPolicy},
		"CreateGrantRequest":         api.CreateGrantRequest{KeyID: "app", Grantee: "bob", Operations: []string{"Encrypt", "Decrypt"}, Constraints: grant.Constraints, RetiringPrincipal: "svc-ops"},
		"Grant":                      grant,
		"ListGrantsReply":            api.ListGrantsReply{Grants: []api.Grant{grant}},
		"GrantRequest":               api.GrantRequest{KeyID: "app", GrantID: id},
		"CreateTenantRequest":        api.CreateTenantRequest{Tenant: "acme", ForbiddenRoleSets: [][]string{{"key-admin", "crypto-user"}}, AdminName: "root", AdminPublicKey: userKey},
		"CreateTenantReply":          api.CreateTenantReply{Tenant: "acme", ForbiddenRoleSets: [][]string{}, Admin: "admin", AdminJWT: "eyJ0eXAiOiJKV1QifQ.e30.sig"},
		"CreatePrincipalRequest":     api.CreatePrincipalRequest{Name: "bob", Roles: []string{"crypto-user", "approver"}, PublicKey: userKey},
		"CreatePrincipalReply":       api.CreatePrincipalReply{Principal: principal, JWT: "eyJ0eXAiOiJKV1QifQ.e30.sig"},
		"Principal":                  principal,
		"ListPrincipalsReply":        api.ListPrincipalsReply{Principals: []api.Principal{principal}},
		"PrincipalRequest":           api.PrincipalRequest{Name: "bob"},
		"AccessKeyRequest":           api.AccessKeyRequest{Principal: "bob"},
		"SetAliasRequest":            api.SetAliasRequest{Alias: "alias/app", KeyID: id, Create: true},
		"AliasRequest":               api.AliasRequest{Alias: "alias/app"},
		"TagKeyRequest":              api.TagKeyRequest{KeyID: id, Tags: []api.Tag{{TagKey: "team", TagValue: "payments"}, {TagKey: "empty", TagValue: ""}}},
		"UntagKeyRequest":            api.UntagKeyRequest{KeyID: "alias/app", TagKeys: []string{"team"}},
		"SetDescriptionRequest":      api.SetDescriptionRequest{KeyID: id, Description: "orders"},
		"ListRetirableGrantsRequest": api.ListRetirableGrantsRequest{RetiringPrincipal: "svc-ops"},
		"AccessKey":                  api.AccessKey{AccessKeyID: "AKIAABCDEFGHIJKLMNOP", SecretAccessKey: "0123456789012345678901234567890123456789", Tenant: "alpha", Principal: "bob", Roles: []string{"crypto-user"}, CreatedAt: now, CreatedBy: "alice"},
		"ListAccessKeysReply":        api.ListAccessKeysReply{AccessKeys: []api.AccessKey{{AccessKeyID: "AKIAABCDEFGHIJKLMNOP", Tenant: "alpha", Principal: "bob", CreatedAt: now, DisabledAt: &now}}},
	} {
		cases[name] = v
	}
	for _, name := range schemas.APIMessages() {
		v, ok := cases[name]
		if !ok {
			t.Errorf("no sample for %s", name)
			continue
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := schemas.ValidateAPI(name, b); err != nil {
			t.Errorf("%s %s: %v", name, b, err)
		}
	}
	// Empty values: what the server accepts with every optional field left out.
	for name, body := range map[string]string{
		"CreateKeyRequest": `{}`,
		"AuditTailRequest": `{}`,
		"ListKeysReply":    `{"keys":[]}`,
		"AuditTailReply":   `{"events":[]}`,
	} {
		if err := schemas.ValidateAPI(name, []byte(body)); err != nil {
			t.Errorf("%s %s: %v", name, body, err)
		}
	}
}

func TestSchemaValidateAPI(t *testing.T) {
	const id = "0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b"
	good := []struct{ name, body string }{
		{"EncryptRequest", `{"keyId":"alias/app","plaintext":"aGVsbG8=","encryptionContext":{"a":"b","c":""}}`},
		{"EncryptRequest", `{"keyId":"` + id + `","plaintext":"AA=="}`},
		{"DecryptRequest", `{"ciphertextBlob":"AQID","keyId":""}`},
		{"DecryptRequest", `{"ciphertextBlob":"AQID","keyId":"app"}`},
		{"DataKeyRequest", `{"keyId":"app","numberOfBytes":1024}`},
		{"DataKeyRequest", `{"keyId":"app","numberOfBytes":0}`},
		{"CreateKeyRequest", `{"alias":"team/app_1-x","keySpec":"","keyUsage":""}`},
		{"KeyRequest", `{"keyId":"alias/app"}`},
		{"AuditTailRequest", `{"after":"q8bV2m1xJ0aR3tYkPzL0cWn4sEo9uHgI5fDjA7bC1e2","limit":1000,"waitMillis":10000}`},
		{"AuditTailRequest", `{"keyId":"` + id + `","type":"io.keyflow.*.encrypt.*","tenant":"alpha"}`},
		{"AuditTailRequest", `{"type":"*"}`},
		{"ErrorReply", `{"error":{"code":"InvalidCiphertextException","message":"the ciphertext could not be decrypted"}}`},
		{"EncryptRequest", `{"keyId":"rsa","plaintext":"AA==","encryptionAlgorithm":"RSAES_OAEP_SHA_1"}`},
		{"EncryptRequest", `{"keyId":"app","plaintext":"AA==","encryptionAlgorithm":""}`},
		{"DecryptRequest", `{"ciphertextBlob":"AQID","keyId":"rsa","encryptionAlgorithm":"RSAES_OAEP_SHA_256"}`},
		{"DecryptRequest", `{"ciphertextBlob":"AQID","encryptionAlgorithm":"SYMMETRIC_DEFAULT"}`},
		{"DataKeyRequest", `{"keyId":"app","withoutPlaintext":true}`},
		{"DataKeyReply", `{"keyId":"` + id + `","keyVersion":1,"plaintext":null,"ciphertextBlob":"AQID"}`},
		{"SignRequest", `{"keyId":"s","message":"AA==","messageType":"","signingAlgorithm":"ED25519_SHA_512"}`},
		{"SignRequest", `{"keyId":"s","message":"AA==","messageType":"RAW","signingAlgorithm":"ECDSA_SHA_384"}`},
		{"VerifyRequest", `{"keyId":"s","keyVersion":0,"message":"AA==","signingAlgorithm":"ECDSA_SHA_384","signature":"AQID"}`},
		{"MacRequest", `{"keyId":"m","message":"AA==","macAlgorithm":"HMAC_SHA_256"}`},
		{"MacReply", `{"keyId":"` + id + `","keyVersion":1,"macAlgorithm":"HMAC_SHA_256","macValid":true}`},
		{"PublicKeyReply", `{"keyId":"` + id + `","keyVersion":1,"keySpec":"RSA_3072","keyUsage":"ENCRYPT_DECRYPT","publicKey":"AQID","encryptionAlgorithms":["RSAES_OAEP_SHA_256","RSAES_OAEP_SHA_1"]}`},
		{"RandomRequest", `{"numberOfBytes":1}`},
		{"ReEncryptRequest", `{"ciphertextBlob":"AQID","sourceKeyId":"","destinationKeyId":""}`},
		{"DataKeyPairReply", `{"keyId":"` + id + `","keyVersion":1,"keyPairSpec":"RSA_3072","publicKey":"AQID","privateKeyCiphertextBlob":"AQID"}`},
		{"SignRequest", `{"keyId":"mldsa","message":"AA==","signingAlgorithm":"ML_DSA_SHAKE_256","signatureContext":"` + strings.Repeat("AAAA", 85) + `"}`},
		{"VerifyRequest", `{"keyId":"mldsa","message":"AA==","signingAlgorithm":"ML_DSA_SHAKE_256","signature":"AQID","signatureContext":""}`},
		{"SealRequest", `{"keyId":"kem","plaintext":"AA==","info":""}`},
		{"SignReply", `{"keyId":"` + id + `","keyVersion":1,"signingAlgorithm":"SLH_DSA_SHA2_128F","signature":"` + strings.Repeat("AAAA", 5696) + `"}`},
		{"VerifyRequest", `{"keyId":"slh","message":"AA==","signingAlgorithm":"SLH_DSA_SHA2_128F","signature":"` + strings.Repeat("AAAA", 5696) + `"}`},
		{"DecapsulateRequest", `{"keyId":"kem","keyVersion":0,"ciphertext":"AQID"}`},
		{"BatchDecryptRequest", `{"items":[{"ciphertextBlob":"AQID"},{"ciphertextBlob":"AQID","keyId":"rsa","encryptionAlgorithm":"RSAES_OAEP_SHA_1"}]}`},
	}
	for _, c := range good {
		if err := schemas.ValidateAPI(c.name, []byte(c.body)); err != nil {
			t.Errorf("%s %s: %v", c.name, c.body, err)
		}
	}
	bad := []struct{ why, name, body string }{
		{"missing plaintext", "EncryptRequest", `{"keyId":"app"}`},
		{"missing keyId", "EncryptRequest", `{"plaintext":"aGVsbG8="}`},
		{"empty keyId", "EncryptRequest", `{"keyId":"","plaintext":"aGVsbG8="}`},
		{"empty plaintext", "EncryptRequest", `{"keyId":"app","plaintext":""}`},
		{"null plaintext", "EncryptRequest", `{"keyId":"app","plaintext":null}`},
		{"plaintext not base64", "EncryptRequest", `{"keyId":"app","plaintext":"not base64!"}`},
		{"plaintext unpadded", "EncryptRequest", `{"keyId":"app","plaintext":"aGVsbG8"}`},
		{"plaintext over 64 KiB", "EncryptRequest", `{"keyId":"app","plaintext":"` + strings.Repeat("AAAA", 21847) + `"}`},
		{"misspelt field", "EncryptRequest", `{"keyId":"app","plainText":"aGVsbG8="}`},
		{"context value not a string", "EncryptRequest", `{"keyId":"app","plaintext":"aGVsbG8=","encryptionContext":{"n":1}}`},
		{"context with an empty key", "EncryptRequest", `{"keyId":"app","plaintext":"aGVsbG8=","encryptionContext":{"":"x"}}`},
		{"context of 65 pairs", "EncryptRequest", `{"keyId":"app","plaintext":"aGVsbG8=","encryptionContext":{` + pairs(65) + `}}`},
		{"key reference with a space", "KeyRequest", `{"keyId":"my key"}`},
		{"missing ciphertext", "DecryptRequest", `{"keyId":"app"}`},
		{"data key too long", "DataKeyRequest", `{"keyId":"app","numberOfBytes":1025}`},
		{"data key length negative", "DataKeyRequest", `{"keyId":"app","numberOfBytes":-1}`},
		{"data key length fractional", "DataKeyRequest", `{"keyId":"app","numberOfBytes":1.5}`},
		{"alias that is a key ID", "CreateKeyRequest", `{"alias":"alias/` + id + `"}`},
		{"alias too long", "CreateKeyRequest", `{"alias":"` + strings.Repeat("a", 251) + `"}`},
		{"malformed key spec", "CreateKeyRequest", `{"keySpec":"rsa 2048"}`},
		{"malformed key usage", "CreateKeyRequest", `{"keyUsage":"sign-verify"}`},
		{"limit negative", "AuditTailRequest", `{"limit":-1}`},
		{"a stream sequence instead of a cursor", "AuditTailRequest", `{"afterSeq":5}`},
		{"an empty cursor", "AuditTailRequest", `{"after":""}`},
		{"type glob inside a part", "AuditTailRequest", `{"type":"io.keyflow.crypto.enc*"}`},
		{"type with an empty part", "AuditTailRequest", `{"type":"io..crypto"}`},
		{"type with a subject wildcard", "AuditTailRequest", `{"type":"io.keyflow.>"}`},
		{"tenant not a name", "AuditTailRequest", `{"tenant":"Alpha Corp"}`},
		{"key version 0", "EncryptReply", `{"keyId":"` + id + `","keyVersion":0,"ciphertextBlob":"AQID"}`},
		{"key ID not a UUID", "EncryptReply", `{"keyId":"app","keyVersion":1,"ciphertextBlob":"AQID"}`},
		{"metadata with key material", "KeyMetadata", `{"keyId":"` + id + `","arn":"kf:alpha:key/` + id + `","keySpec":"SYMMETRIC_DEFAULT","keyUsage":"ENCRYPT_DECRYPT","keyState":"ACTIVE","creationDate":"2026-01-02T03:04:05Z","primaryVersion":1,"versions":[{"version":1,"state":"ACTIVE","algorithm":"AES_256_GCM","creationDate":"2026-01-02T03:04:05Z"}],"wrapped":"AQID"}`},
		{"metadata with a bad date", "KeyMetadata", `{"keyId":"` + id + `","arn":"kf:alpha:key/` + id + `","keySpec":"SYMMETRIC_DEFAULT","keyUsage":"ENCRYPT_DECRYPT","keyState":"ACTIVE","creationDate":"yesterday","primaryVersion":1,"versions":[{"version":1,"state":"ACTIVE","algorithm":"AES_256_GCM","creationDate":"2026-01-02T03:04:05Z"}]}`},
		{"metadata without versions", "KeyMetadata", `{"keyId":"` + id + `","arn":"kf:alpha:key/` + id + `","keySpec":"SYMMETRIC_DEFAULT","keyUsage":"ENCRYPT_DECRYPT","keyState":"ACTIVE","creationDate":"2026-01-02T03:04:05Z","primaryVersion":1,"versions":[]}`},
		{"tail reply with a bad event", "AuditTailReply", `{"events":[{"seq":1,"event":{"type":"io.keyflow.key.listed.v1"}}]}`},
		{"error without code", "ErrorReply", `{"error":{"message":"x"}}`},
		{"not JSON", "KeyRequest", `{"keyId":`},
		{"trailing data", "KeyRequest", `{"keyId":"app"} {}`},
		{"not an object", "KeyRequest", `["app"]`},

		{"encryption algorithm in lower case", "EncryptRequest", `{"keyId":"app","plaintext":"AA==","encryptionAlgorithm":"rsaes_oaep_sha_256"}`},
		{"RSA decrypt without the key", "DecryptRequest", `{"ciphertextBlob":"AQID","encryptionAlgorithm":"RSAES_OAEP_SHA_256"}`},
		{"RSA decrypt with an empty key", "DecryptRequest", `{"ciphertextBlob":"AQID","keyId":"","encryptionAlgorithm":"RSAES_OAEP_SHA_256"}`},
		{"withoutPlaintext not a boolean", "DataKeyRequest", `{"keyId":"app","withoutPlaintext":"yes"}`},
		{"data key reply without plaintext field", "DataKeyReply", `{"keyId":"` + id + `","keyVersion":1,"ciphertextBlob":"AQID"}`},
		{"sign without an algorithm", "SignRequest", `{"keyId":"s","message":"AA=="}`},
		{"sign with an empty message", "SignRequest", `{"keyId":"s","message":"","signingAlgorithm":"ECDSA_SHA_256"}`},
		{"sign with a message over 64 KiB", "SignRequest", `{"keyId":"s","message":"` + strings.Repeat("AAAA", 21847) + `","signingAlgorithm":"ECDSA_SHA_256"}`},
		{"sign with an unknown message type", "SignRequest", `{"keyId":"s","message":"AA==","messageType":"HASH","signingAlgorithm":"ECDSA_SHA_256"}`},
		{"sign with a malformed algorithm", "SignRequest", `{"keyId":"s","message":"AA==","signingAlgorithm":"ecdsa-sha256"}`},
		{"sign reply without a signature", "SignReply", `{"keyId":"` + id + `","keyVersion":1,"signingAlgorithm":"ECDSA_SHA_256","signature":""}`},
		{"verify without a signature", "VerifyRequest", `{"keyId":"s","message":"AA==","signingAlgorithm":"ECDSA_SHA_256"}`},
		{"verify with a signature too long", "VerifyRequest", `{"keyId":"s","message":"AA==","signingAlgorithm":"ECDSA_SHA_256","signature":"` + strings.Repeat("AAAA", 5697) + `"}`},
		{"verify reply saying false", "VerifyReply", `{"keyId":"` + id + `","keyVersion":1,"signatureValid":false,"signingAlgorithm":"ECDSA_SHA_256"}`},
		{"mac without an algorithm", "MacRequest", `{"keyId":"m","message":"AA=="}`},
		{"mac reply with neither mac nor verdict", "MacReply", `{"keyId":"` + id + `","keyVersion":1,"macAlgorithm":"HMAC_SHA_256"}`},
		{"mac reply with both", "MacReply", `{"keyId":"` + id + `","keyVersion":1,"macAlgorithm":"HMAC_SHA_256","mac":"AQID","macValid":true}`},
		{"public key reply without algorithms", "PublicKeyReply", `{"keyId":"` + id + `","keyVersion":1,"keySpec":"RSA_3072","keyUsage":"ENCRYPT_DECRYPT","publicKey":"AQID"}`},
		{"public key reply with private key", "PublicKeyReply", `{"keyId":"` + id + `","keyVersion":1,"keySpec":"ECC_NIST_P256","keyUsage":"SIGN_VERIFY","publicKey":"AQID","signingAlgorithms":["ECDSA_SHA_256"],"privateKey":"AQID"}`},
		{"random 0 bytes", "RandomRequest", `{"numberOfBytes":0}`},
		{"random 1025 bytes", "RandomRequest", `{"numberOfBytes":1025}`},
		{"random without a length", "RandomRequest", `{}`},
		{"random reply over 1024 bytes", "RandomReply", `{"plaintext":"` + strings.Repeat("AAAA", 342) + `AA=="}`},
		{"reencrypt without a ciphertext", "ReEncryptRequest", `{"destinationKeyId":"b"}`},
		{"reencrypt reply without the source", "ReEncryptReply", `{"keyId":"` + id + `","keyVersion":1,"ciphertextBlob":"AQID"}`},
		{"data key pair without a spec", "DataKeyPairRequest", `{"keyId":"app"}`},
		{"data key pair with a malformed spec", "DataKeyPairRequest", `{"keyId":"app","keyPairSpec":"ec p256"}`},
		{"data key pair reply without the encrypted private key", "DataKeyPairReply", `{"keyId":"` + id + `","keyVersion":1,"keyPairSpec":"RSA_3072","publicKey":"AQID","privateKeyPlaintext":"AQID"}`},
		{"empty batch", "BatchEncryptRequest", `{"items":[]}`},
		{"batch of 1001", "BatchDataKeyRequest", `{"items":[` + strings.Repeat(`{"keyId":"a"},`, 1000) + `{"keyId":"a"}]}`},
		{"batch with a bad item", "BatchEncryptRequest", `{"items":[{"keyId":"app"}]}`},
		{"signature context over 255 bytes", "SignRequest", `{"keyId":"s","message":"AA==","signingAlgorithm":"ML_DSA_SHAKE_256","signatureContext":"` + strings.Repeat("AAAA", 86) + `"}`},
		{"signature context not base64", "VerifyRequest", `{"keyId":"s","message":"AA==","signingAlgorithm":"ML_DSA_SHAKE_256","signature":"AQID","signatureContext":"ctx!"}`},
		{"seal without plaintext", "SealRequest", `{"keyId":"kem"}`},
		{"seal of an empty plaintext", "SealRequest", `{"keyId":"kem","plaintext":""}`},
		{"seal with info not base64", "SealRequest", `{"keyId":"kem","plaintext":"AA==","info":"app v1"}`},
		{"seal reply without sealed", "SealReply", `{"keyId":"` + id + `","keyVersion":1}`},
		{"open without sealed", "OpenRequest", `{"keyId":"kem"}`},
		{"open without a key", "OpenRequest", `{"sealed":"AQID"}`},
		{"open reply with the info", "OpenReply", `{"keyId":"` + id + `","keyVersion":1,"plaintext":"AQID","info":"AQID"}`},
		{"encapsulate with a version", "EncapsulateRequest", `{"keyId":"kem","keyVersion":2}`},
		{"encapsulate reply without the secret", "EncapsulateReply", `{"keyId":"` + id + `","keyVersion":1,"ciphertext":"AQID"}`},
		{"decapsulate without a ciphertext", "DecapsulateRequest", `{"keyId":"kem"}`},
		{"decapsulate with a negative version", "DecapsulateRequest", `{"keyId":"kem","keyVersion":-1,"ciphertext":"AQID"}`},
		{"decapsulate reply with the ciphertext", "DecapsulateReply", `{"keyId":"` + id + `","keyVersion":1,"sharedSecret":"AQID","ciphertext":"AQID"}`},
		{"batch result with both", "BatchEncryptReply", `{"results":[{"result":{"keyId":"` + id + `","keyVersion":1,"ciphertextBlob":"AQID"},"error":{"code":"X","message":"x"}}]}`},
		{"batch result with neither", "BatchDecryptReply", `{"results":[{}]}`},
		{"batch result of another type", "BatchDecryptReply", `{"results":[{"result":{"keyId":"` + id + `","keyVersion":1,"ciphertextBlob":"AQID"}}]}`},
	}
	for _, c := range bad {
		err := schemas.ValidateAPI(c.name, []byte(c.body))
		if !errors.Is(err, schemas.ErrInvalid) {
			t.Errorf("%s: %s %.80s: got %v, want ErrInvalid", c.why, c.name, c.body, err)
		}
	}
	if err := schemas.ValidateAPI("EncryptRequestV2", []byte(`{}`)); !errors.Is(err, schemas.ErrUnknownMessage) {
		t.Errorf("unknown message: got %v, want ErrUnknownMessage", err)
	}
}

func TestSchemaValidateEvent(t *testing.T) {
	const id = "0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b"
	base := func() map[string]any {
		return map[string]any{
			"specversion": "1.0", "id": "6d0f7b0e-2f0a-4c55-9a8f-1f2e3d4c5b6a", "source": "/keyflow/worker/h1",
			"type": "io.keyflow.crypto.encrypt.v1", "time": "2026-01-02T03:04:05.123456789Z",
			"datacontenttype": "application/json", "subject": "kf:alpha:key/" + id,
			"tenant": "alpha", "principal": "alice", "outcome": "success", "requestid": "r-1",
			"data": map[string]any{"plaintextBytes": 21, "contextKeys": []string{"purpose"}, "keyVersion": 1},
		}
	}
	type edit func(e map[string]any)
	data := func(f func(d map[string]any)) edit {
		return func(e map[string]any) { f(e["data"].(map[string]any)) }
	}
	good := map[string]edit{
		"encrypt":             func(map[string]any) {},
		"no context":          data(func(d map[string]any) { d["contextKeys"] = nil }),
		"failure with a code": func(e map[string]any) { e["outcome"] = "failure"; e["errorcode"] = "ValidationException" },
		"denied, no principal": func(e map[string]any) {
			e["outcome"] = "denied"
			e["errorcode"] = "AccessDeniedException"
			delete(e, "principal")
		},
		"rejected before the tenant was known": func(e map[string]any) {
			e["tenant"] = "-"
			e["type"] = "io.keyflow.request.rejected.v1"
			e["outcome"], e["errorcode"] = "denied", "AccessDeniedException"
			delete(e, "subject")
			e["data"] = map[string]any{"operation": "crypto.encrypt"}
		},
		"audit read": func(e map[string]any) {
			e["type"] = "io.keyflow.audit.read.v1"
			delete(e, "subject")
			e["data"] = map[string]any{"events": 2, "firstEventId": "a", "lastEventId": "b"}
		},
		"created": func(e map[string]any) {
			e["type"] = "io.keyflow.key.created.v1"
			e["data"] = map[string]any{"alias": "app", "keySpec": "SYMMETRIC_DEFAULT", "keyId": id, "version": 1}
		},
	}
	typed := func(typ string, d map[string]any, code string) edit {
		return func(e map[string]any) {
			e["type"], e["data"] = typ, d
			if code != "" {
				e["outcome"], e["errorcode"] = "failure", code
			}
		}
	}
	for name, f := range map[string]edit{
		"sign":                          typed("io.keyflow.crypto.sign.v1", map[string]any{"algorithm": "ECDSA_SHA_256", "messageType": "DIGEST", "messageBytes": 32, "keyVersion": 1}, ""),
		"sign, default message type":    typed("io.keyflow.crypto.sign.v1", map[string]any{"algorithm": "ED25519_SHA_512", "messageType": "", "messageBytes": 5, "keyVersion": 3}, ""),
		"sign refused, junk names":      typed("io.keyflow.crypto.sign.v1", map[string]any{"algorithm": "sha256 please", "messageType": "digest", "messageBytes": 0}, "InvalidKeyUsageException"),
		"verify invalid":                typed("io.keyflow.crypto.verify.v1", map[string]any{"algorithm": "RSASSA_PSS_SHA_256", "messageType": "RAW", "messageBytes": 7}, "KMSInvalidSignatureException"),
		"mac":                           typed("io.keyflow.crypto.mac.v1", map[string]any{"algorithm": "HMAC_SHA_256", "messageBytes": 7}, ""),
		"verifymac invalid":             typed("io.keyflow.crypto.verifymac.v1", map[string]any{"algorithm": "HMAC_SHA_256", "messageBytes": 7}, "KMSInvalidMacException"),
		"public key":                    typed("io.keyflow.key.publickey.read.v1", map[string]any{"keyVersion": 2}, ""),
		"public key refused":            typed("io.keyflow.key.publickey.read.v1", map[string]any{"keyVersion": 0}, "InvalidKeyUsageException"),
		"random":                        typed("io.keyflow.crypto.random.v1", map[string]any{"numberOfBytes": 32}, ""),
		"random refused":                typed("io.keyflow.crypto.random.v1", map[string]any{"numberOfBytes": -5}, "ValidationException"),
		"reencrypt":                     typed("io.keyflow.crypto.reencrypt.v1", map[string]any{"ciphertextBytes": 80, "sourceKey": "kf:alpha:key/" + id, "sourceKeyVersion": 1, "keyVersion": 2}, ""),
		"reencrypt, foreign ciphertext": typed("io.keyflow.crypto.reencrypt.v1", map[string]any{"ciphertextBytes": 3}, "InvalidCiphertextException"),
		"reencrypt, bad destination":    typed("io.keyflow.crypto.reencrypt.v1", map[string]any{"ciphertextBytes": 80, "sourceKey": "kf:alpha:key/" + id}, "NotFoundException"),
		"datakeypair":                   typed("io.keyflow.crypto.datakeypair.v1", map[string]any{"keyPairSpec": "RSA_3072", "withoutPlaintext": true, "keyVersion": 1}, ""),
		"datakeypair refused":           typed("io.keyflow.crypto.datakeypair.v1", map[string]any{"keyPairSpec": "", "withoutPlaintext": false}, "ValidationException"),
		"rotation failed":               typed("io.keyflow.key.rotation.failed.v1", map[string]any{"keyId": id}, "KMSInternalException"),
		"rejected sign":                 typed("io.keyflow.request.rejected.v1", map[string]any{"operation": "crypto.sign"}, "ValidationException"),
		"rejected batch":                typed("io.keyflow.request.rejected.v1", map[string]any{"operation": "crypto.batchencrypt"}, "ValidationException"),
		"seal":                          typed("io.keyflow.crypto.seal.v1", map[string]any{"plaintextBytes": 5, "keyVersion": 1}, ""),
		"seal refused":                  typed("io.keyflow.crypto.seal.v1", map[string]any{"plaintextBytes": 0}, "ValidationException"),
		"open":                          typed("io.keyflow.crypto.open.v1", map[string]any{"ciphertextBytes": 1141, "keyVersion": 2}, ""),
		"open failed":                   typed("io.keyflow.crypto.open.v1", map[string]any{"ciphertextBytes": 3}, "InvalidCiphertextException"),
		"encapsulate":                   typed("io.keyflow.crypto.encapsulate.v1", map[string]any{"keyVersion": 1}, ""),
		"encapsulate refused":           typed("io.keyflow.crypto.encapsulate.v1", map[string]any{}, "InvalidKeyUsageException"),
		"decapsulate":                   typed("io.keyflow.crypto.decapsulate.v1", map[string]any{"ciphertextBytes": 1088, "keyVersion": 1}, ""),
		"decapsulate refused":           typed("io.keyflow.crypto.decapsulate.v1", map[string]any{"ciphertextBytes": 7}, "ValidationException"),
		"inventory":                     typed("io.keyflow.key.inventory.read.v1", map[string]any{"count": 2, "fromAlgorithms": []string{"RSA_3072"}, "to": "ML_DSA_65"}, ""),
		"rejected seal":                 typed("io.keyflow.request.rejected.v1", map[string]any{"operation": "crypto.seal"}, "ValidationException"),
		"created by a test import":      typed("io.keyflow.key.created.v1", map[string]any{"alias": "", "keySpec": "ML_KEM_768", "keyId": id, "version": 1, "origin": "UNSAFE_TEST_IMPORT"}, ""),
	} {
		good[name] = f
	}
	for name, f := range good {
		e := base()
		f(e)
		if err := schemas.ValidateEvent(mustJSON(t, e)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := map[string]edit{
		"missing tenant":         func(e map[string]any) { delete(e, "tenant") },
		"empty tenant":           func(e map[string]any) { e["tenant"] = "" },
		"missing outcome":        func(e map[string]any) { delete(e, "outcome") },
		"bad outcome":            func(e map[string]any) { e["outcome"] = "ok" },
		"missing id":             func(e map[string]any) { delete(e, "id") },
		"empty id":               func(e map[string]any) { e["id"] = "" },
		"missing source":         func(e map[string]any) { delete(e, "source") },
		"missing time":           func(e map[string]any) { delete(e, "time") },
		"bad time":               func(e map[string]any) { e["time"] = "2026-13-45" },
		"missing data":           func(e map[string]any) { delete(e, "data") },
		"specversion 0.3":        func(e map[string]any) { e["specversion"] = "0.3" },
		"XML data":               func(e map[string]any) { e["datacontenttype"] = "application/xml" },
		"unknown extension":      func(e map[string]any) { e["plaintext"] = "aGVsbG8=" },
		"failure without a code": func(e map[string]any) { e["outcome"] = "failure" },
		"success with a code":    func(e map[string]any) { e["errorcode"] = "ValidationException" },
		"empty principal":        func(e map[string]any) { e["principal"] = "" },
		"plaintext in data":      data(func(d map[string]any) { d["plaintext"] = "aGVsbG8=" }),
		"data of another type":   func(e map[string]any) { e["data"] = map[string]any{"count": 1} },
		"negative size":          data(func(d map[string]any) { d["plaintextBytes"] = -1 }),
		"missing contextKeys":    data(func(d map[string]any) { delete(d, "contextKeys") }),
		"context values":         data(func(d map[string]any) { d["contextKeys"] = map[string]any{"purpose": "x"} }),
		"key version 0":          data(func(d map[string]any) { d["keyVersion"] = 0 }),
		"data on audit read":     func(e map[string]any) { e["type"] = "io.keyflow.audit.read.v1"; e["data"] = map[string]any{"x": 1} },
		"unknown operation": func(e map[string]any) {
			e["type"], e["outcome"], e["errorcode"] = "io.keyflow.request.rejected.v1", "failure", "ValidationException"
			e["data"] = map[string]any{"operation": "keys.destroy"}
		},
		"type not io.keyflow": func(e map[string]any) { e["type"] = "com.example.thing.v1" },

		"sign with the message":             typed("io.keyflow.crypto.sign.v1", map[string]any{"algorithm": "ECDSA_SHA_256", "messageType": "RAW", "messageBytes": 5, "keyVersion": 1, "message": "aGVsbG8="}, ""),
		"sign with the signature":           typed("io.keyflow.crypto.sign.v1", map[string]any{"algorithm": "ECDSA_SHA_256", "messageType": "RAW", "messageBytes": 5, "keyVersion": 1, "signature": "AQID"}, ""),
		"sign without messageType":          typed("io.keyflow.crypto.sign.v1", map[string]any{"algorithm": "ECDSA_SHA_256", "messageBytes": 5}, "ValidationException"),
		"signed with a junk algorithm":      typed("io.keyflow.crypto.sign.v1", map[string]any{"algorithm": "sha256", "messageType": "RAW", "messageBytes": 5, "keyVersion": 1}, ""),
		"signed with a junk message type":   typed("io.keyflow.crypto.sign.v1", map[string]any{"algorithm": "ECDSA_SHA_256", "messageType": "HASH", "messageBytes": 5, "keyVersion": 1}, ""),
		"verify with an untruncated name":   typed("io.keyflow.crypto.verify.v1", map[string]any{"algorithm": strings.Repeat("A", 66), "messageType": "RAW", "messageBytes": 5}, "InvalidKeyUsageException"),
		"mac with the MAC":                  typed("io.keyflow.crypto.mac.v1", map[string]any{"algorithm": "HMAC_SHA_256", "messageBytes": 7, "mac": "AQID"}, ""),
		"verifymac without messageBytes":    typed("io.keyflow.crypto.verifymac.v1", map[string]any{"algorithm": "HMAC_SHA_256"}, "KMSInvalidMacException"),
		"public key with the key":           typed("io.keyflow.key.publickey.read.v1", map[string]any{"keyVersion": 1, "publicKey": "AQID"}, ""),
		"random with the bytes":             typed("io.keyflow.crypto.random.v1", map[string]any{"numberOfBytes": 3, "plaintext": "AQID"}, ""),
		"reencrypt versions without source": typed("io.keyflow.crypto.reencrypt.v1", map[string]any{"ciphertextBytes": 80, "sourceKeyVersion": 1, "keyVersion": 2}, ""),
		"reencrypt half the versions":       typed("io.keyflow.crypto.reencrypt.v1", map[string]any{"ciphertextBytes": 80, "sourceKey": "kf:alpha:key/" + id, "keyVersion": 2}, ""),
		"reencrypt with the plaintext":      typed("io.keyflow.crypto.reencrypt.v1", map[string]any{"ciphertextBytes": 80, "plaintext": "AQID"}, "InvalidCiphertextException"),
		"datakeypair with the private key":  typed("io.keyflow.crypto.datakeypair.v1", map[string]any{"keyPairSpec": "RSA_3072", "withoutPlaintext": false, "keyVersion": 1, "privateKeyPlaintext": "AQID"}, ""),
		"datakeypair made with a junk spec": typed("io.keyflow.crypto.datakeypair.v1", map[string]any{"keyPairSpec": "rsa", "withoutPlaintext": false, "keyVersion": 1}, ""),
		"rotation failed, no key ID":        typed("io.keyflow.key.rotation.failed.v1", map[string]any{"keyId": "alias/app"}, "KMSInternalException"),
		"rejected unknown crypto op":        typed("io.keyflow.request.rejected.v1", map[string]any{"operation": "crypto.batchsign"}, "ValidationException"),
		"seal with the plaintext":           typed("io.keyflow.crypto.seal.v1", map[string]any{"plaintextBytes": 5, "keyVersion": 1, "plaintext": "aGVsbG8="}, ""),
		"open with the plaintext":           typed("io.keyflow.crypto.open.v1", map[string]any{"ciphertextBytes": 1141, "keyVersion": 1, "plaintext": "aGVsbG8="}, ""),
		"open without a size":               typed("io.keyflow.crypto.open.v1", map[string]any{"keyVersion": 1}, ""),
		"encapsulate with the secret":       typed("io.keyflow.crypto.encapsulate.v1", map[string]any{"keyVersion": 1, "sharedSecret": "AQID"}, ""),
		"decapsulate with the secret":       typed("io.keyflow.crypto.decapsulate.v1", map[string]any{"ciphertextBytes": 1088, "keyVersion": 1, "sharedSecret": "AQID"}, ""),
		"decapsulate with version 0":        typed("io.keyflow.crypto.decapsulate.v1", map[string]any{"ciphertextBytes": 1088, "keyVersion": 0}, ""),
		"created with an unknown origin":    typed("io.keyflow.key.created.v1", map[string]any{"alias": "", "keySpec": "ML_KEM_768", "keyId": id, "version": 1, "origin": "SOMEWHERE"}, ""),
	}
	for name, f := range bad {
		e := base()
		f(e)
		err := schemas.ValidateEvent(mustJSON(t, e))
		if !errors.Is(err, schemas.ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
	e := base()
	e["type"] = "io.keyflow.key.exploded.v1"
	if err := schemas.ValidateEvent(mustJSON(t, e)); !errors.Is(err, schemas.ErrUnknownType) {
		t.Errorf("unknown type: got %v, want ErrUnknownType", err)
	}
	for _, raw := range []string{``, `null`, `[]`, `{"specversion":"1.0"`} {
		if err := schemas.ValidateEvent([]byte(raw)); !errors.Is(err, schemas.ErrInvalid) {
			t.Errorf("%q: got %v, want ErrInvalid", raw, err)
		}
	}
}

func TestSchemaValidateEventData(t *testing.T) {
	if err := schemas.ValidateEventData("io.keyflow.key.listed.v1", []byte(`{"count":3}`)); err != nil {
		t.Error(err)
	}
	if err := schemas.ValidateEventData("io.keyflow.key.listed.v1", []byte(`{"count":3,"keys":["a"]}`)); !errors.Is(err, schemas.ErrInvalid) {
		t.Errorf("extra field: got %v, want ErrInvalid", err)
	}
	if err := schemas.ValidateEventData("io.keyflow.key.exploded.v1", []byte(`{}`)); !errors.Is(err, schemas.ErrUnknownType) {
		t.Errorf("unknown type: got %v, want ErrUnknownType", err)
	}
}

func readSchema(t *testing.T, p string) map[string]any {
	t.Helper()
	b, err := schemas.FS.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	if path.Ext(p) != ".json" {
		t.Errorf("%s is not a .json file", p)
	}
	return doc
}

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func pairs(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"k` + strings.Repeat("x", i) + `":"v"`)
	}
	return b.String()
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
