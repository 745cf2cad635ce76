// Package events defines keyflow's audit trail: one CloudEvents 1.0 event per
// fact, what each carries, and how it is built.
//
// The domain (package kms) reports what happened as a [Record] to a [Sink].
// This package turns the record into a CloudEvent with a stable type such as
// io.keyflow.crypto.encrypt.v1, the tenant, principal, outcome and request ID
// as extension attributes, and the key's resource name as its subject, so
// that every event answers the NIST SP 800-53 AU-3 questions (what, when,
// where, source, outcome, who).
//
// Sinks that reach a transport live in subpackages (events/jsaudit publishes
// to a JetStream stream); this package itself imports no transport, so the
// domain can depend on it.
//
// A sink that stores records where others could publish too (the audit
// stream) authenticates each with the deployment's [RecordKey], which the
// KMS gives it at start ([Authenticating]); the audit sealer checks it.
//
// What never goes into an event: plaintext, key material (wrapped or not),
// PINs, data keys and ciphertexts. Record.Data holds identifiers, sizes and
// outcomes only; tests scan emitted events for known secrets.
package events

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/google/uuid"
)

// Event types, one per fact, versioned. A consumer switches on these.
const (
	TypeKeyCreated          = "io.keyflow.key.created.v1"
	TypeKeyDescribed        = "io.keyflow.key.described.v1"
	TypeKeyListed           = "io.keyflow.key.listed.v1"
	TypeKeyVersionCreated   = "io.keyflow.key.version.created.v1"
	TypeKeyRotated          = "io.keyflow.key.rotated.v1"
	TypeKeyRotationStart    = "io.keyflow.key.rotation.started.v1"
	TypeKeyRotationFailed   = "io.keyflow.key.rotation.failed.v1"
	TypeEncrypt             = "io.keyflow.crypto.encrypt.v1"
	TypeDecrypt             = "io.keyflow.crypto.decrypt.v1"
	TypeGenerateDataKey     = "io.keyflow.crypto.datakey.v1"
	TypeAuditRead           = "io.keyflow.audit.read.v1"
	TypeSign                = "io.keyflow.crypto.sign.v1"
	TypeVerify              = "io.keyflow.crypto.verify.v1"
	TypeGenerateMAC         = "io.keyflow.crypto.mac.v1"
	TypeVerifyMAC           = "io.keyflow.crypto.verifymac.v1"
	TypeGetPublicKey        = "io.keyflow.key.publickey.read.v1"
	TypeGenerateRandom      = "io.keyflow.crypto.random.v1"
	TypeReEncrypt           = "io.keyflow.crypto.reencrypt.v1"
	TypeSeal                = "io.keyflow.crypto.seal.v1"
	TypeOpen                = "io.keyflow.crypto.open.v1"
	TypeEncapsulate         = "io.keyflow.crypto.encapsulate.v1"
	TypeDecapsulate         = "io.keyflow.crypto.decapsulate.v1"
	TypeGenerateDataKeyPair = "io.keyflow.crypto.datakeypair.v1"
	TypeRequestRejected     = "io.keyflow.request.rejected.v1"
	// TypeKeyInventoryRead records a crypto inventory (keys.inventory,
	// including a CycloneDX CBOM export).
	TypeKeyInventoryRead = "io.keyflow.key.inventory.read.v1"
	// TypeKeyExported: an exportable key's material was released (or
	// the release refused); never the material.
	TypeKeyExported = "io.keyflow.key.exported.v1"
	// TypeKMIPAttributesChanged: a KMIP client added, modified or
	// deleted a key attribute; never its value.
	TypeKMIPAttributesChanged = "io.keyflow.kmip.attributes.changed.v1"
	// TypeAuditPolicyChanged records a change of the audit guarantees, such
	// as a worker started fail-open (data: failClosed=false). It is
	// deployment-wide, so its tenant is "-".
	TypeAuditPolicyChanged = "io.keyflow.audit.policy.changed.v1"
	// TypeAuditStreamChanged records that an audit stream's retention or
	// limits differ from the deployment's configured policy (someone
	// changed them), or that the operator provisioned a new policy. It is
	// deployment-wide, so its tenant is "-".
	TypeAuditStreamChanged = "io.keyflow.audit.stream.changed.v1"
	// XKS proxy calls (AWS KMS External Key Store, workers/xks).
	TypeXKSMetadata = "io.keyflow.xks.metadata.v1"
	TypeXKSEncrypt  = "io.keyflow.xks.encrypt.v1"
	TypeXKSDecrypt  = "io.keyflow.xks.decrypt.v1"
	TypeXKSHealth   = "io.keyflow.xks.health.v1"
	TypeXKSRejected = "io.keyflow.xks.rejected.v1"

	// Archival, recovery and backups (docs/backup-and-recovery.md).
	TypeKeyVersionArchived         = "io.keyflow.key.version.archived.v1"
	TypeKeyVersionRestoreRequested = "io.keyflow.key.version.restore.requested.v1"
	TypeKeyVersionRestoreApproved  = "io.keyflow.key.version.restore.approved.v1"
	TypeKeyVersionRestoreRejected  = "io.keyflow.key.version.restore.rejected.v1"
	TypeKeyVersionRestored         = "io.keyflow.key.version.restored.v1"
	TypeKeyArchiveDestroyed        = "io.keyflow.key.archive.destroyed.v1"
	TypeBackupCreated              = "io.keyflow.backup.created.v1"
	TypeBackupRestored             = "io.keyflow.backup.restored.v1"

	// Governance (dual control, quotas, profiles): see kms/approval.go.
	TypeApprovalRequested   = "io.keyflow.approval.requested.v1"
	TypeApprovalApproved    = "io.keyflow.approval.approved.v1"
	TypeApprovalDenied      = "io.keyflow.approval.denied.v1"
	TypeApprovalExpired     = "io.keyflow.approval.expired.v1"
	TypeApprovalCompleted   = "io.keyflow.approval.completed.v1"
	TypeApprovalRead        = "io.keyflow.approval.read.v1"
	TypeTenantPolicyChanged = "io.keyflow.tenant.policy.changed.v1"
	TypeTenantPolicyRead    = "io.keyflow.tenant.policy.read.v1"
	TypePolicyWarning       = "io.keyflow.policy.warning.v1"
	TypeQuotaThrottled      = "io.keyflow.quota.throttled.v1"
	// BYOK: import parameters issued, material imported, deleted, expired.
	TypeKeyImportParameters = "io.keyflow.key.import.parameters.v1"
	TypeKeyImported         = "io.keyflow.key.import.completed.v1"
	TypeKeyImportDeleted    = "io.keyflow.key.import.deleted.v1"
	TypeKeyImportExpired    = "io.keyflow.key.import.expired.v1"

	// Key lifecycle (kms/lifecycle.go, docs/lifecycle.md).
	TypeKeyStateChanged      = "io.keyflow.key.state.changed.v1"
	TypeKeyCompromised       = "io.keyflow.key.compromised.v1"
	TypeKeyDeletionScheduled = "io.keyflow.key.deletion.scheduled.v1"
	TypeKeyDeletionCancelled = "io.keyflow.key.deletion.cancelled.v1"
	TypeKeyUseRefused        = "io.keyflow.key.use.refused.v1"
	TypeKeyMaterialDestroyed = "io.keyflow.key.material.destroyed.v1"
	TypeKeyDestroyed         = "io.keyflow.key.destroyed.v1"
	TypeKeyLifecycleChanged  = "io.keyflow.key.lifecycle.changed.v1"
	TypeKeyRemediated        = "io.keyflow.key.compromise.remediated.v1"
	TypeKeyVersionRetired    = "io.keyflow.key.version.retired.v1"
	// A version's retirement window (kms/retire.go).
	TypeKeyVersionRetirementScheduled = "io.keyflow.key.version.retirement.scheduled.v1"
	TypeKeyVersionRetirementCancelled = "io.keyflow.key.version.retirement.cancelled.v1"

	// The data-key registry and the migration campaign (docs/migration.md).
	TypeDataKeyRegistered   = "io.keyflow.datakey.registered.v1"
	TypeDataKeyRead         = "io.keyflow.datakey.read.v1"
	TypeDataKeyListed       = "io.keyflow.datakey.listed.v1"
	TypeDataKeyDeregistered = "io.keyflow.datakey.deregistered.v1"
	TypeDataKeyRewrapped    = "io.keyflow.datakey.rewrapped.v1"
	TypeMigrationStarted    = "io.keyflow.migration.started.v1"
	TypeMigrationPhase      = "io.keyflow.migration.phase.changed.v1"
	TypeMigrationControl    = "io.keyflow.migration.control.v1"
	TypeMigrationKey        = "io.keyflow.migration.key.changed.v1"

	// TypeWorkflowSignalRefused records a Temporal signal or update that
	// a workflow ignored because it carried no valid keyflow
	// authorization token (kms/optoken.go).
	TypeWorkflowSignalRefused = "io.keyflow.workflow.signal.refused.v1"

	// Cloud destinations (the Multi-Cloud pattern, docs/multi-cloud.md):
	// a destination registered, one provider request (with the provider's
	// request ID), material wrapped for a provider (never the bytes), a
	// key's placement changed, and a difference the reconcile found.
	TypeCloudDestinationAdded = "io.keyflow.cloud.destination.added.v1"
	TypeCloudCall             = "io.keyflow.cloud.call.v1"
	TypeCloudMaterialWrapped  = "io.keyflow.cloud.material.wrapped.v1"
	TypeCloudPlacementChanged = "io.keyflow.cloud.placement.changed.v1"
	TypeCloudDrift            = "io.keyflow.cloud.drift.v1"
	// TypeCloudDestinationRemoved: a destination forgotten (keyflow cloud
	// remove), or the removal refused while keys are placed there.
	TypeCloudDestinationRemoved = "io.keyflow.cloud.destination.removed.v1"
)

