package kms

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// Access keys are the SigV4 credentials of the AWS-compatible gateway
// (workers/awskms): an access key ID and a secret, issued to one principal
// of one tenant, which then decide who a signed request comes from. The
// secret is shown once, at creation; it is stored sealed under a fresh
// AES-256 key that the HSM generates and wraps under the root key, so a
// copy of the store alone does not reveal it. The gateway needs the
// plaintext secret to check signatures (SigV4 is an HMAC), and gets it
// from AccessKeyIdentity.

// AccessKeyStore holds access keys, by ID. Implementations return errors
// wrapping ErrStoreExists and ErrStoreNotFound where those apply.
type AccessKeyStore interface {
	// PutAccessKey creates (rev 0) or replaces (if the revision is still
	// rev) an access key.
	PutAccessKey(ctx context.Context, k *AccessKey, rev Revision) (Revision, error)
	GetAccessKey(ctx context.Context, id string) (*AccessKey, Revision, error)
	DeleteAccessKey(ctx context.Context, id string) error
	ListAccessKeys(ctx context.Context, tenant string) ([]*AccessKey, error)
}

// AccessKey is one stored access key. The secret is only ever sealed.
type AccessKey struct {
	ID         string     `json:"id"`
	Tenant     string     `json:"tenant"`
	Principal  string     `json:"principal"`
	Roles      []string   `json:"roles"`
	CreatedAt  time.Time  `json:"createdAt"`
	CreatedBy  string     `json:"createdBy"`
	DisabledAt *time.Time `json:"disabledAt,omitempty"`
	// WrappedKey is an AES-256 key wrapped under the root key (KWP);
	// SealedSecret is iv ‖ AES-GCM(secret) under it, bound to the ID,
	// tenant and principal.
	WrappedKey   []byte `json:"wrappedKey"`
	SealedSecret []byte `json:"sealedSecret"`
}

// AccessKeyIdentity is what an access key authenticates: the caller's
// tenant, principal and roles, and the secret to check a signature with.
type AccessKeyIdentity struct {
	AccessKeyID string
	Tenant      string
	Principal   string
	Roles       []string
	Secret      []byte
}

// ErrAccessKeyDisabled is returned by AccessKeyIdentity for a disabled
// access key (a NotFoundException wraps an unknown one).
var ErrAccessKeyDisabled = &Error{Code: CodeDisabled, Message: "the access key is disabled"}

func (s *Service) accessKeyStore() (AccessKeyStore, error) {
	st, ok := s.store.(AccessKeyStore)
	if !ok {
		return nil, newError(CodeInternal, "access keys are not available on this worker")
	}
	return st, nil
}

var accessKeyIDEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newAccessKeyID draws an ID shaped as AWS's: AKIA and 16 characters of
// A-Z2-7.
func newAccessKeyID() (string, error) {
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "AKIA" + accessKeyIDEncoding.EncodeToString(b), nil
}

// ValidAccessKeyID reports whether id has the shape of an access key ID.
func ValidAccessKeyID(id string) bool {
	rest, ok := strings.CutPrefix(id, "AKIA")
	if !ok || len(rest) != 16 {
		return false
	}
	_, err := accessKeyIDEncoding.DecodeString(rest)
	return err == nil
}

func accessKeyAAD(k *AccessKey) []byte {
	return []byte("keyflow-accesskey-v1|" + k.ID + "|" + k.Tenant + "|" + k.Principal)
}

