package kms

import (
	"context"
	"errors"

	"github.com/keyflow/keyflow/hsm"
)

// rsaEncrypt encrypts with RSA-OAEP under the primary version's public key.
func (s *Service) rsaEncrypt(ctx context.Context, k *Key, alg EncryptionAlgorithm, plaintext []byte) ([]byte, uint32, error) {
	info := specs[k.Spec]
	if info == nil || k.Usage != UsageEncryptDecrypt || !contains(info.encryption, alg) {
		return nil, 0, newError(CodeInvalidKeyUsage, "key %s (%s, %s) does not encrypt with %q", k.ID, k.Spec, k.Usage, truncate(string(alg), 64))
	}
	if _, err := permitPrimary(k, s.now()); err != nil {
		return nil, 0, err
	}
	enc, ok := s.hsm.(hsm.RSAEncrypter)
	if !ok {
		return nil, 0, newError(CodeInternal, "this HSM has no RSA encryption")
	}
	h := oaepHash[alg]
	// OAEP holds k - 2*hLen - 2 bytes, k the modulus size in bytes.
	if max := info.pair.RSABits/8 - 2*h.Size() - 2; len(plaintext) > max {
		return nil, 0, newError(CodeValidation, "plaintext is %d bytes; %s with %s holds at most %d", len(plaintext), alg, k.Spec, max)
	}
	var ct []byte
	err := s.withHandle(ctx, k, k.PrimaryVersion, true, func(ph hsm.KeyHandle) error {
		var err error
		if ct, err = enc.EncryptOAEP(ctx, ph, h, plaintext, nil); err != nil {
			return wrapError(CodeInternal, err, "the HSM failed to encrypt")
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return ct, k.PrimaryVersion, nil
}

// rsaDecrypt decrypts raw RSA-OAEP ciphertext. With no header to name the
// version, it tries the versions that may decrypt, newest first; every
// failure is the one generic decryption error.
func (s *Service) rsaDecrypt(ctx context.Context, c Caller, ref string, alg EncryptionAlgorithm, ct []byte) (*Key, []byte, uint32, error) {
	if ref == "" {
		return nil, nil, 0, newError(CodeValidation, "decrypting with %s needs the key", truncate(string(alg), 64))
	}
	k, err := s.cachedKey(ctx, c.Tenant, ref)
	if err != nil {
		return nil, nil, 0, err
	}
	info := specs[k.Spec]
	if info == nil || k.Usage != UsageEncryptDecrypt || !contains(info.encryption, alg) {
		return k, nil, 0, newError(CodeInvalidKeyUsage, "key %s (%s, %s) does not decrypt with %q", k.ID, k.Spec, k.Usage, truncate(string(alg), 64))
	}
	if err := permitKey(k, UseProcess); err != nil {
		return k, nil, 0, err
	}
	enc, ok := s.hsm.(hsm.RSAEncrypter)
	if !ok {
		return k, nil, 0, newError(CodeInternal, "this HSM has no RSA decryption")
	}
	if len(ct) != info.pair.RSABits/8 {
		return k, nil, 0, errDecrypt(errors.New("wrong RSA ciphertext length"))
	}
	for _, v := range candidateVersions(k, 0, UseProcess) {
		var pt []byte
		var bad bool
		err := s.withHandle(ctx, k, v, false, func(h hsm.KeyHandle) error {
			var err error
			pt, err = enc.DecryptOAEP(ctx, h, oaepHash[alg], ct, nil)
			bad = errors.Is(err, hsm.ErrAuthFailed) || errors.Is(err, hsm.ErrInvalidInput)
			if err != nil && !bad {
				return wrapError(CodeInternal, err, "the HSM failed to decrypt")
			}
			return nil
		})
		if err != nil {
			return k, nil, 0, err
		}
		if !bad {
			return k, pt, v, nil
		}
	}
	return k, nil, 0, errDecrypt(errors.New("no version decrypts"))
}
