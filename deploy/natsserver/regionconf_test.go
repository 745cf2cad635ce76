package natsserver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/keyflow/keyflow/workers/natsauth"
)

// The production link (RegionConf, read by nats-server's own parser) is
// the dev stack's link (leafOptions on the embedded server): the same
// listener, the same remotes with the same creds and local account.
func TestRegionConfIsTheDevLink(t *testing.T) {
	id, err := natsauth.Load(filepath.Join(t.TempDir(), "identity.json"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	creds := filepath.Join(dir, "us-east-link.creds")
	remote := LeafRemote{URL: "nats-leaf://nats.us-east.example:7422", CredentialsFile: creds, LocalAccount: id.ServiceAccount()}
	snippet, err := RegionConf(RegionLink{Region: "eu-west", LeafListen: "0.0.0.0:7422", Remotes: []LeafRemote{remote}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, RegionConfName), []byte(snippet), 0o600); err != nil {
		t.Fatal(err)
	}
	main := filepath.Join(dir, "nats.conf")
	base := "server_name: eu-west-nats-0\njetstream { store_dir: \"" + filepath.Join(dir, "js") + "\", domain: eu-west }\ninclude \"" + RegionConfName + "\"\n"
	if err := os.WriteFile(main, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	prod, err := server.ProcessConfigFile(main)
	if err != nil {
		t.Fatalf("nats-server refuses the snippet: %v\n%s", err, snippet)
	}
	dev := &server.Options{}
	if err := leafOptions(dev, Config{Identity: id, JetStreamDomain: "eu-west", LeafListen: "0.0.0.0:7422", LeafRemotes: []LeafRemote{{URL: remote.URL, CredentialsFile: creds}}}); err != nil {
		t.Fatal(err)
	}
	p, d := prod.LeafNode, dev.LeafNode
	if p.Host != d.Host || p.Port != d.Port || p.NoAdvertise != d.NoAdvertise || !p.NoAdvertise || prod.JetStreamDomain != dev.JetStreamDomain {
		t.Fatalf("listener: prod %s:%d no_advertise=%v domain %q, dev %s:%d no_advertise=%v domain %q",
			p.Host, p.Port, p.NoAdvertise, prod.JetStreamDomain, d.Host, d.Port, d.NoAdvertise, dev.JetStreamDomain)
	}
	if len(p.Remotes) != 1 || len(d.Remotes) != 1 {
		t.Fatalf("remotes: prod %d, dev %d", len(p.Remotes), len(d.Remotes))
	}
	pr, dr := p.Remotes[0], d.Remotes[0]
	if len(pr.URLs) != 1 || pr.URLs[0].String() != dr.URLs[0].String() || pr.Credentials != dr.Credentials || pr.LocalAccount != dr.LocalAccount {
		t.Fatalf("remote: prod %v %s %s, dev %v %s %s", pr.URLs, pr.Credentials, pr.LocalAccount, dr.URLs, dr.Credentials, dr.LocalAccount)
	}
}

func TestRegionConfRefusals(t *testing.T) {
	ok := LeafRemote{URL: "nats-leaf://a.example:7422", CredentialsFile: "/etc/nats/link.creds", LocalAccount: "ACCOUNT"}
	for _, c := range []struct {
		link RegionLink
		want string
	}{
		{RegionLink{Region: "EU_West", LeafListen: ":7422"}, `"EU_West" is not a region name`},
		{RegionLink{Region: "eu-west"}, "needs a leaf listener"},
		{RegionLink{Region: "eu-west", LeafListen: "7422"}, `"7422" is not host:port`},
		{RegionLink{Region: "eu-west", Remotes: []LeafRemote{{URL: "a.example:7422", CredentialsFile: ok.CredentialsFile, LocalAccount: "A"}}}, "is not a leaf-node URL"},
		{RegionLink{Region: "eu-west", Remotes: []LeafRemote{{URL: ok.URL, CredentialsFile: "link.creds", LocalAccount: "A"}}}, "absolute path"},
		{RegionLink{Region: "eu-west", Remotes: []LeafRemote{{URL: ok.URL, CredentialsFile: ok.CredentialsFile}}}, "local keyflow account"},
	} {
		if _, err := RegionConf(c.link); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.link, err, c.want)
		}
	}
	if _, err := RegionConf(RegionLink{Region: "eu-west", Remotes: []LeafRemote{ok}}); err != nil {
		t.Fatal(err)
	}
}
