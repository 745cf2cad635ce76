package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/schemas"
)

func TestCloudEventFillsDefaults(t *testing.T) {
	before := time.Now()
	e, err := events.Record{Type: events.TypeKeyListed, Tenant: "alpha", Outcome: events.OutcomeSuccess}.CloudEvent()
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	if _, err := uuid.Parse(e.ID()); err != nil {
		t.Errorf("ID %q is not a UUID: %v", e.ID(), err)
	}
	if e.Source() != events.SpecSource {
		t.Errorf("source = %q, want %q", e.Source(), events.SpecSource)
	}
	if tm := e.Time(); tm.Before(before) || tm.After(after) || tm.Location() != time.UTC {
		t.Errorf("time = %v, want UTC between %v and %v", tm, before, after)
	}
	if e.SpecVersion() != "1.0" || e.Type() != events.TypeKeyListed || e.Subject() != "" {
		t.Errorf("specversion %q, type %q, subject %q", e.SpecVersion(), e.Type(), e.Subject())
	}
	if e.DataContentType() != "application/json" || string(e.Data()) != "{}" {
		t.Errorf("data = %s (%s), want {} (application/json)", e.Data(), e.DataContentType())
	}
	ext := e.Extensions()
	if ext[events.ExtTenant] != "alpha" || ext[events.ExtOutcome] != events.OutcomeSuccess {
		t.Errorf("extensions = %v", ext)
	}
	for _, name := range []string{events.ExtPrincipal, events.ExtRequestID, events.ExtErrorCode} {
		if v, ok := ext[name]; ok {
			t.Errorf("extension %s = %v, want it absent when empty", name, v)
		}
	}
	// Two records without an ID get different ones.
	e2, err := events.Record{Type: events.TypeKeyListed, Tenant: "alpha", Outcome: events.OutcomeSuccess}.CloudEvent()
	if err != nil {
		t.Fatal(err)
	}
	if e2.ID() == e.ID() {
		t.Errorf("two records got the same ID %s", e.ID())
	}
}

func TestCloudEventKeepsFields(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("CET", 3600))
	r := events.Record{
		ID: "fixed-id", Type: events.TypeEncrypt, Source: "/keyflow/worker/h1",
		Subject: "kf:alpha:key/0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b", Tenant: "alpha",
		Principal: "alice", RequestID: "req-1", Outcome: events.OutcomeFailure,
		ErrorCode: "ValidationException", Time: at,
		Data: map[string]any{"plaintextBytes": 0, "contextKeys": nil},
	}
	e, err := r.CloudEvent()
	if err != nil {
		t.Fatal(err)
	}
	if e.ID() != r.ID || e.Source() != r.Source || e.Subject() != r.Subject || !e.Time().Equal(at) || e.Time().Location() != time.UTC {
		t.Errorf("id %q source %q subject %q time %v", e.ID(), e.Source(), e.Subject(), e.Time())
	}
	ext := e.Extensions()
	for name, want := range map[string]string{
		events.ExtTenant: "alpha", events.ExtPrincipal: "alice", events.ExtRequestID: "req-1",
		events.ExtOutcome: events.OutcomeFailure, events.ExtErrorCode: "ValidationException",
	} {
		if ext[name] != want {
			t.Errorf("extension %s = %v, want %q", name, ext[name], want)
		}
	}
	var data map[string]any
	if err := json.Unmarshal(e.Data(), &data); err != nil {
		t.Fatal(err)
	}
	if data["plaintextBytes"] != 0.0 || data["contextKeys"] != nil || len(data) != 2 {
		t.Errorf("data = %v", data)
	}
	// The structured JSON form is what jsaudit stores and what the schema
	// describes.
	raw, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if err := schemas.ValidateEvent(raw); err != nil {
		t.Errorf("%s: %v", raw, err)
	}
	var flat map[string]any
	if err := json.Unmarshal(raw, &flat); err != nil {
		t.Fatal(err)
	}
	if flat["tenant"] != "alpha" || flat["principal"] != "alice" || flat["requestid"] != "req-1" {
		t.Errorf("extensions are not top-level attributes in %s", raw)
	}
}

func TestCloudEventRefusesIncompleteRecords(t *testing.T) {
	full := events.Record{Type: events.TypeKeyListed, Tenant: "alpha", Outcome: events.OutcomeSuccess}
	for name, r := range map[string]events.Record{
		"no type":                {Tenant: full.Tenant, Outcome: full.Outcome},
		"no tenant":              {Type: full.Type, Outcome: full.Outcome},
		"no outcome":             {Type: full.Type, Tenant: full.Tenant},
		"empty":                  {},
		"unknown outcome":        {Type: full.Type, Tenant: full.Tenant, Outcome: "ok"},
		"outcome in capitals":    {Type: full.Type, Tenant: full.Tenant, Outcome: "SUCCESS"},
		"success with a code":    {Type: full.Type, Tenant: full.Tenant, Outcome: events.OutcomeSuccess, ErrorCode: "ValidationException"},
		"failure without a code": {Type: full.Type, Tenant: full.Tenant, Outcome: events.OutcomeFailure},
		"denied without a code":  {Type: full.Type, Tenant: full.Tenant, Outcome: events.OutcomeDenied},
	} {
		if _, err := r.CloudEvent(); !errors.Is(err, events.ErrInvalidRecord) {
			t.Errorf("%s: got %v, want ErrInvalidRecord", name, err)
		}
	}
	if _, err := full.CloudEvent(); err != nil {
		t.Errorf("complete record: %v", err)
	}
	for _, outcome := range []string{events.OutcomeFailure, events.OutcomeDenied} {
		r := full
		r.Outcome, r.ErrorCode = outcome, "AccessDeniedException"
		if _, err := r.CloudEvent(); err != nil {
			t.Errorf("%s with a code: %v", outcome, err)
		}
	}
}

