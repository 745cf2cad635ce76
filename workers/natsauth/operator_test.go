package natsauth_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/kms/keypolicy"
	"github.com/keyflow/keyflow/workers/natsauth"
)

// startFromStanza starts a nats-server from the stanza the ceremony wrote,
// as an operator would include it.
func startFromStanza(t *testing.T, files natsauth.OperatorFiles) *server.Server {
	t.Helper()
	dir := filepath.Dir(files.ServerConf)
	conf := filepath.Join(dir, "server.conf")
	text := "listen: 127.0.0.1:-1\njetstream { store_dir: " + filepath.Join(t.TempDir(), "js") + " }\ninclude \"" + natsauth.ServerConfName + "\"\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoLog, opts.NoSigs = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

func connect(t *testing.T, url string, creds []byte) (*nats.Conn, error) {
	t.Helper()
	opt, err := natsauth.CredsOption(creds)
	if err != nil {
		t.Fatal(err)
	}
	return nats.Connect(url, opt, nats.MaxReconnects(0))
}

// The ceremony leaves the operator's identity key out of what the control
// plane holds; a server configured from its stanza (full resolver) admits
// the roles and preloaded tenants, and a tenant created at runtime reaches
// it through the system account. A second control-plane process sharing
// the identity file learns the new tenant.
func TestOperatorCeremonyWithFullResolver(t *testing.T) {
	dir := t.TempDir()
	files, err := natsauth.InitOperator(natsauth.OperatorInit{Dir: dir, ResolverDir: filepath.Join(dir, "jwt"), Tenants: []string{"default"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsauth.InitOperator(natsauth.OperatorInit{Dir: dir}); err == nil {
		t.Fatal("a second ceremony on the same directory overwrote the identity")
	}
	b, err := os.ReadFile(files.Identity)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if raw["operator"] != nil || raw["system"] != nil || raw["service"] != nil || raw["operatorSigningKey"] == nil {
		t.Fatalf("the control plane's identity holds identity keys: %v", keysOf(raw))
	}
	root, err := os.ReadFile(filepath.Join(files.OfflineDir, "operator.nk"))
	if err != nil || !strings.HasPrefix(string(root), "SO") {
		t.Fatalf("offline operator key: %v", err)
	}
	if strings.Contains(string(b), strings.TrimSpace(string(root))) {
		t.Fatal("the identity file holds the operator's identity key")
	}
	stanza, _ := os.ReadFile(files.ServerConf)
	if !strings.Contains(string(stanza), "type: full") || !strings.Contains(string(stanza), "resolver_preload") {
		t.Fatalf("stanza:\n%s", stanza)
	}

	ns := startFromStanza(t, files)
	worker, err := os.ReadFile(files.Creds["worker"])
	if err != nil {
		t.Fatal(err)
	}
	nc, err := connect(t, ns.ClientURL(), worker)
	if err != nil {
		t.Fatalf("worker creds signed by the keyflow account's signing key: %v", err)
	}
	nc.Close()
	admin, _ := os.ReadFile(files.Creds["default-admin"])
	if nc, err = connect(t, ns.ClientURL(), admin); err != nil {
		t.Fatalf("preloaded tenant's admin: %v", err)
	}
	nc.Close()

	id, err := natsauth.Load(files.Identity)
	if err != nil {
		t.Fatal(err)
	}
	if id.PlatformTenant() != "default" {
		t.Fatalf("platform tenant %q", id.PlatformTenant())
	}
	if err := id.ServerOptions(&server.Options{}); err == nil {
		t.Fatal("an identity without the operator key configured a server")
	}
	sysCreds, err := id.SystemCreds("claims")
	if err != nil {
		t.Fatal(err)
	}
	sys, err := connect(t, ns.ClientURL(), sysCreds)
	if err != nil {
		t.Fatalf("system account user: %v", err)
	}
	defer sys.Close()
	natsserver.PublishClaimsOver(sys, id)

	// Before the push, the server does not know the tenant.
	peer, err := natsauth.Load(files.Identity)
	if err != nil {
		t.Fatal(err)
	}
	if err := id.CreateTenant(context.Background(), "acme", keypolicy.RolePolicy{}); err != nil {
		t.Fatal(err)
	}
	creds, err := id.UserCreds("acme", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if nc, err = connect(t, ns.ClientURL(), creds); err != nil {
		t.Fatalf("a tenant created at runtime, pushed to the full resolver: %v", err)
	}
	nc.Close()
	if _, err := os.Stat(filepath.Join(dir, "jwt")); err != nil {
		t.Fatalf("the full resolver stored nothing: %v", err)
	}

	acc, err := id.AddTenant("acme")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := peer.TenantOf(acc); err != nil || got != "acme" {
		t.Fatalf("the peer process resolved the new account to %q, %v", got, err)
	}
	// The peer's own writes keep the other's tenants.
	if _, err := peer.AddTenant("globex"); err != nil {
		t.Fatal(err)
	}
	again, err := natsauth.Load(files.Identity)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(again.Tenants(), ","); got != "acme,default,globex" {
		t.Fatalf("tenants after two processes wrote: %s", got)
	}
}

func keysOf(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
