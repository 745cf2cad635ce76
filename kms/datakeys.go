package kms

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/keyflow/keyflow/events"
)

// The data-key registry.
//
// Envelope encryption leaves wrapped data keys in the applications'
// databases, where a KMS cannot see them: rotating or replacing a key then
// changes nothing for data already written. Applications that want keyflow
// to keep their wrapped data keys current register them here. keyflow then
// knows, per key and version, how many wrapped data keys still depend on
// it, rewraps them under a new primary version or a new key (rotation,
// compromise remediation, the post-quantum migration), and the application
// fetches the current blob by its registration ID whenever it opens its
// data.
//
// A registration holds a keyflow ciphertext (or a raw RSA-OAEP ciphertext
// with the key and algorithm that opens it) and the encryption context it
// is bound to. Both are as sensitive as the ciphertext itself, which is to
// say not secret without the KMS; the registry never holds plaintext.

// DataKey is one registered wrapped data key.
type DataKey struct {
	ID         string `json:"registrationId"`
	Tenant     string `json:"tenant"`
	KeyID      string `json:"keyId"`
	KeyVersion uint32 `json:"keyVersion"`
	// Algorithm is set for raw RSA-OAEP ciphertexts only (which carry no
	// header naming their key); keyflow ciphertexts name it themselves.
	Algorithm  EncryptionAlgorithm `json:"encryptionAlgorithm,omitempty"`
	Ciphertext []byte              `json:"ciphertextBlob"`
	Context    EncryptionContext   `json:"encryptionContext,omitempty"`
	Label      string              `json:"label,omitempty"`
	CreatedAt  time.Time           `json:"createdAt"`
	CreatedBy  string              `json:"createdBy,omitempty"`
	UpdatedAt  time.Time           `json:"updatedAt"`
	// Rewraps counts how many times keyflow moved this data key.
	Rewraps int `json:"rewraps"`
	// RewrappedFrom is where the last rewrap moved it from.
	RewrappedFrom *DataKeyVersion `json:"rewrappedFrom,omitempty"`
}

// DataKeyQuery selects registrations of one key in the order the store
// keeps them: those after After (an opaque cursor, the Next of the previous
// listing), at most Limit. Versions, when not empty, keeps the
// registrations under those versions only.
type DataKeyQuery struct {
	Tenant   string
	KeyID    string
	Versions []uint32
	After    string
	Limit    int
}

// DataKeyListing is one page of a DataKeyQuery: Next continues after it
// (also past entries it skipped); Done is true when nothing follows.
type DataKeyListing struct {
	DataKeys []*DataKey
	Next     string
	Done     bool
}

// Limits of the registry API.
const (
	maxDataKeyLabel  = 256
	MaxDataKeyPage   = 1000
	defaultDataKeyPg = 100
)

func (s *Service) dataKeys() (DataKeyStore, error) {
	ds, ok := s.store.(DataKeyStore)
	if !ok {
		return nil, newError(CodeInternal, "this deployment has no data-key registry")
	}
	return ds, nil
}

// RegisterDataKeyParams are the inputs of RegisterDataKey. KeyRef and
// Algorithm are needed for raw RSA-OAEP ciphertexts only.
type RegisterDataKeyParams struct {
	Ciphertext []byte
	Context    EncryptionContext
	KeyRef     string
	Algorithm  EncryptionAlgorithm
	Label      string
}