// Multi-region key replication (kms/replica.go), recorded in the primary
// and the replica regions.
const (
	// TypeKeyReplicaCreated: see schemas/events/io.keyflow.key.replica.created.v1.json
	TypeKeyReplicaCreated = "io.keyflow.key.replica.created.v1"
	// TypeKeyReplicaSynced: see schemas/events/io.keyflow.key.replica.synced.v1.json
	TypeKeyReplicaSynced = "io.keyflow.key.replica.synced.v1"
	// TypeKeyReplicaApplied: see schemas/events/io.keyflow.key.replica.applied.v1.json
	TypeKeyReplicaApplied = "io.keyflow.key.replica.applied.v1"
	// TypeKeyReplicaUpdated: see schemas/events/io.keyflow.key.replica.updated.v1.json
	TypeKeyReplicaUpdated = "io.keyflow.key.replica.updated.v1"
	// TypeKeyReplicaLagging: see schemas/events/io.keyflow.key.replica.lagging.v1.json
	TypeKeyReplicaLagging = "io.keyflow.key.replica.lagging.v1"
	// TypeKeyReplicaPrimaryChanged: see schemas/events/io.keyflow.key.replica.primary.changed.v1.json
	TypeKeyReplicaPrimaryChanged = "io.keyflow.key.replica.primary.changed.v1"
	// TypeKeyReplicaDeletionScheduled: see schemas/events/io.keyflow.key.replica.deletion.scheduled.v1.json
	TypeKeyReplicaDeletionScheduled = "io.keyflow.key.replica.deletion.scheduled.v1"
	// TypeKeyReplicaDeletionCancelled: see schemas/events/io.keyflow.key.replica.deletion.cancelled.v1.json
	TypeKeyReplicaDeletionCancelled = "io.keyflow.key.replica.deletion.cancelled.v1"
	// TypeKeyReplicaDestroyed: see schemas/events/io.keyflow.key.replica.destroyed.v1.json
	TypeKeyReplicaDestroyed = "io.keyflow.key.replica.destroyed.v1"
)

