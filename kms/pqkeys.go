package kms

import (
	"context"
	"crypto/hpke"
	"crypto/rand"
	"errors"
	"fmt"
	"io"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/pqc"
)

// Post-quantum keys are software keys: SoftHSM has no PQC mechanisms, so
// the key pair is generated in Go (package pqc) and the private key is
// wrapped at once under the HSM root key (hsm.SecretWrapper). Each
// operation unwraps it into memory, uses it and zeroes it. An HSM with PQC
// mechanisms would implement the same operations behind the hsm interfaces.

// newSoftwareMaterial generates a PQC key pair and wraps its private key.
func (s *Service) newSoftwareMaterial(ctx context.Context, m *VersionMaterial, info *specInfo) error {
	if _, ok := s.hsm.(hsm.SecretWrapper); !ok {
		return newError(CodeValidation, "this HSM cannot protect %s keys", info.spec)
	}
	gen, err := pqKeyGenFor(info)
	if err != nil {
		return err
	}
	pub, priv, err := gen.GenerateKey(rand.Reader)
	if err != nil {
		return wrapError(CodeInternal, err, "failed to generate a %s key", info.spec)
	}
	defer pqc.Zero(priv)
	return s.wrapSoftwareMaterial(ctx, m, info, pub, priv)
}

// pqKeyGen is what pqc.KEM and pqc.Signer have in common: making key pairs.
type pqKeyGen interface {
	SeedSize() int
	GenerateKey(rand io.Reader) (pub, priv []byte, err error)
	DeriveKey(seed []byte) (pub, priv []byte, err error)
}

// pqKeyGenFor returns the pqc algorithm of a software key spec.
func pqKeyGenFor(info *specInfo) (pqKeyGen, error) {
	if kem, err := pqc.KEMByName(info.pqName); err == nil {
		return kem, nil
	}
	if sig, err := pqc.SignerByName(info.pqName); err == nil {
		return sig, nil
	}
	return nil, newError(CodeInternal, "no algorithm %s in the pqc registry", info.pqName)
}

// wrapSoftwareMaterial wraps priv under the root key into m, with pub. The
// caller zeroes priv.
func (s *Service) wrapSoftwareMaterial(ctx context.Context, m *VersionMaterial, info *specInfo, pub, priv []byte) error {
	sw, ok := s.hsm.(hsm.SecretWrapper)
	if !ok {
		return newError(CodeValidation, "this HSM cannot protect %s keys", info.spec)
	}
	wrapped, err := sw.WrapSecret(ctx, s.root, priv)
	if err != nil {
		return wrapError(CodeInternal, err, "failed to wrap the %s private key in the HSM", info.spec)
	}
	m.Wrapped, m.PublicKey = wrapped, pub
	return nil
}

// withPrivate unwraps a software key's private key for one use and zeroes
// it afterwards.
func (s *Service) withPrivate(ctx context.Context, k *Key, version uint32, use func(priv []byte) error) error {
	sw, ok := s.hsm.(hsm.SecretWrapper)
	if !ok {
		return newError(CodeInternal, "this HSM cannot protect %s keys", k.Spec)
	}
	m, err := s.material(ctx, k, version)
	if err != nil {
		return wrapError(CodeInternal, err, "failed to read key material")
	}
	priv, err := sw.UnwrapSecret(ctx, s.root, m.Wrapped)
	if err != nil {
		return wrapError(CodeInternal, err, "failed to unwrap the private key in the HSM")
	}
	defer pqc.Zero(priv)
	return use(priv)
}

func (s *Service) publicKey(ctx context.Context, k *Key, version uint32) ([]byte, error) {
	m, err := s.material(ctx, k, version)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to read key material")
	}
	return m.PublicKey, nil
}

func (s *Service) pqSign(ctx context.Context, k *Key, version uint32, msg, sigCtx []byte) ([]byte, error) {
	signer, err := pqc.SignerByName(specs[k.Spec].pqName)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "no signer for %s", k.Spec)
	}
	var sig []byte
	err = s.withPrivate(ctx, k, version, func(priv []byte) error {
		var err error
		sig, err = signer.Sign(priv, msg, pqc.SignOptions{Context: sigCtx, Randomized: true})
		return err
	})
	if err != nil {
		var ke *Error
		if errors.As(err, &ke) {
			return nil, ke
		}
		return nil, wrapError(CodeInternal, err, "failed to sign")
	}
	return sig, nil
}