// RegisterDataKey registers a wrapped data key. keyflow first opens it (and
// zeroes the plaintext at once), so the registry holds only ciphertexts it
// can rewrap: a blob with the wrong context or of another tenant is refused
// with the one generic InvalidCiphertextException.
func (s *Service) RegisterDataKey(ctx context.Context, c Caller, p RegisterDataKeyParams) (d *DataKey, err error) {
	var k *Key
	defer s.finish(ctx, c, events.TypeDataKeyRegistered, &err, func() (string, map[string]any) {
		subject, data := "", map[string]any{"ciphertextBytes": len(p.Ciphertext)}
		if k != nil {
			subject = k.ResourceName()
		}
		if d != nil {
			data["registrationId"], data["keyVersion"] = d.ID, d.KeyVersion
		}
		return subject, data
	}, func() {
		d = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	ds, err := s.dataKeys()
	if err != nil {
		return nil, err
	}
	if len(p.Ciphertext) == 0 {
		return nil, newError(CodeValidation, "ciphertextBlob is empty")
	}
	if len(p.Label) > maxDataKeyLabel {
		return nil, newError(CodeValidation, "label is longer than %d characters", maxDataKeyLabel)
	}
	if err := p.Context.validate(); err != nil {
		return nil, err
	}
	var pt []byte
	var ver uint32
	if p.Algorithm != "" && p.Algorithm != EncSymmetricDefault {
		if len(p.Context) > 0 {
			return nil, newError(CodeValidation, "RSA-OAEP ciphertexts carry no encryption context; leave it out")
		}
		k, pt, ver, err = s.rsaDecrypt(ctx, c, p.KeyRef, p.Algorithm, p.Ciphertext)
	} else {
		p.Algorithm = ""
		k, pt, ver, err = s.open(ctx, c.Tenant, p.KeyRef, p.Ciphertext, p.Context, UseProcess)
	}
	clear(pt)
	if err != nil {
		return nil, err
	}
	now := s.now().UTC()
	d = &DataKey{
		ID: uuid.NewString(), Tenant: c.Tenant, KeyID: k.ID, KeyVersion: ver, Algorithm: p.Algorithm,
		Ciphertext: p.Ciphertext, Context: p.Context, Label: p.Label, CreatedAt: now, CreatedBy: c.Principal, UpdatedAt: now,
	}
	if err := ds.CreateDataKey(ctx, d); err != nil {
		return nil, wrapError(CodeInternal, err, "failed to store the registration")
	}
	return d, nil
}

// GetDataKey returns a registration with its current ciphertext.
func (s *Service) GetDataKey(ctx context.Context, c Caller, id string) (d *DataKey, err error) {
	defer s.finish(ctx, c, events.TypeDataKeyRead, &err, func() (string, map[string]any) {
		subject, data := "", map[string]any{"registrationId": truncate(id, 64)}
		if d != nil {
			subject, data["keyVersion"] = ResourceName(d.Tenant, d.KeyID), d.KeyVersion
		}
		return subject, data
	}, func() {
		d = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	d, _, err = s.getDataKey(ctx, c.Tenant, id)
	return d, err
}

func (s *Service) getDataKey(ctx context.Context, tenant, id string) (*DataKey, Revision, error) {
	ds, err := s.dataKeys()
	if err != nil {
		return nil, 0, err
	}
	if !ValidKeyID(id) {
		return nil, 0, newError(CodeValidation, "%q is not a registration ID", truncate(id, 64))
	}
	d, rev, err := ds.GetDataKey(ctx, tenant, id)
	if errors.Is(err, ErrStoreNotFound) {
		return nil, 0, newError(CodeNotFound, "registration %s does not exist", id)
	}
	if err != nil {
		return nil, 0, wrapError(CodeInternal, err, "failed to read the registration")
	}
	return d, rev, nil
}

// DeregisterDataKey forgets a registration. keyflow stops rewrapping it;
// the ciphertext itself keeps working as long as its key version does.
func (s *Service) DeregisterDataKey(ctx context.Context, c Caller, id string) (err error) {
	var d *DataKey
	defer s.finish(ctx, c, events.TypeDataKeyDeregistered, &err, func() (string, map[string]any) {
		subject, data := "", map[string]any{"registrationId": truncate(id, 64)}
		if d != nil {
			subject, data["keyVersion"] = ResourceName(d.Tenant, d.KeyID), d.KeyVersion
		}
		return subject, data
	}, nil)
	if err := checkCaller(c); err != nil {
		return err
	}
	if d, _, err = s.getDataKey(ctx, c.Tenant, id); err != nil {
		return err
	}
	ds, _ := s.dataKeys()
	if err := ds.DeleteDataKey(ctx, c.Tenant, id); err != nil && !errors.Is(err, ErrStoreNotFound) {
		return wrapError(CodeInternal, err, "failed to delete the registration")
	}
	return nil
}

// ListDataKeysParams select a page of one key's registrations.
type ListDataKeysParams struct {
	KeyRef   string
	Versions []uint32 // empty: every version
	After    string   // cursor: the NextCursor of the previous page
	Limit    int      // default 100, at most 1000
}

// DataKeyPage is a page of registrations and, on the first page, the
// per-version counts of the key. NextCursor is empty on the last page (a
// page may hold fewer than Limit registrations and still not be the last).
type DataKeyPage struct {
	KeyID      string
	DataKeys   []*DataKey
	NextCursor string
	Counts     map[uint32]int
}

// ListDataKeys lists a key's registrations, a page at a time.
func (s *Service) ListDataKeys(ctx context.Context, c Caller, p ListDataKeysParams) (page *DataKeyPage, err error) {
	var k *Key
	defer s.finish(ctx, c, events.TypeDataKeyListed, &err, func() (string, map[string]any) {
		subject, data := "", map[string]any{"count": 0}
		if k != nil {
			subject = k.ResourceName()
		}
		if page != nil {
			data["count"] = len(page.DataKeys)
		}
		return subject, data
	}, func() {
		page = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	ds, err := s.dataKeys()
	if err != nil {
		return nil, err
	}
	if p.Limit == 0 {
		p.Limit = defaultDataKeyPg
	}
	if p.Limit < 1 || p.Limit > MaxDataKeyPage {
		return nil, newError(CodeValidation, "limit must be between 1 and %d", MaxDataKeyPage)
	}
	if len(p.After) > 32 {
		return nil, newError(CodeValidation, "the cursor is not one a listing returned")
	}
	if len(p.Versions) > 64 {
		return nil, newError(CodeValidation, "at most 64 versions may be given")
	}
	if k, _, err = s.resolve(ctx, c.Tenant, p.KeyRef); err != nil {
		return nil, err
	}
	list, err := ds.ListDataKeys(ctx, DataKeyQuery{Tenant: c.Tenant, KeyID: k.ID, Versions: p.Versions, After: p.After, Limit: p.Limit})
	if errors.Is(err, ErrStoreNotFound) {
		return nil, newError(CodeValidation, "the cursor is not one a listing returned")
	}
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to list registrations")
	}
	page = &DataKeyPage{KeyID: k.ID, DataKeys: list.DataKeys}
	if !list.Done {
		page.NextCursor = list.Next
	}
	// The counts read the whole index: the first page has them.
	if p.After == "" {
		if page.Counts, err = ds.CountDataKeys(ctx, c.Tenant, k.ID); err != nil {
			return nil, wrapError(CodeInternal, err, "failed to count registrations")
		}
	}
	return page, nil
}

// CountDataKeys counts a key's registrations per version. It is a plain
// read for workflows and the inventory, and emits no event. Without a
// registry it reports none.
func (s *Service) CountDataKeys(ctx context.Context, c Caller, keyID string) (map[uint32]int, error) {
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	ds, ok := s.store.(DataKeyStore)
	if !ok {
		return map[uint32]int{}, nil
	}
	n, err := ds.CountDataKeys(ctx, c.Tenant, keyID)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to count registrations")
	}
	return n, nil
}

// CheckVersionUnused refuses to let a version go (retire, disable or
// destroy) while registered data keys still use it: the lifecycle calls it
// before it retires a version, the migration before it retires a key
// (version 0: any version of the key).
func (s *Service) CheckVersionUnused(ctx context.Context, c Caller, keyID string, version uint32) error {
	n, err := s.CountDataKeys(ctx, c, keyID)
	if err != nil {
		return err
	}
	total := 0
	for v, cnt := range n {
		if version == 0 || v == version {
			total += cnt
		}
	}
	if total > 0 {
		return newError(CodeInvalidState, "%d registered data keys still use key %s; rewrap them first", total, keyID)
	}
	return nil
}