// CreateAccessKey issues an access key to a principal of the caller's
// tenant, with the principal's roles, and returns it with its secret,
// which is never shown again.
func (s *Service) CreateAccessKey(ctx context.Context, c Caller, dir Directory, principal string) (k *AccessKey, secret string, err error) {
	defer s.finish(ctx, c, events.TypeAccessKeyCreated, &err, func() (string, map[string]any) {
		d := map[string]any{"principal": truncate(principal, 64)}
		if k != nil {
			d["accessKeyId"] = k.ID
		}
		return "", d
	}, func() { k, secret = nil, "" })
	if err := checkCaller(c); err != nil {
		return nil, "", err
	}
	if err := checkPrincipalName(principal); err != nil {
		return nil, "", err
	}
	st, err := s.accessKeyStore()
	if err != nil {
		return nil, "", err
	}
	if dir == nil {
		return nil, "", newError(CodeInternal, "principal management is not available on this worker")
	}
	known, err := dir.Principals(ctx, c.Tenant)
	if err != nil {
		return nil, "", dirError(err, "tenant "+c.Tenant)
	}
	i := slices.IndexFunc(known, func(p PrincipalInfo) bool { return p.Name == principal })
	if i < 0 {
		return nil, "", newError(CodeNotFound, "principal %s does not exist", principal)
	}
	if known[i].DisabledAt != nil {
		return nil, "", newError(CodeInvalidState, "principal %s is disabled", principal)
	}
	id, err := newAccessKeyID()
	if err != nil {
		return nil, "", wrapError(CodeInternal, err, "failed to draw an access key ID")
	}
	raw := make([]byte, 30)
	if _, err := rand.Read(raw); err != nil {
		return nil, "", wrapError(CodeInternal, err, "failed to draw a secret")
	}
	secret = base64.StdEncoding.EncodeToString(raw) // 40 characters, as AWS's
	clear(raw)
	k = &AccessKey{ID: id, Tenant: c.Tenant, Principal: principal, Roles: keypolicy.RoleNames(known[i].Roles), CreatedAt: s.now().UTC(), CreatedBy: c.Principal}
	if k.WrappedKey, err = s.hsm.GenerateWrappedAESKey(ctx, s.root, 32); err != nil {
		return nil, "", wrapError(CodeInternal, err, "failed to generate the access key's sealing key in the HSM")
	}
	h, err := s.hsm.UnwrapAESKey(ctx, s.root, k.WrappedKey)
	if err != nil {
		return nil, "", wrapError(CodeInternal, err, "failed to load the access key's sealing key")
	}
	defer func() { _ = s.hsm.DestroyKey(context.WithoutCancel(ctx), h) }()
	iv, err := newIV()
	if err != nil {
		return nil, "", wrapError(CodeInternal, err, "failed to seal the secret")
	}
	ct, err := s.hsm.EncryptGCM(ctx, h, iv, []byte(secret), accessKeyAAD(k))
	if err != nil {
		return nil, "", wrapError(CodeInternal, err, "the HSM failed to seal the secret")
	}
	k.SealedSecret = append(iv, ct...)
	if _, err := st.PutAccessKey(ctx, k, 0); err != nil {
		return nil, "", wrapError(CodeInternal, err, "failed to store the access key")
	}
	return k, secret, nil
}

