// Package natsauth makes the NATS server the first wall between tenants.
//
// keyflow runs nats-server in operator mode (decentralized JWT auth):
//
//   - the keyflow account (KF) holds the services, streams and KV buckets and
//     exports the service subjects kf.v1.>;
//   - each tenant is its own account, which imports only kf.v1.<tenant>.>
//     from KF, with share: true;
//   - each principal is a user of its tenant's account, with a creds file.
//
// Because the import is shared, the server stamps every request that crosses
// it with a Nats-Request-Info header naming the requester's account and user,
// and it strips any such header the client tried to send. The worker reads
// identity from that header only ([CallerFromHeader]); a tenant or principal
// named in a request body is never trusted. A tenant cannot even address
// another tenant's subjects: it has no import for them ("no responders").
// Inside the KF account nothing stamps that header, so the worker also
// checks that the user it names is one keyflow issued to that principal
// with those roles ([Identity.IssuedUser]) and that the request is signed
// by that user's key (workers/rpc, client/api).
//
// Each principal receives only its own replies: its JWT allows it to
// subscribe to its own inbox prefix (InboxPrefix) and nothing else, and
// CredsOption makes the connection use it. keyflow's own users in the KF
// account get one kind of credential per role, with only what the role
// needs (roles.go: worker, sealer, read-only auditor, operator).
//
// The keys live in a 0600 identity file. The dev stack's file holds the
// operator's own key and the accounts' keys (adequate for one process on
// one machine). A cluster's file is written by InitOperator (`keyflow
// operator init`, operator.go): it holds no operator identity key, only an
// operator signing key and the system and keyflow accounts' signing keys,
// so the root operator key stays offline; the servers trust the signing
// keys because the operator and account JWTs list them. Several control
// plane processes may share one identity file: writes merge under a file
// lock, and a process that meets an account it does not know re-reads the
// file (TenantOf).
package natsauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/keyflow/keyflow/kms/keypolicy"
)

// ServiceSubjectPrefix is the root of every keyflow service subject.
const ServiceSubjectPrefix = "kf.v1"

// Account names that are not tenants.
const (
	SystemAccountName  = "SYS"
	ServiceAccountName = "KF"
)

// SystemTenant holds keyflow's own keys (the audit sealer's signing keys).
// No NATS account may carry its name, so no principal can reach its keys.
const SystemTenant = "keyflow-system"

// ErrUnknownTenant is returned for a tenant that has no account.
var ErrUnknownTenant = errors.New("natsauth: unknown tenant")

// Identity holds the operator and account keys of one deployment and issues
// account and user JWTs. It is safe for concurrent use.
type Identity struct {
	mu   sync.RWMutex
	path string
	// operator is the operator's identity key: set in the dev stack, nil
	// in a cluster, where it stays offline and opSigner is one of the
	// operator's signing keys.
	operator    nkeys.KeyPair
	operatorPub string
	opSigner    nkeys.KeyPair
	system      accountKey
	service     accountKey
	tenants     map[string]nkeys.KeyPair
	// byAccount maps account public keys to tenant names: TenantOf runs on
	// every request, so it must not derive keys.
	byAccount map[string]string
	resolver  *server.MemAccResolver

	// principals.go
	principals map[string]map[string]*principalRecord // tenant -> name
	policies   map[string]keypolicy.RolePolicy
	platform   string
	push       ClaimsPublisher

	// issued.go: the identity file as last read or written here.
	fileMod  time.Time
	fileSize int64
}

// accountKey is an account's public key and the key that signs its users:
// the account's own key (dev) or one of its signing keys (a cluster).
type accountKey struct {
	pub    string
	signer nkeys.KeyPair
}

func ownKey(kp nkeys.KeyPair) accountKey { return accountKey{pub: pub(kp), signer: kp} }

