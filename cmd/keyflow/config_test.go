package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/workers/natsauth"
)

// runCLI runs the command tree in-process and returns stdout and the
// error (as main would report it).
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestConfigExampleThenCheck(t *testing.T) {
	example, err := runCLI(t, "config", "example")
	if err != nil || !strings.Contains(example, "roles:") || !strings.Contains(example, "# ") {
		t.Fatalf("config example: %v\n%s", err, example)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "keyflow.yaml")
	if err := os.WriteFile(path, []byte(example), 0o600); err != nil {
		t.Fatal(err)
	}
	// The example names files this machine does not have: one message each.
	_, err = runCLI(t, "config", "check", path)
	var ue usageError
	if !errors.As(err, &ue) || report(err) != exitUsage || !strings.Contains(ue.msg, "hsm.pin_file: /etc/keyflow/hsm/pin") {
		t.Fatalf("config check of the example: %v", err)
	}

	for _, f := range []string{"worker.creds", "identity.json", "pin"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	good := "roles: [crypto]\nnats:\n  urls: [nats://127.0.0.1:4222]\n  creds_file: " + filepath.Join(dir, "worker.creds") +
		"\n  identity_file: " + filepath.Join(dir, "identity.json") + "\nhsm: {token_label: keyflow, pin_file: " + filepath.Join(dir, "pin") + "}\n"
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "config", "check", path)
	if err != nil || out != path+": ok\n" {
		t.Fatalf("config check of a good file: %v %q", err, out)
	}
	// The environment is part of what is checked.
	t.Setenv("KEYFLOW_NATS_REPLICAS", "9")
	if _, err := runCLI(t, "config", "check", path); err == nil || !strings.Contains(err.Error(), "nats.replicas: 9") {
		t.Fatalf("KEYFLOW_NATS_REPLICAS=9 passed the check: %v", err)
	}
	// serve refuses the same file before connecting to anything.
	if _, err := runCLI(t, "serve", "--config", path, "--roles", "crypto,reaper"); err == nil || !strings.Contains(err.Error(), `unknown role "reaper"`) {
		t.Fatalf("serve with an unknown role: %v", err)
	}
}

