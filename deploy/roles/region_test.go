package roles_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.temporal.io/server/temporaltest"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/deploy/config"
	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/deploy/roles"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/region"
	"github.com/keyflow/keyflow/workers/natsauth"
)

// prodRegion is one region deployed as docs/multi-region.md's
// "Production" section says: keyflow operator init's ceremony, a
// nats-server configured from files (its jetstream block with the region
// as domain, the ceremony's stanza, and the nats-region.conf that keyflow
// region nats-config writes), its own SoftHSM token (its own root key)
// and Temporal, and keyflow serve's roles with region.name in the
// configuration.
type prodRegion struct {
	name     string
	dir      string
	ceremony natsauth.OperatorFiles
	identity *natsauth.Identity
	token    string // the SoftHSM token's label
	ns       *server.Server
	cfg      *config.Config
	node     *roles.Node
	admin    *client.Client
}

// newProdRegion runs the ceremony of a region (before its link is known).
func newProdRegion(t *testing.T, name string) *prodRegion {
	t.Helper()
	dir := t.TempDir()
	cer, err := natsauth.InitOperator(natsauth.OperatorInit{Dir: filepath.Join(dir, "operator"), ResolverDir: filepath.Join(dir, "jwt"), Tenants: []string{"default"}})
	if err != nil {
		t.Fatal(err)
	}
	id, err := natsauth.Load(cer.Identity)
	if err != nil {
		t.Fatal(err)
	}
	// SoftHSM lists the tokens that exist when the process first opens
	// the module: every region's token is made before any is opened.
	label := fmt.Sprintf("%s-%d", name, time.Now().UnixNano()%1e9)
	if out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "so-secret-1", "--pin", userPIN).CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util: %v\n%s", err, out)
	}
	write(t, filepath.Join(dir, "pin"), userPIN+"\n")
	return &prodRegion{name: name, dir: dir, ceremony: cer, identity: id, token: label}
}

// startNATS writes the region's nats-server configuration with the link
// snippet and starts the server from it, as nats-server -c would.
func (r *prodRegion) startNATS(t *testing.T, link natsserver.RegionLink, domain string) {
	t.Helper()
	link.Region = r.name
	snippet, err := natsserver.RegionConf(link)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(r.dir, natsserver.RegionConfName), snippet)
	conf := filepath.Join(r.dir, "nats.conf")
	write(t, conf, fmt.Sprintf(`server_name: %s-nats-0
listen: 127.0.0.1:-1
jetstream { store_dir: %q, domain: %s }
include "operator/%s"
include "%s"
`, r.name, filepath.Join(r.dir, "js"), domain, natsauth.ServerConfName, natsserver.RegionConfName))
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server refuses %s: %v", conf, err)
	}
	opts.NoLog, opts.NoSigs = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	r.ns = ns
}

