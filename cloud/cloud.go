// Package cloud is keyflow's door to the cloud providers' own KMSs (the
// Multi-Cloud KMS pattern, docs/multi-cloud.md): keyflow owns a key and its
// lifecycle, and AWS KMS, Google Cloud KMS and Azure Key Vault hold copies
// that their services use.
//
// One small interface, [Connector], fronts every provider. Its six calls
// are the lifecycle steps keyflow propagates: Import (create the key in the
// provider and import its first material), Rotate (import new material as
// the provider's new primary), Enable, Disable, ScheduleDeletion and
// Describe (the provider's view, which the reconcile compares with
// keyflow's). Each provider lives in a subpackage and uses the provider's
// official Go SDK: cloud/awskms, cloud/gcpkms, cloud/azurekv.
//
// Key material never passes through this package in the clear. A
// connector asks the provider for its wrapping public key, and hands it to
// a [Wrapper] that keyflow supplies (package kms wraps the material for
// that public key); the connector only ever sees the wrapped bytes, which
// it sends to the provider's import call. This package imports nothing of
// keyflow: it is a leaf that callers plug the domain into.
//
// Every call to a provider is noted, with the provider's request ID, in
// the [Journal] that the caller put in the context ([WithJournal]); the
// caller turns each note into an audit record. Errors are [*Error]s that
// say whether a retry can help (a provider that is down) or not (a
// refusal such as a quota).
//
// Credentials come from each SDK's standard chain (environment, shared
// files, workload identity); a destination may name a file instead. This
// package stores no secrets.
package cloud

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Providers.
const (
	ProviderAWS   = "aws"
	ProviderGCP   = "gcp"
	ProviderAzure = "azure"
)

// Wrapping schemes a provider may ask for.
const (
	// SchemeRSAOAEPSHA256 is RSA-OAEP with SHA-256 (label hash and MGF1)
	// of the raw key material (AWS RSAES_OAEP_SHA_256).
	SchemeRSAOAEPSHA256 = "RSAES_OAEP_SHA_256"
	// SchemeRSAAESKeyWrapSHA256 is PKCS#11 CKM_RSA_AES_KEY_WRAP: RSA-OAEP
	// (SHA-256) of a fresh AES-256 key, followed by AES-KWP (RFC 5649) of
	// the key material under that AES key (GCP
	// RSA_OAEP_3072_SHA256_AES_256, AWS RSA_AES_KEY_WRAP_SHA_256).
	SchemeRSAAESKeyWrapSHA256 = "RSA_AES_KEY_WRAP_SHA_256"
	// SchemeRSAAESKeyWrapSHA1 is the same with SHA-1 OAEP (the Azure
	// Key Vault BYOK key-transfer blob, CKM_RSA_AES_KEY_WRAP).
	SchemeRSAAESKeyWrapSHA1 = "RSA_AES_KEY_WRAP_SHA_1"
)

// Key specs keyflow distributes. The connectors map them to the
// provider's names. A key pair's spec names its purpose too, since a
// provider fixes it when the key is made (SIGN: sign/verify; DECRYPT:
// RSA-OAEP decrypt/encrypt).
const (
	SpecAES256         = "AES_256"
	SpecRSA3072Sign    = "RSA_3072_SIGN"
	SpecRSA3072Decrypt = "RSA_3072_DECRYPT"
	SpecRSA4096Sign    = "RSA_4096_SIGN"
	SpecRSA4096Decrypt = "RSA_4096_DECRYPT"
	SpecECP256Sign     = "EC_P256_SIGN"
	SpecECP384Sign     = "EC_P384_SIGN"
)

// KeyPairSpecs are the key pair specs, whose material is a private key
// (PKCS#8 DER), wrapped only with an RSA-AES scheme.
var KeyPairSpecs = []string{SpecRSA3072Sign, SpecRSA3072Decrypt, SpecRSA4096Sign, SpecRSA4096Decrypt, SpecECP256Sign, SpecECP384Sign}

// Accepts lists the specs each provider imports here; docs/multi-cloud.md
// gives the reasons. Every provider takes AES-256 and the exportable RSA
// and EC key pairs (AWS with RSA_AES_KEY_WRAP_SHA_256). An endpoint that
// takes less fails at the provider, with the provider's error recorded:
// local-kms imports 32-byte symmetric keys only, keyflow's own AWS API
// imports RSA private keys but no EC ones.
var Accepts = map[string][]string{
	ProviderAWS:   append([]string{SpecAES256}, KeyPairSpecs...),
	ProviderGCP:   append([]string{SpecAES256}, KeyPairSpecs...),
	ProviderAzure: append([]string{SpecAES256}, KeyPairSpecs...),
}

// CheckSpec refuses, before any call to the provider, a spec the
// provider does not take (ErrUnsupported).
func CheckSpec(provider, spec string) error {
	if !slices.Contains(Accepts[provider], spec) {
		return fmt.Errorf("%w: %s takes %v, not %s", ErrUnsupported, provider, Accepts[provider], spec)
	}
	return nil
}

