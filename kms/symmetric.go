package kms

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/hsm"
)

// newIV draws a 96-bit GCM IV in Go, never in the HSM: SoftHSM would accept
// an empty IV and repeat its keystream.
func newIV() ([]byte, error) {
	iv := make([]byte, envelopeIVSize)
	if _, err := rand.Read(iv); err != nil {
		return nil, fmt.Errorf("failed to draw an IV: %w", err)
	}
	return iv, nil
}

// sealWith encrypts plaintext under k's primary version into an envelope.
func (s *Service) sealWith(ctx context.Context, k *Key, tenant string, plaintext []byte, ec EncryptionContext) ([]byte, uint32, error) {
	if info := specs[k.Spec]; info != nil && info.hpkeKEM != nil {
		return s.sealHPKE(ctx, k, tenant, plaintext, ec)
	}
	if k.Usage != UsageEncryptDecrypt || k.Spec != SpecSymmetricDefault {
		return nil, 0, newError(CodeInvalidKeyUsage, "key %s (%s, %s) cannot encrypt with SYMMETRIC_DEFAULT", k.ID, k.Spec, k.Usage)
	}
	v, err := permitPrimary(k, s.now())
	if err != nil {
		return nil, 0, err
	}
	iv, err := newIV()
	if err != nil {
		return nil, 0, wrapError(CodeInternal, err, "failed to encrypt")
	}
	env := &envelope{alg: v.Algorithm, keyID: k.ID, version: v.Number, iv: iv}
	err = s.withHandle(ctx, k, v.Number, false, func(h hsm.KeyHandle) error {
		body, err := s.hsm.EncryptGCM(ctx, h, iv, plaintext, aad(env.headerBytes(), tenant, ec))
		if err != nil {
			return wrapError(CodeInternal, err, "the HSM failed to encrypt")
		}
		env.body = body
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return env.marshal(), v.Number, nil
}

// EncryptParams are the inputs of Encrypt.
type EncryptParams struct {
	KeyRef    string
	Plaintext []byte
	Context   EncryptionContext
	// Algorithm is SYMMETRIC_DEFAULT (the default) for symmetric keys, or
	// RSAES_OAEP_SHA_256 / RSAES_OAEP_SHA_1 for RSA keys. RSA ciphertexts
	// are raw (no keyflow header), as AWS returns them.
	Algorithm EncryptionAlgorithm
}

// EncryptResult is the output of Encrypt.
type EncryptResult struct {
	KeyID      string
	KeyVersion uint32
	Ciphertext []byte
}

// Encrypt encrypts up to MaxPlaintext bytes under the key's primary version.
func (s *Service) Encrypt(ctx context.Context, c Caller, p EncryptParams) (res *EncryptResult, err error) {
	var k *Key
	defer s.finish(ctx, c, events.TypeEncrypt, &err, func() (string, map[string]any) {
		subject, data := "", map[string]any{"plaintextBytes": len(p.Plaintext), "contextKeys": contextKeys(p.Context)}
		if k != nil {
			subject = k.ResourceName()
		}
		if res != nil {
			data["keyVersion"] = res.KeyVersion
		}
		return subject, data
	}, func() {
		res = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if len(p.Plaintext) == 0 {
		return nil, newError(CodeValidation, "plaintext is empty")
	}
	if len(p.Plaintext) > MaxPlaintext {
		return nil, newError(CodeValidation, "plaintext is %d bytes; the limit is %d", len(p.Plaintext), MaxPlaintext)
	}
	if err := p.Context.validate(); err != nil {
		return nil, err
	}
	k, err = s.cachedKey(ctx, c.Tenant, p.KeyRef)
	if err != nil {
		return nil, err
	}
	if p.Algorithm != "" && p.Algorithm != EncSymmetricDefault {
		if len(p.Context) > 0 {
			return nil, newError(CodeValidation, "RSA-OAEP ciphertexts cannot bind an encryption context; leave it out")
		}
		ct, ver, err := s.rsaEncrypt(ctx, k, p.Algorithm, p.Plaintext)
		if err != nil {
			return nil, err
		}
		return &EncryptResult{KeyID: k.ID, KeyVersion: ver, Ciphertext: ct}, nil
	}
	ct, ver, err := s.sealWith(ctx, k, c.Tenant, p.Plaintext, p.Context)
	if err != nil {
		return nil, err
	}
	return &EncryptResult{KeyID: k.ID, KeyVersion: ver, Ciphertext: ct}, nil
}

// DecryptParams are the inputs of Decrypt. KeyRef is optional; when given,
// the ciphertext must belong to that key.
type DecryptParams struct {
	KeyRef     string
	Ciphertext []byte
	Context    EncryptionContext
	// Algorithm is needed for RSA keys (whose ciphertexts carry no
	// header), together with KeyRef.
	Algorithm EncryptionAlgorithm
	// AllowCompromised is the explicit override that lets a COMPROMISED
	// key or version decrypt; its use is recorded in the audit event.
	AllowCompromised bool
}

// DecryptResult is the output of Decrypt. The caller should zero Plaintext
// when done with it.
type DecryptResult struct {
	KeyID      string
	KeyVersion uint32
	Plaintext  []byte
}

// Decrypt opens a ciphertext made by Encrypt or GenerateDataKey. The key and
// version come from the ciphertext header. Every failure of the ciphertext
// itself (malformed, unknown or foreign key, wrong context, bad tag) is the
// same InvalidCiphertextException.
func (s *Service) Decrypt(ctx context.Context, c Caller, p DecryptParams) (res *DecryptResult, err error) {
	var k *Key
	defer s.finish(ctx, c, events.TypeDecrypt, &err, func() (string, map[string]any) {
		subject, data := "", map[string]any{"ciphertextBytes": len(p.Ciphertext), "contextKeys": contextKeys(p.Context)}
		if k != nil {
			subject = k.ResourceName()
		}
		if res != nil {
			data["keyVersion"] = res.KeyVersion
		}
		if p.AllowCompromised {
			data["allowCompromised"] = true
		}
		return subject, data
	}, func() {
		res = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if err := p.Context.validate(); err != nil {
		return nil, err
	}
	var pt []byte
	var ver uint32
	if p.Algorithm != "" && p.Algorithm != EncSymmetricDefault {
		k, pt, ver, err = s.rsaDecrypt(ctx, c, p.KeyRef, p.Algorithm, p.Ciphertext)
	} else {
		k, pt, ver, err = s.open(ctx, c.Tenant, p.KeyRef, p.Ciphertext, p.Context, processOf(p.AllowCompromised))
	}
	if err != nil {
		return nil, err
	}
	return &DecryptResult{KeyID: k.ID, KeyVersion: ver, Plaintext: pt}, nil
}

// open is the shared decryption path. It returns the key when the header
// named a key of this tenant, even on failure, so the audit record can name
// it.
func (s *Service) open(ctx context.Context, tenant, keyRef string, ciphertext []byte, ec EncryptionContext, use Use) (*Key, []byte, uint32, error) {
	env, err := parseEnvelope(ciphertext)
	if err != nil {
		return nil, nil, 0, errDecrypt(err)
	}
	k, err := s.cachedKey(ctx, tenant, env.keyID)
	if err != nil {
		if CodeOf(err) == CodeNotFound {
			return nil, nil, 0, errDecrypt(err)
		}
		return nil, nil, 0, err
	}
	if keyRef != "" {
		want, err := s.cachedKey(ctx, tenant, keyRef)
		if err != nil || want.ID != k.ID {
			return k, nil, 0, errDecrypt(errors.New("ciphertext belongs to another key"))
		}
	}
	v, ok := k.Version(env.version)
	if !ok || v.Algorithm != env.alg {
		return k, nil, 0, errDecrypt(errors.New("unknown key version"))
	}
	if err := permitVersion(k, v, use, s.now()); err != nil {
		return k, nil, 0, err
	}
	if v.Archived {
		return k, nil, 0, errArchived(k, v)
	}
	if info := specs[k.Spec]; info != nil && info.hpkeKEM != nil {
		pt, err := s.openHPKE(ctx, k, env, tenant, ec)
		return k, pt, v.Number, err
	}
	var pt []byte
	err = s.withHandle(ctx, k, v.Number, false, func(h hsm.KeyHandle) error {
		var err error
		pt, err = s.hsm.DecryptGCM(ctx, h, env.iv, env.body, aad(env.header, tenant, ec))
		switch {
		case err == nil:
			return nil
		case errors.Is(err, hsm.ErrAuthFailed) || errors.Is(err, hsm.ErrInvalidInput):
			return errDecrypt(err)
		default:
			return wrapError(CodeInternal, err, "the HSM failed to decrypt")
		}
	})
	if err != nil {
		return k, nil, 0, err
	}
	return k, pt, v.Number, nil
}

// GenerateDataKeyParams are the inputs of GenerateDataKey.
type GenerateDataKeyParams struct {
	KeyRef        string
	NumberOfBytes int // default 32 (AES-256); 1..1024
	Context       EncryptionContext
}

// DataKeyResult is a data key: its plaintext (for the caller to use and
// zero) and the same key encrypted under the KMS key (to store).
type DataKeyResult struct {
	KeyID          string
	KeyVersion     uint32
	Plaintext      []byte
	CiphertextBlob []byte
}

// GenerateDataKey draws a data key from the HSM's generator and returns it
// with its encryption under the key, for envelope encryption. The blob is an
// ordinary ciphertext: Decrypt opens it.
func (s *Service) GenerateDataKey(ctx context.Context, c Caller, p GenerateDataKeyParams) (res *DataKeyResult, err error) {
	var k *Key
	defer s.finish(ctx, c, events.TypeGenerateDataKey, &err, func() (string, map[string]any) {
		subject, data := "", map[string]any{"numberOfBytes": p.NumberOfBytes, "contextKeys": contextKeys(p.Context)}
		if k != nil {
			subject = k.ResourceName()
		}
		if res != nil {
			data["keyVersion"] = res.KeyVersion
		}
		return subject, data
	}, func() {
		if res != nil {
			clear(res.Plaintext)
			res = nil
		}
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if p.NumberOfBytes == 0 {
		p.NumberOfBytes = 32
	}
	if p.NumberOfBytes < 1 || p.NumberOfBytes > 1024 {
		return nil, newError(CodeValidation, "numberOfBytes must be between 1 and 1024")
	}
	if err := p.Context.validate(); err != nil {
		return nil, err
	}
	k, err = s.cachedKey(ctx, c.Tenant, p.KeyRef)
	if err != nil {
		return nil, err
	}
	dk, err := s.hsm.GenerateRandom(ctx, p.NumberOfBytes)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "the HSM failed to generate random bytes")
	}
	ct, ver, err := s.sealWith(ctx, k, c.Tenant, dk, p.Context)
	if err != nil {
		clear(dk)
		return nil, err
	}
	return &DataKeyResult{KeyID: k.ID, KeyVersion: ver, Plaintext: dk, CiphertextBlob: ct}, nil
}

// contextKeys lists the encryption context's keys (not values, which may be
// sensitive to the caller) for the audit record.
func contextKeys(ec EncryptionContext) []string {
	// An invalid context is recorded as absent: its size is unbounded and
	// the record of the refusal must still fit in the stream.
	if len(ec) == 0 || ec.validate() != nil {
		return nil
	}
	out := make([]string, 0, len(ec))
	for k := range ec {
		out = append(out, k)
	}
	// Deterministic output makes audit records comparable.
	sortStrings(out)
	return out
}
