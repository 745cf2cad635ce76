package kms

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/pqc"
)

// External Key Origination (BYOK), as AWS KMS does it:
//
//  1. CreateKey with Origin EXTERNAL makes a key in PENDING_IMPORT, with
//     no material.
//  2. GetParametersForImport returns a wrapping public key, generated
//     for this request in the HSM (RSA) or in process memory (X-Wing),
//     and an import token that binds that wrapping key to the keyflow
//     key, the wrapping algorithm and an expiry 24 hours out.
//  3. The customer wraps the key material to the public key, outside
//     keyflow, and ImportKeyMaterial unwraps it inside the HSM and
//     stores it wrapped under the root key like any generated key. The
//     key becomes ACTIVE.
//
// Imported material may expire (ValidTo): the lifecycle workflow deletes
// it at that time and the key returns to PENDING_IMPORT.
// DeleteImportedKeyMaterial does it earlier. Only the same material may
// ever be imported again into a key that had material, as in AWS, so
// ciphertexts made under the first import still decrypt after a
// re-import and no key silently changes its meaning.
//
// Same-material check. KWP (RFC 5649), which wraps material under the
// root key, is deterministic: the same material under the same root key
// gives the same blob. Each import records a fingerprint, SHA-256 over a
// label, the key ID and that blob: a value keyed by the HSM's root key
// that identifies the material without revealing it, and that outlives a
// deletion of the material. A re-import computes the same fingerprint of
// the new material and compares the two in constant time. A root key
// change would therefore refuse every re-import (keyflow has one root
// key per deployment).
//
// The import token. Its payload (tenant, key ID, wrapping algorithm and
// key spec, expiry, the public key and the wrapped private key) carries
// an HMAC-SHA256 computed in the HSM under the deployment's import-token
// key, a generic secret that the HSM generated and that is stored wrapped
// under the root key like any key; workers create it on first use. The
// token is checked in constant time before anything in it is used. The
// wrapping private key travels in the token wrapped under the root key
// (AES-KWP), so no worker keeps state between the two calls and any
// worker, after any restart, can finish an import.

// ExpirationModel says whether imported material expires (AWS's names).
type ExpirationModel string

// Expiration models.
const (
	MaterialExpires       ExpirationModel = "KEY_MATERIAL_EXPIRES"
	MaterialDoesNotExpire ExpirationModel = "KEY_MATERIAL_DOES_NOT_EXPIRE"
)

// WrappingAlgorithm is how the customer wraps key material for import.
type WrappingAlgorithm string

// Wrapping algorithms. The RSA ones are AWS's; XWING_HPKE is keyflow's
// post-quantum hybrid.
const (
	WrapRSAOAEPSHA1   WrappingAlgorithm = "RSAES_OAEP_SHA_1"
	WrapRSAOAEPSHA256 WrappingAlgorithm = "RSAES_OAEP_SHA_256"
	WrapRSAAESSHA1    WrappingAlgorithm = "RSA_AES_KEY_WRAP_SHA_1"
	WrapRSAAESSHA256  WrappingAlgorithm = "RSA_AES_KEY_WRAP_SHA_256"
	// WrapXWingHPKE is HPKE (RFC 9180) base mode with the X-Wing KEM
	// (ML-KEM-768 + X25519), HKDF-SHA256 and AES-256-GCM, info
	// "keyflow/import/v1" and empty AAD; the wrapped material is
	// enc || ciphertext.
	WrapXWingHPKE WrappingAlgorithm = "XWING_HPKE"
)

// WrappingKeySpec is the kind of wrapping key.
type WrappingKeySpec string

// Wrapping key specs.
const (
	WrappingRSA3072 WrappingKeySpec = "RSA_3072"
	WrappingRSA4096 WrappingKeySpec = "RSA_4096"
	WrappingXWing   WrappingKeySpec = "X_WING"
)

// ImportTokenLifetime is how long import parameters may be used.
const ImportTokenLifetime = 24 * time.Hour