// Types lists every event type keyflow emits; schemas/events has one JSON
// Schema for each.
var Types = []string{
	TypeAuditStreamChanged,
	TypeKeyCreated, TypeKeyDescribed, TypeKeyListed, TypeKeyVersionCreated,
	TypeKeyRotated, TypeKeyRotationStart, TypeEncrypt, TypeDecrypt,
	TypeGenerateDataKey, TypeAuditRead, TypeRequestRejected, TypeKeyRotationFailed,
	TypeSign, TypeVerify, TypeGenerateMAC, TypeVerifyMAC, TypeGetPublicKey,
	TypeGenerateRandom, TypeReEncrypt, TypeGenerateDataKeyPair,
	TypeSeal, TypeOpen, TypeEncapsulate, TypeDecapsulate,
	TypeAuditPolicyChanged, TypeKeyInventoryRead, TypeKeyExported, TypeKMIPAttributesChanged,
	TypeXKSMetadata, TypeXKSEncrypt, TypeXKSDecrypt, TypeXKSHealth, TypeXKSRejected,
	TypeKeyVersionArchived, TypeKeyVersionRestoreRequested, TypeKeyVersionRestoreApproved,
	TypeKeyVersionRestoreRejected, TypeKeyVersionRestored, TypeKeyArchiveDestroyed,
	TypeBackupCreated, TypeBackupRestored,
	TypeApprovalRequested, TypeApprovalApproved, TypeApprovalDenied, TypeApprovalExpired,
	TypeApprovalCompleted, TypeApprovalRead, TypeTenantPolicyChanged, TypeTenantPolicyRead,
	TypePolicyWarning, TypeQuotaThrottled,
	TypeKeyImportParameters, TypeKeyImported, TypeKeyImportDeleted, TypeKeyImportExpired,
	TypeAccessDenied, TypeKeyPolicyChanged, TypeKeyPolicyRead, TypeGrantCreated, TypeGrantListed, TypeGrantRetired, TypeGrantRevoked, TypeTenantCreated, TypePrincipalCreated, TypePrincipalListed, TypePrincipalDisabled,
	TypeAccessKeyCreated, TypeAccessKeyListed, TypeAccessKeyDisabled, TypeAccessKeyDeleted, TypeKeyAliasChanged, TypeKeyTagsChanged, TypeKeyDescriptionChanged, TypeGrantListedRetirable,
	TypeKeyStateChanged, TypeKeyCompromised, TypeKeyDeletionScheduled, TypeKeyDeletionCancelled,
	TypeKeyUseRefused, TypeKeyMaterialDestroyed, TypeKeyDestroyed, TypeKeyLifecycleChanged, TypeKeyRemediated, TypeKeyVersionRetired,
	TypeKeyVersionRetirementScheduled, TypeKeyVersionRetirementCancelled,
	TypeDataKeyRegistered, TypeDataKeyRead, TypeDataKeyListed, TypeDataKeyDeregistered, TypeDataKeyRewrapped,
	TypeMigrationStarted, TypeMigrationPhase, TypeMigrationControl, TypeMigrationKey,
	TypeWorkflowSignalRefused,
	TypeCloudDestinationAdded, TypeCloudCall, TypeCloudMaterialWrapped, TypeCloudPlacementChanged, TypeCloudDrift,
	TypeKeyReplicaCreated, TypeKeyReplicaSynced, TypeKeyReplicaApplied, TypeKeyReplicaUpdated, TypeKeyReplicaLagging, TypeKeyReplicaPrimaryChanged, TypeKeyReplicaDeletionScheduled,
	TypeKeyReplicaDeletionCancelled, TypeKeyReplicaDestroyed,
	TypeCloudDestinationRemoved,
}