// TestEveryTypeValidates builds, for every event type, a record with the
// data its emitter in package kms writes (on success and on failure), and
// checks the CloudEvent against the schemas, so a type, its emitter and its
// schema cannot drift apart unnoticed. The NATS trail test
// (workers/rpc/events_test.go) checks the events the real operations emit.
func TestEveryTypeValidates(t *testing.T) {
	const id = "0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b"
	subject := "kf:alpha:key/" + id
	regID := "5d2c1b0a-9f8e-4d7c-8b6a-5f4e3d2c1b0a"
	type sample struct {
		code string
		data map[string]any
	}
	samples := map[string][]sample{
		events.TypeKeyCreated: {
			{"", map[string]any{"alias": "app", "keySpec": "ECC_NIST_P256", "keyId": id, "version": uint32(1)}},
			{"ValidationException", map[string]any{"alias": "", "keySpec": "ECC_NIST_P257"}},
			{"", map[string]any{"alias": "", "keySpec": "SYMMETRIC_DEFAULT", "origin": "EXTERNAL", "keyId": id, "version": uint32(1)}},
		},
		events.TypeKeyDescribed:      {{"", map[string]any{"keyRef": "alias/app"}}},
		events.TypeKeyListed:         {{"", map[string]any{"count": 0}}},
		events.TypeKeyVersionCreated: {{"", map[string]any{"keyId": id, "version": uint32(2)}}},
		events.TypeKeyRotated: {
			{"", map[string]any{"keyId": id, "version": uint32(2), "previousVersion": uint32(1)}},
			{"NotFoundException", map[string]any{"keyId": id, "version": uint32(9)}},
		},
		events.TypeKeyRotationStart:  {{"", map[string]any{"keyRef": "app"}}},
		events.TypeKeyRotationFailed: {{"KMSInternalException", map[string]any{"keyId": id}}},
		events.TypeEncrypt: {
			{"", map[string]any{"plaintextBytes": 5, "contextKeys": []string{"a"}, "keyVersion": uint32(1)}},
			{"ValidationException", map[string]any{"plaintextBytes": 0, "contextKeys": []string(nil)}},
		},
		events.TypeDecrypt:         {{"", map[string]any{"ciphertextBytes": 384, "contextKeys": []string(nil), "keyVersion": uint32(1)}}},
		events.TypeGenerateDataKey: {{"", map[string]any{"numberOfBytes": 32, "contextKeys": []string(nil), "keyVersion": uint32(1)}}},
		events.TypeAuditRead:       {{"", map[string]any{"events": 3, "firstEventId": "a", "lastEventId": "c", "filter": "kf.audit.alpha.*.io.keyflow.crypto.>"}}},
		events.TypeSign: {
			{"", map[string]any{"algorithm": "ECDSA_SHA_256", "messageType": "", "messageBytes": 5, "keyVersion": uint32(1)}},
			{"ValidationException", map[string]any{"algorithm": "ED25519_SHA_512", "messageType": "DIGEST", "messageBytes": 64}},
		},
		events.TypeVerify: {
			{"", map[string]any{"algorithm": "RSASSA_PSS_SHA_512", "messageType": "DIGEST", "messageBytes": 64, "keyVersion": uint32(2)}},
			{"KMSInvalidSignatureException", map[string]any{"algorithm": "RSASSA_PSS_SHA_512", "messageType": "RAW", "messageBytes": 1}},
		},
		events.TypeGenerateMAC: {{"", map[string]any{"algorithm": "HMAC_SHA_256", "messageBytes": 9}}},
		events.TypeVerifyMAC:   {{"KMSInvalidMacException", map[string]any{"algorithm": "HMAC_SHA_256", "messageBytes": 9}}},
		events.TypeGetPublicKey: {
			{"", map[string]any{"keyVersion": uint32(1)}},
			{"InvalidKeyUsageException", map[string]any{"keyVersion": uint32(0)}},
		},
		events.TypeGenerateRandom: {
			{"", map[string]any{"numberOfBytes": 1024}},
			{"ValidationException", map[string]any{"numberOfBytes": 1025}},
		},
		events.TypeReEncrypt: {
			{"", map[string]any{"ciphertextBytes": 80, "sourceKey": subject, "sourceKeyVersion": uint32(1), "keyVersion": uint32(3)}},
			{"InvalidCiphertextException", map[string]any{"ciphertextBytes": 80, "sourceKey": subject}},
			{"InvalidCiphertextException", map[string]any{"ciphertextBytes": 2}},
		},
		events.TypeGenerateDataKeyPair: {
			{"", map[string]any{"keyPairSpec": "ECC_NIST_P256", "withoutPlaintext": false, "keyVersion": uint32(1)}},
			{"ValidationException", map[string]any{"keyPairSpec": "ECC_NIST_P521", "withoutPlaintext": true}},
		},
		events.TypeSeal: {
			{"", map[string]any{"plaintextBytes": 5, "keyVersion": uint32(1)}},
			{"InvalidKeyUsageException", map[string]any{"plaintextBytes": 5}},
		},
		events.TypeOpen: {
			{"", map[string]any{"ciphertextBytes": 1141, "keyVersion": uint32(2)}},
			{"InvalidCiphertextException", map[string]any{"ciphertextBytes": 3}},
		},
		events.TypeEncapsulate: {
			{"", map[string]any{"keyVersion": uint32(1)}},
			{"NotFoundException", map[string]any{}},
		},
		events.TypeDecapsulate: {
			{"", map[string]any{"ciphertextBytes": 1088, "keyVersion": uint32(1)}},
			{"ValidationException", map[string]any{"ciphertextBytes": 7}},
		},
		events.TypeRequestRejected:    {{"ValidationException", map[string]any{"operation": "crypto.batchdatakey"}}},
		events.TypeAuditPolicyChanged: {{"", map[string]any{"failClosed": false}}},
		events.TypeAuditStreamChanged: {{"AuditStreamPolicyViolation", map[string]any{"stream": "KF_AUDIT", "provisioned": false,
			"expected": map[string]any{"maxAgeSeconds": int64(0), "maxBytes": int64(-1), "maxMsgs": int64(-1), "denyDelete": true, "denyPurge": true},
			"actual":   map[string]any{"maxAgeSeconds": int64(0), "maxBytes": int64(-1), "maxMsgs": int64(1000), "denyDelete": true, "denyPurge": true}}}},
		events.TypeKeyVersionArchived: {
			{"", map[string]any{"keyId": id, "version": uint32(1)}},
			{"KMSInvalidStateException", map[string]any{"keyId": id, "version": uint32(2)}},
		},
		events.TypeKeyVersionRestoreRequested: {{"", map[string]any{"keyRef": "alias/app", "version": uint32(1)}}},
		events.TypeKeyVersionRestoreApproved: {
			{"", map[string]any{"keyId": id, "version": uint32(1), "requestedBy": "alice"}},
			{"AccessDeniedException", map[string]any{"keyId": id, "version": uint32(1), "requestedBy": "alice"}},
		},
		events.TypeKeyVersionRestoreRejected: {
			{"", map[string]any{"keyId": id, "version": uint32(1), "requestedBy": "alice", "reason": "rejected"}},
			{"", map[string]any{"keyId": id, "version": uint32(1), "requestedBy": "alice", "reason": "expired"}},
		},
		events.TypeKeyVersionRestored:  {{"", map[string]any{"keyId": id, "version": uint32(1)}}},
		events.TypeKeyArchiveDestroyed: {{"", map[string]any{"keyId": id, "versions": 2, "backups": 1}}},
		events.TypeBackupCreated: {
			{"", map[string]any{"backupId": id, "keys": 3, "versions": 4, "bytes": 2048}},
			{"LimitExceededException", map[string]any{}},
		},
		events.TypeBackupRestored: {
			{"", map[string]any{"backupId": id, "keys": 3, "versions": 4, "bytes": 2048, "overwrite": false}},
			{"InvalidCiphertextException", map[string]any{"bytes": 2048, "overwrite": true}},
		},
		events.TypeKeyImportParameters: {
			{"", map[string]any{"keyRef": id, "keyId": id, "wrappingAlgorithm": "RSAES_OAEP_SHA_256", "wrappingKeySpec": "RSA_3072", "validTo": "2026-11-28T18:00:00Z"}},
			{"UnsupportedOperationException", map[string]any{"keyRef": "app", "keyId": id, "wrappingAlgorithm": "XWING_HPKE", "wrappingKeySpec": ""}},
		},
		events.TypeKeyImported: {
			{"", map[string]any{"keyRef": id, "keyId": id, "wrappedBytes": 384, "wrappingAlgorithm": "RSA_AES_KEY_WRAP_SHA_256", "importId": id, "reimport": false, "expirationModel": "KEY_MATERIAL_EXPIRES", "validTo": "2027-01-01T00:00:00Z"}},
			{"InvalidImportTokenException", map[string]any{"keyRef": "app", "keyId": id, "wrappedBytes": 1}},
			{"IncorrectKeyMaterialException", map[string]any{"keyRef": id, "keyId": id, "wrappedBytes": 1152, "wrappingAlgorithm": "XWING_HPKE"}},
		},
		events.TypeKeyImportDeleted: {
			{"", map[string]any{"keyRef": id, "keyId": id, "importId": id}},
			{"UnsupportedOperationException", map[string]any{"keyRef": "app", "keyId": id}},
		},
		events.TypeKeyImportExpired: {
			{"", map[string]any{"keyId": id, "importId": id, "deleted": true}},
			{"", map[string]any{"keyId": id, "importId": id, "deleted": false}},
		},
		events.TypeKeyInventoryRead: {
			{"", map[string]any{"count": 3}},
			{"", map[string]any{"count": 1, "fromAlgorithms": []string{"RSA_3072", "ECC_NIST_P256"}, "to": "ML_DSA_65"}},
			{"ValidationException", map[string]any{"count": 0, "fromAlgorithms": []string{"RSA_1024"}}},
		},
		events.TypeKeyExported: {
			{"", map[string]any{"keyRef": id, "exportable": true, "keyVersion": uint32(1)}},
			{"AccessDeniedException", map[string]any{"keyRef": id, "exportable": false}},
		},
		events.TypeKMIPAttributesChanged: {
			{"", map[string]any{"keyRef": id, "operation": "AddAttribute", "attribute": "x-owner"}},
			{"NotFoundException", map[string]any{"keyRef": id, "operation": "DeleteAttribute", "attribute": "Name"}},
		},
		events.TypeXKSMetadata: {
			{"", map[string]any{"keyStore": "/ks1", "externalKeyId": "xks-demo", "awsPrincipalArn": "arn:aws:iam::111122223333:user/alice", "kmsOperation": "CreateKey", "kmsRequestId": "4112f4d6", "keyStatus": "ENABLED"}},
			{"AccessDeniedException", map[string]any{"keyStore": "/ks1", "externalKeyId": "xks-demo", "awsPrincipalArn": "arn:aws:iam::111122223333:user/mallory", "kmsOperation": "DescribeKey", "kmsRequestId": "r2"}},
		},
		events.TypeXKSEncrypt: {
			{"", map[string]any{"keyStore": "/ks1", "externalKeyId": "xks-demo", "kmsKeyArn": "arn:aws:kms:us-east-1:111122223333:key/k", "kmsOperation": "GenerateDataKey", "kmsRequestId": "r3", "plaintextBytes": 32, "aadBytes": 80, "integrityValue": true, "keyVersion": uint32(1)}},
			{"UnsupportedOperationException", map[string]any{"keyStore": "", "externalKeyId": "xks-demo", "plaintextBytes": 4301, "aadBytes": 0, "integrityValue": false}},
		},
		events.TypeXKSDecrypt: {
			{"", map[string]any{"keyStore": "/ks1", "externalKeyId": "xks-demo", "kmsOperation": "Decrypt", "kmsRequestId": "r4", "ciphertextBytes": 32, "aadBytes": 80, "ivBytes": 12, "keyVersion": uint32(2)}},
			{"InvalidCiphertextException", map[string]any{"keyStore": "/ks1", "externalKeyId": "xks-demo", "ciphertextBytes": 32, "aadBytes": 0, "ivBytes": 16}},
		},
		events.TypeXKSHealth: {{"", map[string]any{"keyStore": "/ks1", "kmsOperation": "KmsHealthCheck", "kmsRequestId": "r5", "healthStatus": "ACTIVE"}}},
		events.TypeXKSRejected: {
			{"AuthenticationFailedException", map[string]any{"keyStore": "/ks1", "operation": "encrypt", "externalKeyId": "xks-demo", "accessKeyId": "AKIAEXAMPLEEXAMPLE22"}},
			{"InvalidUriPathException", map[string]any{"keyStore": "/nope", "operation": "unknown"}},
		},
		events.TypeApprovalRequested: {
			{"", map[string]any{"approvalId": id, "operation": "rotate", "target": id, "required": 2, "expiresAt": "2026-11-30T18:00:00Z"}},
			{"KMSInternalException", map[string]any{"approvalId": id, "operation": "disable", "target": id}},
		},
		events.TypeApprovalApproved: {
			{"", map[string]any{"approvalId": id, "operation": "rotate", "target": id, "comment": "ok", "approvals": 1, "required": 2, "state": "PENDING"}},
			{"AccessDeniedException", map[string]any{"approvalId": id, "comment": "", "operation": "rotate", "target": id}},
			{"ConflictException", map[string]any{"approvalId": "not-a-uuid", "comment": ""}},
		},
		events.TypeApprovalDenied: {
			{"", map[string]any{"approvalId": id, "operation": "policy-change", "target": "tenant-policy", "comment": "not now", "approvals": 0, "required": 2, "state": "DENIED"}},
		},
		events.TypeApprovalExpired: {
			{"", map[string]any{"approvalId": id, "operation": "rotate", "target": id, "approvals": 1, "required": 2, "approvers": []string{"bob"}}},
		},
		events.TypeApprovalCompleted: {
			{"", map[string]any{"approvalId": id, "operation": "rotate", "target": id, "approvals": 2, "required": 2, "approvers": []string{"bob", "carol"}, "result": "succeeded"}},
			{"", map[string]any{"approvalId": id, "result": "failed", "errorCode": "KMSInvalidStateException"}},
		},
		events.TypeApprovalRead: {
			{"", map[string]any{"count": 3, "state": "PENDING"}},
			{"NotFoundException", map[string]any{"approvalId": id, "count": 0}},
		},
		events.TypeTenantPolicyChanged: {
			{"", map[string]any{"approvalOperations": []string{"rotate"}, "profiles": []string{"cnsa2"}, "requestsPerSecond": 10.5, "burst": 20, "maxKeys": 100, "minDeletionWindowDays": 7, "requiredOrigin": ""}},
			{"", map[string]any{"approvalOperations": []string{}, "profiles": []string{}, "minDeletionWindowDays": 0, "requiredOrigin": "EXTERNAL", "approvalId": id, "pending": true}},
			{"ValidationException", map[string]any{}},
		},
		events.TypeTenantPolicyRead: {{"", nil}},
		events.TypePolicyWarning: {
			{"", map[string]any{"operation": "keys.create", "keySpec": "ECC_NIST_P256", "warning": "nist-ir-8547: ECDSA-P256 is quantum-vulnerable"}},
		},
		events.TypeQuotaThrottled: {
			{"ThrottlingException", map[string]any{"count": uint64(42), "operation": "crypto.encrypt", "reason": "rate"}},
		},
		events.TypeAccessDenied: {
			{"AccessDeniedException", map[string]any{"operation": "crypto.encrypt", "rule": "role:crypto-user required"}},
			{"AccessDeniedException", map[string]any{"operation": "crypto.decrypt", "rule": "condition:encryptionContext", "keyId": id, "action": "Decrypt"}},
		},
		events.TypeKeyPolicyChanged: {
			{"", map[string]any{"keyRef": "alias/app", "statements": []string{"AdminsOnly", "AppUse"}}},
			{"ValidationException", map[string]any{"keyRef": "app"}},
		},
		events.TypeKeyPolicyRead: {{"", map[string]any{"keyRef": id}}},
		events.TypeGrantCreated: {
			{"", map[string]any{"keyRef": "app", "grantee": "bob", "grantId": id, "operations": []string{"Decrypt"}, "expiresAt": "2026-01-02T03:04:05Z"}},
			{"ValidationException", map[string]any{"keyRef": "app", "grantee": "Bob!"}},
		},
		events.TypeGrantListed:          {{"", map[string]any{"keyRef": "app", "count": 2}}},
		events.TypeGrantListedRetirable: {{"", map[string]any{"retiringPrincipal": "svc-batch", "count": 1}}},
		events.TypeKeyTagsChanged: {
			{"", map[string]any{"action": "tag", "keyRef": "app", "tagKeys": []string{"team"}}},
			{"ValidationException", map[string]any{"action": "untag", "tagKeys": []string{}}},
		},
		events.TypeKeyDescriptionChanged: {{"", map[string]any{"keyRef": "app", "length": 12}}},
		events.TypeGrantRetired:          {{"", map[string]any{"keyRef": "app", "grantId": id}}},
		events.TypeGrantRevoked:          {{"NotFoundException", map[string]any{"keyRef": "app", "grantId": "nope"}}},
		events.TypeTenantCreated:         {{"", map[string]any{"tenant": "acme", "admin": "admin", "forbiddenRoleSets": [][]string{{"key-admin", "crypto-user"}}}}},
		events.TypePrincipalCreated:      {{"ValidationException", map[string]any{"principal": "bob", "roles": []string{"key-admin", "crypto-user"}}}},
		events.TypePrincipalListed:       {{"", map[string]any{"count": 3}}},
		events.TypePrincipalDisabled:     {{"", map[string]any{"principal": "bob"}}},
		events.TypeAccessKeyCreated:      {{"", map[string]any{"principal": "bob", "accessKeyId": "AKIAABCDEFGHIJKLMNOP"}}, {"NotFoundException", map[string]any{"principal": "nobody"}}},
		events.TypeAccessKeyListed:       {{"", map[string]any{"count": 2}}},
		events.TypeAccessKeyDisabled:     {{"", map[string]any{"accessKeyId": "AKIAABCDEFGHIJKLMNOP"}}},
		events.TypeAccessKeyDeleted:      {{"NotFoundException", map[string]any{"accessKeyId": "AKIAABCDEFGHIJKLMNOP"}}},
		events.TypeKeyAliasChanged:       {{"", map[string]any{"alias": "app", "action": "create", "keyRef": id}}, {"NotFoundException", map[string]any{"alias": "gone", "action": "delete"}}},
		events.TypeKeyStateChanged: {
			{"", map[string]any{"keyId": id, "to": "SUSPENDED", "from": "ACTIVE", "transition": "T7", "reason": "investigation"}},
			{"", map[string]any{"keyId": id, "version": uint32(2), "from": "ACTIVE", "to": "DEACTIVATED", "transition": "T8", "reason": "originator-usage period (cryptoperiod) ended"}},
			{"KMSInvalidStateException", map[string]any{"keyId": id, "to": "ACTIVE", "from": "COMPROMISED"}},
			{"ValidationException", map[string]any{"keyId": "alias/nope", "to": "BOGUS"}},
		},
		events.TypeKeyCompromised: {
			{"", map[string]any{"keyId": id, "version": uint32(1), "to": "COMPROMISED", "from": "ACTIVE", "transition": "T6", "reason": "leaked"}},
			{"", map[string]any{"keyId": id, "version": uint32(1), "to": "COMPROMISED", "from": "COMPROMISED", "reason": "leaked"}},
		},
		events.TypeKeyDeletionScheduled: {
			{"", map[string]any{"keyId": id, "windowDays": 7, "cancelOnUse": true, "deletionDate": "2026-12-04T10:00:00Z"}},
			{"KMSInvalidStateException", map[string]any{"keyId": id, "windowDays": 30, "cancelOnUse": false}},
		},
		events.TypeKeyDeletionCancelled: {
			{"", map[string]any{"keyId": id, "reason": "requested"}},
			{"", map[string]any{"keyId": id, "reason": "use-attempted"}},
		},
		events.TypeKeyUseRefused: {
			{"KMSInvalidStateException", map[string]any{"keyId": id, "operation": events.TypeEncrypt, "cancelledDeletion": false}},
			{"KMSInvalidStateException", map[string]any{"keyId": id, "operation": events.TypeDecrypt, "cancelledDeletion": false, "version": uint32(1)}},
		},
		events.TypeKeyVersionRetirementScheduled: {
			{"", map[string]any{"keyId": id, "version": uint32(1), "windowDays": 30, "registeredDataKeys": 0, "retirementDate": "2026-12-04T10:00:00Z"}},
			{"KMSInvalidStateException", map[string]any{"keyId": id, "version": uint32(1), "windowDays": 30, "registeredDataKeys": 3}},
		},
		events.TypeKeyVersionRetirementCancelled: {{"", map[string]any{"keyId": id, "version": uint32(1)}}},
		events.TypeKeyMaterialDestroyed: {
			{"", map[string]any{"keyId": id, "cancelled": false, "versions": []uint32{1, 2}, "copies": []string{"hsm-session-objects", "store"}}},
			{"", map[string]any{"keyId": id, "cancelled": true, "versions": []uint32{}, "copies": []string{}}},
		},
		events.TypeKeyDestroyed:        {{"", map[string]any{"keyId": id, "cancelled": false, "state": "DESTROYED_COMPROMISED", "versions": []uint32{1}}}},
		events.TypeKeyLifecycleChanged: {{"", map[string]any{"keyId": id, "rotationPeriodDays": 90, "rewrapOnRotation": true}}},
		events.TypeKeyVersionRetired: {
			{"", map[string]any{"keyId": id, "version": uint32(1), "from": "ACTIVE", "state": "DESTROYED", "transition": "T5", "registeredDataKeys": 0, "copies": []string{"hsm-session-objects", "store"}}},
			{"KMSInvalidStateException", map[string]any{"keyId": id, "version": uint32(1), "registeredDataKeys": 3}},
			{"ValidationException", map[string]any{"keyId": "alias/nope", "version": uint32(0)}},
			{"", map[string]any{"keyId": id, "version": uint32(1), "from": "ACTIVE", "state": "ACTIVE", "registeredDataKeys": 0, "copies": []string{}, "cancelled": true}},
		},
		events.TypeKeyRemediated: {{"", map[string]any{"keyId": id, "version": uint32(1), "newVersion": uint32(2), "rewrapped": 0, "failed": 0, "remaining": -1, "problems": []string{"rewrap: rewrap is not implemented yet"}}}},
		events.TypeDataKeyRegistered: {
			{"", map[string]any{"ciphertextBytes": 80, "registrationId": regID, "keyVersion": uint32(1)}},
			{"InvalidCiphertextException", map[string]any{"ciphertextBytes": 80}},
		},
		events.TypeDataKeyRead: {
			{"", map[string]any{"registrationId": regID, "keyVersion": uint32(2)}},
			{"NotFoundException", map[string]any{"registrationId": "nope"}},
		},
		events.TypeDataKeyListed:       {{"", map[string]any{"count": 3}}},
		events.TypeDataKeyDeregistered: {{"", map[string]any{"registrationId": regID, "keyVersion": uint32(1)}}},
		events.TypeDataKeyRewrapped: {
			{"", map[string]any{"registrationId": regID, "sourceKey": subject, "sourceKeyVersion": uint32(1), "keyVersion": uint32(1)}},
			{"InvalidCiphertextException", map[string]any{"registrationId": regID, "sourceKey": subject, "sourceKeyVersion": uint32(1)}},
		},
		events.TypeMigrationStarted: {{"", map[string]any{"campaignId": "pq-0a1b2c3d4e5f", "keys": 2}}},
		events.TypeMigrationPhase:   {{"", map[string]any{"campaignId": "pq-0a1b2c3d4e5f", "phase": "rewrapping", "paused": true}}},
		events.TypeWorkflowSignalRefused: {
			{"AccessDeniedException", map[string]any{"workflowId": id, "operation": "approve", "claimedPrincipal": "mallory", "reason": "missing"}},
		},
		events.TypeMigrationControl: {
			{"", map[string]any{"campaignId": "pq-0a1b2c3d4e5f", "action": "start", "keys": 2}},
			{"ValidationException", map[string]any{"campaignId": "Bad ID", "action": "explode"}},
		},
		events.TypeKeyReplicaCreated: {
			{"", map[string]any{"keyRef": id, "region": "eu-west", "primaryRegion": "us-east", "role": "primary"}},
			{"UnsupportedOperationException", map[string]any{"keyRef": id, "region": "eu-west", "role": "primary"}},
		},
		events.TypeKeyReplicaSynced:  {{"", map[string]any{"keyId": id, "region": "eu-west", "version": uint32(2), "role": "primary"}}},
		events.TypeKeyReplicaApplied: {{"", map[string]any{"keyId": id, "version": uint32(2), "primaryRegion": "us-east", "region": "eu-west", "role": "replica"}}},
		events.TypeKeyReplicaUpdated: {
			{"", map[string]any{"keyId": id, "primaryRegion": "us-east", "region": "eu-west", "changed": []string{"keyState"}, "primaryVersion": uint32(2), "keyState": "SUSPENDED", "newPrimaryRegion": "us-east", "role": "replica"}},
			{"KMSInvalidStateException", map[string]any{"primaryRegion": "us-east", "region": "eu-west", "changed": []string(nil), "role": "replica"}},
		},
		events.TypeKeyReplicaLagging:           {{"", map[string]any{"keyId": id, "version": uint32(3), "regions": []string{"eu-west"}}}},
		events.TypeKeyReplicaPrimaryChanged:    {{"", map[string]any{"keyRef": id, "region": "eu-west", "previousPrimaryRegion": "us-east"}}},
		events.TypeKeyReplicaDeletionScheduled: {{"", map[string]any{"keyRef": id, "region": "eu-west", "pendingWindowDays": 7}}},
		events.TypeKeyReplicaDeletionCancelled: {
			{"", map[string]any{"keyRef": id, "region": "eu-west", "role": "primary"}},
			{"KMSInvalidStateException", map[string]any{"keyRef": id, "region": "eu-west", "role": "primary"}},
		},
		events.TypeKeyReplicaDestroyed: {
			{"", map[string]any{"keyId": id, "region": "eu-west", "primaryRegion": "us-east", "versions": []uint32{1, 2}, "role": "replica"}},
			{"", map[string]any{"keyId": id, "region": "eu-west", "primaryRegion": "us-east", "role": "primary"}},
		},
		events.TypeMigrationKey: {
			{"", map[string]any{"campaignId": "pq-0a1b2c3d4e5f", "action": "cutover", "sourceKey": subject, "targetKey": subject, "phase": "cutover"}},
			{"", map[string]any{"campaignId": "pq-0a1b2c3d4e5f", "action": "target-created", "sourceKey": subject, "targetKey": subject, "targetKeySpec": "X_WING"}},
			{"KMSInvalidStateException", map[string]any{"campaignId": "pq-0a1b2c3d4e5f", "action": "retired", "sourceKey": subject, "targetKey": subject, "phase": "retired"}},
		},
		events.TypeCloudDestinationAdded: {
			{"", map[string]any{"destination": "aws-prod", "provider": "aws", "drift": "repair"}},
			{"ValidationException", map[string]any{"destination": "Bad", "provider": "ibm", "drift": ""}},
		},
		events.TypeCloudCall: {
			{"", map[string]any{"destination": "aws-prod", "provider": "aws", "operation": "ImportKeyMaterial", "providerRequestId": "6f1c2d3e-aaaa", "step": "distribute", "keyId": id, "resource": "arn:aws:kms:us-east-1:111122223333:key/1"}},
			{"CloudProviderException", map[string]any{"destination": "aws-prod", "provider": "aws", "operation": "CreateKey", "providerRequestId": "", "providerErrorCode": "LimitExceededException", "step": "distribute", "keyId": id}},
		},
		events.TypeCloudMaterialWrapped: {
			{"", map[string]any{"keyId": id, "keyVersion": uint32(1), "destination": "aws-prod", "scheme": "RSAES_OAEP_SHA_256", "wrappingKeyBits": 2048}},
			{"AccessDeniedException", map[string]any{"keyId": id, "keyVersion": uint32(1), "destination": "gcp", "scheme": "RSA_AES_KEY_WRAP_SHA_256", "wrappingKeyBits": 3072}},
		},
		events.TypeCloudPlacementChanged: {
			{"", map[string]any{"keyId": id, "destination": "aws-prod", "step": "rotate", "state": "ENABLED", "resource": "alias/keyflow/" + id, "keyVersion": uint32(2)}},
			{"", map[string]any{"keyId": id, "destination": "aws-prod", "step": "undistribute", "state": "REMOVED"}},
		},
		events.TypeCloudDrift: {
			{"", map[string]any{"keyId": id, "destination": "aws-prod", "field": "state", "keyflow": "ENABLED", "provider": "DISABLED", "repaired": true}},
		},
		events.TypeCloudDestinationRemoved: {
			{"", map[string]any{"destination": "aws-prod", "provider": "aws", "placements": 0}},
			{"ConflictException", map[string]any{"destination": "aws-prod", "provider": "aws", "placements": 3}},
		},
	}
	for _, typ := range events.Types {
		ss, ok := samples[typ]
		if !ok {
			t.Errorf("no sample for %s", typ)
			continue
		}
		for _, s := range ss {
			r := events.Record{Type: typ, Tenant: "alpha", Principal: "alice", RequestID: "r1", Subject: subject, Outcome: events.OutcomeSuccess, Data: s.data}
			if s.code != "" {
				r.Outcome, r.ErrorCode = events.OutcomeFailure, s.code
			}
			e, err := r.CloudEvent()
			if err != nil {
				t.Errorf("%s: %v", typ, err)
				continue
			}
			raw, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			if err := schemas.ValidateEvent(raw); err != nil {
				t.Errorf("%s: %v\n%s", typ, err, raw)
			}
		}
	}
}