type identityFile struct {
	// The dev stack: the operator's and accounts' own keys.
	Operator string `json:"operator,omitempty"`
	System   string `json:"system,omitempty"`
	Service  string `json:"service,omitempty"`
	// A cluster (InitOperator): public keys and signing keys only.
	OperatorPublic     string `json:"operatorPublic,omitempty"`
	OperatorSigningKey string `json:"operatorSigningKey,omitempty"`
	SystemPublic       string `json:"systemPublic,omitempty"`
	SystemSigningKey   string `json:"systemSigningKey,omitempty"`
	ServicePublic      string `json:"servicePublic,omitempty"`
	ServiceSigningKey  string `json:"serviceSigningKey,omitempty"`
	PlatformTenant     string `json:"platformTenant,omitempty"`

	Tenants    map[string]string                      `json:"tenants"`
	Principals map[string]map[string]*principalRecord `json:"principals,omitempty"`
	Policies   map[string]keypolicy.RolePolicy        `json:"policies,omitempty"`
}

// Load reads the identity stored at path, creating a new one (fresh
// operator, system and service keys, as the dev stack uses) if the file
// does not exist. A file written by InitOperator loads without the
// operator's identity key.
func Load(path string) (*Identity, error) {
	id := newIdentity(path)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if id.operator, err = nkeys.CreateOperator(); err != nil {
			return nil, fmt.Errorf("failed to create operator key: %w", err)
		}
		id.opSigner, id.operatorPub = id.operator, pub(id.operator)
		sys, err := nkeys.CreateAccount()
		if err != nil {
			return nil, fmt.Errorf("failed to create account key: %w", err)
		}
		svc, err := nkeys.CreateAccount()
		if err != nil {
			return nil, fmt.Errorf("failed to create account key: %w", err)
		}
		id.system, id.service = ownKey(sys), ownKey(svc)
		if err := id.save(); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("failed to read identity: %w", err)
	default:
		var f identityFile
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("failed to parse identity file %s: %w", path, err)
		}
		if err := id.fromFile(&f); err != nil {
			return nil, fmt.Errorf("identity file %s: %w", path, err)
		}
	}
	if err := id.publishAll(); err != nil {
		return nil, err
	}
	id.noteFile()
	return id, nil
}

func newIdentity(path string) *Identity {
	return &Identity{path: path, tenants: map[string]nkeys.KeyPair{}, byAccount: map[string]string{}, resolver: &server.MemAccResolver{},
		principals: map[string]map[string]*principalRecord{}, policies: map[string]keypolicy.RolePolicy{}}
}

func parseSeed(seed string) (nkeys.KeyPair, error) { return nkeys.FromSeed([]byte(seed)) }

// fromFile sets the keys of a decoded file: the dev stack's own keys, or a
// cluster's public and signing keys.
func (id *Identity) fromFile(f *identityFile) error {
	var err error
	if f.Operator != "" {
		if id.operator, err = parseSeed(f.Operator); err != nil {
			return fmt.Errorf("failed to parse operator key: %w", err)
		}
		id.opSigner, id.operatorPub = id.operator, pub(id.operator)
		sys, err := parseSeed(f.System)
		if err != nil {
			return fmt.Errorf("failed to parse system key: %w", err)
		}
		svc, err := parseSeed(f.Service)
		if err != nil {
			return fmt.Errorf("failed to parse service key: %w", err)
		}
		id.system, id.service = ownKey(sys), ownKey(svc)
	} else {
		if id.opSigner, err = parseSeed(f.OperatorSigningKey); err != nil {
			return fmt.Errorf("failed to parse the operator signing key: %w", err)
		}
		id.operatorPub = f.OperatorPublic
		sys, err := parseSeed(f.SystemSigningKey)
		if err != nil {
			return fmt.Errorf("failed to parse the system account's signing key: %w", err)
		}
		svc, err := parseSeed(f.ServiceSigningKey)
		if err != nil {
			return fmt.Errorf("failed to parse the keyflow account's signing key: %w", err)
		}
		id.system = accountKey{pub: f.SystemPublic, signer: sys}
		id.service = accountKey{pub: f.ServicePublic, signer: svc}
		if !nkeys.IsValidPublicOperatorKey(id.operatorPub) || !nkeys.IsValidPublicAccountKey(id.system.pub) || !nkeys.IsValidPublicAccountKey(id.service.pub) {
			return errors.New("operatorPublic, systemPublic and servicePublic must be the operator's and accounts' public keys")
		}
	}
	id.platform = f.PlatformTenant
	return id.merge(f)
}

