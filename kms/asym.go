package kms

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"hash"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/pqc"
)

// MessageType says whether Sign and Verify get the message or its digest.
type MessageType string

// Message types, as in AWS KMS.
const (
	MessageRaw    MessageType = "RAW"
	MessageDigest MessageType = "DIGEST"
)

// maxSignatureContext is the FIPS 204/205 limit on context strings.
const maxSignatureContext = 255

// MaxSignMessage is the largest RAW message Sign and Verify accept (AWS's
// limit is 4 KiB; ours matches the encrypt limit).
const MaxSignMessage = MaxPlaintext

// Event types of the crypto-core operations.
const (
	typeSign      = events.TypeSign
	typeVerify    = events.TypeVerify
	typeMAC       = events.TypeGenerateMAC
	typeVerifyMAC = events.TypeVerifyMAC
)

// usableKey resolves a key for an operation of usage u, in a state that
// allows it (encrypt-like operations need ACTIVE; verify-like ones accept
// the states that decrypt).
func (s *Service) usableKey(ctx context.Context, c Caller, ref string, u KeyUsage, use Use) (*Key, *specInfo, error) {
	k, err := s.cachedKey(ctx, c.Tenant, ref)
	if err != nil {
		return nil, nil, err
	}
	info := specs[k.Spec]
	if info == nil || k.Usage != u {
		return k, nil, newError(CodeInvalidKeyUsage, "key %s has usage %s; this operation needs %s", k.ID, k.Usage, u)
	}
	if use == UseProtect {
		if _, err := permitPrimary(k, s.now()); err != nil {
			return k, nil, err
		}
	} else if err := permitKey(k, use); err != nil {
		return k, nil, err
	}
	return k, info, nil
}

// digestInput turns a message or a caller's digest into what the HSM signs.
func digestInput(p hsm.SignParams, msg []byte, mt MessageType) ([]byte, error) {
	if p.Scheme == hsm.SchemeEd25519 {
		if mt != MessageRaw {
			return nil, newError(CodeValidation, "ED25519_SHA_512 signs the message itself; use message type RAW")
		}
		return msg, nil
	}
	if mt == MessageDigest {
		if len(msg) != p.Hash.Size() {
			return nil, newError(CodeValidation, "a %s digest is %d bytes, got %d", p.Hash, p.Hash.Size(), len(msg))
		}
		return msg, nil
	}
	var h hash.Hash
	switch p.Hash.Size() {
	case 32:
		h = sha256.New()
	case 48:
		h = sha512.New384()
	default:
		h = sha512.New()
	}
	h.Write(msg)
	return h.Sum(nil), nil
}

// SignParams are the inputs of Sign.
type SignParams struct {
	KeyRef      string
	Message     []byte
	MessageType MessageType // RAW (default) or DIGEST
	Algorithm   SigningAlgorithm
	// Context is the FIPS 204/205 context string of ML-DSA and SLH-DSA
	// signatures (at most 255 bytes); Verify needs the same.
	Context []byte
}

// SignResult is a signature. ECDSA signatures are DER, as AWS returns them.
type SignResult struct {
	KeyID      string
	KeyVersion uint32
	Algorithm  SigningAlgorithm
	Signature  []byte
	// Additional holds the signature of the key's migration target while
	// a campaign is in its dual-signing phase (see migration.go).
	Additional []SignResult
}

