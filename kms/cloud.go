package kms

// Cloud destinations: the domain half of the Multi-Cloud KMS pattern
// (docs/multi-cloud.md). keyflow owns a key; AWS KMS, Google Cloud KMS and
// Azure Key Vault hold copies. This file keeps what the domain must know
// and nothing of the providers (package cloud and its subpackages talk to
// them; package workflows runs the steps):
//
//   - a CloudDestination is a provider account/region, key ring or vault
//     that a tenant registered, with settings that name where it is and
//     where its credentials come from, never the credentials themselves
//     (cloudSettings lists what each provider may have);
//   - a CloudPlacement is one key in one destination: the provider's
//     resource name, its version per keyflow version, the state keyflow
//     wants there, when it last synced and its last error;
//   - WrapForCloud wraps a key version's material for a provider's
//     wrapping public key and returns only the wrapped bytes, with one
//     io.keyflow.cloud.material.wrapped.v1 record. Only exportable keys
//     (export.go) can leave: their releasable copy is the one blob the
//     HSM's unwrap may hand back. For an AES key that is the 32 bytes;
//     for an exportable RSA or EC key pair it is the private key's PKCS#8
//     DER, which only the RSA-AES schemes carry (an RSA-OAEP block is too
//     small for it). SoftHSM 2.6.1 has neither RSA-OAEP with
//     SHA-256 nor CKM_RSA_AES_KEY_WRAP, so the OAEP (and AES-KWP) run in
//     Go over the unwrapped copy, which is zeroed at once; an HSM with
//     those mechanisms would do the whole wrap inside (C_WrapKey), and
//     hsm.TransportWrapper is where that ability would plug in;
//   - RecordCloudCall and RecordCloudDrift turn each provider request
//     (with the provider's request ID) and each difference the reconcile
//     finds into audit records.

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"regexp"
	"slices"
	"time"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/hsm"
)

// Providers and drift modes of a destination.
const (
	CloudAWS   = "aws"
	CloudGCP   = "gcp"
	CloudAzure = "azure"

	DriftReport = "report"
	DriftRepair = "repair"
)

// Placement states: what keyflow wants in the destination.
const (
	PlacementEnabled         = "ENABLED"
	PlacementDisabled        = "DISABLED"
	PlacementPendingDeletion = "PENDING_DELETION"
)

// cloudSettings are the settings each provider may have. None is a
// secret: credentials come from the SDK's chain or a file named here.
var cloudSettings = map[string][]string{
	CloudAWS:   {"region", "endpoint", "profile", "credentialsFile", "wrappingKeySpec", "aliases"},
	CloudGCP:   {"project", "location", "keyRing", "endpoint", "credentialsFile", "protectionLevel"},
	CloudAzure: {"vaultURL"},
}

var destNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// CloudDestination is one provider destination of a tenant.
type CloudDestination struct {
	Tenant   string            `json:"tenant"`
	Name     string            `json:"name"`
	Provider string            `json:"provider"`
	Settings map[string]string `json:"settings,omitempty"`
	// Drift is DriftReport (the default) or DriftRepair.
	Drift   string    `json:"drift"`
	Created time.Time `json:"created"`
	// ReconcileEvery is how often the reconcile should compare the
	// destination with keyflow (0: no schedule); the tenant's reconcile
	// schedule runs at the shortest period of its destinations.
	ReconcileEvery time.Duration `json:"reconcileEvery,omitempty"`
}

// CloudVersion is one keyflow version's copy in a destination.
type CloudVersion struct {
	KeyVersion      uint32 `json:"keyVersion"`
	ProviderVersion string `json:"providerVersion"`
}

// CloudPlacement is one key in one destination.
type CloudPlacement struct {
	Tenant      string         `json:"tenant"`
	KeyID       string         `json:"keyId"`
	Destination string         `json:"destination"`
	Provider    string         `json:"provider"`
	Resource    string         `json:"resource,omitempty"`
	Versions    []CloudVersion `json:"versions,omitempty"`
	// State is what keyflow wants the provider to hold.
	State    string    `json:"state"`
	LastSync time.Time `json:"lastSync,omitzero"`
	// Pending names a step started and not finished ("distribute",
	// "rotate", "disable", ...); empty when in sync.
	Pending       string    `json:"pending,omitempty"`
	LastError     string    `json:"lastError,omitempty"`
	LastErrorCode string    `json:"lastErrorCode,omitempty"`
	LastErrorAt   time.Time `json:"lastErrorAt,omitzero"`
}

