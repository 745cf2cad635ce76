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
// The signing keys (operator, accounts) live in a 0600 file under the data
// directory. That is adequate for the dev stack; production deployments
// should keep the operator key offline and the account signing keys in a
// secrets store.
package natsauth

import (
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
	mu       sync.RWMutex
	path     string
	operator nkeys.KeyPair
	system   nkeys.KeyPair
	service  nkeys.KeyPair
	tenants  map[string]nkeys.KeyPair
	// byAccount maps account public keys to tenant names: TenantOf runs on
	// every request, so it must not derive keys.
	byAccount map[string]string
	resolver  *server.MemAccResolver

	// principals.go
	principals map[string]map[string]*principalRecord // tenant -> name
	policies   map[string]keypolicy.RolePolicy
	platform   string
	push       ClaimsPublisher

	// issued.go: the identity file as last read or written here, and
	// when another process's changes were last looked for.
	fileMod  time.Time
	fileSize int64
	checked  time.Time
}

type identityFile struct {
	Operator   string                                 `json:"operator"`
	System     string                                 `json:"system"`
	Service    string                                 `json:"service"`
	Tenants    map[string]string                      `json:"tenants"`
	Principals map[string]map[string]*principalRecord `json:"principals,omitempty"`
	Policies   map[string]keypolicy.RolePolicy        `json:"policies,omitempty"`
}

// Load reads the identity stored at path, creating a new one (fresh
// operator, system and service keys) if the file does not exist.
func Load(path string) (*Identity, error) {
	id := &Identity{path: path, tenants: map[string]nkeys.KeyPair{}, byAccount: map[string]string{}, resolver: &server.MemAccResolver{},
		principals: map[string]map[string]*principalRecord{}, policies: map[string]keypolicy.RolePolicy{}}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if id.operator, err = nkeys.CreateOperator(); err != nil {
			return nil, fmt.Errorf("failed to create operator key: %w", err)
		}
		if id.system, err = nkeys.CreateAccount(); err != nil {
			return nil, fmt.Errorf("failed to create account key: %w", err)
		}
		if id.service, err = nkeys.CreateAccount(); err != nil {
			return nil, fmt.Errorf("failed to create account key: %w", err)
		}
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
		parse := func(seed string) (nkeys.KeyPair, error) { return nkeys.FromSeed([]byte(seed)) }
		if id.operator, err = parse(f.Operator); err != nil {
			return nil, fmt.Errorf("failed to parse operator key: %w", err)
		}
		if id.system, err = parse(f.System); err != nil {
			return nil, fmt.Errorf("failed to parse system key: %w", err)
		}
		if id.service, err = parse(f.Service); err != nil {
			return nil, fmt.Errorf("failed to parse service key: %w", err)
		}
		for name, seed := range f.Tenants {
			kp, err := parse(seed)
			if err != nil {
				return nil, fmt.Errorf("failed to parse key of tenant %s: %w", name, err)
			}
			id.tenants[name] = kp
			id.byAccount[pub(kp)] = name
		}
		for t, ps := range f.Principals {
			id.principals[t] = ps
		}
		for t, p := range f.Policies {
			id.policies[t] = p
		}
	}
	if err := id.publishAll(); err != nil {
		return nil, err
	}
	id.noteFile()
	return id, nil
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

func (id *Identity) save() error {
	seed := func(kp nkeys.KeyPair) string { s, _ := kp.Seed(); return string(s) }
	f := identityFile{Operator: seed(id.operator), System: seed(id.system), Service: seed(id.service), Tenants: map[string]string{},
		Principals: id.principals, Policies: id.policies}
	for name, kp := range id.tenants {
		f.Tenants[name] = seed(kp)
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode identity: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(id.path), 0o700); err != nil {
		return fmt.Errorf("failed to create identity dir: %w", err)
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

// publishAll (re)issues every account JWT into the resolver.
func (id *Identity) publishAll() error {
	sys := jwt.NewAccountClaims(pub(id.system))
	sys.Name = SystemAccountName
	if err := id.store(sys); err != nil {
		return err
	}
	svc := jwt.NewAccountClaims(pub(id.service))
	svc.Name = ServiceAccountName
	svc.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	svc.Exports.Add(&jwt.Export{Name: "keyflow", Subject: jwt.Subject(ServiceSubjectPrefix + ".>"), Type: jwt.Service})
	if err := id.store(svc); err != nil {
		return err
	}
	for name, kp := range id.tenants {
		if err := id.store(id.tenantClaims(name, kp)); err != nil {
			return err
		}
	}
	return nil
}

func (id *Identity) tenantClaims(name string, kp nkeys.KeyPair) *jwt.AccountClaims {
	ac := jwt.NewAccountClaims(pub(kp))
	ac.Name = name
	subj := jwt.Subject(ServiceSubjectPrefix + "." + name + ".>")
	ac.Imports.Add(&jwt.Import{Name: "keyflow", Subject: subj, Account: pub(id.service), Type: jwt.Service, Share: true})
	id.addRevocations(name, ac)
	return ac
}

func (id *Identity) store(ac *jwt.AccountClaims) error {
	tok, err := ac.Encode(id.operator)
	if err != nil {
		return fmt.Errorf("failed to sign account %s: %w", ac.Name, err)
	}
	return id.resolver.Store(ac.Subject, tok)
}

// ServerOptions returns the operator-mode settings for nats-server.
func (id *Identity) ServerOptions(opts *server.Options) error {
	oc := jwt.NewOperatorClaims(pub(id.operator))
	oc.Name = "keyflow"
	oc.SystemAccount = pub(id.system)
	tok, err := oc.Encode(id.operator)
	if err != nil {
		return fmt.Errorf("failed to sign operator: %w", err)
	}
	claims, err := jwt.DecodeOperatorClaims(tok)
	if err != nil {
		return fmt.Errorf("failed to decode operator: %w", err)
	}
	opts.TrustedOperators = []*jwt.OperatorClaims{claims}
	opts.SystemAccount = pub(id.system)
	opts.AccountResolver = id.resolver
	return nil
}

// AddTenant creates a tenant account (idempotent) and returns its public key.
// New accounts are picked up by the server on first use.
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
	if err := id.store(id.tenantClaims(name, kp)); err != nil {
		return "", err
	}
	if err := id.save(); err != nil {
		return "", err
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
// tenant name.
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

func issueUser(account nkeys.KeyPair, name string, restrict func(*jwt.UserClaims)) ([]byte, error) {
	ukp, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("failed to create user key: %w", err)
	}
	uc := jwt.NewUserClaims(pub(ukp))
	uc.Name = name
	uc.IssuerAccount = ""
	if restrict != nil {
		restrict(uc)
	}
	tok, err := uc.Encode(account)
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