// signingSetup checks a Sign or Verify request and returns the key, the HSM
// parameters and what is to be signed. Sign and Verify share it so that they
// accept exactly the same inputs.
func (s *Service) signingSetup(ctx context.Context, c Caller, ref string, alg SigningAlgorithm, msg []byte, mt MessageType, sigCtx []byte, use Use) (*Key, hsm.SignParams, []byte, error) {
	if err := checkCaller(c); err != nil {
		return nil, hsm.SignParams{}, nil, err
	}
	if mt == "" {
		mt = MessageRaw
	}
	if mt != MessageRaw && mt != MessageDigest {
		return nil, hsm.SignParams{}, nil, newError(CodeValidation, "message type must be RAW or DIGEST")
	}
	if len(msg) == 0 || len(msg) > MaxSignMessage {
		return nil, hsm.SignParams{}, nil, newError(CodeValidation, "message must be 1 to %d bytes", MaxSignMessage)
	}
	k, info, err := s.usableKey(ctx, c, ref, UsageSignVerify, use)
	if err != nil {
		return k, hsm.SignParams{}, nil, err
	}
	if !contains(info.signing, alg) {
		return k, hsm.SignParams{}, nil, newError(CodeInvalidKeyUsage, "key %s (%s) does not sign with %q; it supports %v", k.ID, k.Spec, truncate(string(alg), 64), info.signing)
	}
	if info.kind != materialSoftware && len(sigCtx) > 0 {
		return k, hsm.SignParams{}, nil, newError(CodeValidation, "a signature context applies to ML-DSA and SLH-DSA keys only")
	}
	if len(sigCtx) > maxSignatureContext {
		return k, hsm.SignParams{}, nil, newError(CodeValidation, "the signature context is %d bytes; the limit is %d", len(sigCtx), maxSignatureContext)
	}
	if info.kind == materialSoftware {
		// Post-quantum signatures sign the message itself (ML-DSA's
		// external-mu mode is not available in the library in use).
		if mt != MessageRaw {
			return k, hsm.SignParams{}, nil, newError(CodeValidation, "%s signs the message itself; use message type RAW", alg)
		}
		return k, hsm.SignParams{}, msg, nil
	}
	p := signingParams[alg]
	input, err := digestInput(p, msg, mt)
	return k, p, input, err
}

// Sign signs a message or digest with the key's primary version, inside the
// HSM.
func (s *Service) Sign(ctx context.Context, c Caller, p SignParams) (res *SignResult, err error) {
	var k *Key
	defer s.finish(ctx, c, typeSign, &err, func() (string, map[string]any) {
		subject, data := "", map[string]any{"algorithm": truncate(string(p.Algorithm), 64), "messageType": truncate(string(p.MessageType), 64), "messageBytes": len(p.Message)}
		if k != nil {
			subject = k.ResourceName()
		}
		if res != nil {
			data["keyVersion"] = res.KeyVersion
			for _, a := range res.Additional {
				data["dualSignedBy"] = ResourceName(c.Tenant, a.KeyID)
			}
		}
		return subject, data
	}, func() {
		res = nil
	})
	k, params, input, err := s.signingSetup(ctx, c, p.KeyRef, p.Algorithm, p.Message, p.MessageType, p.Context, UseProtect)
	if err != nil {
		return nil, err
	}
	if peer, ok := s.migrationPeer(ctx, k); ok && (p.MessageType == "" || p.MessageType == MessageRaw) && len(p.Context) == 0 {
		defer func() {
			if err == nil {
				var extra *SignResult
				if extra, err = s.signWith(ctx, c, peer, p.Message); err == nil {
					res.Additional = append(res.Additional, *extra)
				} else {
					res = nil
				}
			}
		}()
	}
	return s.signKey(ctx, k, params, input, p)
}

// signWith signs a RAW message with peer's primary version and its first
// algorithm: the second signature of a dual-signing period.
func (s *Service) signWith(ctx context.Context, c Caller, peer *Key, msg []byte) (*SignResult, error) {
	alg := specs[peer.Spec].signing[0]
	k, params, input, err := s.signingSetup(ctx, c, peer.ID, alg, msg, MessageRaw, nil, UseProtect)
	if err != nil {
		return nil, err
	}
	return s.signKey(ctx, k, params, input, SignParams{Algorithm: alg})
}

// signKey signs input with k's primary version.
func (s *Service) signKey(ctx context.Context, k *Key, params hsm.SignParams, input []byte, p SignParams) (*SignResult, error) {
	if specs[k.Spec].kind == materialSoftware {
		sig, err := s.pqSign(ctx, k, k.PrimaryVersion, input, p.Context)
		if err != nil {
			return nil, err
		}
		return &SignResult{KeyID: k.ID, KeyVersion: k.PrimaryVersion, Algorithm: p.Algorithm, Signature: sig}, nil
	}
	signer, ok := s.hsm.(hsm.Signer)
	if !ok {
		return nil, newError(CodeInternal, "this HSM cannot sign")
	}
	var sig []byte
	err := s.withHandle(ctx, k, k.PrimaryVersion, false, func(h hsm.KeyHandle) error {
		var err error
		sig, err = signer.Sign(ctx, h, params, input)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, hsm.ErrInvalidInput):
			return wrapError(CodeValidation, err, "the HSM refused the input")
		default:
			return wrapError(CodeInternal, err, "the HSM failed to sign")
		}
	})
	if err != nil {
		return nil, err
	}
	if params.Scheme == hsm.SchemeECDSA {
		if sig, err = hsm.ECDSASigToDER(sig); err != nil {
			return nil, wrapError(CodeInternal, err, "failed to encode the signature")
		}
	}
	return &SignResult{KeyID: k.ID, KeyVersion: k.PrimaryVersion, Algorithm: p.Algorithm, Signature: sig}, nil
}