// merge adopts the tenants, principals and policies of a file that this
// identity does not hold yet (another process sharing the file created
// them). Principals known to both get the union of their user keys, and a
// disable recorded by either.
func (id *Identity) merge(f *identityFile) error {
	for name, seed := range f.Tenants {
		if _, ok := id.tenants[name]; ok {
			continue
		}
		kp, err := parseSeed(seed)
		if err != nil {
			return fmt.Errorf("failed to parse key of tenant %s: %w", name, err)
		}
		id.tenants[name] = kp
		id.byAccount[pub(kp)] = name
	}
	for t, ps := range f.Principals {
		mine := id.principals[t]
		if mine == nil {
			mine = map[string]*principalRecord{}
			id.principals[t] = mine
		}
		for name, r := range ps {
			m := mine[name]
			if m == nil {
				mine[name] = r
				continue
			}
			for _, u := range r.Users {
				if !slices.ContainsFunc(m.Users, func(v userKey) bool { return v.Public == u.Public }) {
					m.Users = append(m.Users, u)
				}
			}
			if m.DisabledAt == nil {
				m.DisabledAt = r.DisabledAt
			}
		}
	}
	for t, p := range f.Policies {
		if _, ok := id.policies[t]; !ok {
			id.policies[t] = p
		}
	}
	return nil
}

// NewEphemeral returns an identity that is never written to disk, for tests.
func NewEphemeral() (*Identity, error) {
	return Load(filepath.Join(os.TempDir(), "keyflow-ephemeral-"+randomName()+".json"))
}

func randomName() string {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	return pub[1:13]
}

// save writes the identity file. Under the file's lock it first adopts
// what another process sharing the file added since (merge), so two
// control-plane processes never drop each other's tenants or principals.
// The caller holds id.mu (or owns id).
func (id *Identity) save() error {
	if err := os.MkdirAll(filepath.Dir(id.path), 0o700); err != nil {
		return fmt.Errorf("failed to create identity dir: %w", err)
	}
	unlock, err := lockFile(id.path + ".lock")
	if err != nil {
		return fmt.Errorf("failed to lock the identity file: %w", err)
	}
	defer unlock()
	if b, err := os.ReadFile(id.path); err == nil {
		var f identityFile
		if json.Unmarshal(b, &f) == nil {
			if err := id.merge(&f); err != nil {
				return err
			}
		}
	}
	seed := func(kp nkeys.KeyPair) string { s, _ := kp.Seed(); return string(s) }
	f := identityFile{Tenants: map[string]string{}, Principals: id.principals, Policies: id.policies, PlatformTenant: id.platform}
	if id.operator != nil {
		f.Operator, f.System, f.Service = seed(id.operator), seed(id.system.signer), seed(id.service.signer)
	} else {
		f.OperatorPublic, f.OperatorSigningKey = id.operatorPub, seed(id.opSigner)
		f.SystemPublic, f.SystemSigningKey = id.system.pub, seed(id.system.signer)
		f.ServicePublic, f.ServiceSigningKey = id.service.pub, seed(id.service.signer)
	}
	for name, kp := range id.tenants {
		f.Tenants[name] = seed(kp)
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode identity: %w", err)
	}
	tmp := id.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("failed to write identity: %w", err)
	}
	if err := os.Rename(tmp, id.path); err != nil {
		return fmt.Errorf("failed to write identity: %w", err)
	}
	id.noteFile()
	return nil
}

