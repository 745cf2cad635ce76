// Package api is keyflow's NATS wire protocol: the subjects, the request and
// reply messages, and the error envelope. Services (workers/rpc) and the Go
// client (package client) share it; schemas/api has the JSON Schemas.
//
// Subjects carry the API version and the tenant:
//
//	kf.v1.<tenant>.crypto.<op>   data plane:   encrypt, decrypt, datakey
//	kf.v1.<tenant>.keys.<op>     control plane: create, describe, list, rotate, inventory
//	kf.v1.<tenant>.audit.<op>    audit:        tail
//
// The tenant in the subject must match the account the NATS server vouched
// for; the NATS account imports make any other tenant's subjects unreachable.
//
// Binary fields ([]byte) are base64 in JSON, as in AWS KMS's JSON API.
package api

import (
	"encoding/json"
	"time"
)

// Version is the wire protocol version in every subject.
const Version = "v1"

// Operations.
const (
	OpEncrypt     = "crypto.encrypt"
	OpDecrypt     = "crypto.decrypt"
	OpDataKey     = "crypto.datakey"
	OpKeyCreate   = "keys.create"
	OpKeyDescribe = "keys.describe"
	OpKeyList     = "keys.list"
	OpKeyRotate   = "keys.rotate"
	OpAuditTail   = "audit.tail"

	OpSign         = "crypto.sign"
	OpVerify       = "crypto.verify"
	OpGenerateMac  = "crypto.mac"
	OpVerifyMac    = "crypto.verifymac"
	OpGetPublicKey = "crypto.publickey"
	OpRandom       = "crypto.random"
	OpReEncrypt    = "crypto.reencrypt"
	OpDataKeyPair  = "crypto.datakeypair"
	OpBatchEncrypt = "crypto.batchencrypt"
	OpBatchDecrypt = "crypto.batchdecrypt"
	OpBatchDataKey = "crypto.batchdatakey"
)

// MaxBatchItems is the most items one batch request may carry.
const MaxBatchItems = 1000

// Subject returns the subject of op for tenant.
func Subject(tenant, op string) string { return "kf." + Version + "." + tenant + "." + op }

// Headers.
const (
	// HeaderRequestID correlates a request with its audit record. The
	// client may set it; the worker generates one otherwise.
	HeaderRequestID = "Kf-Request-Id"
	// HeaderErrorCode and HeaderError are set on error replies (the
	// names nats.go's micro package uses).
	HeaderErrorCode = "Nats-Service-Error-Code"
	HeaderError     = "Nats-Service-Error"
)

// ErrorReply is the body of every error reply.
type ErrorReply struct {
	Error ErrorBody `json:"error"`
}