// Provider-side key states, normalised.
const (
	StateEnabled         = "ENABLED"
	StateDisabled        = "DISABLED"
	StatePendingDeletion = "PENDING_DELETION"
	StatePendingImport   = "PENDING_IMPORT"
	StateMissing         = "MISSING"
)

// Connector is one provider destination.
type Connector interface {
	// Import creates the key in the provider (unless p.Resource names one
	// already made by an earlier attempt) and imports its first material.
	Import(ctx context.Context, p ImportParams) (*ImportResult, error)
	// Rotate imports new material as the key's new primary in the
	// provider, the way the provider can take it.
	Rotate(ctx context.Context, p RotateParams) (*ImportResult, error)
	Enable(ctx context.Context, p KeyRef) error
	Disable(ctx context.Context, p KeyRef) error
	// ScheduleDeletion removes the key with the provider's own deletion
	// window (Days, where the provider takes one).
	ScheduleDeletion(ctx context.Context, p DeletionParams) error
	// Describe returns the provider's view of the key. A key the provider
	// no longer has is State StateMissing, not an error.
	Describe(ctx context.Context, p KeyRef) (*Description, error)
}

// WrappingKey is what a provider issues to import material.
type WrappingKey struct {
	Scheme string
	// PublicKey is the RSA public key, DER SubjectPublicKeyInfo.
	PublicKey []byte
}

// Wrapper wraps one key version's material for a provider's wrapping key
// and returns only the wrapped bytes.
type Wrapper func(ctx context.Context, w WrappingKey) ([]byte, error)

// KeyRef names a distributed key in the provider: Resource is the
// provider's name for it (an ARN, a CryptoKey name, a Key Vault key ID),
// and Versions its provider versions in keyflow's order (AWS: one key ID
// per keyflow version, since AWS rotation of imported keys is a new key).
type KeyRef struct {
	KeyID    string // keyflow's key ID
	Resource string
	Versions []string
}

// ImportParams are the inputs of Import.
type ImportParams struct {
	KeyID      string
	KeyVersion uint32
	Spec       string
	Resource   string // set when an earlier attempt created the key
	Wrap       Wrapper
}

// RotateParams are the inputs of Rotate.
type RotateParams struct {
	Key        KeyRef
	KeyVersion uint32 // keyflow's new version
	Spec       string
	Wrap       Wrapper
}

// ImportResult names what the provider now holds.
type ImportResult struct {
	Resource string
	// ProviderVersion is the provider's name for the imported version (a
	// CryptoKeyVersion, a Key Vault key version, an AWS key ID).
	ProviderVersion string
}

// DeletionParams are the inputs of ScheduleDeletion.
type DeletionParams struct {
	Key  KeyRef
	Days int
}

// Description is the provider's view of a key.
type Description struct {
	Resource string
	State    string
	// Primary is the provider version that encrypts.
	Primary string
	// Versions are the provider versions it has, with their states.
	Versions map[string]string
}

// Call is one request to a provider, as the audit trail records it.
type Call struct {
	Operation string
	RequestID string
	Resource  string
	ErrorCode string // empty on success
}

// Journal collects the calls of one step. It is safe for concurrent use.
type Journal struct {
	mu    sync.Mutex
	calls []Call
}

// Calls returns the calls noted so far.
func (j *Journal) Calls() []Call {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]Call(nil), j.calls...)
}

type journalKey struct{}

// WithJournal returns a context whose provider calls are noted in j.
func WithJournal(ctx context.Context, j *Journal) context.Context {
	return context.WithValue(ctx, journalKey{}, j)
}

// Note records a call in the context's journal, if any. Connectors call it
// once per provider request.
func Note(ctx context.Context, c Call) {
	if j, ok := ctx.Value(journalKey{}).(*Journal); ok {
		j.mu.Lock()
		j.calls = append(j.calls, c)
		j.mu.Unlock()
	}
}

// Error is a provider call that failed.
type Error struct {
	Operation string
	// Code is the provider's error code, or "Unavailable" when the
	// provider could not be reached.
	Code string
	// Retryable says whether the same call may succeed later (a provider
	// that is down or throttling), as opposed to a refusal.
	Retryable bool
	RequestID string
	Err       error
}

func (e *Error) Error() string {
	return fmt.Sprintf("cloud: %s failed (%s): %v", e.Operation, e.Code, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// CodeUnavailable is the Error.Code of a provider that did not answer.
const CodeUnavailable = "Unavailable"

// ErrUnsupported is returned for a spec or operation a provider cannot do.
var ErrUnsupported = errors.New("cloud: not supported by this provider")

// AsError returns err's *Error, if it has one.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// Restorer is the optional Connector ability to cancel a scheduled
// deletion (keyflow's CancelDeletion of a distributed key): the
// provider's copies come back under their names, and the step that
// follows enables them or leaves them disabled. A connector without it
// cannot take a cancellation back; the step fails with ErrUnsupported.
type Restorer interface {
	Restore(ctx context.Context, p RestoreParams) error
}

// RestoreParams are the inputs of Restore.
type RestoreParams struct {
	Key KeyRef
	// KeyVersions are keyflow's numbers of Key.Versions, in the same
	// order; Primary is the provider version that encrypts again.
	KeyVersions []uint32
	Primary     string
}
