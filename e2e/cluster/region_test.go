package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/internal/clusterlab"
)

// region is one production deployment as separate processes, set up with
// the commands docs/multi-region.md ("Production") gives: keyflow operator
// init, a SoftHSM token of its own, a Temporal of its own, keyflow
// region nats-config, a nats-server process started from its
// configuration file, keyflow bootstrap, and keyflow serve with
// region.name.
type region struct {
	name, dir, natsURL string
	env                []string // SOFTHSM2_CONF of its token
	admin              *client.Client
}

func (r *region) run(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(keyflowBin, args...)
	cmd.Env, cmd.Dir = r.env, r.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("keyflow %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (r *region) path(p ...string) string { return filepath.Join(append([]string{r.dir}, p...)...) }

// newRegion runs the ceremony, provisions the token and writes
// keyflow.yaml (Temporal is the dev stack's, embedded in the test).
func newRegion(t *testing.T, name string) *region {
	t.Helper()
	r := &region{name: name, dir: t.TempDir()}
	conf := r.path("softhsm2.conf")
	if err := os.MkdirAll(r.path("tokens"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, conf, "directories.tokendir = "+r.path("tokens")+"\nobjectstore.backend = file\nlog.level = ERROR\n")
	r.env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
	init := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "keyflow-"+name, "--so-pin", "so-pin-1", "--pin", "user-pin-1")
	init.Env = r.env
	if out, err := init.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util: %v\n%s", err, out)
	}
	writeFile(t, r.path("pin"), "user-pin-1\n")
	r.run(t, "operator", "init", r.path("operator"), "--resolver-dir", r.path("jwt"))
	port := freeTCPPort(t)
	r.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", port)
	tp := embeddedTemporal(t)
	writeFile(t, r.path("keyflow.yaml"), fmt.Sprintf(`roles: [crypto, admin, lifecycle]
log: {level: warn}
nats:
  urls: [%s]
  creds_file: %s
  identity_file: %s
temporal:
  address: %s
  namespace: %s
  tls: {ca_file: %s, cert_file: %s, key_file: %s, server_name: localhost}
hsm: {module: %s, token_label: keyflow-%s, pin_file: %s}
ops: {listen: 127.0.0.1:0}
region: {name: %s}
`, r.natsURL, r.path("operator", "creds", "worker.creds"), r.path("operator", "identity.json"),
		tp.Addr, tp.Namespace, tp.CAFile, tp.CertFile, tp.KeyFile,
		clusterlab.DefaultHSMModule, name, r.path("pin"), name))
	return r
}

// start starts the region's nats-server (its jetstream domain, the
// ceremony's stanza and nats-config's leafnodes block), bootstraps the
// streams and starts keyflow serve.
func (r *region) start(t *testing.T) {
	t.Helper()
	conf := r.path("nats.conf")
	writeFile(t, conf, fmt.Sprintf(`server_name: %s-nats-0
listen: %s
jetstream { store_dir: %q, domain: %s }
include "operator/nats-operator.conf"
include "nats/nats-region.conf"
`, r.name, strings.TrimPrefix(r.natsURL, "nats://"), r.path("js"), r.name))
	ns := clusterlab.NATSProc(r.name+"-nats", natsBin, conf, r.dir, r.path("nats.log"), strings.TrimPrefix(r.natsURL, "nats://"), tlog{t})
	if err := ns.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Stop)
	r.run(t, "bootstrap", "--config", r.path("keyflow.yaml"), "--creds", r.path("operator", "creds", "operator.creds"))
	kf := clusterlab.ServeProc(r.name+"-keyflow", keyflowBin, r.dir, r.path("keyflow.log"), r.env, tlog{t}, "--config", r.path("keyflow.yaml"))
	if err := kf.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kf.Stop)
	if log, _ := os.ReadFile(r.path("keyflow.log")); !strings.Contains(string(log), "keyflow serving roles=crypto,admin,lifecycle region="+r.name+" ops=") {
		t.Fatalf("keyflow serve does not say its region:\n%s", log)
	}
	cl, err := client.Dial(context.Background(), client.Options{Server: r.natsURL, CredsFile: r.path("operator", "creds", "default-admin.creds"), Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	r.admin = cl
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Two production regions as processes (a nats-server and a keyflow serve
// each, with its own token and Temporal), linked by the leaf node of
// keyflow region nats-config: a multi-region key replicated from us-east
// decrypts us-east's ciphertext in eu-west and eu-west's in us-east, a
// rotation in us-east reaches eu-west, and a single-region key's
// ciphertext does not decrypt in eu-west.
func TestServeRegionsAsProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("processes")
	}
	ctx := context.Background()
	a, b := newRegion(t, "us-east"), newRegion(t, "eu-west")
	leaf := freeTCPPort(t)
	a.run(t, "region", "nats-config", "--config", a.path("keyflow.yaml"), "--leaf-listen", fmt.Sprintf("127.0.0.1:%d", leaf), "--out", a.path("nats"))
	// The creds travel out of band to eu-west's nats-server host.
	creds, err := os.ReadFile(a.path("nats", "region-link.creds"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, b.path("us-east-link.creds"), string(creds))
	b.run(t, "region", "nats-config", "--config", b.path("keyflow.yaml"), "--link-to", fmt.Sprintf("nats-leaf://127.0.0.1:%d", leaf),
		"--link-creds", b.path("us-east-link.creds"), "--out", b.path("nats"))
	a.start(t)
	b.start(t)

	key, err := a.admin.CreateKey(ctx, api.CreateKeyRequest{MultiRegion: true})
	if err != nil {
		t.Fatal(err)
	}
	local, err := a.admin.CreateKey(ctx, api.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := a.admin.ReplicateKey(ctx, key.KeyID, b.name); err != nil {
		t.Fatal(err)
	}
	waitPrimaryVersion(t, b, key.KeyID, 1)
	t.Logf("FIGURE replicate until eu-west serves version 1 (processes): %v", time.Since(start).Round(time.Millisecond))

	enc, err := a.admin.Encrypt(ctx, api.EncryptRequest{KeyID: key.KeyID, Plaintext: []byte("made in us-east")})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := b.admin.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob})
	if err != nil || string(dec.Plaintext) != "made in us-east" {
		t.Fatalf("eu-west decrypting us-east's ciphertext: %+v, %v", dec, err)
	}
	if enc, err = b.admin.Encrypt(ctx, api.EncryptRequest{KeyID: key.KeyID, Plaintext: []byte("made in eu-west")}); err != nil {
		t.Fatal(err)
	}
	if dec, err = a.admin.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob}); err != nil || string(dec.Plaintext) != "made in eu-west" {
		t.Fatalf("us-east decrypting eu-west's ciphertext: %+v, %v", dec, err)
	}

	// A rotation in us-east reaches eu-west (the rotation switches to the
	// new version once eu-west has it, and then tells it so). Figure: the
	// time from the rotation until eu-west serves the version, next to
	// the rotation of the single-region key until us-east serves it.
	const rotations = 5
	var replicated, single []time.Duration
	for v := uint32(2); v < 2+rotations; v++ {
		replicated = append(replicated, timeRotation(t, a, key.KeyID, b, v))
		single = append(single, timeRotation(t, a, local.KeyID, a, v))
	}
	mr, ms := median(replicated), median(single)
	t.Logf("FIGURE rotation until the version is served, median of %d (processes): multi-region key in eu-west %v, single-region key in us-east %v, ratio %.2f",
		rotations, mr.Round(time.Millisecond), ms.Round(time.Millisecond), float64(mr)/float64(ms))
	if enc, err = a.admin.Encrypt(ctx, api.EncryptRequest{KeyID: key.KeyID, Plaintext: []byte("newest version")}); err != nil {
		t.Fatal(err)
	}
	if dec, err = b.admin.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob}); err != nil || string(dec.Plaintext) != "newest version" {
		t.Fatalf("eu-west decrypting us-east's ciphertext of version %d: %+v, %v", 1+rotations, dec, err)
	}

	if enc, err = a.admin.Encrypt(ctx, api.EncryptRequest{KeyID: local.KeyID, Plaintext: []byte("stays home")}); err != nil {
		t.Fatal(err)
	}
	var ce *client.Error
	if dec, err := b.admin.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob}); !errors.As(err, &ce) {
		t.Fatalf("eu-west decrypted a single-region key's ciphertext of us-east: %+v, %v", dec, err)
	}
}

// waitPrimaryVersion waits (60 s at most) until r serves version v of
// keyID as its primary version.
func waitPrimaryVersion(t *testing.T, r *region, keyID string, v uint32) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		d, err := r.admin.DescribeKey(context.Background(), keyID)
		if err == nil && d.PrimaryVersion == v {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has no version %d of the key after 60 s: %+v %v", r.name, v, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// timeRotation rotates keyID in from and returns the time until in serves
// version v.
func timeRotation(t *testing.T, from *region, keyID string, in *region, v uint32) time.Duration {
	t.Helper()
	start := time.Now()
	if _, err := from.admin.RotateKey(context.Background(), keyID); err != nil {
		t.Fatal(err)
	}
	waitPrimaryVersion(t, in, keyID, v)
	return time.Since(start)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