// Outcomes.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
	OutcomeDenied  = "denied"
)

// Extension attribute names (CloudEvents extension names are lower-case
// alphanumerics only).
const (
	ExtTenant    = "tenant"
	ExtPrincipal = "principal"
	ExtOutcome   = "outcome"
	ExtRequestID = "requestid"
	ExtErrorCode = "errorcode"
)

// SpecSource is the CloudEvents source used when a record names none.
const SpecSource = "/keyflow"

// Record is what the domain knows about one auditable fact. It is converted
// to a CloudEvent by [Record.CloudEvent].
type Record struct {
	// ID makes delivery idempotent: the stream drops a second record with
	// the same ID. Leave empty for a random one; set it (see [StableID]) when
	// a retried step must not produce a second record.
	ID        string
	Type      string
	Source    string // worker or workflow that observed the fact
	Subject   string // key resource name, e.g. kf:default:key/<uuid>
	Tenant    string
	Principal string
	RequestID string
	Outcome   string
	ErrorCode string // stable error code when Outcome is not success
	Time      time.Time
	// Data is the event-type specific payload. Never secrets.
	Data map[string]any
}

// StableID derives a deterministic event ID from an idempotency key and the
// event type, so a retried activity re-publishes the same ID and JetStream's
// duplicate window drops the copy.
func StableID(idempotencyKey, eventType string) string {
	sum := sha256.Sum256([]byte(idempotencyKey + "\x00" + eventType))
	return uuid.NewSHA1(uuid.NameSpaceOID, []byte(hex.EncodeToString(sum[:]))).String()
}

