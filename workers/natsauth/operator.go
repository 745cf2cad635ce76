package natsauth

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// The operator ceremony of a NATS cluster (`keyflow operator init`,
// docs/operator-ceremony.md). InitOperator writes, under one directory:
//
//	offline/operator.nk        the operator's identity key: keep it offline
//	offline/system-account.nk  the system account's identity key: offline
//	offline/keyflow-account.nk the keyflow account's identity key: offline
//	operator.jwt               the operator JWT (self-signed, lists its signing key)
//	nats-operator.conf         the nats-server stanza: operator, system_account,
//	                           the full resolver and the preloaded accounts
//	identity.json              what the control plane holds (nats.identity_file):
//	                           the operator's and accounts' signing keys, no identity key
//	creds/worker.creds ...     creds of keyflow's roles and of each tenant's admin
//
// The servers trust an account JWT signed by the operator's signing key and
// a user JWT signed by an account's signing key, because the operator and
// account JWTs list those keys. Losing identity.json therefore costs the
// signing keys only: the operator (offline key) issues new ones by
// re-running the ceremony's signing step, without touching the servers'
// trust root.

// OperatorInit configures InitOperator.
type OperatorInit struct {
	// Dir receives the files; it must not hold an identity yet.
	Dir string
	// Name of the operator (default "keyflow").
	Name string
	// ResolverDir is where each nats-server keeps the account JWTs of its
	// full resolver, as written into the stanza (default "jwt": relative
	// to the server's working directory, one per server).
	ResolverDir string
	// Tenants are created now, preloaded into the servers, each with an
	// admin principal whose creds are written to creds/<tenant>-admin.creds.
	// The first is the platform tenant, whose tenant admins create tenants.
	Tenants []string
}

// OperatorFiles are the paths InitOperator wrote.
type OperatorFiles struct {
	OfflineDir  string
	OperatorJWT string
	ServerConf  string
	Identity    string
	// Creds maps a role (worker, sealer, operator, auditor) or
	// "<tenant>-admin" to its creds file.
	Creds map[string]string
}

// ServerConfName is the stanza's file name under the ceremony directory.
const ServerConfName = "nats-operator.conf"