// region.name is checked with the rest of the file: its format, and a
// jetstream_domain that would put the region's streams in another domain.
func TestConfigCheckRegion(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"worker.creds", "identity.json", "pin"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := "roles: [crypto]\nnats:\n  urls: [nats://127.0.0.1:4222]\n  creds_file: " + filepath.Join(dir, "worker.creds") +
		"\n  identity_file: " + filepath.Join(dir, "identity.json") + "\nhsm: {token_label: keyflow, pin_file: " + filepath.Join(dir, "pin") + "}\n"
	path := filepath.Join(dir, "keyflow.yaml")
	check := func(yaml string) error {
		t.Helper()
		if err := os.WriteFile(path, []byte(base+yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := runCLI(t, "config", "check", path)
		return err
	}
	if err := check("region: {name: eu-west}\n"); err != nil {
		t.Fatalf("a region name: %v", err)
	}
	for yaml, want := range map[string]string{
		"region: {name: EU_West}\n":                              `region.name: "EU_West" is not a region name`,
		"region: {name: -west}\n":                                `region.name: "-west" is not a region name`,
		"region: {name: eu-west, link: nats-leaf://a:7422}\n":    "field link not found",
		"region: {name: " + strings.Repeat("a", 64) + "}\n":      "is not a region name",
		"region: {name: eu-west, replica_switch_timeout: -1s}\n": "region.replica_switch_timeout must not be negative",
	} {
		err := check(yaml)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", yaml, err, want)
		}
	}
	// A jetstream_domain other than the region's name (nats: is one
	// block, so the test writes the whole file).
	domain := strings.Replace(base, "  urls:", "  jetstream_domain: us-east\n  urls:", 1) + "region: {name: eu-west}\n"
	if err := os.WriteFile(path, []byte(domain), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "config", "check", path); err == nil || !strings.Contains(err.Error(), `nats.jetstream_domain: "us-east" differs from region.name "eu-west"`) {
		t.Fatalf("a domain other than the region: %v", err)
	}
	// The environment names the region too.
	if err := os.WriteFile(path, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KEYFLOW_REGION_NAME", "Bad Name")
	if _, err := runCLI(t, "config", "check", path); err == nil || !strings.Contains(err.Error(), `region.name: "Bad Name"`) {
		t.Fatalf("KEYFLOW_REGION_NAME: %v", err)
	}
}

// keyflow region nats-config writes the nats-server side of a production
// region link: the accepting region's listener and link creds (a user
// limited to the replication subjects), and the linking region's remote,
// bound to its own keyflow account, with the other region's creds, which
// must exist and be link creds.
func TestRegionNATSConfig(t *testing.T) {
	ceremony := func(name string) natsauth.OperatorFiles {
		t.Helper()
		f, err := natsauth.InitOperator(natsauth.OperatorInit{Dir: filepath.Join(t.TempDir(), name), Tenants: []string{"default"}})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	hub, spoke := ceremony("us-east"), ceremony("eu-west")
	hubOut := t.TempDir()
	out, err := runCLI(t, "region", "nats-config", "--region", "us-east", "--identity", hub.Identity, "--leaf-listen", "0.0.0.0:7422", "--out", hubOut)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(filepath.Join(hubOut, natsserver.RegionConfName))
	if err != nil || !strings.Contains(string(conf), `listen: "0.0.0.0:7422"`) || !strings.Contains(string(conf), "domain: us-east") || strings.Contains(string(conf), "remotes") {
		t.Fatalf("the hub's snippet: %v\n%s", err, conf)
	}
	linkCreds := filepath.Join(hubOut, natsserver.RegionLinkCredsName)
	var printed regionNATSFiles
	if err := json.Unmarshal([]byte(out), &printed); err != nil || printed != (regionNATSFiles{
		Region: "us-east", JetStreamDomain: "us-east", NATSConfig: filepath.Join(hubOut, natsserver.RegionConfName), LinkCreds: linkCreds,
	}) {
		t.Fatalf("printed %+v (%v):\n%s", printed, err, out)
	}
	b, err := os.ReadFile(linkCreds)
	if err != nil {
		t.Fatal(err)
	}
	if err := natsauth.CheckRegionLinkCreds(b); err != nil {
		t.Fatalf("the link creds are not limited to the region subjects: %v", err)
	}
	if fi, err := os.Stat(linkCreds); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("link creds mode: %v %v", fi.Mode(), err)
	}

	// The linking region reads its region and identity from keyflow.yaml.
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keyflow.yaml")
	if err := os.WriteFile(cfg, []byte("nats: {identity_file: "+spoke.Identity+"}\nregion: {name: eu-west}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	spokeArgs := func(creds string) []string {
		return []string{"region", "nats-config", "--config", cfg, "--link-to", "nats-leaf://nats.us-east.example:7422", "--link-creds", creds, "--out", dir}
	}
	var ue usageError
	if _, err := runCLI(t, spokeArgs(filepath.Join(dir, "absent.creds"))...); !errors.As(err, &ue) || !strings.Contains(err.Error(), "--link-creds") || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("a link creds file that does not exist: %v", err)
	}
	if _, err := runCLI(t, spokeArgs(spoke.Creds["worker"])...); !errors.As(err, &ue) || !strings.Contains(err.Error(), "is not a region link user") {
		t.Fatalf("a worker's creds as link creds: %v", err)
	}
	if _, err := runCLI(t, spokeArgs(linkCreds)...); err != nil {
		t.Fatal(err)
	}
	conf, err = os.ReadFile(filepath.Join(dir, natsserver.RegionConfName))
	if err != nil {
		t.Fatal(err)
	}
	id, err := natsauth.Load(spoke.Identity)
	if err != nil {
		t.Fatal(err)
	}
	want := `{ url: "nats-leaf://nats.us-east.example:7422", credentials: "` + linkCreds + `", account: "` + id.ServiceAccount() + `" }`
	if !strings.Contains(string(conf), want) || !strings.Contains(string(conf), "domain: eu-west") || strings.Contains(string(conf), "listen:") {
		t.Fatalf("the spoke's snippet lacks %s:\n%s", want, conf)
	}
	if _, err := os.Stat(filepath.Join(dir, natsserver.RegionLinkCredsName)); err == nil {
		t.Fatal("a region that accepts no links wrote link creds")
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--identity", hub.Identity, "--leaf-listen", ":7422"}, "no region"},
		{[]string{"--region", "us-east", "--leaf-listen", ":7422"}, "no identity"},
		{[]string{"--region", "US East", "--identity", hub.Identity, "--leaf-listen", ":7422"}, `"US East" is not a region name`},
		{[]string{"--region", "us-east", "--identity", filepath.Join(dir, "none.json"), "--leaf-listen", ":7422"}, "no such file"},
		{[]string{"--region", "us-east", "--identity", hub.Identity}, "needs a leaf listener"},
		{[]string{"--region", "us-east", "--identity", hub.Identity, "--link-to", "nats-leaf://a:7422"}, "--link-to and --link-creds go together"},
	} {
		_, err := runCLI(t, append([]string{"region", "nats-config", "--out", t.TempDir()}, c.args...)...)
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
}
