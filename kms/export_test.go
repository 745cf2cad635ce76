package kms

import (
	"context"
	"errors"

	"github.com/google/uuid"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/pqc"
)

// OriginUnsafeTestImport is the "origin" of the key.created event of a key
// made by [Service.UnsafeImportSoftwareKeyForTesting], so the audit trail
// says plainly that its material came from outside keyflow.
const OriginUnsafeTestImport = "UNSAFE_TEST_IMPORT"

// UnsafeImportSoftwareKeyForTesting creates a post-quantum key whose first
// version is the key pair derived from seed, the algorithm's standard
// private-key seed (d‖z for ML-KEM, the 32-byte seed for X-Wing and ML-DSA,
// SK.seed‖SK.prf‖PK.seed for SLH-DSA). It exists so that known-answer
// tests (Wycheproof, the X-Wing draft vectors, crypto/hpke interop) can run
// through keyflow's own key path: the private key is wrapped under the HSM
// root key and stored exactly as CreateKey stores a generated one, and
// every later operation unwraps it as for any other key.
//
// It lives in a _test.go file, so it is compiled into kms's test binary
// only and never into a product binary: a key whose seed the caller knows
// is not a keyflow key (whoever chose the seed holds the private key, no
// policy or audit record can bind its use, and nothing proves the seed was
// ever random). It has no NATS endpoint, and its key.created event carries
// origin UNSAFE_TEST_IMPORT. Customers import keys through BYOK
// (imports.go: a wrapping public key and an import token, as AWS KMS's
// GetParametersForImport and ImportKeyMaterial do).
func (s *Service) UnsafeImportSoftwareKeyForTesting(ctx context.Context, c Caller, spec KeySpec, seed []byte) (k *Key, err error) {
	subject := ""
	defer s.finish(ctx, c, events.TypeKeyCreated, &err, func() (string, map[string]any) {
		data := map[string]any{"alias": "", "keySpec": truncate(string(spec), 64), "origin": OriginUnsafeTestImport}
		if k != nil {
			data["keyId"] = k.ID
			data["version"] = k.PrimaryVersion
		}
		return subject, data
	}, func() {
		k = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	info, ok := specs[spec]
	if !ok || info.kind != materialSoftware {
		return nil, newError(CodeValidation, "only post-quantum keys can be imported from a seed, not %q", truncate(string(spec), 64))
	}
	gen, err := pqKeyGenFor(info)
	if err != nil {
		return nil, err
	}
	if len(seed) != gen.SeedSize() {
		return nil, newError(CodeValidation, "a %s seed is %d bytes, got %d", spec, gen.SeedSize(), len(seed))
	}
	pub, priv, err := gen.DeriveKey(seed)
	if err != nil {
		if errors.Is(err, pqc.ErrInvalidInput) {
			return nil, wrapError(CodeValidation, err, "the %s seed is not valid", spec)
		}
		return nil, wrapError(CodeInternal, err, "failed to derive a %s key", spec)
	}
	defer pqc.Zero(priv)

	id := uuid.NewString()
	subject = ResourceName(c.Tenant, id)
	m := &VersionMaterial{Tenant: c.Tenant, KeyID: id, Version: 1, Algorithm: info.alg, WrappedBy: s.label}
	if err := s.wrapSoftwareMaterial(ctx, m, info, pub, priv); err != nil {
		return nil, err
	}
	if err := s.store.PutMaterial(ctx, m); err != nil {
		return nil, wrapError(CodeInternal, err, "failed to store key material")
	}
	now := s.now().UTC()
	k = &Key{
		ID: id, Tenant: c.Tenant, Description: "UNSAFE: imported from a known seed, for tests only",
		Spec: spec, Usage: info.usages[0], State: StateActive, CreatedAt: now, CreatedBy: c.Principal,
		PrimaryVersion: 1,
		Versions:       []Version{{Number: 1, State: StateActive, Algorithm: info.alg, CreatedAt: now}},
	}
	if _, err := s.store.CreateKey(ctx, k); err != nil {
		return nil, wrapError(CodeInternal, err, "failed to store key")
	}
	return k, nil
}