// InitOperator runs the operator ceremony: fresh operator, system and
// keyflow account keys, each with a signing key; the operator JWT; the
// nats-server stanza for a full resolver; the control plane's identity
// file (signing keys only); and role creds.
func InitOperator(p OperatorInit) (OperatorFiles, error) {
	if p.Dir == "" {
		return OperatorFiles{}, errors.New("natsauth: the ceremony needs a directory")
	}
	if p.Name == "" {
		p.Name = "keyflow"
	}
	if p.ResolverDir == "" {
		p.ResolverDir = "jwt"
	}
	dir, err := filepath.Abs(p.Dir)
	if err != nil {
		return OperatorFiles{}, fmt.Errorf("natsauth: %w", err)
	}
	out := OperatorFiles{
		OfflineDir: filepath.Join(dir, "offline"), OperatorJWT: filepath.Join(dir, "operator.jwt"),
		ServerConf: filepath.Join(dir, ServerConfName), Identity: filepath.Join(dir, "identity.json"), Creds: map[string]string{},
	}
	if _, err := os.Stat(out.Identity); err == nil {
		return out, fmt.Errorf("natsauth: %s exists: the ceremony runs once per deployment", out.Identity)
	}
	for _, t := range p.Tenants {
		if t == "" || t == SystemAccountName || t == ServiceAccountName || t == SystemTenant || strings.ContainsAny(t, ".*> \t") {
			return out, fmt.Errorf("natsauth: %q is not a tenant name", t)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "creds"), 0o700); err != nil {
		return out, fmt.Errorf("natsauth: %w", err)
	}
	if err := os.MkdirAll(out.OfflineDir, 0o700); err != nil {
		return out, fmt.Errorf("natsauth: %w", err)
	}

	keys := map[string]nkeys.KeyPair{}
	for _, k := range []struct {
		name   string
		create func() (nkeys.KeyPair, error)
	}{
		{"operator", nkeys.CreateOperator}, {"operator-signing", nkeys.CreateOperator},
		{"system", nkeys.CreateAccount}, {"system-signing", nkeys.CreateAccount},
		{"service", nkeys.CreateAccount}, {"service-signing", nkeys.CreateAccount},
	} {
		kp, err := k.create()
		if err != nil {
			return out, fmt.Errorf("natsauth: failed to create the %s key: %w", k.name, err)
		}
		keys[k.name] = kp
	}
	root := keys["operator"]
	oc := jwt.NewOperatorClaims(pub(root))
	oc.Name = p.Name
	oc.SystemAccount = pub(keys["system"])
	oc.SigningKeys.Add(pub(keys["operator-signing"]))
	opJWT, err := oc.Encode(root)
	if err != nil {
		return out, fmt.Errorf("natsauth: failed to sign the operator: %w", err)
	}
	// The system and keyflow accounts are signed by the root key: they
	// list their signing keys, which only the root may change.
	preload := map[string]string{}
	for _, ac := range []*jwt.AccountClaims{
		systemClaims(pub(keys["system"]), pub(keys["system-signing"])),
		serviceClaims(pub(keys["service"]), pub(keys["service-signing"])),
	} {
		tok, err := ac.Encode(root)
		if err != nil {
			return out, fmt.Errorf("natsauth: failed to sign account %s: %w", ac.Name, err)
		}
		preload[ac.Subject] = tok
	}

	id := newIdentity(out.Identity)
	id.opSigner, id.operatorPub = keys["operator-signing"], pub(root)
	id.system = accountKey{pub: pub(keys["system"]), signer: keys["system-signing"]}
	id.service = accountKey{pub: pub(keys["service"]), signer: keys["service-signing"]}
	if len(p.Tenants) > 0 {
		id.platform = p.Tenants[0]
	}
	if err := id.save(); err != nil {
		return out, err
	}
	for _, t := range p.Tenants {
		acc, err := id.AddTenant(t)
		if err != nil {
			return out, err
		}
		tok, err := id.resolver.Fetch(acc)
		if err != nil {
			return out, fmt.Errorf("natsauth: tenant %s: %w", t, err)
		}
		preload[acc] = tok
	}

	write := func(path string, b []byte, mode os.FileMode) error {
		if err := os.WriteFile(path, b, mode); err != nil {
			return fmt.Errorf("natsauth: %w", err)
		}
		return nil
	}
	for name, kp := range map[string]nkeys.KeyPair{"operator.nk": root, "system-account.nk": keys["system"], "keyflow-account.nk": keys["service"]} {
		seed, err := kp.Seed()
		if err != nil {
			return out, fmt.Errorf("natsauth: %w", err)
		}
		if err := write(filepath.Join(out.OfflineDir, name), append(seed, '\n'), 0o600); err != nil {
			return out, err
		}
	}
	if err := write(out.OperatorJWT, []byte(opJWT+"\n"), 0o644); err != nil {
		return out, err
	}
	if err := write(out.ServerConf, []byte(serverStanza(out.OperatorJWT, pub(keys["system"]), p.ResolverDir, preload)), 0o644); err != nil {
		return out, err
	}
	for role, issue := range map[string]func(string) ([]byte, error){
		"worker": id.WorkerCreds, "sealer": id.SealerCreds, "operator": id.OperatorCreds, "auditor": id.AuditorCreds,
	} {
		creds, err := issue("keyflow-" + role)
		if err != nil {
			return out, err
		}
		path := filepath.Join(dir, "creds", role+".creds")
		if err := write(path, creds, 0o600); err != nil {
			return out, err
		}
		out.Creds[role] = path
	}
	for _, t := range p.Tenants {
		creds, err := id.UserCreds(t, "admin")
		if err != nil {
			return out, err
		}
		path := filepath.Join(dir, "creds", t+"-admin.creds")
		if err := write(path, creds, 0o600); err != nil {
			return out, err
		}
		out.Creds[t+"-admin"] = path
	}
	return out, nil
}

// serverStanza is the part of nats-server's configuration that makes it
// trust the operator: every server of the cluster includes the same one.
func serverStanza(operatorJWT, system, resolverDir string, preload map[string]string) string {
	var b strings.Builder
	b.WriteString("# keyflow's NATS operator (keyflow operator init). Include this file from\n")
	b.WriteString("# every server of the cluster: include \"" + ServerConfName + "\"\n")
	fmt.Fprintf(&b, "operator: %q\n", operatorJWT)
	fmt.Fprintf(&b, "system_account: %s\n", system)
	b.WriteString("# The full resolver: each server keeps every account JWT in its own\n")
	b.WriteString("# directory; keyflow's control plane pushes new and updated accounts\n")
	b.WriteString("# (tenants, revocations) through the system account, and the servers\n")
	b.WriteString("# share them among themselves.\n")
	fmt.Fprintf(&b, "resolver: {\n  type: full\n  dir: %q\n  allow_delete: false\n  interval: \"2m\"\n  timeout: \"5s\"\n}\n", resolverDir)
	b.WriteString("resolver_preload: {\n")
	accs := make([]string, 0, len(preload))
	for a := range preload {
		accs = append(accs, a)
	}
	sort.Strings(accs)
	for _, a := range accs {
		fmt.Fprintf(&b, "  %s: %q\n", a, preload[a])
	}
	b.WriteString("}\n")
	return b.String()
}