func pub(kp nkeys.KeyPair) string { p, _ := kp.PublicKey(); return p }

// publishAll (re)issues every account JWT into the resolver. The system
// and keyflow accounts of a cluster were signed by the offline operator
// key (InitOperator) and are preloaded by the servers, so only the dev
// stack reissues them.
func (id *Identity) publishAll() error {
	if id.operator != nil {
		if _, err := id.store(systemClaims(id.system.pub, "")); err != nil {
			return err
		}
		if _, err := id.store(serviceClaims(id.service.pub, "")); err != nil {
			return err
		}
	}
	for name, kp := range id.tenants {
		if _, err := id.store(id.tenantClaims(name, kp)); err != nil {
			return err
		}
	}
	return nil
}

// systemClaims are the system account's; signingKey, if set, may sign its
// users.
func systemClaims(account, signingKey string) *jwt.AccountClaims {
	sys := jwt.NewAccountClaims(account)
	sys.Name = SystemAccountName
	if signingKey != "" {
		sys.SigningKeys.Add(signingKey)
	}
	return sys
}

// serviceClaims are the keyflow account's: JetStream, and the service
// subjects exported to the tenants.
func serviceClaims(account, signingKey string) *jwt.AccountClaims {
	svc := jwt.NewAccountClaims(account)
	svc.Name = ServiceAccountName
	svc.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	svc.Exports.Add(&jwt.Export{Name: "keyflow", Subject: jwt.Subject(ServiceSubjectPrefix + ".>"), Type: jwt.Service})
	if signingKey != "" {
		svc.SigningKeys.Add(signingKey)
	}
	return svc
}

func (id *Identity) tenantClaims(name string, kp nkeys.KeyPair) *jwt.AccountClaims {
	ac := jwt.NewAccountClaims(pub(kp))
	ac.Name = name
	subj := jwt.Subject(ServiceSubjectPrefix + "." + name + ".>")
	ac.Imports.Add(&jwt.Import{Name: "keyflow", Subject: subj, Account: id.service.pub, Type: jwt.Service, Share: true})
	id.addRevocations(name, ac)
	return ac
}

// store signs an account JWT with the operator's key (or its signing key)
// into the in-process resolver, and returns it.
func (id *Identity) store(ac *jwt.AccountClaims) (string, error) {
	tok, err := ac.Encode(id.opSigner)
	if err != nil {
		return "", fmt.Errorf("failed to sign account %s: %w", ac.Name, err)
	}
	return tok, id.resolver.Store(ac.Subject, tok)
}

// ServerOptions returns the operator-mode settings for an in-process
// nats-server (the dev stack). A cluster's identity has no operator key:
// its servers are configured by the stanza InitOperator writes.
func (id *Identity) ServerOptions(opts *server.Options) error {
	if id.operator == nil {
		return errors.New("natsauth: this identity holds no operator key (a cluster's servers take the configuration keyflow operator init wrote)")
	}
	oc := jwt.NewOperatorClaims(pub(id.operator))
	oc.Name = "keyflow"
	oc.SystemAccount = id.system.pub
	tok, err := oc.Encode(id.operator)
	if err != nil {
		return fmt.Errorf("failed to sign operator: %w", err)
	}
	claims, err := jwt.DecodeOperatorClaims(tok)
	if err != nil {
		return fmt.Errorf("failed to decode operator: %w", err)
	}
	opts.TrustedOperators = []*jwt.OperatorClaims{claims}
	opts.SystemAccount = id.system.pub
	opts.AccountResolver = id.resolver
	return nil
}

