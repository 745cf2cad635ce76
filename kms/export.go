package kms

// Exportable keys: the one way key material leaves keyflow in plaintext.
//
// keyflow's keys are non-extractable: a version is stored as a blob wrapped
// under the HSM root key (AES-KWP) and is only ever unwrapped into the HSM
// as a sensitive, non-extractable session object. KMIP clients such as
// pg_tde and MongoDB's Register/Get mode need the material itself, so a
// key may be made exportable, explicitly and only when it is created or
// registered:
//
//   - its material is drawn from the HSM's generator (or given, for
//     RegisterKey) and imported into the HSM as usual (the blob that
//     crypto operations load), AND kept a second time as a secret wrapped
//     under the root key (hsm.SecretWrapper, AES-KWP): VersionMaterial.Export.
//     Only that second copy can be released; the plaintext exists in
//     process memory while it is wrapped and while ExportKey returns it,
//     and is zeroed by keyflow right after (the caller zeroes its copy);
//   - Key.Exportable is set and never changes afterwards; the inventory
//     shows it; the key.created record says exportable=true;
//   - the transport authorizes asking for it as its own operation (a
//     separate role row, see roles.go), so that an ordinary key creator
//     cannot make one;
//   - every release is one io.keyflow.key.exported.v1 record, and so is
//     every refusal (a non-exportable key answers AccessDenied with a
//     reason that says so).
//
// Exportable key pairs (RSA_3072, RSA_4096, ECC_NIST_P256, ECC_NIST_P384)
// exist for one purpose: distribution to a cloud KMS (cloud.go), the only
// way their private key leaves, wrapped for the provider's key. Their pair
// is generated in Go (crypto/rand) in process memory, turned into the
// HSM's blob (hsm.PrivateKeyWrapper) and kept a second time as the
// releasable copy (its PKCS#8, wrapped with hsm.SecretWrapper); the
// PKCS#8 is zeroed once both are made. ExportKey does not release them.
// They need the same explicit exportable attribute, and so the same
// separate permission, as exportable secret keys.
//
// What is not exportable: Ed25519, post-quantum keys, registered key
// pairs and keys of imported material (origin EXTERNAL). A rotation of an
// exportable key makes an exportable version (newRotatedMaterial).

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/hsm"
)

// Attribute is one free-form attribute of a key (a KMIP Name, a KMIP
// custom attribute "x-..."). It never holds material.
type Attribute struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Bounds of Key.Attributes.
const (
	MaxAttributes      = 64
	MaxAttributeName   = 128
	MaxAttributeValue  = 1024
	OriginRegistered   = "REGISTERED"
	exportMaterialSize = 32
)

// ValidateAttributes checks the bounds of a key's attributes.
func ValidateAttributes(attrs []Attribute) error {
	if len(attrs) > MaxAttributes {
		return newError(CodeValidation, "a key has at most %d attributes, got %d", MaxAttributes, len(attrs))
	}
	for _, a := range attrs {
		if a.Name == "" || len(a.Name) > MaxAttributeName || len(a.Value) > MaxAttributeValue {
			return newError(CodeValidation, "an attribute name is 1-%d bytes and its value at most %d", MaxAttributeName, MaxAttributeValue)
		}
	}
	return nil
}

// exportAudit adds what CreateKey's record says about export and origin.
func exportAudit(data map[string]any, p CreateKeyParams) {
	if p.Exportable {
		data["exportable"] = true
	}
	if p.material != nil {
		data["origin"] = OriginRegistered
	}
}

// checkExportable refuses what cannot be exportable or registered.
func checkExportable(p CreateKeyParams, info *specInfo, external bool) error {
	if err := ValidateAttributes(p.Attributes); err != nil {
		return err
	}
	if !p.Exportable && p.material == nil {
		return nil
	}
	if external {
		return newError(CodeValidation, "a key for imported material (origin EXTERNAL) cannot be exportable or registered")
	}
	if info.kind == materialKeyPair && exportablePairs[info.spec] && p.material == nil {
		return nil
	}
	if info.kind != materialAES && info.kind != materialHMAC {
		return newError(CodeValidation, "only %s and %s keys can be exportable or registered, and %v keys exportable, not %s", SpecSymmetricDefault, SpecHMAC256, exportablePairList, info.spec)
	}
	if p.material != nil && len(p.material) != exportMaterialSize {
		return newError(CodeIncorrectKeyMaterial, "a %s key is %d bytes of material, got %d", info.spec, exportMaterialSize, len(p.material))
	}
	return nil
}