// Primary is the provider version of the newest keyflow version.
func (p *CloudPlacement) Primary() (CloudVersion, bool) {
	if len(p.Versions) == 0 {
		return CloudVersion{}, false
	}
	return p.Versions[len(p.Versions)-1], true
}

// ProviderVersions lists the provider versions in keyflow's order.
func (p *CloudPlacement) ProviderVersions() []string {
	out := make([]string, len(p.Versions))
	for i, v := range p.Versions {
		out[i] = v.ProviderVersion
	}
	return out
}

// CloudStore is the store ability that keeps destinations and placements
// (workers/kvstore: the kf_cloud bucket).
type CloudStore interface {
	PutCloudDestination(ctx context.Context, d *CloudDestination) error
	GetCloudDestination(ctx context.Context, tenant, name string) (*CloudDestination, error)
	ListCloudDestinations(ctx context.Context, tenant string) ([]*CloudDestination, error)
	PutCloudPlacement(ctx context.Context, p *CloudPlacement) error
	GetCloudPlacement(ctx context.Context, tenant, keyID, dest string) (*CloudPlacement, error)
	// ListCloudPlacements lists a key's placements, or every placement of
	// the tenant when keyID is empty.
	ListCloudPlacements(ctx context.Context, tenant, keyID string) ([]*CloudPlacement, error)
	DeleteCloudPlacement(ctx context.Context, tenant, keyID, dest string) error
}

func (s *Service) cloudStore() (CloudStore, error) {
	cs, ok := s.store.(CloudStore)
	if !ok {
		return nil, newError(CodeUnsupportedOperation, "this store keeps no cloud destinations")
	}
	return cs, nil
}

// AddCloudDestination registers (or replaces) a destination.
func (s *Service) AddCloudDestination(ctx context.Context, c Caller, d CloudDestination) (out *CloudDestination, err error) {
	defer s.finish(ctx, c, events.TypeCloudDestinationAdded, &err, func() (string, map[string]any) {
		data := map[string]any{"destination": truncate(d.Name, 64), "provider": truncate(d.Provider, 16), "drift": truncate(d.Drift, 16)}
		return "", data
	}, func() { out = nil })
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	allowed, ok := cloudSettings[d.Provider]
	switch {
	case !ok:
		return nil, newError(CodeValidation, "provider must be %s, %s or %s, not %q", CloudAWS, CloudGCP, CloudAzure, truncate(d.Provider, 16))
	case !destNameRE.MatchString(d.Name):
		return nil, newError(CodeValidation, "a destination name is 1-63 lowercase letters, digits and dashes")
	}
	if d.Drift == "" {
		d.Drift = DriftReport
	}
	if d.Drift != DriftReport && d.Drift != DriftRepair {
		return nil, newError(CodeValidation, "drift must be %s or %s", DriftReport, DriftRepair)
	}
	if d.ReconcileEvery != 0 && (d.ReconcileEvery < MinCloudReconcile || d.ReconcileEvery > MaxCloudReconcile) {
		return nil, newError(CodeValidation, "the reconcile period is between %s and %s (or none)", MinCloudReconcile, MaxCloudReconcile)
	}
	for k, v := range d.Settings {
		if !slices.Contains(allowed, k) {
			return nil, newError(CodeValidation, "a %s destination has the settings %v, not %q (credentials come from the provider SDK's chain or a credentialsFile)", d.Provider, allowed, truncate(k, 32))
		}
		if len(v) > 1024 {
			return nil, newError(CodeValidation, "setting %s is longer than 1024 bytes", k)
		}
	}
	cs, err := s.cloudStore()
	if err != nil {
		return nil, err
	}
	if err := s.checkCloudReplace(ctx, cs, c.Tenant, &d); err != nil { // cloud_admin.go
		return nil, err
	}
	d.Tenant, d.Created = c.Tenant, s.now()
	if err := cs.PutCloudDestination(ctx, &d); err != nil {
		return nil, wrapError(CodeInternal, err, "failed to store the destination")
	}
	return &d, nil
}

// GetCloudDestination returns one destination.
func (s *Service) GetCloudDestination(ctx context.Context, c Caller, name string) (*CloudDestination, error) {
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	cs, err := s.cloudStore()
	if err != nil {
		return nil, err
	}
	d, err := cs.GetCloudDestination(ctx, c.Tenant, name)
	if errors.Is(err, ErrStoreNotFound) {
		return nil, newError(CodeNotFound, "no cloud destination named %q", truncate(name, 64))
	}
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to read the destination")
	}
	return d, nil
}