// serve provisions the region's token, starts its Temporal, bootstraps
// its streams with the operator's creds and runs crypto, admin and
// lifecycle with region.name in keyflow.yaml.
func (r *prodRegion) serve(t *testing.T) {
	t.Helper()
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	r.cfg = loadConfig(t, filepath.Join(r.dir, "keyflow.yaml"), fmt.Sprintf(`roles: [crypto, admin, lifecycle]
nats:
  urls: [%s]
  creds_file: %s
  identity_file: %s
temporal: {address: %s, namespace: %s}
hsm: {token_label: %s, pin_file: %s}
region: {name: %s}
`, r.ns.ClientURL(), r.ceremony.Creds["worker"], r.ceremony.Identity, ts.GetFrontendHostPort(), ts.GetDefaultNamespace(),
		r.token, filepath.Join(r.dir, "pin"), r.name))
	boot := *r.cfg
	boot.NATS.CredsFile = r.ceremony.Creds["operator"]
	bootstrap(t, &boot)
	r.node = serve(t, r.cfg, "crypto,admin,lifecycle")
	cl, err := client.Dial(context.Background(), client.Options{Server: r.ns.ClientURL(), CredsFile: r.ceremony.Creds["default-admin"], Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	r.admin = cl
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Two production deployments (external nats-servers linked by the leaf
// node of the documented snippets, keyflow serve's composition with
// region.name) replicate a multi-region key: a ciphertext made in us-east
// decrypts in eu-west, and one made there decrypts in us-east, while a
// single-region key's ciphertext does not (each region has its own root
// key, and nothing else crosses the link).
func TestServeRegionsLinkedByLeafNode(t *testing.T) {
	if testing.Short() {
		t.Skip("two Temporal servers and two NATS servers")
	}
	ctx := context.Background()
	a, b := newProdRegion(t, "us-east"), newProdRegion(t, "eu-west")

	// us-east accepts links and issues the link creds (keyflow region
	// nats-config --leaf-listen); eu-west dials with them (--link-to,
	// --link-creds), bound to its own keyflow account.
	a.startNATS(t, natsserver.RegionLink{LeafListen: fmt.Sprintf("127.0.0.1:%d", freePort(t))}, a.name)
	creds, err := a.identity.RegionLinkCreds("region-link-us-east")
	if err != nil {
		t.Fatal(err)
	}
	credsFile := filepath.Join(b.dir, "us-east-link.creds")
	write(t, credsFile, string(creds))
	if err := natsauth.CheckRegionLinkCreds(creds); err != nil {
		t.Fatal(err)
	}
	b.startNATS(t, natsserver.RegionLink{Remotes: []natsserver.LeafRemote{{
		URL: natsserver.LeafURL(a.ns), CredentialsFile: credsFile, LocalAccount: b.identity.ServiceAccount(),
	}}}, b.name)
	a.serve(t)
	b.serve(t)

	// The link is up when each region's responder answers the other.
	deadline := time.Now().Add(30 * time.Second)
	for !answers(a, b) || !answers(b, a) {
		if time.Now().After(deadline) {
			t.Fatal("the regions' responders do not answer each other across the leaf node")
		}
		time.Sleep(50 * time.Millisecond)
	}

	key, err := a.admin.CreateKey(ctx, api.CreateKeyRequest{MultiRegion: true, Description: "serve regions"})
	if err != nil {
		t.Fatal(err)
	}
	local, err := a.admin.CreateKey(ctx, api.CreateKeyRequest{Description: "us-east only"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := a.admin.ReplicateKey(ctx, key.KeyID, b.name); err != nil {
		t.Fatal(err)
	}
	for {
		d, err := a.admin.DescribeKey(ctx, key.KeyID)
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Replicas) == 1 && d.Replicas[0].Region == b.name && d.Replicas[0].LastSyncedVersion == 1 {
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("eu-west never synced version 1: %+v", d.Replicas)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("FIGURE replicate until the replica has version 1: %v", time.Since(start).Round(time.Millisecond))

	enc, err := a.admin.Encrypt(ctx, api.EncryptRequest{KeyID: key.KeyID, Plaintext: []byte("made in us-east")})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := b.admin.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob})
	if err != nil || string(dec.Plaintext) != "made in us-east" || dec.KeyID != key.KeyID {
		t.Fatalf("eu-west decrypting us-east's ciphertext: %+v, %v", dec, err)
	}
	enc, err = b.admin.Encrypt(ctx, api.EncryptRequest{KeyID: key.KeyID, Plaintext: []byte("made in eu-west")})
	if err != nil {
		t.Fatal(err)
	}
	if dec, err = a.admin.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob}); err != nil || string(dec.Plaintext) != "made in eu-west" {
		t.Fatalf("us-east decrypting eu-west's ciphertext: %+v, %v", dec, err)
	}

	// A key that was not replicated does not exist in eu-west: its
	// ciphertext does not decrypt there.
	enc, err = a.admin.Encrypt(ctx, api.EncryptRequest{KeyID: local.KeyID, Plaintext: []byte("stays home")})
	if err != nil {
		t.Fatal(err)
	}
	var ce *client.Error
	if dec, err := b.admin.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob}); !errors.As(err, &ce) {
		t.Fatalf("eu-west decrypted a single-region key's ciphertext of us-east: %+v, %v", dec, err)
	}
	if _, err := b.admin.DescribeKey(ctx, local.KeyID); !errors.As(err, &ce) || ce.Code != string(kms.CodeNotFound) {
		t.Fatalf("the single-region key in eu-west: %v", err)
	}
}

// answers reports whether to's region responder answers from's node (a
// refusal is an answer).
func answers(from, to *prodRegion) bool {
	p := &region.Peer{Conn: from.node.Conn, From: from.name, Timeout: 200 * time.Millisecond}
	_, err := p.ApplyMetadata(context.Background(), to.name, &kms.Key{})
	var re *region.RemoteError
	return errors.As(err, &re)
}

// keyflow serve with region.name refuses a NATS server whose JetStream is
// not in the region's domain, saying what to set.
func TestServeRegionNeedsItsJetStreamDomain(t *testing.T) {
	r := newProdRegion(t, "eu-west")
	r.startNATS(t, natsserver.RegionLink{LeafListen: fmt.Sprintf("127.0.0.1:%d", freePort(t))}, "us-east")
	cfg := loadConfig(t, filepath.Join(r.dir, "keyflow.yaml"), fmt.Sprintf(`roles: [crypto]
nats: {urls: [%s], creds_file: %s, identity_file: %s}
hsm: {token_label: %s, pin_file: %s}
region: {name: eu-west}
`, r.ns.ClientURL(), r.ceremony.Creds["worker"], r.ceremony.Identity, tokenLabel, filepath.Join(r.dir, "pin")))
	rs, _ := roles.Parse("crypto")
	in, closeInfra, err := roles.Dial(context.Background(), cfg, rs, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeInfra()
	o, err := roles.OptionsFrom(cfg, rs)
	if err != nil {
		t.Fatal(err)
	}
	n, err := roles.Start(context.Background(), in, o)
	if err == nil {
		n.Stop()
		t.Fatal("a region started on another region's JetStream domain")
	}
	if !strings.Contains(err.Error(), `JetStream domain is "us-east"`) || !strings.Contains(err.Error(), "jetstream { domain: eu-west }") {
		t.Fatalf("error %q does not say what to set", err)
	}
}