// exportablePairs are the key pair specs that may be exportable: the
// ones some cloud KMS imports (docs/multi-cloud.md).
var (
	exportablePairList = []KeySpec{SpecRSA3072, SpecRSA4096, SpecECCP256, SpecECCP384}
	exportablePairs    = map[KeySpec]bool{SpecRSA3072: true, SpecRSA4096: true, SpecECCP256: true, SpecECCP384: true}
)

// newExportablePair makes an exportable key pair version: generated in
// Go, its PKCS#8 wrapped twice under the root key (the blob that signs
// and decrypts, and the releasable copy), then zeroed.
func (s *Service) newExportablePair(ctx context.Context, tenant, keyID string, version uint32, info *specInfo) error {
	pw, ok := s.hsm.(hsm.PrivateKeyWrapper)
	sw, ok2 := s.hsm.(hsm.SecretWrapper)
	if !ok || !ok2 {
		return newError(CodeUnsupportedOperation, "this HSM cannot hold exportable key pairs")
	}
	var priv crypto.Signer
	var err error
	switch {
	case info.pair.Algorithm == "RSA":
		priv, err = rsa.GenerateKey(rand.Reader, info.pair.RSABits)
	case info.pair.Curve == "P-256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	}
	if err != nil {
		return wrapError(CodeInternal, err, "failed to generate the key pair")
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return wrapError(CodeInternal, err, "failed to encode the key pair")
	}
	defer clear(der)
	kp, err := pw.WrapPrivateKey(ctx, s.root, der, info.pair)
	if err != nil {
		return wrapError(CodeInternal, err, "the HSM failed to wrap the key pair")
	}
	m := &VersionMaterial{Tenant: tenant, KeyID: keyID, Version: version, Algorithm: info.alg, WrappedBy: s.label, Wrapped: kp.WrappedPrivate, PublicKey: kp.PublicKeyDER}
	if m.Export, err = sw.WrapSecret(ctx, s.root, der); err != nil {
		return wrapError(CodeInternal, err, "the HSM failed to wrap the exportable copy")
	}
	if err := s.store.PutMaterial(ctx, m); err != nil && !errors.Is(err, ErrStoreExists) {
		return wrapError(CodeInternal, err, "failed to store key material")
	}
	return nil
}

// newExportableMaterial stores version material given (material) or drawn
// from the HSM, imported into the HSM blob format, plus its releasable copy
// when exportable.
func (s *Service) newExportableMaterial(ctx context.Context, tenant, keyID string, version uint32, info *specInfo, material []byte, exportable bool) error {
	if info.kind == materialKeyPair {
		return s.newExportablePair(ctx, tenant, keyID, version, info)
	}
	imp, ok := s.hsm.(hsm.KeyImporter)
	sw, ok2 := s.hsm.(hsm.SecretWrapper)
	if !ok || !ok2 {
		return newError(CodeUnsupportedOperation, "this HSM cannot hold exportable or registered keys")
	}
	if material == nil {
		var err error
		if material, err = s.hsm.GenerateRandom(ctx, exportMaterialSize); err != nil {
			return wrapError(CodeInternal, err, "the HSM failed to generate key material")
		}
		defer clear(material)
	}
	target := hsm.ImportTarget{Kind: hsm.ImportAES, Size: exportMaterialSize}
	if info.kind == materialHMAC {
		target.Kind = hsm.ImportHMAC
	}
	blob, err := imp.ImportPlaintext(ctx, material, target, s.root)
	if err != nil {
		if errors.Is(err, hsm.ErrInvalidInput) {
			return wrapError(CodeIncorrectKeyMaterial, err, "the key material is not a %s key", info.spec)
		}
		return wrapError(CodeInternal, err, "the HSM failed to import the key material")
	}
	m := &VersionMaterial{Tenant: tenant, KeyID: keyID, Version: version, Algorithm: info.alg, WrappedBy: s.label, Wrapped: blob}
	if exportable {
		if m.Export, err = sw.WrapSecret(ctx, s.root, material); err != nil {
			return wrapError(CodeInternal, err, "the HSM failed to wrap the exportable copy")
		}
	}
	if err := s.store.PutMaterial(ctx, m); err != nil && !errors.Is(err, ErrStoreExists) {
		return wrapError(CodeInternal, err, "failed to store key material")
	}
	return nil
}

// newRotatedMaterial makes a new version's material: exportable for an
// exportable key, generated inside the HSM for every other key.
func (s *Service) newRotatedMaterial(ctx context.Context, k *Key, version uint32, info *specInfo) error {
	if k.Exportable {
		return s.newExportableMaterial(ctx, k.Tenant, k.ID, version, info, nil, true)
	}
	return s.newVersionMaterial(ctx, k.Tenant, k.ID, version, info)
}

// RegisterKeyParams are the inputs of RegisterKey: CreateKey's, plus the
// material (32 bytes, for SYMMETRIC_DEFAULT or HMAC_256).
type RegisterKeyParams struct {
	CreateKeyParams
	Material []byte
}

// RegisterKey creates a key whose first version is material the caller
// supplies (KMIP Register). Its key.created record has origin REGISTERED.
// The caller zeroes Material afterwards.
func (s *Service) RegisterKey(ctx context.Context, c Caller, p RegisterKeyParams) (*Key, error) {
	cp := p.CreateKeyParams
	cp.material = p.Material
	if cp.material == nil {
		cp.material = []byte{}
	}
	return s.CreateKey(ctx, c, cp)
}

// ExportResult is released key material. The caller zeroes Material.
type ExportResult struct {
	KeyID      string
	KeyVersion uint32
	Spec       KeySpec
	Material   []byte
}

// ExportKey releases the material of an exportable key's primary version.
// A key that is not exportable is refused (AccessDenied) with a reason
// that says so; so is a key whose state forbids use.
func (s *Service) ExportKey(ctx context.Context, c Caller, ref string) (res *ExportResult, err error) {
	var k *Key
	defer s.finish(ctx, c, events.TypeKeyExported, &err, func() (string, map[string]any) {
		data := map[string]any{"keyRef": truncate(ref, 64)}
		subject := ""
		if k != nil {
			subject = k.ResourceName()
			data["exportable"] = k.Exportable
		}
		if res != nil {
			data["keyVersion"] = res.KeyVersion
		}
		return subject, data
	}, func() {
		if res != nil {
			clear(res.Material)
			res = nil
		}
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	k, _, err = s.resolve(ctx, c.Tenant, ref)
	if err != nil {
		return nil, err
	}
	if !k.Exportable {
		return nil, newError(CodeAccessDenied, "key %s is not exportable: keyflow key material is non-extractable unless the key was created or registered with the exportable attribute", k.ID)
	}
	if specs[k.Spec] != nil && specs[k.Spec].kind == materialKeyPair {
		return nil, newError(CodeAccessDenied, "key %s is an exportable key pair: its private key leaves keyflow only wrapped for a cloud destination (key distribute)", k.ID)
	}
	v, ok := k.Version(k.PrimaryVersion)
	if !ok {
		return nil, newError(CodeInvalidState, "key %s has no primary version", k.ID)
	}
	if err := permitVersion(k, v, UseProcess, s.now()); err != nil {
		return nil, err
	}
	m, err := s.store.GetMaterial(ctx, k.Tenant, k.ID, v.Number)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to read key material")
	}
	if len(m.Export) == 0 {
		return nil, newError(CodeAccessDenied, "version %d of key %s has no exportable copy", v.Number, k.ID)
	}
	sw, ok := s.hsm.(hsm.SecretWrapper)
	if !ok {
		return nil, newError(CodeUnsupportedOperation, "this HSM cannot release exportable keys")
	}
	material, err := sw.UnwrapSecret(ctx, s.root, m.Export)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "the HSM failed to unwrap the exportable copy")
	}
	return &ExportResult{KeyID: k.ID, KeyVersion: v.Number, Spec: k.Spec, Material: material}, nil
}

// SetAttributes changes a key's free-form attributes (KMIP Add, Modify and
// Delete Attribute): change gets the current list and returns the new one.
// One io.keyflow.kmip.attributes.changed.v1 record names the operation and
// the attribute, never values.
func (s *Service) SetAttributes(ctx context.Context, c Caller, ref, op, name string, change func([]Attribute) ([]Attribute, error)) (*Key, error) {
	data := map[string]any{"keyRef": truncate(ref, 64), "operation": truncate(op, 32), "attribute": truncate(name, MaxAttributeName)}
	return s.changeKey(ctx, c, events.TypeKMIPAttributesChanged, ref, data, nil, func(k *Key) (bool, error) {
		next, err := change(append([]Attribute(nil), k.Attributes...))
		if err != nil {
			return false, err
		}
		if err := ValidateAttributes(next); err != nil {
			return false, err
		}
		k.Attributes = next
		return false, nil
	})
}