// ListCloudDestinations lists the tenant's destinations.
func (s *Service) ListCloudDestinations(ctx context.Context, c Caller) ([]*CloudDestination, error) {
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	cs, err := s.cloudStore()
	if err != nil {
		return nil, err
	}
	out, err := cs.ListCloudDestinations(ctx, c.Tenant)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to list destinations")
	}
	return out, nil
}

// CloudPlacements lists where a key lives (keyID), or every placement of
// the tenant (keyID empty).
func (s *Service) CloudPlacements(ctx context.Context, c Caller, keyID string) ([]*CloudPlacement, error) {
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	cs, err := s.cloudStore()
	if err != nil {
		return nil, err
	}
	out, err := cs.ListCloudPlacements(ctx, c.Tenant, keyID)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to list placements")
	}
	return out, nil
}

// CloudPlacement returns one placement; NotFound when the key is not in
// the destination.
func (s *Service) CloudPlacement(ctx context.Context, c Caller, keyID, dest string) (*CloudPlacement, error) {
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	cs, err := s.cloudStore()
	if err != nil {
		return nil, err
	}
	p, err := cs.GetCloudPlacement(ctx, c.Tenant, keyID, dest)
	if errors.Is(err, ErrStoreNotFound) {
		return nil, newError(CodeNotFound, "key %s is not in destination %s", keyID, truncate(dest, 64))
	}
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to read the placement")
	}
	return p, nil
}

// UpdateCloudPlacement reads a key's placement in a destination (a new
// one when there is none), lets change edit it, and stores it. A change
// with a step name (op) records io.keyflow.cloud.placement.changed.v1.
func (s *Service) UpdateCloudPlacement(ctx context.Context, c Caller, keyID, dest, op string, change func(*CloudPlacement) error) (p *CloudPlacement, err error) {
	return s.updateCloudPlacement(ctx, c, keyID, dest, op, true, change)
}

// ChangeCloudPlacement is UpdateCloudPlacement for a placement that must
// exist: NotFound when there is none, so a step that ends after an
// undistribute removed the placement does not bring it back.
func (s *Service) ChangeCloudPlacement(ctx context.Context, c Caller, keyID, dest, op string, change func(*CloudPlacement) error) (p *CloudPlacement, err error) {
	return s.updateCloudPlacement(ctx, c, keyID, dest, op, false, change)
}

func (s *Service) updateCloudPlacement(ctx context.Context, c Caller, keyID, dest, op string, create bool, change func(*CloudPlacement) error) (p *CloudPlacement, err error) {
	if op != "" {
		defer s.finish(ctx, c, events.TypeCloudPlacementChanged, &err, func() (string, map[string]any) {
			data := map[string]any{"keyId": keyID, "destination": truncate(dest, 64), "step": truncate(op, 32)}
			if p != nil {
				data["state"] = p.State
				data["resource"] = truncate(p.Resource, 256)
				if v, ok := p.Primary(); ok {
					data["keyVersion"] = v.KeyVersion
				}
			}
			return ResourceName(c.Tenant, keyID), data
		}, nil)
	}
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	cs, err := s.cloudStore()
	if err != nil {
		return nil, err
	}
	d, err := s.GetCloudDestination(ctx, c, dest)
	if err != nil {
		return nil, err
	}
	p, err = cs.GetCloudPlacement(ctx, c.Tenant, keyID, dest)
	if errors.Is(err, ErrStoreNotFound) && !create {
		return nil, newError(CodeNotFound, "key %s is not in destination %s", keyID, truncate(dest, 64))
	}
	if errors.Is(err, ErrStoreNotFound) {
		p, err = &CloudPlacement{Tenant: c.Tenant, KeyID: keyID, Destination: dest, Provider: d.Provider, State: PlacementEnabled}, nil
	}
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to read the placement")
	}
	if err := change(p); err != nil {
		return nil, err
	}
	if err := cs.PutCloudPlacement(ctx, p); err != nil {
		return nil, wrapError(CodeInternal, err, "failed to store the placement")
	}
	return p, nil
}

// RemoveCloudPlacement forgets a key's placement (after undistribute).
func (s *Service) RemoveCloudPlacement(ctx context.Context, c Caller, keyID, dest string) (err error) {
	defer s.finish(ctx, c, events.TypeCloudPlacementChanged, &err, func() (string, map[string]any) {
		return ResourceName(c.Tenant, keyID), map[string]any{"keyId": keyID, "destination": truncate(dest, 64), "step": "undistribute", "state": "REMOVED"}
	}, nil)
	if err := checkCaller(c); err != nil {
		return err
	}
	cs, err := s.cloudStore()
	if err != nil {
		return err
	}
	if err := cs.DeleteCloudPlacement(ctx, c.Tenant, keyID, dest); err != nil && !errors.Is(err, ErrStoreNotFound) {
		return wrapError(CodeInternal, err, "failed to remove the placement")
	}
	return nil
}