// Sentinels of the import error codes.
var (
	ErrInvalidImportToken   = &Error{Code: CodeInvalidImportToken}
	ErrExpiredImportToken   = &Error{Code: CodeExpiredImportToken}
	ErrIncorrectKeyMaterial = &Error{Code: CodeIncorrectKeyMaterial}
	ErrUnsupportedOperation = &Error{Code: CodeUnsupportedOperation}
)

// ImportState is what a key records about its imported material. It
// holds no material: the fingerprint is a keyed one-way value (see the
// package notes above).
type ImportState struct {
	// ImportID names the current import; empty when the key has no
	// material. The expiry workflow deletes only the import it was
	// started for.
	ImportID        string            `json:"importId,omitempty"`
	ImportedAt      time.Time         `json:"importedAt,omitzero"`
	ExpirationModel ExpirationModel   `json:"expirationModel,omitempty"`
	ValidTo         time.Time         `json:"validTo,omitzero"`
	Algorithm       WrappingAlgorithm `json:"wrappingAlgorithm,omitempty"`
	// Fingerprint identifies the material ever imported into the key.
	Fingerprint []byte `json:"fingerprint,omitempty"`
}

// KeyOrigin returns the key's origin, OriginKMS for keys stored without one.
func (k *Key) KeyOrigin() Origin {
	if k.Origin == "" {
		return OriginKMS
	}
	return k.Origin
}

// importable is the material kind of each key spec that can be imported:
// a secret of a size, or a private key (PKCS#8) of a key pair spec.
var importable = map[KeySpec]importKind{
	SpecSymmetricDefault: {target: hsm.ImportTarget{Kind: hsm.ImportAES, Size: 32}},
	SpecHMAC256:          {target: hsm.ImportTarget{Kind: hsm.ImportHMAC, Size: 32}},
	SpecRSA3072:          {pair: &hsm.KeyPairSpec{Algorithm: "RSA", RSABits: 3072}},
	SpecRSA4096:          {pair: &hsm.KeyPairSpec{Algorithm: "RSA", RSABits: 4096}},
}

// importKind is what an import into a key spec expects.
type importKind struct {
	target hsm.ImportTarget
	pair   *hsm.KeyPairSpec // private keys: only RSA + AES key wrap carries them
}

func (ik importKind) String() string {
	if ik.pair != nil {
		return fmt.Sprintf("RSA-%d private key (PKCS#8)", ik.pair.RSABits)
	}
	return fmt.Sprintf("%d-byte %s key", ik.target.Size, ik.target.Kind)
}

// checkImportAlgorithm refuses wrapping algorithms that cannot carry the
// material: a private key is longer than RSA-OAEP takes.
func checkImportAlgorithm(spec KeySpec, ik importKind, alg WrappingAlgorithm) error {
	if ik.pair != nil && alg != WrapRSAAESSHA256 && alg != WrapRSAAESSHA1 {
		return newError(CodeValidation, "a %s private key is too long for %s; use RSA_AES_KEY_WRAP_SHA_256", spec, alg)
	}
	return nil
}

// checkOrigin validates CreateKeyParams.Origin for spec and reports
// whether the key is EXTERNAL.
func checkOrigin(o Origin, spec KeySpec) (bool, error) {
	switch o {
	case "", OriginKMS:
		return false, nil
	case OriginExternal:
		if _, ok := importable[spec]; !ok {
			return false, newError(CodeUnsupportedOperation, "key spec %s cannot be imported; importable: SYMMETRIC_DEFAULT, HMAC_256, RSA_3072, RSA_4096", spec)
		}
		return true, nil
	default:
		return false, newError(CodeValidation, "origin must be AWS_KMS or EXTERNAL, not %q", truncate(string(o), 32))
	}
}

// markPendingImport turns a key being created into an EXTERNAL key
// without material: its one version exists (so ciphertext headers and
// metadata look as for any key) but has no material until an import.
func markPendingImport(k *Key) {
	k.Origin = OriginExternal
	k.State = StatePendingImport
	for i := range k.Versions {
		k.Versions[i].State = StatePendingImport
	}
	k.Import = &ImportState{}
}