func TestEventStableID(t *testing.T) {
	a := events.StableID("rotate/k1/2", events.TypeKeyVersionCreated)
	if b := events.StableID("rotate/k1/2", events.TypeKeyVersionCreated); a != b {
		t.Errorf("StableID is not deterministic: %s, %s", a, b)
	}
	u, err := uuid.Parse(a)
	if err != nil {
		t.Fatalf("StableID %q is not a UUID: %v", a, err)
	}
	if u.Version() != 5 || u.Variant() != uuid.RFC4122 {
		t.Errorf("StableID %s is version %d variant %v, want an RFC 4122 version 5 (SHA-1) UUID", a, u.Version(), u.Variant())
	}
	seen := map[string]string{a: "rotate/k1/2 " + events.TypeKeyVersionCreated}
	for _, key := range []string{"rotate/k1/2", "rotate/k1/3", "rotate/k2/2", ""} {
		for _, typ := range events.Types {
			if key == "rotate/k1/2" && typ == events.TypeKeyVersionCreated {
				continue
			}
			id := events.StableID(key, typ)
			if prev, ok := seen[id]; ok {
				t.Errorf("StableID(%q, %s) = %s, the same as for %s", key, typ, id, prev)
			}
			seen[id] = key + " " + typ
		}
	}
	// A record with a stable ID keeps it in its CloudEvent, so JetStream's
	// duplicate window drops the retried copy.
	e, err := events.Record{ID: a, Type: events.TypeKeyVersionCreated, Tenant: "alpha", Outcome: events.OutcomeSuccess}.CloudEvent()
	if err != nil {
		t.Fatal(err)
	}
	if e.ID() != a {
		t.Errorf("CloudEvent ID = %s, want %s", e.ID(), a)
	}
}

