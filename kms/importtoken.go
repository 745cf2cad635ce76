package kms

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"time"

	"github.com/keyflow/keyflow/hsm"
)

// importToken is the payload of an import token (see imports.go). It
// holds no secret in the clear: the private key is wrapped under the
// root key.
type importToken struct {
	Tenant         string            `json:"t"`
	KeyID          string            `json:"k"`
	Algorithm      WrappingAlgorithm `json:"a"`
	Spec           WrappingKeySpec   `json:"s"`
	Expires        time.Time         `json:"e"`
	WrappedBy      string            `json:"r"`
	PublicKey      []byte            `json:"p"`
	WrappedPrivate []byte            `json:"w"`
}

// Import token format: magic "KFIT", format version 1, the JSON payload,
// and HMAC-SHA256 (32 bytes) over a label and the payload under the
// import-token key.
var tokenMagic = []byte("KFIT\x01")

const (
	tokenMACSize = 32
	maxTokenSize = 32 << 10
)

var tokenMACLabel = []byte("keyflow/import-token/v1\x00")

// The import-token key is an HMAC key of the deployment, stored like a
// key version under the system tenant with a fixed ID that no customer
// key can have (customer keys are random UUIDs, version 4; this one's
// version nibble is 0).
const (
	systemTenant     = "keyflow-system"
	importTokenKeyID = "00000000-0000-0000-0000-00000000696b"
	opTokenKeyID     = "00000000-0000-0000-0000-00000000006f" // optoken.go
)

func (s *Service) sealImportToken(ctx context.Context, t *importToken) ([]byte, error) {
	payload, err := json.Marshal(t)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to encode the import token")
	}
	mac, err := s.importTokenMAC(ctx, payload)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(tokenMagic)+len(payload)+len(mac))
	out = append(out, tokenMagic...)
	out = append(out, payload...)
	return append(out, mac...), nil
}

// openImportToken checks a token's MAC in constant time and only then
// decodes it. Every malformed or forged token is the same error.
func (s *Service) openImportToken(ctx context.Context, b []byte) (*importToken, error) {
	invalid := newError(CodeInvalidImportToken, "the import token is not valid; use the token returned with the wrapping public key")
	if len(b) < len(tokenMagic)+2+tokenMACSize || len(b) > maxTokenSize || !bytes.Equal(b[:len(tokenMagic)], tokenMagic) {
		return nil, invalid
	}
	payload, got := b[len(tokenMagic):len(b)-tokenMACSize], b[len(b)-tokenMACSize:]
	want, err := s.importTokenMAC(ctx, payload)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return nil, invalid
	}
	var t importToken
	if err := json.Unmarshal(payload, &t); err != nil {
		return nil, invalid
	}
	return &t, nil
}

// importTokenMAC computes the token MAC in the HSM.
func (s *Service) importTokenMAC(ctx context.Context, payload []byte) ([]byte, error) {
	return s.systemMAC(ctx, importTokenKeyID, tokenMACLabel, payload)
}

// systemMAC computes HMAC-SHA256 over label‖payload in the HSM under the
// deployment's system HMAC key keyID (generated on first use, stored
// wrapped under the root key like a key version; systemKey).
func (s *Service) systemMAC(ctx context.Context, keyID string, label, payload []byte) ([]byte, error) {
	macs, ok := s.hsm.(hsm.MACs)
	if !ok {
		return nil, newError(CodeUnsupportedOperation, "this HSM cannot compute HMACs")
	}
	ref := versionRef{tenant: systemTenant, keyID: keyID, version: 1}
	msg := append(bytes.Clone(label), payload...)
	for attempt := 0; ; attempt++ {
		h, release, err := s.handles.acquire(ctx, ref, func(ctx context.Context) (hsm.KeyHandle, error) {
			blob, err := s.systemKey(ctx, macs, keyID)
			if err != nil {
				return 0, err
			}
			h, err := macs.UnwrapHMACKey(ctx, s.root, blob)
			if err != nil {
				return 0, wrapError(CodeInternal, err, "failed to load a system HMAC key into the HSM")
			}
			return h, nil
		})
		if err != nil {
			return nil, err
		}
		mac, err := macs.HMACSHA256(ctx, h, msg)
		release()
		if attempt == 0 && errors.Is(err, hsm.ErrKeyHandleInvalid) {
			s.handles.drop(ref, h)
			continue
		}
		if err != nil {
			return nil, wrapError(CodeInternal, err, "the HSM failed to compute a system MAC")
		}
		return mac, nil
	}
}

// systemKey returns the wrapped system HMAC key keyID, generating it in
// the HSM on first use. Two workers racing here both generate; the store
// keeps the first, and both use it.
func (s *Service) systemKey(ctx context.Context, macs hsm.MACs, keyID string) ([]byte, error) {
	m, err := s.store.GetMaterial(ctx, systemTenant, keyID, 1)
	if err == nil {
		return m.Wrapped, nil
	}
	if !errors.Is(err, ErrStoreNotFound) {
		return nil, wrapError(CodeInternal, err, "failed to read a system HMAC key")
	}
	blob, err := macs.GenerateWrappedSecret(ctx, s.root, 32)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to generate a system HMAC key in the HSM")
	}
	m = &VersionMaterial{Tenant: systemTenant, KeyID: keyID, Version: 1, Algorithm: AlgHMACSHA256, Wrapped: blob, WrappedBy: s.label}
	if err := s.store.PutMaterial(ctx, m); err != nil {
		if !errors.Is(err, ErrStoreExists) {
			return nil, wrapError(CodeInternal, err, "failed to store a system HMAC key")
		}
		if m, err = s.store.GetMaterial(ctx, systemTenant, keyID, 1); err != nil {
			return nil, wrapError(CodeInternal, err, "failed to read a system HMAC key")
		}
	}
	return m.Wrapped, nil
}