// ErrorBody is a stable code and a message for humans.
type ErrorBody struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"requestId,omitempty"`
	// ApprovalID is set on PendingApprovalException: the operation waits
	// for approval (keyflow approval show ID).
	ApprovalID string `json:"approvalId,omitempty"`
	// RetryAfterMillis is set on ThrottlingException: when a retry can
	// succeed.
	RetryAfterMillis int64 `json:"retryAfterMillis,omitempty"`
}

// EncryptRequest asks to encrypt Plaintext under KeyID (an ID or alias).
type EncryptRequest struct {
	KeyID             string            `json:"keyId"`
	Plaintext         []byte            `json:"plaintext"`
	EncryptionContext map[string]string `json:"encryptionContext,omitempty"`
	// EncryptionAlgorithm is SYMMETRIC_DEFAULT (default) or, for RSA
	// keys, RSAES_OAEP_SHA_256 / RSAES_OAEP_SHA_1.
	EncryptionAlgorithm string `json:"encryptionAlgorithm,omitempty"`
}

// EncryptReply is the result of Encrypt.
type EncryptReply struct {
	KeyID          string `json:"keyId"`
	KeyVersion     uint32 `json:"keyVersion"`
	CiphertextBlob []byte `json:"ciphertextBlob"`
}

// DecryptRequest asks to decrypt; KeyID is optional (the header names it).
type DecryptRequest struct {
	CiphertextBlob    []byte            `json:"ciphertextBlob"`
	EncryptionContext map[string]string `json:"encryptionContext,omitempty"`
	KeyID             string            `json:"keyId,omitempty"`
	// EncryptionAlgorithm and KeyID are required for RSA ciphertexts.
	EncryptionAlgorithm string `json:"encryptionAlgorithm,omitempty"`
	// AllowCompromised lets a COMPROMISED key or version decrypt (audited).
	AllowCompromised bool `json:"allowCompromised,omitempty"`
}

// DecryptReply is the result of Decrypt.
type DecryptReply struct {
	KeyID      string `json:"keyId"`
	KeyVersion uint32 `json:"keyVersion"`
	Plaintext  []byte `json:"plaintext"`
}

// DataKeyRequest asks for a data key.
type DataKeyRequest struct {
	KeyID             string            `json:"keyId"`
	NumberOfBytes     int               `json:"numberOfBytes,omitempty"`
	EncryptionContext map[string]string `json:"encryptionContext,omitempty"`
	// WithoutPlaintext returns only the encrypted data key
	// (GenerateDataKeyWithoutPlaintext).
	WithoutPlaintext bool `json:"withoutPlaintext,omitempty"`
}

// DataKeyReply is a data key, in plaintext and encrypted.
type DataKeyReply struct {
	KeyID          string `json:"keyId"`
	KeyVersion     uint32 `json:"keyVersion"`
	Plaintext      []byte `json:"plaintext"`
	CiphertextBlob []byte `json:"ciphertextBlob"`
}

// CreateKeyRequest creates a key.
type CreateKeyRequest struct {
	Alias       string `json:"alias,omitempty"`
	Description string `json:"description,omitempty"`
	KeySpec     string `json:"keySpec,omitempty"`
	KeyUsage    string `json:"keyUsage,omitempty"`
	// Origin EXTERNAL makes a key for imported material (BYOK).
	Origin string `json:"origin,omitempty"`
	// Lifecycle (docs/lifecycle.md): a future activation date keeps the
	// key PRE_ACTIVE until then.
	ActivationDate       *time.Time `json:"activationDate,omitempty"`
	RotationPeriodInDays int        `json:"rotationPeriodInDays,omitempty"`
	CryptoperiodInDays   int        `json:"cryptoperiodInDays,omitempty"`
	RewrapOnRotation     bool       `json:"rewrapOnRotation,omitempty"`
	// Tags are the key's first tags (AWS's rules: docs/aws-api.md).
	Tags []Tag `json:"tags,omitempty"`
	// MultiRegion makes a multi-region primary key (docs/multi-region.md).
	MultiRegion bool `json:"multiRegion,omitempty"`
	// Exportable keeps a releasable copy of the material, which cloud
	// distribution (docs/multi-cloud.md) and KMIP Get need:
	// SYMMETRIC_DEFAULT, HMAC_256, or an RSA_3072, RSA_4096,
	// ECC_NIST_P256 or ECC_NIST_P384 key pair; fixed at creation.
	Exportable bool `json:"exportable,omitempty"`
}

// KeyRequest names one key by ID or alias.
type KeyRequest struct {
	KeyID string `json:"keyId"`
}

// KeyVersion is one version in KeyMetadata.
type KeyVersion struct {
	Version      uint32    `json:"version"`
	State        string    `json:"state"`
	Algorithm    string    `json:"algorithm"`
	CreationDate time.Time `json:"creationDate"`
	// DeactivationDate ends the version's originator-usage period.
	DeactivationDate *time.Time `json:"deactivationDate,omitempty"`
	// RetirementDate is set while the version is pending retirement.
	RetirementDate *time.Time `json:"retirementDate,omitempty"`
}

// KeyMetadata describes a key. It never contains key material.
type KeyMetadata struct {
	KeyID            string       `json:"keyId"`
	Arn              string       `json:"arn"`
	Alias            string       `json:"alias,omitempty"`
	Description      string       `json:"description,omitempty"`
	KeySpec          string       `json:"keySpec"`
	KeyUsage         string       `json:"keyUsage"`
	KeyState         string       `json:"keyState"`
	CreationDate     time.Time    `json:"creationDate"`
	CreatedBy        string       `json:"createdBy,omitempty"`
	PrimaryVersion   uint32       `json:"primaryVersion"`
	LastRotationDate *time.Time   `json:"lastRotationDate,omitempty"`
	Versions         []KeyVersion `json:"versions"`
	// Warnings are the tenant policy's warnings about the key (create
	// only), e.g. an algorithm profile's deprecation notice.
	Warnings []string `json:"warnings,omitempty"`
	// Origin is AWS_KMS (generated by keyflow) or EXTERNAL (imported);
	// ExpirationModel and ValidTo describe EXTERNAL keys' material.
	Origin          string     `json:"origin,omitempty"`
	ExpirationModel string     `json:"expirationModel,omitempty"`
	ValidTo         *time.Time `json:"validTo,omitempty"`
	// Lifecycle (docs/lifecycle.md).
	ActivationDate       *time.Time `json:"activationDate,omitempty"`
	RotationPeriodInDays int        `json:"rotationPeriodInDays,omitempty"`
	CryptoperiodInDays   int        `json:"cryptoperiodInDays,omitempty"`
	PendingDeletion      bool       `json:"pendingDeletion,omitempty"`
	DeletionDate         *time.Time `json:"deletionDate,omitempty"`
	RewrapOnRotation     bool       `json:"rewrapOnRotation,omitempty"`
	// Tags are the key's tags (keys.tag, keys.untag).
	Tags []Tag `json:"tags,omitempty"`
	// Multi-region keys (docs/multi-region.md): the primary region and
	// each replica's state and last synced version.
	MultiRegion   bool              `json:"multiRegion,omitempty"`
	PrimaryRegion string            `json:"primaryRegion,omitempty"`
	Replicas      []ReplicaMetadata `json:"replicas,omitempty"`
	// Exportable marks a key whose material may leave keyflow (KMIP Get,
	// cloud distribution).
	Exportable bool `json:"exportable,omitempty"`
	// Clouds is where copies of the key live in cloud KMSs
	// (docs/multi-cloud.md); keys.describe only.
	Clouds []CloudPlacement `json:"clouds,omitempty"`
}

// ListKeysReply lists keys.
type ListKeysReply struct {
	Keys []KeyMetadata `json:"keys"`
}

// RotateKeyReply reports a finished rotation, or one still running:
// Running is set when the workflow outlived the server's wait, and then only
// KeyID and WorkflowID are filled (the workflow goes on and records its own
// outcome in the audit trail).
type RotateKeyReply struct {
	KeyID           string `json:"keyId"`
	PreviousVersion uint32 `json:"previousVersion,omitempty"`
	NewVersion      uint32 `json:"newVersion,omitempty"`
	WorkflowID      string `json:"workflowId"`
	Running         bool   `json:"running,omitempty"`
	// Rewrap reports the rewrap that followed (rotation_rewrap.go).
	Rewrap *RewrapCounts `json:"rewrap,omitempty"`
}

// AuditTailRequest reads the caller's tenant's audit events after a cursor,
// waiting up to WaitMillis for the first one. KeyID and Type filter on the
// server (by subject), so a reader receives only what it asked for.
type AuditTailRequest struct {
	// After is the cursor of the last event read (AuditEvent.Cursor, or a
	// reply's Next); "" starts at the beginning. Cursors are opaque and
	// bound to the tenant: they do not reveal the stream's position, so
	// they say nothing of other tenants' activity.
	After      string `json:"after,omitempty"`
	Limit      int    `json:"limit,omitempty"`
	WaitMillis int    `json:"waitMillis,omitempty"`
	// KeyID keeps the events about one key: a key ID, an alias or
	// "alias/NAME" (resolved by the server, which records a describe).
	KeyID string `json:"keyId,omitempty"`
	// Type keeps the events whose type matches a glob: dot-separated
	// parts, each a literal or "*"; a final "*" matches the rest
	// (io.keyflow.crypto.*).
	Type string `json:"type,omitempty"`
	// Tenant is the tenant whose trail to read; only the caller's own
	// (the default) is allowed until roles exist.
	Tenant string `json:"tenant,omitempty"`
}

// AuditEvent is one stored event: an opaque cursor to continue after it,
// and the CloudEvent.
type AuditEvent struct {
	Cursor string          `json:"cursor"`
	Event  json.RawMessage `json:"event"`
}

// AuditTailReply is a page of events.
type AuditTailReply struct {
	Events []AuditEvent `json:"events"`
	// KeyID is the key ID the request's keyId resolved to; send it on
	// the next pages, so an alias is resolved (and recorded) once.
	KeyID string `json:"keyId,omitempty"`
	// Next is the cursor to send as after on the next request: after the
	// last event returned, or, on a filtered page without events, after
	// the stretch in which nothing matched.
	Next string `json:"next,omitempty"`
}

// SignRequest signs a message or a digest.
type SignRequest struct {
	KeyID            string `json:"keyId"`
	Message          []byte `json:"message"`
	MessageType      string `json:"messageType,omitempty"` // RAW (default) or DIGEST
	SigningAlgorithm string `json:"signingAlgorithm"`
	// SignatureContext is the FIPS 204/205 context string of ML-DSA and
	// SLH-DSA signatures (at most 255 bytes); verify needs the same.
	SignatureContext []byte `json:"signatureContext,omitempty"`
}

// SignReply is a signature (DER for ECDSA).
type SignReply struct {
	KeyID            string `json:"keyId"`
	KeyVersion       uint32 `json:"keyVersion"`
	SigningAlgorithm string `json:"signingAlgorithm"`
	Signature        []byte `json:"signature"`
	// AdditionalSignatures are the migration target's signatures during
	// a campaign's dual-signing period (see migrate.go).
	AdditionalSignatures []AdditionalSignature `json:"additionalSignatures,omitempty"`
}

// VerifyRequest verifies a signature. KeyVersion 0: any version that may.
type VerifyRequest struct {
	KeyID            string `json:"keyId"`
	KeyVersion       uint32 `json:"keyVersion,omitempty"`
	Message          []byte `json:"message"`
	MessageType      string `json:"messageType,omitempty"`
	SigningAlgorithm string `json:"signingAlgorithm"`
	Signature        []byte `json:"signature"`
	SignatureContext []byte `json:"signatureContext,omitempty"`
	// AllowCompromised lets a COMPROMISED key or version verify (audited).
	AllowCompromised bool `json:"allowCompromised,omitempty"`
}

// VerifyReply reports a valid signature; an invalid one is the error
// KMSInvalidSignatureException.
type VerifyReply struct {
	KeyID            string `json:"keyId"`
	KeyVersion       uint32 `json:"keyVersion"`
	SignatureValid   bool   `json:"signatureValid"`
	SigningAlgorithm string `json:"signingAlgorithm"`
}

// MacRequest computes (or, with Mac set, verifies) an HMAC.
type MacRequest struct {
	KeyID        string `json:"keyId"`
	Message      []byte `json:"message"`
	MacAlgorithm string `json:"macAlgorithm"`
	Mac          []byte `json:"mac,omitempty"`
}

// MacReply is a MAC, or (for verifymac) the verdict; an invalid MAC is the
// error KMSInvalidMacException.
type MacReply struct {
	KeyID        string `json:"keyId"`
	KeyVersion   uint32 `json:"keyVersion"`
	MacAlgorithm string `json:"macAlgorithm"`
	Mac          []byte `json:"mac,omitempty"`
	MacValid     bool   `json:"macValid,omitempty"`
}

// PublicKeyRequest asks for a version's public key (0: the primary).
type PublicKeyRequest struct {
	KeyID      string `json:"keyId"`
	KeyVersion uint32 `json:"keyVersion,omitempty"`
}

// PublicKeyReply is a public key as DER SubjectPublicKeyInfo.
type PublicKeyReply struct {
	KeyID                string   `json:"keyId"`
	KeyVersion           uint32   `json:"keyVersion"`
	KeySpec              string   `json:"keySpec"`
	KeyUsage             string   `json:"keyUsage"`
	PublicKey            []byte   `json:"publicKey"`
	SigningAlgorithms    []string `json:"signingAlgorithms,omitempty"`
	EncryptionAlgorithms []string `json:"encryptionAlgorithms,omitempty"`
}

// RandomRequest asks for random bytes from the HSM.
type RandomRequest struct {
	NumberOfBytes int `json:"numberOfBytes"`
}

// RandomReply holds them.
type RandomReply struct {
	Plaintext []byte `json:"plaintext"`
}

// ReEncryptRequest re-encrypts a ciphertext without revealing it.
type ReEncryptRequest struct {
	CiphertextBlob               []byte            `json:"ciphertextBlob"`
	SourceEncryptionContext      map[string]string `json:"sourceEncryptionContext,omitempty"`
	SourceKeyID                  string            `json:"sourceKeyId,omitempty"`
	DestinationKeyID             string            `json:"destinationKeyId,omitempty"`
	DestinationEncryptionContext map[string]string `json:"destinationEncryptionContext,omitempty"`
}

// ReEncryptReply is the new ciphertext.
type ReEncryptReply struct {
	SourceKeyID      string `json:"sourceKeyId"`
	SourceKeyVersion uint32 `json:"sourceKeyVersion"`
	KeyID            string `json:"keyId"`
	KeyVersion       uint32 `json:"keyVersion"`
	CiphertextBlob   []byte `json:"ciphertextBlob"`
}

// DataKeyPairRequest asks for a data key pair (ECC_NIST_P256 or RSA_3072).
type DataKeyPairRequest struct {
	KeyID             string            `json:"keyId"`
	KeyPairSpec       string            `json:"keyPairSpec"`
	EncryptionContext map[string]string `json:"encryptionContext,omitempty"`
	WithoutPlaintext  bool              `json:"withoutPlaintext,omitempty"`
}

// DataKeyPairReply is the pair: public key (DER SPKI), private key (DER
// PKCS#8) in plaintext unless withoutPlaintext, and encrypted.
type DataKeyPairReply struct {
	KeyID                    string `json:"keyId"`
	KeyVersion               uint32 `json:"keyVersion"`
	KeyPairSpec              string `json:"keyPairSpec"`
	PublicKey                []byte `json:"publicKey"`
	PrivateKeyPlaintext      []byte `json:"privateKeyPlaintext,omitempty"`
	PrivateKeyCiphertextBlob []byte `json:"privateKeyCiphertextBlob"`
}

// BatchEncryptRequest carries up to MaxBatchItems encrypt requests.
type BatchEncryptRequest struct {
	Items []EncryptRequest `json:"items"`
}

// BatchDecryptRequest carries up to MaxBatchItems decrypt requests.
type BatchDecryptRequest struct {
	Items []DecryptRequest `json:"items"`
}

// BatchDataKeyRequest carries up to MaxBatchItems data key requests.
type BatchDataKeyRequest struct {
	Items []DataKeyRequest `json:"items"`
}

// BatchReply has one result per item, in order: either the item's reply or
// its error. One bad item does not fail the batch.
type BatchReply[T any] struct {
	Results []BatchResult[T] `json:"results"`
}

// BatchResult is one item's outcome.
type BatchResult[T any] struct {
	Result *T         `json:"result,omitempty"`
	Error  *ErrorBody `json:"error,omitempty"`
}
