// Package api is keyflow's NATS wire protocol: the subjects, the request and
// reply messages, and the error envelope. Services (workers/rpc) and the Go
// client (workers/client) share it; schemas/api has the JSON Schemas.
//
// Subjects carry the API version and the tenant:
//
//	kf.v1.<tenant>.crypto.<op>   data plane:   encrypt, decrypt, datakey
//	kf.v1.<tenant>.keys.<op>     control plane: create, describe, list, rotate
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
)

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
}

// EncryptRequest asks to encrypt Plaintext under KeyID (an ID or alias).
type EncryptRequest struct {
	KeyID             string            `json:"keyId"`
	Plaintext         []byte            `json:"plaintext"`
	EncryptionContext map[string]string `json:"encryptionContext,omitempty"`
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
}

// ListKeysReply lists keys.
type ListKeysReply struct {
	Keys []KeyMetadata `json:"keys"`
}

// RotateKeyReply reports a finished rotation.
type RotateKeyReply struct {
	KeyID           string `json:"keyId"`
	PreviousVersion uint32 `json:"previousVersion"`
	NewVersion      uint32 `json:"newVersion"`
	WorkflowID      string `json:"workflowId"`
}

// AuditTailRequest reads the caller's tenant's audit events after a stream
// sequence, waiting up to WaitMillis for the first one.
type AuditTailRequest struct {
	AfterSeq   uint64 `json:"afterSeq,omitempty"`
	Limit      int    `json:"limit,omitempty"`
	WaitMillis int    `json:"waitMillis,omitempty"`
}

// AuditEvent is one stored event: its stream sequence and the CloudEvent.
type AuditEvent struct {
	Seq   uint64          `json:"seq"`
	Event json.RawMessage `json:"event"`
}

// AuditTailReply is a page of events.
type AuditTailReply struct {
	Events []AuditEvent `json:"events"`
}