// WrapForCloudParams are the inputs of WrapForCloud.
type WrapForCloudParams struct {
	KeyID       string
	Version     uint32
	Destination string
	// Scheme is WrapRSAOAEPSHA256, WrapRSAAESSHA256 or WrapRSAAESSHA1
	// (the same names as BYOK import into keyflow, imports.go).
	Scheme WrappingAlgorithm
	// PublicKey is the provider's RSA wrapping key, DER
	// SubjectPublicKeyInfo, at least 2048 bits.
	PublicKey []byte
}

// WrapForCloud wraps one version's material for a provider's wrapping
// key. The caller sends Wrapped to the provider and keeps it nowhere.
func (s *Service) WrapForCloud(ctx context.Context, c Caller, p WrapForCloudParams) (wrapped []byte, err error) {
	bits := 0
	defer s.finish(ctx, c, events.TypeCloudMaterialWrapped, &err, func() (string, map[string]any) {
		data := map[string]any{"keyId": truncate(p.KeyID, 64), "keyVersion": p.Version, "destination": truncate(p.Destination, 64), "scheme": truncate(string(p.Scheme), 32), "wrappingKeyBits": bits}
		return ResourceName(c.Tenant, p.KeyID), data
	}, func() { clear(wrapped); wrapped = nil })
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	pk, perr := x509.ParsePKIXPublicKey(p.PublicKey)
	pub, ok := pk.(*rsa.PublicKey)
	if perr != nil || !ok {
		return nil, newError(CodeValidation, "the provider's wrapping key is not an RSA public key")
	}
	if bits = pub.N.BitLen(); bits < 2048 {
		return nil, newError(CodeValidation, "the provider's wrapping key has %d bits; at least 2048 are needed", bits)
	}
	k, _, err := s.resolve(ctx, c.Tenant, p.KeyID)
	if err != nil {
		return nil, err
	}
	if !k.Exportable {
		return nil, newError(CodeAccessDenied, "key %s cannot be distributed: only keys created exportable (--exportable) may leave keyflow's HSM", k.ID)
	}
	if info := specs[k.Spec]; info != nil && info.kind == materialKeyPair && p.Scheme == WrapRSAOAEPSHA256 {
		return nil, newError(CodeValidation, "the private key of %s key %s is too long for %s; it is wrapped with %s or %s", k.Spec, k.ID, WrapRSAOAEPSHA256, WrapRSAAESSHA256, WrapRSAAESSHA1)
	}
	v, ok := k.Version(p.Version)
	if !ok {
		return nil, newError(CodeNotFound, "key %s has no version %d", k.ID, p.Version)
	}
	if err := permitVersion(k, v, UseProcess, s.now()); err != nil {
		return nil, err
	}
	m, err := s.store.GetMaterial(ctx, k.Tenant, k.ID, v.Number)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to read key material")
	}
	sw, ok := s.hsm.(hsm.SecretWrapper)
	if !ok || len(m.Export) == 0 {
		return nil, newError(CodeUnsupportedOperation, "version %d of key %s has no exportable copy", v.Number, k.ID)
	}
	material, err := sw.UnwrapSecret(ctx, s.root, m.Export)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "the HSM failed to unwrap the exportable copy")
	}
	defer clear(material)
	return wrapTransport(p.Scheme, pub, material)
}

// wrapTransport wraps material for pub in one of the providers' schemes.
func wrapTransport(scheme WrappingAlgorithm, pub *rsa.PublicKey, material []byte) ([]byte, error) {
	switch scheme {
	case WrapRSAOAEPSHA256:
		out, err := rsa.EncryptOAEP(crypto.SHA256.New(), rand.Reader, pub, material, nil)
		if err != nil {
			return nil, wrapError(CodeInternal, err, "failed to wrap the material")
		}
		return out, nil
	case WrapRSAAESSHA256, WrapRSAAESSHA1:
		h := crypto.SHA256
		if scheme == WrapRSAAESSHA1 {
			h = crypto.SHA1
		}
		eph := make([]byte, 32)
		defer clear(eph)
		if _, err := rand.Read(eph); err != nil {
			return nil, wrapError(CodeInternal, err, "failed to draw the transport key")
		}
		head, err := rsa.EncryptOAEP(h.New(), rand.Reader, pub, eph, nil)
		if err != nil {
			return nil, wrapError(CodeInternal, err, "failed to wrap the transport key")
		}
		return append(head, aesKWP(eph, material)...), nil
	}
	return nil, newError(CodeValidation, "wrapping scheme must be %s, %s or %s", WrapRSAOAEPSHA256, WrapRSAAESSHA256, WrapRSAAESSHA1)
}

