package roles_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.temporal.io/server/temporaltest"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/deploy/config"
	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/deploy/roles"
	"github.com/keyflow/keyflow/workers/natsauth"
	"github.com/keyflow/keyflow/workers/sealer"
)

// The token is provisioned as an operator would: with softhsm2-util, by
// label, before keyflow ever sees it; keyflow gets the module path, the
// label and a PIN file.
const (
	tokenLabel = "ops-provisioned"
	userPIN    = "7391-user-pin"
)

var tokenDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if tokenDir, err = os.MkdirTemp("", "keyflow-roles-hsm-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tokenDir)
	conf := filepath.Join(tokenDir, "softhsm2.conf")
	if err := os.MkdirAll(filepath.Join(tokenDir, "tokens"), 0o700); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	text := "directories.tokendir = " + filepath.Join(tokenDir, "tokens") + "\nobjectstore.backend = file\nlog.level = ERROR\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Setenv("SOFTHSM2_CONF", conf)
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", tokenLabel, "--so-pin", "so-secret-1", "--pin", userPIN).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "softhsm2-util (Debian package softhsm2) failed: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// cluster is what an operator runs outside keyflow: a NATS server (in
// operator mode with keyflow's accounts, on a TCP port), Temporal, and
// the files keyflow serve is given.
type cluster struct {
	dir      string
	natsURL  string
	identity *natsauth.Identity
	temporal string
	ns       string
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	c := startNATS(t)
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	c.temporal, c.ns = ts.GetFrontendHostPort(), ts.GetDefaultNamespace()
	return c
}

// startNATS is the cluster without Temporal (enough for the crypto role).
func startNATS(t testing.TB) *cluster {
	t.Helper()
	dir := t.TempDir()
	id, err := natsauth.Load(filepath.Join(dir, "identity.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := id.AddTenant("default"); err != nil {
		t.Fatal(err)
	}
	ns, err := natsserver.Start(natsserver.Config{StoreDir: filepath.Join(dir, "js"), Listen: "127.0.0.1:0", Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	c := &cluster{dir: dir, natsURL: ns.ClientURL(), identity: id}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	creds, err := id.ServiceCreds("keyflow-worker")
	if err != nil {
		t.Fatal(err)
	}
	write("worker.creds", creds)
	admin, err := id.UserCreds("default", "admin")
	if err != nil {
		t.Fatal(err)
	}
	write("admin.creds", admin)
	write("pin", []byte(userPIN+"\n"))
	return c
}

// config writes a keyflow.yaml for the cluster and loads it as serve does.
func (c *cluster) config(t testing.TB, extra string) *config.Config {
	t.Helper()
	rolesLine := "roles: [crypto, admin, lifecycle, sealer, remediation]"
	if c.temporal == "" { // startNATS: the crypto role only
		rolesLine = "roles: [crypto]"
	}
	y := fmt.Sprintf(rolesLine+`
nats:
  urls: [%s]
  creds_file: %s
  identity_file: %s
  replicas: 1
temporal:
  address: %s
  namespace: %s
hsm:
  token_label: %s
  pin_file: %s
%s`, c.natsURL, filepath.Join(c.dir, "worker.creds"), filepath.Join(c.dir, "identity.json"),
		c.temporal, c.ns, tokenLabel, filepath.Join(c.dir, "pin"), extra)
	return loadConfig(t, filepath.Join(c.dir, "keyflow.yaml"), y)
}

// loadConfig writes a keyflow.yaml and loads it as serve does.
func loadConfig(t testing.TB, path, yaml string) *config.Config {
	t.Helper()
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Err(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// serve starts a node as `keyflow serve --roles` would.
func serve(t testing.TB, cfg *config.Config, list string) *roles.Node {
	t.Helper()
	ctx := context.Background()
	rs, err := roles.Parse(list)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	in, closeInfra, err := roles.Dial(ctx, cfg, rs, log)
	if err != nil {
		t.Fatal(err)
	}
	o, err := roles.OptionsFrom(cfg, rs)
	if err != nil {
		t.Fatal(err)
	}
	n, err := roles.Start(ctx, in, o)
	if err != nil {
		closeInfra()
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Stop(); closeInfra() })
	return n
}

// adminClient dials the cluster as the default tenant's admin (closed
// when the test ends).
func (c *cluster) adminClient(t testing.TB) *client.Client {
	t.Helper()
	cl, err := client.Dial(context.Background(), client.Options{Server: c.natsURL, CredsFile: filepath.Join(c.dir, "admin.creds"), Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func bootstrap(t testing.TB, cfg *config.Config) []string {
	t.Helper()
	ctx := context.Background()
	in, closeInfra, err := roles.Dial(ctx, cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeInfra()
	nc, err := in.Connect(ctx, "", "keyflow-bootstrap")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := in.JetStream(nc)
	if err != nil {
		t.Fatal(err)
	}
	o, err := roles.OptionsFrom(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	changes, err := roles.Bootstrap(ctx, js, o)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range changes {
		out = append(out, c.String())
	}
	return out
}

func TestBootstrapIsIdempotentAndReportsChanges(t *testing.T) {
	c := startCluster(t)
	cfg := c.config(t, "")
	first := bootstrap(t, cfg)
	for _, want := range []string{"created KF_AUDIT", "created KF_AUDIT_DIGESTS", "created KV_kf_keys", "created KV_kf_material", "created KV_kf_sealer_lease"} {
		if !slices.Contains(first, want) {
			t.Errorf("first run did not report %q: %q", want, first)
		}
	}
	if again := bootstrap(t, cfg); len(again) != 0 {
		t.Fatalf("second run changed %q", again)
	}
	// A retention change is an update of that one stream, and reported.
	cfg = c.config(t, "audit: {max_age: 2160h}\n")
	changed := bootstrap(t, cfg)
	if len(changed) != 1 || !strings.HasPrefix(changed[0], "updated KF_AUDIT: MaxAge: 0s → 2160h0m0s") {
		t.Fatalf("retention change reported as %q", changed)
	}
	if again := bootstrap(t, cfg); len(again) != 0 {
		t.Fatalf("run after the update changed %q", again)
	}
}

// Two processes' worth of roles on external NATS and Temporal, with a
// token keyflow did not initialise: the admin node creates a key, the
// crypto node encrypts with it, and with the crypto node gone the data
// plane is gone while the control plane still answers.
func TestRolesSplitAcrossNodes(t *testing.T) {
	c := startCluster(t)
	cfg := c.config(t, "")
	bootstrap(t, cfg)
	control := serve(t, cfg, "admin,lifecycle,sealer,remediation")
	data := serve(t, cfg, "crypto")
	if data.Has(roles.Admin) || !control.Has(roles.Sealer) {
		t.Fatalf("roles: data %v, control %v", data.Roles, control.Roles)
	}
	if control.Standby == nil || data.Standby != nil {
		t.Fatal("serve runs the sealer active/standby, and only where the role is")
	}

	ctx := context.Background()
	cl, err := client.Dial(ctx, client.Options{Server: c.natsURL, CredsFile: filepath.Join(c.dir, "admin.creds"), Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	key, err := cl.CreateKey(ctx, api.CreateKeyRequest{Description: "roles test"})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := cl.Encrypt(ctx, api.EncryptRequest{KeyID: key.KeyID, Plaintext: []byte("across roles")})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := cl.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob})
	if err != nil || string(dec.Plaintext) != "across roles" {
		t.Fatalf("decrypt = %q, %v", dec.Plaintext, err)
	}

	data.Stop()
	if _, err := cl.Encrypt(ctx, api.EncryptRequest{KeyID: key.KeyID, Plaintext: []byte("x")}); !errors.Is(err, client.ErrNoService) {
		t.Fatalf("encrypt with no crypto role running: %v, want no service", err)
	}
	if d, err := cl.DescribeKey(ctx, key.KeyID); err != nil || d.KeyID != key.KeyID {
		t.Fatalf("describe through the admin role: %+v, %v", d, err)
	}
}

// Each node serves health, readiness for its roles and metrics of what
// it did.
func TestOpsEndpointsOfEachRole(t *testing.T) {
	c := startCluster(t)
	cfg := c.config(t, "")
	bootstrap(t, cfg)
	control := serve(t, cfg, "admin,lifecycle")
	data := serve(t, cfg, "crypto")
	ch := roles.OpsHandler(control.Checks(), control.Metrics())
	dh := roles.OpsHandler(data.Checks(), data.Metrics())

	code, checks := readiness(t, ch)
	if code != 200 || len(checks) != 4 || checks["nats"] != "ok" || checks["jetstream"] != "ok" || checks["hsm"] != "ok" || checks["temporal"] != "ok" {
		t.Fatalf("control readyz = %d %v", code, checks)
	}
	code, checks = readiness(t, dh)
	if _, ok := checks["temporal"]; code != 200 || ok || checks["hsm"] != "ok" {
		t.Fatalf("crypto readyz = %d %v (the crypto role does not use Temporal)", code, checks)
	}

	ctx := context.Background()
	cl, err := client.Dial(ctx, client.Options{Server: c.natsURL, CredsFile: filepath.Join(c.dir, "admin.creds"), Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	key, err := cl.CreateKey(ctx, api.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := cl.Encrypt(ctx, api.EncryptRequest{KeyID: key.KeyID, Plaintext: []byte("m")}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = cl.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: []byte("not a ciphertext at all, not even close")})
	var ce *client.Error
	if !errors.As(err, &ce) {
		t.Fatalf("decrypt of garbage: %v", err)
	}

	_, body := get(t, dh, "/metrics")
	if v := sample(t, body, `keyflow_requests_total{operation="crypto.encrypt",outcome="ok"}`); v != 3 {
		t.Errorf("encrypts counted: %v\n%s", v, body)
	}
	if v := sample(t, body, `keyflow_requests_total{operation="crypto.decrypt",outcome="`+ce.Code+`"}`); v != 1 {
		t.Errorf("refused decrypt (%s) counted: %v", ce.Code, v)
	}
	if v := sample(t, body, `keyflow_request_duration_seconds_count{operation="crypto.encrypt",outcome="ok"}`); v != 3 {
		t.Errorf("encrypt latencies observed: %v", v)
	}
	if v := sample(t, body, `keyflow_hsm_operation_duration_seconds_count{operation="encrypt"}`); v < 3 {
		t.Errorf("HSM encrypts observed: %v", v)
	}
	if v := sample(t, body, `keyflow_audit_publish_duration_seconds_count`); v < 4 {
		t.Errorf("audit publishes observed: %v", v)
	}
	if v := sample(t, body, `keyflow_audit_publish_failures_total`); v != 0 {
		t.Errorf("audit failures: %v", v)
	}
	_, body = get(t, ch, "/metrics")
	if v := sample(t, body, `keyflow_requests_total{operation="keys.create",outcome="ok"}`); v != 1 {
		t.Errorf("key creations counted on the admin node: %v", v)
	}
	if v := sample(t, body, `keyflow_requests_total{operation="crypto.encrypt",outcome="ok"}`); v != 0 {
		t.Errorf("the admin node counted encrypts it never served: %v", v)
	}
}

// Processes serving requests share a tenant's rate quota: together they
// never admit more than its burst (plus its rate over the test's few
// seconds), where each alone used to admit all of it.
func TestTenantQuotaSharedAcrossProcesses(t *testing.T) {
	c := startCluster(t)
	cfg := c.config(t, "")
	bootstrap(t, cfg)
	control := serve(t, cfg, "admin,lifecycle")
	data := []*roles.Node{serve(t, cfg, "crypto"), serve(t, cfg, "crypto")}

	ctx := context.Background()
	cl, err := client.Dial(ctx, client.Options{Server: c.natsURL, CredsFile: filepath.Join(c.dir, "admin.creds"), Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	key, err := cl.CreateKey(ctx, api.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	const burst = 30
	if _, err := cl.SetTenantPolicy(ctx, api.TenantPolicy{Quotas: &api.Quotas{RequestsPerSecond: 0.1, Burst: burst}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range append(data, control) {
		for n.KMS.TenantQuotas(ctx, "default") == nil || n.QuotaShares() != 3 {
			if time.Now().After(deadline) {
				t.Fatalf("a process did not see the quota or its peers (shares %d)", n.QuotaShares())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	admitted, throttled := 0, 0
	for range 3 * burst {
		_, err := cl.Encrypt(ctx, api.EncryptRequest{KeyID: key.KeyID, Plaintext: []byte("q")})
		var ce *client.Error
		switch {
		case err == nil:
			admitted++
		case errors.As(err, &ce) && ce.Code == "ThrottlingException":
			throttled++
		default:
			t.Fatal(err)
		}
	}
	// Each of the three processes admits a third of the burst; the two
	// crypto processes serve the encrypts, so at most 2/3 of it.
	if admitted > burst || admitted == 0 || admitted+throttled != 3*burst {
		t.Fatalf("admitted %d, throttled %d of %d with a burst of %d over 3 processes", admitted, throttled, 3*burst, burst)
	}
	t.Logf("admitted %d of %d (burst %d, 3 processes sharing it)", admitted, 3*burst, burst)
}

// A process that runs the sealer alone, with the sealer's own creds (no
// audit records but digests), still creates its signing keys: its key
// store and audit publisher connect with a worker's creds.
func TestSealerOnlyProcessWithSealerCreds(t *testing.T) {
	c := startCluster(t)
	creds, err := c.identity.SealerCreds("keyflow-sealer")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(c.dir, "sealer.creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := c.config(t, "")
	cfg.NATS.RoleCreds = map[string]string{"sealer": path}
	bootstrap(t, cfg)
	n := serve(t, cfg, "sealer")
	deadline := time.Now().Add(20 * time.Second)
	for {
		keys, err := sealer.StoredPublicKeys(context.Background(), n.Store)
		if err == nil && len(keys) >= 2 && n.Standby.Active() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sealer-only process has no signing keys: %v (active %v)", err, n.Standby.Active())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