// AddTenant creates a tenant account (idempotent) and returns its public key.
// An in-process server picks new accounts up on first use; with a claims
// publisher (a cluster's full resolver) the account JWT is pushed to the
// servers before AddTenant returns.
func (id *Identity) AddTenant(name string) (string, error) {
	id.mu.Lock()
	defer id.mu.Unlock()
	if kp, ok := id.tenants[name]; ok {
		return pub(kp), nil
	}
	if name == SystemAccountName || name == ServiceAccountName || name == SystemTenant {
		return "", fmt.Errorf("natsauth: %q is a reserved name", name)
	}
	kp, err := nkeys.CreateAccount()
	if err != nil {
		return "", fmt.Errorf("failed to create tenant key: %w", err)
	}
	id.tenants[name] = kp
	id.byAccount[pub(kp)] = name
	tok, err := id.store(id.tenantClaims(name, kp))
	if err != nil {
		return "", err
	}
	if err := id.save(); err != nil {
		return "", err
	}
	if id.push != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := id.push(ctx, pub(kp), tok); err != nil {
			return "", fmt.Errorf("tenant %s: %w", name, err)
		}
	}
	return pub(kp), nil
}

// Tenants lists tenant names, sorted.
func (id *Identity) Tenants() []string {
	id.mu.Lock()
	defer id.mu.Unlock()
	out := make([]string, 0, len(id.tenants))
	for n := range id.tenants {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// TenantOf maps an account public key (as found in Nats-Request-Info) to a
// tenant name. An account this process does not know makes it re-read the
// identity file once, if the file changed: another control-plane process
// sharing it may have created the tenant.
func (id *Identity) TenantOf(account string) (string, error) {
	id.mu.RLock()
	name, ok := id.byAccount[account]
	id.mu.RUnlock()
	if !ok && id.refresh() { // a tenant another process created
		id.mu.RLock()
		name, ok = id.byAccount[account]
		id.mu.RUnlock()
	}
	if !ok {
		return "", ErrUnknownTenant
	}
	return name, nil
}

// UserCreds issues a creds file (user JWT + seed) for a principal of a
// tenant with every role. The user may publish only to its tenant's
// service subjects and receive only replies. It is the bootstrap path (the
// dev stack's admin, test fixtures): it checks no tenant policy and does
// not refuse a disabled name. Principals of real tenants are issued by
// IssuePrincipal (keyflow principal create).
func (id *Identity) UserCreds(tenant, principal string) ([]byte, error) {
	roles := keypolicy.Roles()
	ukp, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("failed to create user key: %w", err)
	}
	tok, err := id.issue(tenant, principal, roles, pub(ukp), "bootstrap", true)
	if err != nil {
		return nil, err
	}
	seed, err := ukp.Seed()
	if err != nil {
		return nil, fmt.Errorf("failed to read user seed: %w", err)
	}
	return jwt.FormatUserConfig(tok, seed)
}

// userClaims are the claims of every principal's user JWT.
func userClaims(tenant, principal, userPub string, roles []keypolicy.Role) *jwt.UserClaims {
	uc := jwt.NewUserClaims(userPub)
	uc.Name = principal
	uc.Pub.Allow.Add(ServiceSubjectPrefix + "." + tenant + ".>")
	// Replies reach only this user: its own inbox prefix, which the
	// client learns from these claims (see CredsOption). The shared
	// _INBOX.> would let any principal of the tenant read every other
	// principal's replies, decrypted plaintexts included.
	uc.Sub.Allow.Add(InboxPrefix(userPub) + ".>")
	// Lets the CLI find its tenant without a flag. It is a convenience
	// only: the worker trusts the account, not the tag.
	uc.Tags.Add("keyflow_tenant:" + tenant)
	// Roles: the server copies the tags into the Nats-Request-Info header
	// of every request (the import is shared), and the account signed
	// them, so the worker can trust them.
	for _, r := range roles {
		uc.Tags.Add(RoleTagPrefix + string(r))
	}
	return uc
}

// ServiceCreds issues a creds file for a keyflow worker in the KF account.
func (id *Identity) ServiceCreds(name string) ([]byte, error) {
	return issueUser(id.service, name, nil)
}

// issueUser issues creds for a user of account, signed by the account's
// key or, in a cluster, by its signing key (the JWT then names the
// account as IssuerAccount).
func issueUser(account accountKey, name string, restrict func(*jwt.UserClaims)) ([]byte, error) {
	ukp, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("failed to create user key: %w", err)
	}
	uc := jwt.NewUserClaims(pub(ukp))
	uc.Name = name
	if restrict != nil {
		restrict(uc)
	}
	if pub(account.signer) != account.pub {
		uc.IssuerAccount = account.pub
	}
	tok, err := uc.Encode(account.signer)
	if err != nil {
		return nil, fmt.Errorf("failed to sign user: %w", err)
	}
	seed, err := ukp.Seed()
	if err != nil {
		return nil, fmt.Errorf("failed to read user seed: %w", err)
	}
	return jwt.FormatUserConfig(tok, seed)
}

