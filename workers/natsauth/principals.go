package natsauth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// Identity is keyflow's kms.Directory: tenants are NATS accounts and
// principals are users of them, with their roles as tags in the user JWT.
var _ kms.Directory = (*Identity)(nil)

// principalRecord is what the identity file keeps of a principal: never a
// private key (the principal generated its own), only the public keys its
// JWTs were issued to, so they can be revoked.
type principalRecord struct {
	Roles      []keypolicy.Role `json:"roles"`
	Users      []userKey        `json:"users"`
	CreatedAt  time.Time        `json:"createdAt"`
	CreatedBy  string           `json:"createdBy"`
	DisabledAt *time.Time       `json:"disabledAt,omitempty"`
}

type userKey struct {
	Public string `json:"public"`
	Issued int64  `json:"issued"`
	// OwnInbox is set on JWTs that confine the user to its own reply
	// inbox (InboxPrefix). Keys issued before that, with the shared
	// _INBOX.>, are revoked (see addRevocations): they could read other
	// principals' replies.
	OwnInbox bool `json:"ownInbox,omitempty"`
	// Roles are the roles in this key's JWT, when they differ from the
	// principal's (a bootstrap key carries every role); see IssuedUser.
	Roles []keypolicy.Role `json:"roles,omitempty"`
}

// ClaimsPublisher pushes an updated account JWT to the running NATS
// servers (for example as a request on $SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE
// from a system-account connection), so a revocation takes effect at once.
type ClaimsPublisher func(ctx context.Context, account, token string) error

// SetClaimsPublisher sets how updated account JWTs reach the servers.
func (id *Identity) SetClaimsPublisher(p ClaimsPublisher) {
	id.mu.Lock()
	id.push = p
	id.mu.Unlock()
}

// SetPlatformTenant names the tenant whose tenant admins may create
// tenants (the dev stack: "default").
func (id *Identity) SetPlatformTenant(name string) {
	id.mu.Lock()
	id.platform = name
	id.mu.Unlock()
}

// PlatformTenant implements kms.Directory.
func (id *Identity) PlatformTenant() string {
	id.mu.RLock()
	defer id.mu.RUnlock()
	return id.platform
}

// SystemCreds issues creds for a user of the system account, which may
// publish account claim updates.
func (id *Identity) SystemCreds(name string) ([]byte, error) {
	return issueUser(id.system, name, nil)
}

// CreateTenant implements kms.Directory: a new account importing the
// keyflow services, with its tenant policy.
func (id *Identity) CreateTenant(_ context.Context, tenant string, policy keypolicy.RolePolicy) error {
	id.mu.RLock()
	_, exists := id.tenants[tenant]
	id.mu.RUnlock()
	if exists {
		return fmt.Errorf("tenant %s: %w", tenant, kms.ErrStoreExists)
	}
	if tenant == SystemAccountName || tenant == ServiceAccountName || tenant == SystemTenant {
		return &kms.Error{Code: kms.CodeValidation, Message: fmt.Sprintf("tenant name %q is reserved", tenant)}
	}
	if _, err := id.AddTenant(tenant); err != nil {
		return err
	}
	id.mu.Lock()
	defer id.mu.Unlock()
	id.policies[tenant] = policy
	return id.save()
}

// RolePolicy implements kms.Directory. A tenant created with AddTenant
// (the dev stack's default, test fixtures) has an empty policy.
func (id *Identity) RolePolicy(_ context.Context, tenant string) (keypolicy.RolePolicy, error) {
	id.mu.RLock()
	defer id.mu.RUnlock()
	if _, ok := id.tenants[tenant]; !ok {
		return keypolicy.RolePolicy{}, fmt.Errorf("tenant %s: %w", tenant, kms.ErrStoreNotFound)
	}
	return id.policies[tenant], nil
}

// IssuePrincipal implements kms.Directory: it signs a user JWT for the
// caller's public key with the tenant account's key. The principal's
// private key never reaches keyflow.
func (id *Identity) IssuePrincipal(_ context.Context, p kms.IssuePrincipalParams) (string, error) {
	if !nkeys.IsValidPublicUserKey(p.PublicKey) {
		return "", &kms.Error{Code: kms.CodeValidation, Message: "publicKey must be an NKEY user public key (U...)"}
	}
	return id.issue(p.Tenant, p.Name, p.Roles, p.PublicKey, p.CreatedBy, false)
}