// ErrInvalidRecord is returned when a record lacks a field every audit event
// must have.
var ErrInvalidRecord = errors.New("events: invalid audit record")

// CloudEvent builds the CloudEvents 1.0 form of r, filling the ID and time
// when they are empty.
func (r Record) CloudEvent() (cloudevents.Event, error) {
	if r.Type == "" || r.Tenant == "" || r.Outcome == "" {
		return cloudevents.Event{}, fmt.Errorf("%w: type, tenant and outcome are required", ErrInvalidRecord)
	}
	switch r.Outcome {
	case OutcomeSuccess, OutcomeFailure, OutcomeDenied:
	default:
		return cloudevents.Event{}, fmt.Errorf("%w: unknown outcome %q", ErrInvalidRecord, r.Outcome)
	}
	if (r.Outcome == OutcomeSuccess) != (r.ErrorCode == "") {
		return cloudevents.Event{}, fmt.Errorf("%w: an error code goes with, and only with, a failed or denied outcome", ErrInvalidRecord)
	}
	e := cloudevents.NewEvent(cloudevents.VersionV1)
	id := r.ID
	if id == "" {
		id = uuid.NewString()
	}
	e.SetID(id)
	e.SetType(r.Type)
	src := r.Source
	if src == "" {
		src = SpecSource
	}
	e.SetSource(src)
	if r.Subject != "" {
		e.SetSubject(r.Subject)
	}
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	e.SetTime(t.UTC())
	e.SetExtension(ExtTenant, r.Tenant)
	if r.Principal != "" {
		e.SetExtension(ExtPrincipal, r.Principal)
	}
	e.SetExtension(ExtOutcome, r.Outcome)
	if r.RequestID != "" {
		e.SetExtension(ExtRequestID, r.RequestID)
	}
	if r.ErrorCode != "" {
		e.SetExtension(ExtErrorCode, r.ErrorCode)
	}
	data := r.Data
	if data == nil {
		data = map[string]any{}
	}
	if err := e.SetData(cloudevents.ApplicationJSON, data); err != nil {
		return cloudevents.Event{}, fmt.Errorf("failed to encode event data: %w", err)
	}
	if err := e.Validate(); err != nil {
		return cloudevents.Event{}, fmt.Errorf("%w: %w", ErrInvalidRecord, err)
	}
	return e, nil
}

// Sink receives audit records. Emit returns only once the record is durably
// stored (or returns an error), because keyflow fails closed: no audit, no
// crypto.
type Sink interface {
	Emit(ctx context.Context, r Record) error
}

// SinkFunc adapts a function to a Sink.
type SinkFunc func(ctx context.Context, r Record) error

// Emit calls f.
func (f SinkFunc) Emit(ctx context.Context, r Record) error { return f(ctx, r) }