// ImportApprover is the dual-control hook of imports: when set (see
// SetImportApprover), ImportKeyMaterial calls it after every check of the
// request and before the HSM is touched, and refuses the import with its
// error. The governance work plugs its approvals in here.
type ImportApprover func(ctx context.Context, c Caller, k *Key) error

// SetImportApprover installs the dual-control hook of imports (nil: none).
// Call it before serving requests.
func (s *Service) SetImportApprover(fn ImportApprover) { s.imports.approve = fn }

// importHooks is the Service's import configuration.
type importHooks struct {
	approve ImportApprover
}

// GetImportParamsParams are the inputs of GetParametersForImport.
type GetImportParamsParams struct {
	KeyRef    string
	Algorithm WrappingAlgorithm
	// Spec is the wrapping key's spec: RSA_3072 (default for RSA
	// algorithms) or RSA_4096; X_WING (the only one) for XWING_HPKE.
	Spec WrappingKeySpec
}

// ImportParameters are what the customer needs to wrap material.
type ImportParameters struct {
	KeyID     string
	Algorithm WrappingAlgorithm
	Spec      WrappingKeySpec
	// PublicKey is DER SubjectPublicKeyInfo for RSA, the raw 1216-byte
	// X-Wing public key for XWING_HPKE.
	PublicKey   []byte
	ImportToken []byte
	ValidTo     time.Time
}

var wrappingHashes = map[WrappingAlgorithm]crypto.Hash{
	WrapRSAOAEPSHA1: crypto.SHA1, WrapRSAOAEPSHA256: crypto.SHA256,
	WrapRSAAESSHA1: crypto.SHA1, WrapRSAAESSHA256: crypto.SHA256,
}

// WrappingAlgorithms lists the wrapping algorithms, for docs and CLIs.
func WrappingAlgorithms() []WrappingAlgorithm {
	return []WrappingAlgorithm{WrapRSAOAEPSHA256, WrapRSAOAEPSHA1, WrapRSAAESSHA256, WrapRSAAESSHA1, WrapXWingHPKE}
}

func checkWrapping(alg WrappingAlgorithm, spec WrappingKeySpec) (WrappingKeySpec, error) {
	if alg == WrapXWingHPKE {
		if spec != "" && spec != WrappingXWing {
			return "", newError(CodeValidation, "XWING_HPKE wraps to an X_WING key, not %q", truncate(string(spec), 32))
		}
		return WrappingXWing, nil
	}
	if _, ok := wrappingHashes[alg]; !ok {
		return "", newError(CodeValidation, "wrapping algorithm must be one of %v, not %q", WrappingAlgorithms(), truncate(string(alg), 32))
	}
	switch spec {
	case "":
		return WrappingRSA3072, nil
	case WrappingRSA3072, WrappingRSA4096:
		return spec, nil
	default:
		return "", newError(CodeValidation, "wrapping key spec for %s must be RSA_3072 or RSA_4096, not %q", alg, truncate(string(spec), 32))
	}
}

func rsaPairSpec(spec WrappingKeySpec) hsm.KeyPairSpec {
	if spec == WrappingRSA4096 {
		return hsm.KeyPairSpec{Algorithm: "RSA", RSABits: 4096}
	}
	return hsm.KeyPairSpec{Algorithm: "RSA", RSABits: 3072}
}

// importCapable checks an EXTERNAL key and returns what it imports.
func importCapable(k *Key) (importKind, error) {
	if k.KeyOrigin() != OriginExternal {
		return importKind{}, newError(CodeUnsupportedOperation, "key %s was generated by keyflow (origin AWS_KMS); only keys created with origin EXTERNAL take imported material", k.ID)
	}
	ik, ok := importable[k.Spec]
	if !ok {
		return importKind{}, newError(CodeUnsupportedOperation, "key spec %s cannot be imported", k.Spec)
	}
	if k.State != StatePendingImport && k.State != StateActive {
		return importKind{}, newError(CodeInvalidState, "key %s is %s; material is imported into a PENDING_IMPORT or ACTIVE key", k.ID, k.State)
	}
	return ik, nil
}