// TestEveryTypeHasASchema keeps events.Types and schemas/events in step: a
// new event type needs its data schema, and a schema needs an emitter.
func TestEveryTypeHasASchema(t *testing.T) {
	types := slices.Clone(events.Types)
	slices.Sort(types)
	if c := slices.Compact(slices.Clone(types)); len(c) != len(types) {
		t.Errorf("events.Types has duplicates: %v", events.Types)
	}
	if got := schemas.EventTypes(); !slices.Equal(types, got) {
		t.Errorf("events.Types (sorted):\n%v\nschemas.EventTypes():\n%v", types, got)
	}
}

func TestEventSinkFunc(t *testing.T) {
	var got events.Record
	s := events.SinkFunc(func(_ context.Context, r events.Record) error { got = r; return nil })
	want := events.Record{Type: events.TypeAuditRead, Tenant: "alpha", Outcome: events.OutcomeSuccess}
	if err := s.Emit(context.Background(), want); err != nil || got.Type != want.Type || got.Tenant != want.Tenant {
		t.Errorf("Emit: %v, got %+v", err, got)
	}
}

// BenchmarkRecordKeySum is the per-record cost of an authenticator, on a
// record of the size keyflow stores (about 450 bytes).
func BenchmarkRecordKeySum(b *testing.B) {
	k, err := events.NewRecordKey(make([]byte, events.RecordKeySize))
	if err != nil {
		b.Fatal(err)
	}
	body := make([]byte, 450)
	subject := "kf.audit.alpha.0f9c3c0e-3b4e-4a57-9a36-1a7c1c2f8a11.io.keyflow.crypto.encrypt.v1"
	b.ReportAllocs()
	for b.Loop() {
		_ = k.Sum(subject, body)
	}
}
