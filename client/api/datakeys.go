package api

import "time"

// The data-key registry and rewrap:
//
//	kf.v1.<tenant>.datakeys.register    register a wrapped data key
//	kf.v1.<tenant>.datakeys.get         its current blob (after rewraps)
//	kf.v1.<tenant>.datakeys.list        a key's registrations, with a cursor
//	kf.v1.<tenant>.datakeys.deregister  forget a registration
//	kf.v1.<tenant>.crypto.rewrap        a batch of ciphertexts to the current primary
//
// Applications register the wrapped data keys they store, so that
// keyflow can rewrap them after a rotation, a compromise or a migration
// to a post-quantum key; they fetch the current blob by registration ID.

// Registry and rewrap operations.
const (
	OpDataKeyRegister   = "datakeys.register"
	OpDataKeyGet        = "datakeys.get"
	OpDataKeyList       = "datakeys.list"
	OpDataKeyDeregister = "datakeys.deregister"
	OpRewrap            = "crypto.rewrap"
)

// RegisterDataKeyRequest registers a wrapped data key: a keyflow
// ciphertext with the encryption context it was made with, or a raw
// RSA-OAEP ciphertext with its keyId and encryptionAlgorithm.
type RegisterDataKeyRequest struct {
	CiphertextBlob      []byte            `json:"ciphertextBlob"`
	EncryptionContext   map[string]string `json:"encryptionContext,omitempty"`
	KeyID               string            `json:"keyId,omitempty"`
	EncryptionAlgorithm string            `json:"encryptionAlgorithm,omitempty"`
	Label               string            `json:"label,omitempty"`
}

// DataKeyRegistration is a registration with its current blob.
type DataKeyRegistration struct {
	RegistrationID      string            `json:"registrationId"`
	KeyID               string            `json:"keyId"`
	KeyVersion          uint32            `json:"keyVersion"`
	EncryptionAlgorithm string            `json:"encryptionAlgorithm,omitempty"`
	CiphertextBlob      []byte            `json:"ciphertextBlob"`
	EncryptionContext   map[string]string `json:"encryptionContext,omitempty"`
	Label               string            `json:"label,omitempty"`
	CreatedAt           time.Time         `json:"createdAt"`
	UpdatedAt           time.Time         `json:"updatedAt"`
	Rewraps             int               `json:"rewraps"`
}

// RegistrationRequest names a registration (get, deregister); deregister
// answers with it too.
type RegistrationRequest struct {
	RegistrationID string `json:"registrationId"`
}

// ListDataKeysRequest asks for a page of a key's registrations, limited to
// versions when given. Cursor is the previous page's nextCursor.
type ListDataKeysRequest struct {
	KeyID    string   `json:"keyId"`
	Versions []uint32 `json:"versions,omitempty"`
	Cursor   string   `json:"cursor,omitempty"`
	Limit    int      `json:"limit,omitempty"`
}

// ListDataKeysReply is a page of registrations and, on the first page, the
// key's counts per version (all pages), keyed by the version number as a
// string. Pages follow the registry's own order; a page may hold fewer
// than limit registrations and still have a nextCursor.
type ListDataKeysReply struct {
	KeyID         string                `json:"keyId"`
	Registrations []DataKeyRegistration `json:"registrations"`
	NextCursor    string                `json:"nextCursor,omitempty"`
	Counts        map[string]int        `json:"counts"`
}

// RewrapRequest moves up to MaxBatchItems ciphertexts to the current
// primary version of destinationKeyId (each one's own key when absent).
type RewrapRequest struct {
	Items            []RewrapItem `json:"items"`
	DestinationKeyID string       `json:"destinationKeyId,omitempty"`
}

// RewrapItem is one ciphertext of a rewrap; keyId and encryptionAlgorithm
// for raw RSA-OAEP ciphertexts only. The context is kept.
type RewrapItem struct {
	CiphertextBlob      []byte            `json:"ciphertextBlob"`
	EncryptionContext   map[string]string `json:"encryptionContext,omitempty"`
	KeyID               string            `json:"keyId,omitempty"`
	EncryptionAlgorithm string            `json:"encryptionAlgorithm,omitempty"`
}