// RequestInfo is the part of the server's Nats-Request-Info header keyflow
// uses.
type RequestInfo struct {
	Account string `json:"acc"`
	// User is the user's public nkey, verified by the server.
	User string `json:"user"`
	// NameTag is the name in the user JWT, which the account signed. (The
	// "name" field is the connection name the client chose: never use it
	// for identity.)
	NameTag string `json:"name_tag"`
	// Tags are the user JWT's tags, also signed by the account; roles are
	// the tags "role:<role>".
	Tags []string `json:"tags"`
}

// RoleTagPrefix marks a role among a user JWT's tags.
const RoleTagPrefix = "role:"

// Roles are the caller's roles as the server vouched for them. It never
// returns nil, so a caller without roles is told apart from an internal
// call.
func (ri RequestInfo) Roles() []string {
	out := []string{}
	for _, t := range ri.Tags {
		if r, ok := strings.CutPrefix(t, RoleTagPrefix); ok {
			out = append(out, r)
		}
	}
	return out
}

// Principal is the caller's name as the server vouches for it.
func (ri RequestInfo) Principal() string {
	if ri.NameTag != "" {
		return ri.NameTag
	}
	return ri.User
}

// ErrNoIdentity is returned when a request carries no server-stamped
// identity (it did not come through a tenant's service import).
var ErrNoIdentity = errors.New("natsauth: request carries no server-vouched identity")

// ParseRequestInfo decodes the Nats-Request-Info header value.
func ParseRequestInfo(v string) (RequestInfo, error) {
	if v == "" {
		return RequestInfo{}, ErrNoIdentity
	}
	var ri RequestInfo
	if err := json.Unmarshal([]byte(v), &ri); err != nil || ri.Account == "" {
		return RequestInfo{}, ErrNoIdentity
	}
	return ri, nil
}

// RequestInfoHeader is the header name the server stamps.
const RequestInfoHeader = server.ClientInfoHdr

// InboxPrefix is the reply inbox prefix of the user with public key
// userPub: its user JWT allows it to subscribe to InboxPrefix(userPub)+".>"
// only, so no other user can receive its replies.
func InboxPrefix(userPub string) string { return "_INBOX_" + userPub }

// CredsOption turns creds file contents into a nats.go connect option,
// without writing them to disk. When the user JWT confines the user to its
// own inbox prefix, the option makes the connection use it.
func CredsOption(creds []byte) (nats.Option, error) {
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return nil, fmt.Errorf("failed to parse creds: %w", err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return nil, fmt.Errorf("failed to parse creds: %w", err)
	}
	kp, err := jwt.ParseDecoratedNKey(creds)
	if err != nil {
		return nil, fmt.Errorf("failed to parse creds: %w", err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("failed to parse creds: %w", err)
	}
	auth := nats.UserJWTAndSeed(tok, string(seed))
	prefix := InboxPrefix(uc.Subject)
	if !slices.Contains(uc.Sub.Allow, prefix+".>") {
		return auth, nil
	}
	inbox := nats.CustomInboxPrefix(prefix)
	return func(o *nats.Options) error {
		if err := auth(o); err != nil {
			return err
		}
		return inbox(o)
	}, nil
}