// issue signs a user JWT and records the principal. bootstrap adds a key
// to an existing principal instead of refusing the name.
func (id *Identity) issue(tenant, name string, roles []keypolicy.Role, userPub, createdBy string, bootstrap bool) (string, error) {
	id.mu.Lock()
	defer id.mu.Unlock()
	kp, ok := id.tenants[tenant]
	if !ok {
		return "", fmt.Errorf("%w: %s", ErrUnknownTenant, tenant)
	}
	ps := id.principals[tenant]
	if ps == nil {
		ps = map[string]*principalRecord{}
		id.principals[tenant] = ps
	}
	rec := ps[name]
	if rec != nil && !bootstrap {
		return "", fmt.Errorf("principal %s: %w", name, kms.ErrStoreExists)
	}
	uc := userClaims(tenant, name, userPub, roles)
	tok, err := uc.Encode(kp)
	if err != nil {
		return "", fmt.Errorf("failed to sign user: %w", err)
	}
	if rec == nil {
		rec = &principalRecord{Roles: slices.Clone(roles), CreatedAt: time.Now().UTC(), CreatedBy: createdBy}
		ps[name] = rec
	}
	uk := userKey{Public: userPub, Issued: uc.IssuedAt, OwnInbox: true}
	if !slices.Equal(rec.Roles, roles) {
		uk.Roles = slices.Clone(roles)
	}
	rec.Users = append(rec.Users, uk)
	if err := id.save(); err != nil {
		return "", err
	}
	return tok, nil
}

// Principals implements kms.Directory.
func (id *Identity) Principals(_ context.Context, tenant string) ([]kms.PrincipalInfo, error) {
	id.mu.RLock()
	defer id.mu.RUnlock()
	if _, ok := id.tenants[tenant]; !ok {
		return nil, fmt.Errorf("tenant %s: %w", tenant, kms.ErrStoreNotFound)
	}
	out := make([]kms.PrincipalInfo, 0, len(id.principals[tenant]))
	for name, r := range id.principals[tenant] {
		out = append(out, kms.PrincipalInfo{Name: name, Roles: slices.Clone(r.Roles), CreatedAt: r.CreatedAt, CreatedBy: r.CreatedBy, DisabledAt: r.DisabledAt})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// DisablePrincipal implements kms.Directory: every user key issued to the
// principal is revoked in the tenant's account JWT, which is pushed to the
// servers; they close the principal's connections and refuse new ones.
func (id *Identity) DisablePrincipal(ctx context.Context, tenant, name string) error {
	id.mu.Lock()
	kp, ok := id.tenants[tenant]
	rec := id.principals[tenant][name]
	if !ok || rec == nil {
		id.mu.Unlock()
		return fmt.Errorf("principal %s: %w", name, kms.ErrStoreNotFound)
	}
	if rec.DisabledAt == nil {
		now := time.Now().UTC()
		rec.DisabledAt = &now
	}
	if err := id.save(); err != nil {
		id.mu.Unlock()
		return err
	}
	ac := id.tenantClaims(tenant, kp)
	tok, err := id.store(ac)
	push := id.push
	id.mu.Unlock()
	if err != nil {
		return fmt.Errorf("failed to update account %s: %w", tenant, err)
	}
	if push == nil {
		return errors.New("natsauth: no claims publisher: the revocation reaches the server only on its next account lookup")
	}
	return push(ctx, ac.Subject, tok)
}

// addRevocations revokes, in a tenant's account claims, the user keys of
// its disabled principals, and every user key issued before per-user reply
// inboxes (its JWT still allows the shared _INBOX.>). The caller holds
// id.mu (or owns id).
func (id *Identity) addRevocations(tenant string, ac *jwt.AccountClaims) {
	for _, r := range id.principals[tenant] {
		if r.DisabledAt == nil {
			for _, u := range r.Users {
				if !u.OwnInbox {
					ac.RevokeAt(u.Public, time.Unix(u.Issued, 0))
				}
			}
			continue
		}
		for _, u := range r.Users {
			// Revoked means: issued at or before this time. A JWT
			// issued in the same second as the disable is revoked too.
			ac.RevokeAt(u.Public, *r.DisabledAt)
		}
	}
}

// CredsHaveRoles reports whether a creds file's user JWT carries keyflow
// roles (creds issued before roles existed do not, and are refused
// everything).
func CredsHaveRoles(creds []byte) bool {
	uc := credsClaims(creds)
	if uc == nil {
		return false
	}
	for _, t := range uc.Tags {
		if strings.HasPrefix(t, RoleTagPrefix) {
			return true
		}
	}
	return false
}

// CredsOwnInbox reports whether a creds file's user JWT confines the user
// to its own reply inbox (creds issued before that allow the shared
// _INBOX.>, are revoked, and must be reissued).
func CredsOwnInbox(creds []byte) bool {
	uc := credsClaims(creds)
	return uc != nil && slices.Contains(uc.Sub.Allow, InboxPrefix(uc.Subject)+".>")
}

// credsClaims decodes a creds file's user JWT, or returns nil.
func credsClaims(creds []byte) *jwt.UserClaims {
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return nil
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return nil
	}
	return uc
}