// VerifyParams are the inputs of Verify. KeyVersion 0 means: any version of
// the key that may verify, newest first (a signature carries no header).
type VerifyParams struct {
	KeyRef      string
	KeyVersion  uint32
	Message     []byte
	MessageType MessageType
	Algorithm   SigningAlgorithm
	Signature   []byte
	Context     []byte
	// AllowCompromised is the explicit, audited override that lets a
	// COMPROMISED key or version verify.
	AllowCompromised bool
}

// VerifyResult reports a valid signature. An invalid one is the error
// KMSInvalidSignatureException.
type VerifyResult struct {
	KeyID      string
	KeyVersion uint32
	Algorithm  SigningAlgorithm
}

// Verify checks a signature inside the HSM with the version's public key.
func (s *Service) Verify(ctx context.Context, c Caller, p VerifyParams) (res *VerifyResult, err error) {
	var k *Key
	defer s.finish(ctx, c, typeVerify, &err, func() (string, map[string]any) {
		subject, data := "", map[string]any{"algorithm": truncate(string(p.Algorithm), 64), "messageType": truncate(string(p.MessageType), 64), "messageBytes": len(p.Message)}
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
	// A signature by the other key of a migration verifies on either.
	p.KeyRef = s.verifyPeer(ctx, c.Tenant, p.KeyRef, p.Algorithm)
	k, params, input, err := s.signingSetup(ctx, c, p.KeyRef, p.Algorithm, p.Message, p.MessageType, p.Context, processOf(p.AllowCompromised))
	if err != nil {
		return nil, err
	}
	if specs[k.Spec].kind == materialSoftware {
		for _, v := range candidateVersions(k, p.KeyVersion, processOf(p.AllowCompromised)) {
			if err := s.pqVerify(ctx, k, v, input, p.Signature, p.Context); err == nil {
				return &VerifyResult{KeyID: k.ID, KeyVersion: v, Algorithm: p.Algorithm}, nil
			} else if CodeOf(err) != CodeInvalidSignature {
				return nil, err
			}
		}
		return nil, unverified(k, p.KeyVersion, processOf(p.AllowCompromised))
	}
	verifier, ok := s.hsm.(hsm.Signer)
	if !ok {
		return nil, newError(CodeInternal, "this HSM cannot verify")
	}
	sig := p.Signature
	if params.Scheme == hsm.SchemeECDSA {
		if sig, err = hsm.ECDSASigFromDER(p.Signature, specs[k.Spec].scalarSize); err != nil {
			return nil, errInvalidSignature(err)
		}
	}
	for _, v := range candidateVersions(k, p.KeyVersion, processOf(p.AllowCompromised)) {
		var bad bool
		err := s.withHandle(ctx, k, v, true, func(h hsm.KeyHandle) error {
			err := verifier.Verify(ctx, h, params, input, sig)
			bad = errors.Is(err, hsm.ErrAuthFailed) || errors.Is(err, hsm.ErrInvalidInput)
			if err != nil && !bad {
				return wrapError(CodeInternal, err, "the HSM failed to verify")
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if !bad {
			return &VerifyResult{KeyID: k.ID, KeyVersion: v, Algorithm: p.Algorithm}, nil
		}
	}
	return nil, unverified(k, p.KeyVersion, processOf(p.AllowCompromised))
}

// unverified is the refusal of a signature that no candidate version
// verified. Archived versions and versions pending retirement are not
// candidates (their material is not loadable, or not to be used): when
// the version asked for is one of them, or (none asked for) one of them
// could have made the signature, the refusal says so rather than calling
// the signature invalid.
func unverified(k *Key, want uint32, use Use) error {
	for i := len(k.Versions) - 1; i >= 0; i-- {
		v := k.Versions[i]
		if !v.State.Allows(use) || (want != 0 && v.Number != want) {
			continue
		}
		switch {
		case v.Archived && want != 0:
			return errArchived(k, v)
		case v.Archived:
			return newError(CodeInvalidState, "the signature does not verify under the live versions of key %s; version %d is archived and verifies its signatures again once restored (keyflow archive restore)", k.ID, v.Number)
		case !v.RetirementDate.IsZero():
			return pendingRetirement(k, v)
		}
	}
	return errInvalidSignature(nil)
}

// candidateVersions lists the versions a verification may use: the one
// asked for, or every version that may verify, newest first.
func candidateVersions(k *Key, want uint32, use Use) []uint32 {
	var out []uint32
	for i := len(k.Versions) - 1; i >= 0; i-- {
		v := k.Versions[i]
		if v.State.Allows(use) && !v.Archived && v.RetirementDate.IsZero() && (want == 0 || v.Number == want) {
			out = append(out, v.Number)
		}
	}
	return out
}

// ErrInvalidSignature matches every invalid-signature error.
var ErrInvalidSignature = &Error{Code: CodeInvalidSignature}

func errInvalidSignature(cause error) *Error {
	return &Error{Code: CodeInvalidSignature, Message: "the signature is not valid", cause: cause}
}

// PublicKeyResult is a version's public key.
type PublicKeyResult struct {
	KeyID        string
	KeyVersion   uint32
	KeySpec      KeySpec
	KeyUsage     KeyUsage
	PublicKeyDER []byte // SubjectPublicKeyInfo
	RawPublicKey []byte // the algorithm's own encoding (e.g. the ML-KEM encapsulation key), for HPKE and pqc

	SigningAlgorithms    []SigningAlgorithm
	EncryptionAlgorithms []EncryptionAlgorithm
}

// GetPublicKey returns the public key of an asymmetric key's primary
// version (or of version, when not 0).
func (s *Service) GetPublicKey(ctx context.Context, c Caller, ref string, version uint32) (res *PublicKeyResult, err error) {
	var k *Key
	defer s.finish(ctx, c, events.TypeGetPublicKey, &err, func() (string, map[string]any) {
		subject := ""
		if k != nil {
			subject = k.ResourceName()
		}
		return subject, map[string]any{"keyVersion": version}
	}, func() {
		res = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if k, err = s.cachedKey(ctx, c.Tenant, ref); err != nil {
		return nil, err
	}
	info := specs[k.Spec]
	if info == nil || (info.kind != materialKeyPair && info.kind != materialSoftware) {
		return nil, newError(CodeInvalidKeyUsage, "key %s (%s) has no public key", k.ID, k.Spec)
	}
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
	m, err := s.store.GetMaterial(ctx, k.Tenant, k.ID, version)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to read the public key")
	}
	der := m.PublicKey
	if info.kind == materialSoftware {
		if der, err = pqc.PublicKeyDER(info.pqName, m.PublicKey); err != nil {
			return nil, wrapError(CodeInternal, err, "failed to encode the public key")
		}
	}
	res = &PublicKeyResult{KeyID: k.ID, KeyVersion: version, KeySpec: k.Spec, KeyUsage: k.Usage, PublicKeyDER: der, RawPublicKey: m.PublicKey}
	if k.Usage == UsageSignVerify {
		res.SigningAlgorithms = info.signing
	} else if info.kind != materialKeyPair {
		res.EncryptionAlgorithms = info.encryption
	} else {
		res.EncryptionAlgorithms = info.encryption
	}
	return res, nil
}

// MACParams are the inputs of GenerateMac and VerifyMac.
type MACParams struct {
	KeyRef    string
	Message   []byte
	Algorithm MACAlgorithm
	MAC       []byte // VerifyMac only
}

// MACResult is a MAC.
type MACResult struct {
	KeyID      string
	KeyVersion uint32
	Algorithm  MACAlgorithm
	MAC        []byte
}

func (s *Service) macSetup(ctx context.Context, c Caller, p MACParams, use Use) (*Key, hsm.MACs, error) {
	if err := checkCaller(c); err != nil {
		return nil, nil, err
	}
	if len(p.Message) == 0 || len(p.Message) > MaxSignMessage {
		return nil, nil, newError(CodeValidation, "message must be 1 to %d bytes", MaxSignMessage)
	}
	k, info, err := s.usableKey(ctx, c, p.KeyRef, UsageGenerateVerifyMAC, use)
	if err != nil {
		return k, nil, err
	}
	if !contains(info.mac, p.Algorithm) {
		return k, nil, newError(CodeInvalidKeyUsage, "key %s (%s) does not compute %q; it supports %v", k.ID, k.Spec, truncate(string(p.Algorithm), 64), info.mac)
	}
	macs, ok := s.hsm.(hsm.MACs)
	if !ok {
		return k, nil, newError(CodeInternal, "this HSM cannot compute MACs")
	}
	return k, macs, nil
}

func (s *Service) computeMAC(ctx context.Context, macs hsm.MACs, k *Key, version uint32, msg []byte) ([]byte, error) {
	var mac []byte
	err := s.withHandle(ctx, k, version, false, func(h hsm.KeyHandle) error {
		var err error
		if mac, err = macs.HMACSHA256(ctx, h, msg); err != nil {
			return wrapError(CodeInternal, err, "the HSM failed to compute the MAC")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return mac, nil
}

// GenerateMac computes an HMAC with the key's primary version.
func (s *Service) GenerateMac(ctx context.Context, c Caller, p MACParams) (res *MACResult, err error) {
	var k *Key
	defer s.finish(ctx, c, typeMAC, &err, func() (string, map[string]any) {
		subject := ""
		if k != nil {
			subject = k.ResourceName()
		}
		return subject, map[string]any{"algorithm": truncate(string(p.Algorithm), 64), "messageBytes": len(p.Message)}
	}, func() {
		res = nil
	})
	k, macs, err := s.macSetup(ctx, c, p, UseProtect)
	if err != nil {
		return nil, err
	}
	mac, err := s.computeMAC(ctx, macs, k, k.PrimaryVersion, p.Message)
	if err != nil {
		return nil, err
	}
	return &MACResult{KeyID: k.ID, KeyVersion: k.PrimaryVersion, Algorithm: p.Algorithm, MAC: mac}, nil
}

// VerifyMac recomputes the MAC in the HSM with each version that may verify
// and compares in constant time. An invalid MAC is KMSInvalidMacException.
func (s *Service) VerifyMac(ctx context.Context, c Caller, p MACParams) (res *MACResult, err error) {
	var k *Key
	defer s.finish(ctx, c, typeVerifyMAC, &err, func() (string, map[string]any) {
		subject := ""
		if k != nil {
			subject = k.ResourceName()
		}
		return subject, map[string]any{"algorithm": truncate(string(p.Algorithm), 64), "messageBytes": len(p.Message)}
	}, func() {
		res = nil
	})
	k, macs, err := s.macSetup(ctx, c, p, UseProcess)
	if err != nil {
		return nil, err
	}
	for _, v := range candidateVersions(k, 0, UseProcess) {
		mac, err := s.computeMAC(ctx, macs, k, v, p.Message)
		if err != nil {
			return nil, err
		}
		if subtle.ConstantTimeCompare(mac, p.MAC) == 1 {
			return &MACResult{KeyID: k.ID, KeyVersion: v, Algorithm: p.Algorithm}, nil
		}
	}
	return nil, &Error{Code: CodeInvalidMAC, Message: "the MAC is not valid"}
}

// ErrInvalidMAC matches every invalid-MAC error.
var ErrInvalidMAC = &Error{Code: CodeInvalidMAC}

// GenerateRandom returns n (1-1024) random bytes from the HSM.
func (s *Service) GenerateRandom(ctx context.Context, c Caller, n int) (out []byte, err error) {
	defer s.finish(ctx, c, events.TypeGenerateRandom, &err, func() (string, map[string]any) {
		return "", map[string]any{"numberOfBytes": n}
	}, func() {
		out = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if n < 1 || n > 1024 {
		return nil, newError(CodeValidation, "numberOfBytes must be between 1 and 1024")
	}
	out, err = s.hsm.GenerateRandom(ctx, n)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "the HSM failed to generate random bytes")
	}
	return out, nil
}

func contains[T comparable](xs []T, x T) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