// ListAccessKeys lists the caller's tenant's access keys (never their
// secrets).
func (s *Service) ListAccessKeys(ctx context.Context, c Caller) (out []*AccessKey, err error) {
	defer s.finish(ctx, c, events.TypeAccessKeyListed, &err, func() (string, map[string]any) {
		return "", map[string]any{"count": len(out)}
	}, func() { out = nil })
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	st, err := s.accessKeyStore()
	if err != nil {
		return nil, err
	}
	out, err = st.ListAccessKeys(ctx, c.Tenant)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to list access keys")
	}
	slices.SortFunc(out, func(a, b *AccessKey) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// ownAccessKey reads an access key of the caller's tenant; another
// tenant's is NotFound.
func (s *Service) ownAccessKey(ctx context.Context, c Caller, id string) (AccessKeyStore, *AccessKey, Revision, error) {
	if err := checkCaller(c); err != nil {
		return nil, nil, 0, err
	}
	st, err := s.accessKeyStore()
	if err != nil {
		return nil, nil, 0, err
	}
	if !ValidAccessKeyID(id) {
		return nil, nil, 0, newError(CodeValidation, "%q is not an access key ID (AKIA and 16 characters)", truncate(id, 32))
	}
	k, rev, err := st.GetAccessKey(ctx, id)
	if errors.Is(err, ErrStoreNotFound) || (err == nil && k.Tenant != c.Tenant) {
		return nil, nil, 0, newError(CodeNotFound, "access key %s does not exist", id)
	}
	if err != nil {
		return nil, nil, 0, wrapError(CodeInternal, err, "failed to read the access key")
	}
	return st, k, rev, nil
}

// DisableAccessKey disables an access key of the caller's tenant: the
// gateway refuses it from then on (within its cache lifetime on other
// workers; at once on this one).
func (s *Service) DisableAccessKey(ctx context.Context, c Caller, id string) (err error) {
	defer s.finish(ctx, c, events.TypeAccessKeyDisabled, &err, func() (string, map[string]any) {
		return "", map[string]any{"accessKeyId": truncate(id, 32)}
	}, nil)
	st, k, rev, err := s.ownAccessKey(ctx, c, id)
	if err != nil {
		return err
	}
	if k.DisabledAt != nil {
		return nil
	}
	now := s.now().UTC()
	k.DisabledAt = &now
	if _, err := st.PutAccessKey(ctx, k, rev); err != nil {
		return wrapError(CodeInternal, err, "failed to store the access key")
	}
	s.forgetAccessKey(id)
	return nil
}

// DeleteAccessKey deletes an access key of the caller's tenant.
func (s *Service) DeleteAccessKey(ctx context.Context, c Caller, id string) (err error) {
	defer s.finish(ctx, c, events.TypeAccessKeyDeleted, &err, func() (string, map[string]any) {
		return "", map[string]any{"accessKeyId": truncate(id, 32)}
	}, nil)
	st, _, _, err := s.ownAccessKey(ctx, c, id)
	if err != nil {
		return err
	}
	if err := st.DeleteAccessKey(ctx, id); err != nil {
		return wrapError(CodeInternal, err, "failed to delete the access key")
	}
	s.forgetAccessKey(id)
	return nil
}

// AccessKeyIdentity returns who an access key authenticates, with its
// secret unsealed in the HSM, for a gateway to check a signature. It
// records nothing: the gateway records the request, or its refusal. An
// unknown ID is NotFound; a disabled key is ErrAccessKeyDisabled.
func (s *Service) AccessKeyIdentity(ctx context.Context, id string) (*AccessKeyIdentity, error) {
	st, err := s.accessKeyStore()
	if err != nil {
		return nil, err
	}
	if !ValidAccessKeyID(id) {
		return nil, newError(CodeNotFound, "unknown access key")
	}
	k, _, err := st.GetAccessKey(ctx, id)
	if errors.Is(err, ErrStoreNotFound) {
		return nil, newError(CodeNotFound, "unknown access key")
	}
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to read the access key")
	}
	if k.DisabledAt != nil {
		return nil, ErrAccessKeyDisabled
	}
	if len(k.SealedSecret) < 12 {
		return nil, newError(CodeInternal, "the access key's sealed secret is malformed")
	}
	h, err := s.hsm.UnwrapAESKey(ctx, s.root, k.WrappedKey)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to load the access key's sealing key")
	}
	defer func() { _ = s.hsm.DestroyKey(context.WithoutCancel(ctx), h) }()
	secret, err := s.hsm.DecryptGCM(ctx, h, k.SealedSecret[:12], k.SealedSecret[12:], accessKeyAAD(k))
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to unseal the access key's secret")
	}
	return &AccessKeyIdentity{AccessKeyID: k.ID, Tenant: k.Tenant, Principal: k.Principal, Roles: k.Roles, Secret: secret}, nil
}

// AccessKeyWatcher is told when an access key is disabled or deleted on
// this worker, so a gateway drops its cached secret at once.
type AccessKeyWatcher interface{ ForgetAccessKey(id string) }

// WatchAccessKeys registers w.
func (s *Service) WatchAccessKeys(w AccessKeyWatcher) {
	s.akMu.Lock()
	s.akWatchers = append(s.akWatchers, w)
	s.akMu.Unlock()
}

func (s *Service) forgetAccessKey(id string) {
	s.akMu.Lock()
	ws := slices.Clone(s.akWatchers)
	s.akMu.Unlock()
	for _, w := range ws {
		w.ForgetAccessKey(id)
	}
}