// aesKWP is AES key wrap with padding (RFC 5649) of pt under a 32-byte
// kek.
func aesKWP(kek, pt []byte) []byte {
	block, err := aes.NewCipher(kek)
	if err != nil {
		panic(err) // kek is always 32 bytes here
	}
	n := (len(pt) + 7) / 8
	r := make([]byte, 8*n)
	copy(r, pt)
	defer clear(r)
	a := make([]byte, 8)
	binary.BigEndian.PutUint32(a, 0xA65959A6)
	binary.BigEndian.PutUint32(a[4:], uint32(len(pt)))
	buf := make([]byte, 16)
	defer clear(buf)
	if n == 1 {
		copy(buf, a)
		copy(buf[8:], r)
		block.Encrypt(buf, buf)
		return append([]byte(nil), buf...)
	}
	for j := range 6 {
		for i := range n {
			copy(buf, a)
			copy(buf[8:], r[8*i:8*i+8])
			block.Encrypt(buf, buf)
			binary.BigEndian.PutUint64(a, binary.BigEndian.Uint64(buf[:8])^uint64(n*j+i+1))
			copy(r[8*i:], buf[8:])
		}
	}
	return append(a, r...)
}

// CloudCallRecord is one provider request, for the audit trail.
type CloudCallRecord struct {
	KeyID       string // empty for a call about no key (a health check)
	Destination string
	Provider    string
	Operation   string
	RequestID   string // the provider's
	Resource    string
	ErrorCode   string // the provider's error code; empty on success
	Step        string // the keyflow step ("distribute", "rotate", ...)
}

// RecordCloudCall records one provider request: io.keyflow.cloud.call.v1,
// outcome failure when the provider refused or did not answer.
func (s *Service) RecordCloudCall(ctx context.Context, c Caller, r CloudCallRecord) error {
	data := map[string]any{"destination": truncate(r.Destination, 64), "provider": truncate(r.Provider, 16), "operation": truncate(r.Operation, 64), "providerRequestId": truncate(r.RequestID, 128), "step": truncate(r.Step, 32)}
	if r.KeyID != "" {
		data["keyId"] = truncate(r.KeyID, 64)
	}
	if r.Resource != "" {
		data["resource"] = truncate(r.Resource, 256)
	}
	var opErr error
	if r.ErrorCode != "" {
		data["providerErrorCode"] = truncate(r.ErrorCode, 64)
		opErr = newError(CodeCloudProvider, "the provider answered %s", truncate(r.ErrorCode, 64))
	}
	subject := ""
	if r.KeyID != "" {
		subject = ResourceName(c.Tenant, r.KeyID)
	}
	_, lost := s.emitRecord(ctx, c, events.TypeCloudCall, subject, data, opErr)
	return lost
}

// CloudDrift is one difference between keyflow's view and a provider's.
type CloudDrift struct {
	KeyID       string
	Destination string
	Field       string // "state", "primary", "version", "missing"
	Keyflow     string
	Provider    string
	Repaired    bool
}

// RecordCloudDrift records io.keyflow.cloud.drift.v1.
func (s *Service) RecordCloudDrift(ctx context.Context, c Caller, d CloudDrift) error {
	data := map[string]any{"keyId": truncate(d.KeyID, 64), "destination": truncate(d.Destination, 64), "field": truncate(d.Field, 32),
		"keyflow": truncate(d.Keyflow, 256), "provider": truncate(d.Provider, 256), "repaired": d.Repaired}
	return s.emit(ctx, c, events.TypeCloudDrift, ResourceName(c.Tenant, d.KeyID), data, nil)
}

// NoteCloudError keeps a placement's last error for `keyflow cloud
// status`, without a record of its own (the call record has it).
func (s *Service) NoteCloudError(ctx context.Context, c Caller, keyID, dest, code, msg string) error {
	_, err := s.ChangeCloudPlacement(ctx, c, keyID, dest, "", func(p *CloudPlacement) error {
		p.LastErrorCode, p.LastError, p.LastErrorAt = truncate(code, 64), truncate(msg, 512), s.now()
		return nil
	})
	return err
}