func (s *Service) pqVerify(ctx context.Context, k *Key, version uint32, msg, sig, sigCtx []byte) error {
	signer, err := pqc.SignerByName(specs[k.Spec].pqName)
	if err != nil {
		return wrapError(CodeInternal, err, "no signer for %s", k.Spec)
	}
	pub, err := s.publicKey(ctx, k, version)
	if err != nil {
		return err
	}
	if err := signer.Verify(pub, msg, sig, pqc.SignOptions{Context: sigCtx}); err != nil {
		return errInvalidSignature(err)
	}
	return nil
}

// HPKE: KEM keys encrypt with HPKE (RFC 9180): the key's KEM, HKDF-SHA256
// and AES-256-GCM. Go's crypto/hpke implements X-Wing (MLKEM768X25519,
// KEM ID 0x647A) and ML-KEM-768/1024; the private key encodings are the
// seeds package pqc stores.
func hpkeKEM(spec KeySpec) (hpke.KEM, error) {
	if info := specs[spec]; info != nil && info.hpkeKEM != nil {
		return info.hpkeKEM(), nil
	}
	return nil, fmt.Errorf("no HPKE KEM for %s", spec)
}

// hpkeInfo is the HPKE info string of keyflow's own envelopes, separating
// them from plain Seal/Open payloads.
var hpkeInfo = []byte("keyflow/envelope/v1")

func hpkeSeal(spec KeySpec, pub, info, aad, plaintext []byte) ([]byte, error) {
	kem, err := hpkeKEM(spec)
	if err != nil {
		return nil, err
	}
	pk, err := kem.NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("failed to parse the %s public key: %w", spec, err)
	}
	enc, sender, err := hpke.NewSender(pk, hpke.HKDFSHA256(), hpke.AES256GCM(), info)
	if err != nil {
		return nil, fmt.Errorf("failed to set up HPKE: %w", err)
	}
	ct, err := sender.Seal(aad, plaintext)
	if err != nil {
		return nil, fmt.Errorf("failed to seal: %w", err)
	}
	return append(enc, ct...), nil
}

func hpkeOpen(spec KeySpec, priv, info, aad, sealed []byte) ([]byte, error) {
	kem, err := hpkeKEM(spec)
	if err != nil {
		return nil, err
	}
	sk, err := kem.NewPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("failed to load the %s private key: %w", spec, err)
	}
	encLen := encapsulationSize(spec)
	if len(sealed) < encLen+16 {
		return nil, errors.New("sealed payload too short")
	}
	r, err := hpke.NewRecipient(sealed[:encLen], sk, hpke.HKDFSHA256(), hpke.AES256GCM(), info)
	if err != nil {
		return nil, fmt.Errorf("failed to set up HPKE: %w", err)
	}
	return r.Open(aad, sealed[encLen:])
}

// encapsulationSize is the HPKE enc length of each KEM.
func encapsulationSize(spec KeySpec) int {
	kem, err := pqc.KEMByName(specs[spec].pqName)
	if err != nil {
		return 0
	}
	return kem.CiphertextSize()
}

// sealHPKE makes an envelope under a KEM key: the same header as AES
// envelopes (algorithm byte = the KEM), then enc || ciphertext. The AAD
// binds header, tenant and encryption context as for AES.
func (s *Service) sealHPKE(ctx context.Context, k *Key, tenant string, plaintext []byte, ec EncryptionContext) ([]byte, uint32, error) {
	v, err := permitPrimary(k, s.now())
	if err != nil {
		return nil, 0, err
	}
	pub, err := s.publicKey(ctx, k, v.Number)
	if err != nil {
		return nil, 0, err
	}
	env := &envelope{alg: v.Algorithm, keyID: k.ID, version: v.Number}
	body, err := hpkeSeal(k.Spec, pub, hpkeInfo, aad(env.headerBytes(), tenant, ec), plaintext)
	if err != nil {
		return nil, 0, wrapError(CodeInternal, err, "failed to encrypt")
	}
	env.body = body
	return env.marshal(), v.Number, nil
}