// GetParametersForImport makes a wrapping key pair and an import token
// for one key.
func (s *Service) GetParametersForImport(ctx context.Context, c Caller, p GetImportParamsParams) (res *ImportParameters, err error) {
	var k *Key
	defer s.finish(ctx, c, events.TypeKeyImportParameters, &err, func() (string, map[string]any) {
		subject := ""
		data := map[string]any{"keyRef": truncate(p.KeyRef, 64), "wrappingAlgorithm": truncate(string(p.Algorithm), 64), "wrappingKeySpec": truncate(string(p.Spec), 64)}
		if k != nil {
			subject = k.ResourceName()
			data["keyId"] = k.ID
		}
		if res != nil {
			data["wrappingKeySpec"] = string(res.Spec)
			data["validTo"] = res.ValidTo.UTC().Format(time.RFC3339)
		}
		return subject, data
	}, func() {
		res = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	spec, err := checkWrapping(p.Algorithm, p.Spec)
	if err != nil {
		return nil, err
	}
	p.Spec = spec
	k, _, err = s.resolve(ctx, c.Tenant, p.KeyRef)
	if err != nil {
		return nil, err
	}
	ik, err := importCapable(k)
	if err != nil {
		return nil, err
	}
	if err := checkImportAlgorithm(k.Spec, ik, p.Algorithm); err != nil {
		return nil, err
	}
	tok := importToken{
		Tenant: c.Tenant, KeyID: k.ID, Algorithm: p.Algorithm, Spec: spec,
		Expires: s.now().Add(ImportTokenLifetime).UTC().Truncate(time.Second), WrappedBy: s.label,
	}
	if spec == WrappingXWing {
		gen, err := pqKeyGenFor(specs[SpecXWing])
		if err != nil {
			return nil, err
		}
		pub, priv, err := gen.GenerateKey(rand.Reader)
		if err != nil {
			return nil, wrapError(CodeInternal, err, "failed to generate an X-Wing wrapping key")
		}
		m := &VersionMaterial{}
		err = s.wrapSoftwareMaterial(ctx, m, specs[SpecXWing], pub, priv)
		pqc.Zero(priv)
		if err != nil {
			return nil, err
		}
		tok.PublicKey, tok.WrappedPrivate = m.PublicKey, m.Wrapped
	} else if err := s.rsaWrappingPair(ctx, &tok); err != nil {
		return nil, err
	}
	sealed, err := s.sealImportToken(ctx, &tok)
	if err != nil {
		return nil, err
	}
	return &ImportParameters{
		KeyID: k.ID, Algorithm: p.Algorithm, Spec: spec, PublicKey: tok.PublicKey,
		ImportToken: sealed, ValidTo: tok.Expires,
	}, nil
}

// rsaWrappingPair generates the token's RSA wrapping key pair in the HSM
// (the private key wrapped under the root key, for the token).
func (s *Service) rsaWrappingPair(ctx context.Context, tok *importToken) error {
	pairs, ok := s.hsm.(hsm.KeyPairs)
	if _, imp := s.hsm.(hsm.KeyImporter); !ok || !imp {
		return newError(CodeUnsupportedOperation, "this HSM cannot import key material")
	}
	kp, err := pairs.GenerateWrappedKeyPair(ctx, s.root, rsaPairSpec(tok.Spec))
	if err != nil {
		return wrapError(CodeInternal, err, "failed to generate a wrapping key pair in the HSM")
	}
	tok.PublicKey, tok.WrappedPrivate = kp.PublicKeyDER, kp.WrappedPrivate
	return nil
}

// ImportParams are the inputs of ImportKeyMaterial.
type ImportParams struct {
	KeyRef string
	// WrappedMaterial is the key material wrapped to the token's public
	// key with the token's algorithm.
	WrappedMaterial []byte
	ImportToken     []byte
	// Algorithm, when set, must be the token's: a guard against wrapping
	// with one algorithm and importing with another's parameters.
	Algorithm WrappingAlgorithm
	// ValidTo, when set, makes the material expire then
	// (KEY_MATERIAL_EXPIRES); zero means KEY_MATERIAL_DOES_NOT_EXPIRE.
	ValidTo time.Time
	// ImportID names this import; the expiry workflow started for it
	// carries the same ID. Empty: one is drawn.
	ImportID string
}

// ImportResult reports an import.
type ImportResult struct {
	Key      *Key
	ImportID string
	// Reimport is true when the key had had this material before.
	Reimport bool
}

// ImportKeyMaterial unwraps customer key material in the HSM and stores it
// as the key's material. See the notes at the top of this file.
func (s *Service) ImportKeyMaterial(ctx context.Context, c Caller, p ImportParams) (res *ImportResult, err error) {
	var k *Key
	var tokAlg WrappingAlgorithm
	defer s.finish(ctx, c, events.TypeKeyImported, &err, func() (string, map[string]any) {
		subject := ""
		data := map[string]any{"keyRef": truncate(p.KeyRef, 64), "wrappedBytes": len(p.WrappedMaterial)}
		if tokAlg != "" {
			data["wrappingAlgorithm"] = string(tokAlg)
		}
		if k != nil {
			subject = k.ResourceName()
			data["keyId"] = k.ID
		}
		if res != nil {
			data["importId"] = res.ImportID
			data["reimport"] = res.Reimport
			data["expirationModel"] = string(res.Key.Import.ExpirationModel)
			if !res.Key.Import.ValidTo.IsZero() {
				data["validTo"] = res.Key.Import.ValidTo.Format(time.RFC3339)
			}
		}
		return subject, data
	}, func() {
		res = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if len(p.WrappedMaterial) == 0 || len(p.WrappedMaterial) > 8192 {
		return nil, newError(CodeValidation, "the wrapped key material must be 1 to 8192 bytes")
	}
	now := s.now().UTC()
	if !p.ValidTo.IsZero() && !p.ValidTo.After(now) {
		return nil, newError(CodeValidation, "validTo %s is not in the future", p.ValidTo.UTC().Format(time.RFC3339))
	}
	if p.ImportID == "" {
		p.ImportID = uuid.NewString()
	} else if !ValidKeyID(p.ImportID) {
		return nil, newError(CodeValidation, "importId must be a UUID")
	}
	k, _, err = s.resolve(ctx, c.Tenant, p.KeyRef)
	if err != nil {
		return nil, err
	}
	tok, err := s.openImportToken(ctx, p.ImportToken)
	if err != nil {
		return nil, err
	}
	tokAlg = tok.Algorithm
	if tok.Tenant != c.Tenant || tok.KeyID != k.ID {
		return nil, newError(CodeInvalidImportToken, "the import token was issued for another key; get import parameters for key %s", k.ID)
	}
	if !now.Before(tok.Expires) {
		return nil, newError(CodeExpiredImportToken, "the import token expired at %s; get new import parameters", tok.Expires.Format(time.RFC3339))
	}
	if p.Algorithm != "" && p.Algorithm != tok.Algorithm {
		return nil, newError(CodeValidation, "the import token is for wrapping algorithm %s, not %s", tok.Algorithm, truncate(string(p.Algorithm), 32))
	}
	if tok.WrappedBy != s.label {
		return nil, newError(CodeInvalidImportToken, "the import token was issued under another root key")
	}
	ik, err := importCapable(k)
	if err != nil {
		return nil, err
	}
	if err := checkImportAlgorithm(k.Spec, ik, tok.Algorithm); err != nil {
		return nil, err
	}
	approve := s.imports.approve
	if approve == nil {
		approve = s.importGate // the tenant policy's "import" rule (dualcontrol.go)
	}
	{
		if err := approve(ctx, c, k); err != nil {
			return nil, err
		}
	}
	blob, pub, err := s.unwrapImport(ctx, tok, p.WrappedMaterial, ik)
	if err != nil {
		return nil, err
	}
	fp := importFingerprint(k.ID, blob)
	if k.Import != nil && len(k.Import.Fingerprint) > 0 && subtle.ConstantTimeCompare(fp, k.Import.Fingerprint) != 1 {
		return nil, newError(CodeIncorrectKeyMaterial, "key %s had other key material; only the same material can be imported into it again", k.ID)
	}
	info := specs[k.Spec]
	v := k.PrimaryVersion
	m := &VersionMaterial{Tenant: c.Tenant, KeyID: k.ID, Version: v, Algorithm: info.alg, Wrapped: blob, WrappedBy: s.label, PublicKey: pub}
	if err := s.store.PutMaterial(ctx, m); errors.Is(err, ErrStoreExists) {
		// Material stays as first stored. A concurrent first import of
		// other material may have stored it before this one recorded
		// a fingerprint: only the same material goes on.
		stored, err := s.store.GetMaterial(ctx, c.Tenant, k.ID, v)
		if err != nil {
			return nil, wrapError(CodeInternal, err, "failed to read key material")
		}
		if subtle.ConstantTimeCompare(stored.Wrapped, blob) != 1 {
			return nil, newError(CodeIncorrectKeyMaterial, "key %s has other key material; only the same material can be imported into it again", k.ID)
		}
	} else if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to store key material")
	}
	var reimport bool
	cur, err := s.updateKey(ctx, c.Tenant, k.ID, func(cur *Key) (bool, error) {
		if cur.Import != nil && len(cur.Import.Fingerprint) > 0 && subtle.ConstantTimeCompare(fp, cur.Import.Fingerprint) != 1 {
			return false, newError(CodeIncorrectKeyMaterial, "key %s had other key material; only the same material can be imported into it again", cur.ID)
		}
		if _, err := importCapable(cur); err != nil {
			return false, err
		}
		reimport = cur.Import != nil && len(cur.Import.Fingerprint) > 0
		cur.State = StateActive
		for i := range cur.Versions {
			cur.Versions[i].State = StateActive
		}
		st := &ImportState{ImportID: p.ImportID, ImportedAt: now, ExpirationModel: MaterialDoesNotExpire, Algorithm: tok.Algorithm, Fingerprint: fp}
		if !p.ValidTo.IsZero() {
			st.ExpirationModel, st.ValidTo = MaterialExpires, p.ValidTo.UTC().Truncate(time.Second)
		}
		cur.Import = st
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	k = cur
	return &ImportResult{Key: cur, ImportID: p.ImportID, Reimport: reimport}, nil
}

// importFingerprint is the same-material check value (see the notes at
// the top of this file).
func importFingerprint(keyID string, blob []byte) []byte {
	h := sha256.New()
	h.Write([]byte("keyflow/import-fingerprint/v1\x00"))
	h.Write([]byte(keyID))
	h.Write([]byte{0})
	h.Write(blob)
	return h.Sum(nil)
}

// errWrappedMaterial is every failure to open the customer's wrapped
// material, whatever failed: an import is no padding oracle.
func errWrappedMaterial(cause error) *Error {
	return wrapError(CodeInvalidCiphertext, cause, "the wrapped key material could not be decrypted with this import token's wrapping key and algorithm")
}

// unwrapImport turns the customer's wrapped material into a blob wrapped
// under the root key, and the public key of a private key.
func (s *Service) unwrapImport(ctx context.Context, tok *importToken, wrapped []byte, ik importKind) ([]byte, []byte, error) {
	imp, ok := s.hsm.(hsm.KeyImporter)
	if !ok {
		return nil, nil, newError(CodeUnsupportedOperation, "this HSM cannot import key material")
	}
	mapErr := func(err error) error {
		switch {
		case errors.Is(err, hsm.ErrAuthFailed):
			return errWrappedMaterial(err)
		case errors.Is(err, hsm.ErrInvalidInput):
			return wrapError(CodeIncorrectKeyMaterial, err, "the key material is not a %s", ik)
		default:
			return wrapError(CodeInternal, err, "the HSM failed to import the key material")
		}
	}
	if tok.Algorithm == WrapXWingHPKE {
		sw, ok := s.hsm.(hsm.SecretWrapper)
		if !ok {
			return nil, nil, newError(CodeUnsupportedOperation, "this HSM cannot hold X-Wing keys")
		}
		priv, err := sw.UnwrapSecret(ctx, s.root, tok.WrappedPrivate)
		if err != nil {
			return nil, nil, wrapError(CodeInvalidImportToken, err, "the import token's wrapping key cannot be opened")
		}
		defer pqc.Zero(priv)
		material, err := hpkeOpen(SpecXWing, priv, importHPKEInfo, nil, wrapped)
		if err != nil {
			return nil, nil, errWrappedMaterial(err)
		}
		defer clear(material)
		if len(material) != ik.target.Size {
			return nil, nil, newError(CodeIncorrectKeyMaterial, "the key material is %d bytes; a %s key is %d", len(material), ik.target.Kind, ik.target.Size)
		}
		blob, err := imp.ImportPlaintext(ctx, material, ik.target, s.root)
		if err != nil {
			return nil, nil, mapErr(err)
		}
		return blob, nil, nil
	}
	h := wrappingHashes[tok.Algorithm]
	key, err := imp.LoadImportKey(ctx, s.root, tok.WrappedPrivate, rsaPairSpec(tok.Spec))
	if err != nil {
		return nil, nil, wrapError(CodeInvalidImportToken, err, "the import token's wrapping key cannot be loaded")
	}
	defer func() { _ = s.hsm.DestroyKey(context.WithoutCancel(ctx), key) }()
	var blob, pub []byte
	switch {
	case ik.pair != nil:
		var kp *hsm.WrappedKeyPair
		if kp, err = imp.ImportPrivateKeyRSAAESKeyWrap(ctx, key, h, wrapped, *ik.pair, s.root); err == nil {
			blob, pub = kp.WrappedPrivate, kp.PublicKeyDER
		}
	case tok.Algorithm == WrapRSAOAEPSHA1 || tok.Algorithm == WrapRSAOAEPSHA256:
		blob, err = imp.ImportRSAOAEP(ctx, key, h, wrapped, ik.target, s.root)
	default:
		blob, err = imp.ImportRSAAESKeyWrap(ctx, key, h, wrapped, ik.target, s.root)
	}
	if err != nil {
		return nil, nil, mapErr(err)
	}
	return blob, pub, nil
}

// importHPKEInfo is the HPKE info string of XWING_HPKE imports.
var importHPKEInfo = []byte("keyflow/import/v1")

// DeleteImportedKeyMaterial deletes an EXTERNAL key's material now; the key
// returns to PENDING_IMPORT. Deleting when there is none is not an error.
func (s *Service) DeleteImportedKeyMaterial(ctx context.Context, c Caller, ref string) (k *Key, err error) {
	var importID string
	defer s.finish(ctx, c, events.TypeKeyImportDeleted, &err, func() (string, map[string]any) {
		subject := ""
		data := map[string]any{"keyRef": truncate(ref, 64)}
		if k != nil {
			subject = k.ResourceName()
			data["keyId"] = k.ID
		}
		if importID != "" {
			data["importId"] = importID
		}
		return subject, data
	}, func() {
		k = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	k, _, err = s.resolve(ctx, c.Tenant, ref)
	if err != nil {
		return nil, err
	}
	if k.KeyOrigin() != OriginExternal {
		return nil, newError(CodeUnsupportedOperation, "key %s was generated by keyflow (origin AWS_KMS); only imported material can be deleted", k.ID)
	}
	if k.State == StateDestroyed {
		return nil, newError(CodeInvalidState, "key %s is %s", k.ID, k.State)
	}
	k, importID, err = s.removeMaterial(ctx, c.Tenant, k.ID, "")
	return k, err
}

// ExpireImportParams are the inputs of ExpireImportedKeyMaterial.
type ExpireImportParams struct {
	KeyID    string
	ImportID string
}

// ExpireImportedKeyMaterial is the expiry workflow's step: it deletes the
// key's material if it is still the import ImportID names (a later import
// or a deletion makes it a no-op), and reports whether it did. It is
// idempotent.
func (s *Service) ExpireImportedKeyMaterial(ctx context.Context, c Caller, p ExpireImportParams) (deleted bool, err error) {
	defer s.finish(ctx, c, events.TypeKeyImportExpired, &err, func() (string, map[string]any) {
		subject := ""
		if ValidKeyID(p.KeyID) {
			subject = ResourceName(c.Tenant, p.KeyID)
		}
		return subject, map[string]any{"keyId": truncate(p.KeyID, 64), "importId": truncate(p.ImportID, 64), "deleted": deleted}
	}, nil)
	if err := checkCaller(c); err != nil {
		return false, err
	}
	if !ValidKeyID(p.KeyID) || !ValidKeyID(p.ImportID) {
		return false, newError(CodeValidation, "key ID and import ID must be UUIDs")
	}
	_, id, err := s.removeMaterial(ctx, c.Tenant, p.KeyID, p.ImportID)
	if err != nil {
		if CodeOf(err) == CodeNotFound {
			return false, nil // the key is gone: nothing to expire
		}
		return false, err
	}
	return id != "", nil
}

// removeMaterial takes a key back to PENDING_IMPORT and deletes its
// material. With onlyImport set, it does so only while that import is
// current. It returns the key and the import it removed ("" for none).
// A key without a current import has its (stale) material deleted, which
// finishes a removal that stopped half-way.
//
// The key is updated first, so every worker stops using the material
// (their caches are invalidated by the key watch) before it is gone; then
// the material is deleted. Deleting is idempotent, and it runs also when
// the key was already PENDING_IMPORT, so a step that failed between the
// two is finished by a retry.
func (s *Service) removeMaterial(ctx context.Context, tenant, keyID, onlyImport string) (*Key, string, error) {
	del, ok := s.store.(MaterialDeleter)
	if !ok {
		return nil, "", newError(CodeUnsupportedOperation, "this key store cannot delete key material")
	}
	var removed string
	newer := false // a newer import than onlyImport is current
	k, err := s.updateKey(ctx, tenant, keyID, func(k *Key) (bool, error) {
		removed, newer = "", false
		if k.KeyOrigin() != OriginExternal {
			return false, newError(CodeUnsupportedOperation, "key %s was generated by keyflow (origin AWS_KMS); only imported material can be deleted", k.ID)
		}
		// A key has imported material while it records an import,
		// whatever its state (a suspended key's material expires too,
		// and the key is PENDING_IMPORT afterwards, as in AWS).
		current := k.Import != nil && k.Import.ImportID != ""
		if !current {
			return true, nil // only stale material is left to delete
		}
		if onlyImport != "" && k.Import.ImportID != onlyImport {
			newer = true
			return true, nil
		}
		removed = k.Import.ImportID
		k.State = StatePendingImport
		for i := range k.Versions {
			k.Versions[i].State = StatePendingImport
		}
		k.Import = &ImportState{Fingerprint: k.Import.Fingerprint}
		return false, nil
	})
	if err != nil {
		return nil, "", err
	}
	if newer {
		return k, "", nil // a newer import is current: keep it
	}
	var kept []*VersionMaterial
	for _, v := range k.Versions {
		if m, err := s.store.GetMaterial(ctx, tenant, keyID, v.Number); err == nil {
			kept = append(kept, m)
		}
		if err := del.DeleteMaterial(ctx, tenant, keyID, v.Number); err != nil {
			return nil, "", wrapError(CodeInternal, err, "failed to delete key material")
		}
	}
	s.Invalidate(tenant, keyID)
	// An import that raced this deletion may have found the material
	// still there, kept it and made the key ACTIVE again: then the
	// material (the same, by the fingerprint check) goes back.
	if now, _, err := s.getKey(ctx, tenant, keyID); err == nil && now.Import != nil && now.Import.ImportID != "" {
		for _, m := range kept {
			if err := s.store.PutMaterial(ctx, m); err != nil && !errors.Is(err, ErrStoreExists) {
				return nil, "", wrapError(CodeInternal, err, "failed to restore key material for a concurrent import")
			}
		}
		return now, "", nil
	}
	return k, removed, nil
}

// refuseExternalRotation: keyflow cannot make new material for an
// imported key (the customer holds the only other copy), so EXTERNAL keys
// do not rotate, as in AWS.
func refuseExternalRotation(k *Key) error {
	if k.KeyOrigin() == OriginExternal {
		return newError(CodeUnsupportedOperation, "key %s holds imported material (origin EXTERNAL) and cannot be rotated by keyflow", k.ID)
	}
	return nil
}