// openHPKE opens an HPKE envelope.
func (s *Service) openHPKE(ctx context.Context, k *Key, env *envelope, tenant string, ec EncryptionContext) ([]byte, error) {
	var pt []byte
	err := s.withPrivate(ctx, k, env.version, func(priv []byte) error {
		var err error
		pt, err = hpkeOpen(k.Spec, priv, hpkeInfo, aad(env.header, tenant, ec), env.body)
		return err
	})
	if err != nil {
		var ke *Error
		if errors.As(err, &ke) && ke.Code == CodeInternal {
			return nil, ke
		}
		return nil, errDecrypt(err)
	}
	return pt, nil
}

// SealParams are the inputs of Seal: plain HPKE to a KEM key, as anyone
// with the public key could do it (crypto/hpke interoperates).
type SealParams struct {
	KeyRef    string
	Plaintext []byte
	Info      []byte
}

// SealResult is enc || ciphertext.
type SealResult struct {
	KeyID      string
	KeyVersion uint32
	Sealed     []byte
}

// Seal encrypts to a KEM key's public key with HPKE (base mode,
// HKDF-SHA256, AES-256-GCM), exactly as a third party would.
func (s *Service) Seal(ctx context.Context, c Caller, p SealParams) (res *SealResult, err error) {
	var k *Key
	defer s.finish(ctx, c, events.TypeSeal, &err, func() (string, map[string]any) {
		subject := ""
		if k != nil {
			subject = k.ResourceName()
		}
		data := map[string]any{"plaintextBytes": len(p.Plaintext)}
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
	if len(p.Plaintext) == 0 || len(p.Plaintext) > MaxPlaintext {
		return nil, newError(CodeValidation, "plaintext must be 1 to %d bytes", MaxPlaintext)
	}
	k, _, err = s.usableKey(ctx, c, p.KeyRef, UsageKeyEncapsulation, UseProtect)
	if err != nil {
		return nil, err
	}
	pub, err := s.publicKey(ctx, k, k.PrimaryVersion)
	if err != nil {
		return nil, err
	}
	sealed, err := hpkeSeal(k.Spec, pub, p.Info, nil, p.Plaintext)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to seal")
	}
	return &SealResult{KeyID: k.ID, KeyVersion: k.PrimaryVersion, Sealed: sealed}, nil
}

// OpenParams are the inputs of Open.
type OpenParams struct {
	KeyRef string
	Sealed []byte
	Info   []byte
}

// Open decrypts a plain HPKE payload sealed to a KEM key (by Seal, or by
// anyone with the public key). It tries the key's versions newest first;
// every failure is the one generic decryption error.
func (s *Service) Open(ctx context.Context, c Caller, p OpenParams) (res *DecryptResult, err error) {
	var k *Key
	defer s.finish(ctx, c, events.TypeOpen, &err, func() (string, map[string]any) {
		subject := ""
		if k != nil {
			subject = k.ResourceName()
		}
		data := map[string]any{"ciphertextBytes": len(p.Sealed)}
		if res != nil {
			data["keyVersion"] = res.KeyVersion
		}
		return subject, data
	}, func() {
		if res != nil {
			clear(res.Plaintext) // withheld: audit failed
		}
		res = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	k, _, err = s.usableKey(ctx, c, p.KeyRef, UsageKeyEncapsulation, UseProcess)
	if err != nil {
		return nil, err
	}
	for _, v := range candidateVersions(k, 0, UseProcess) {
		var pt []byte
		err := s.withPrivate(ctx, k, v, func(priv []byte) error {
			var err error
			pt, err = hpkeOpen(k.Spec, priv, p.Info, nil, p.Sealed)
			return err
		})
		if err == nil {
			return &DecryptResult{KeyID: k.ID, KeyVersion: v, Plaintext: pt}, nil
		}
		var ke *Error
		if errors.As(err, &ke) {
			return nil, ke
		}
	}
	return nil, errDecrypt(errors.New("no version opens the payload"))
}

// DecapsulateParams are the inputs of Decapsulate.
type DecapsulateParams struct {
	KeyRef     string
	KeyVersion uint32 // 0: the primary
	Ciphertext []byte
}

// EncapsulateResult is a KEM ciphertext and its shared secret.
type EncapsulateResult struct {
	KeyID        string
	KeyVersion   uint32
	Ciphertext   []byte
	SharedSecret []byte
}

// Encapsulate runs the KEM's encapsulation against the key's public key
// and returns the ciphertext and the shared secret (which the caller zeroes).
func (s *Service) Encapsulate(ctx context.Context, c Caller, keyRef string) (res *EncapsulateResult, err error) {
	var k *Key
	defer s.finish(ctx, c, events.TypeEncapsulate, &err, func() (string, map[string]any) {
		subject := ""
		if k != nil {
			subject = k.ResourceName()
		}
		data := map[string]any{}
		if res != nil {
			data["keyVersion"] = res.KeyVersion
		}
		return subject, data
	}, func() {
		if res != nil {
			clear(res.SharedSecret) // withheld: audit failed
		}
		res = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	k, info, err := s.usableKey(ctx, c, keyRef, UsageKeyEncapsulation, UseProtect)
	if err != nil {
		return nil, err
	}
	kem, err := pqc.KEMByName(info.pqName)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "no KEM for %s", k.Spec)
	}
	pub, err := s.publicKey(ctx, k, k.PrimaryVersion)
	if err != nil {
		return nil, err
	}
	ct, ss, err := kem.Encapsulate(rand.Reader, pub)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to encapsulate")
	}
	return &EncapsulateResult{KeyID: k.ID, KeyVersion: k.PrimaryVersion, Ciphertext: ct, SharedSecret: ss}, nil
}

// Decapsulate recovers the shared secret of a KEM ciphertext. ML-KEM's
// implicit rejection means a wrong ciphertext of the right length yields an
// unrelated secret, not an error; a wrong length is ValidationException.
func (s *Service) Decapsulate(ctx context.Context, c Caller, p DecapsulateParams) (res *EncapsulateResult, err error) {
	var k *Key
	defer s.finish(ctx, c, events.TypeDecapsulate, &err, func() (string, map[string]any) {
		subject := ""
		if k != nil {
			subject = k.ResourceName()
		}
		data := map[string]any{"ciphertextBytes": len(p.Ciphertext)}
		if res != nil {
			data["keyVersion"] = res.KeyVersion
		}
		return subject, data
	}, func() {
		if res != nil {
			clear(res.SharedSecret)
		}
		res = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	k, info, err := s.usableKey(ctx, c, p.KeyRef, UsageKeyEncapsulation, UseProcess)
	if err != nil {
		return nil, err
	}
	kem, err := pqc.KEMByName(info.pqName)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "no KEM for %s", k.Spec)
	}
	if len(p.Ciphertext) != kem.CiphertextSize() {
		return nil, newError(CodeValidation, "a %s ciphertext is %d bytes, got %d", k.Spec, kem.CiphertextSize(), len(p.Ciphertext))
	}
	version := p.KeyVersion
	if version == 0 {
		version = k.PrimaryVersion
	}
	v, ok := k.Version(version)
	if !ok {
		return nil, newError(CodeNotFound, "key %s has no version %d", k.ID, version)
	}
	if err := permitVersion(k, v, UseProcess, s.now()); err != nil {
		return nil, err
	}
	var ss []byte
	err = s.withPrivate(ctx, k, version, func(priv []byte) error {
		var err error
		ss, err = kem.Decapsulate(priv, p.Ciphertext)
		return err
	})
	if err != nil {
		var ke *Error
		if errors.As(err, &ke) {
			return nil, ke
		}
		return nil, wrapError(CodeInternal, err, "failed to decapsulate")
	}
	return &EncapsulateResult{KeyID: k.ID, KeyVersion: version, SharedSecret: ss}, nil
}
