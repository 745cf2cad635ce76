package roles_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/deploy/roles"
)

// keyflow serve (and keyflow bootstrap) with region.name refuse a NATS
// server whose JetStream is not in the region's domain (another region's,
// or none), saying what to set; with the region's domain they run. (Two linked regions replicating
// a key as processes: e2e/cluster TestServeRegionsAsProcesses.)
func TestServeRegionNeedsItsJetStreamDomain(t *testing.T) {
	for _, domain := range []string{"us-east", "", "eu-west"} {
		c := startNATS(t)
		ns, err := natsserver.Start(natsserver.Config{StoreDir: filepath.Join(c.dir, "js-"+domain), Listen: "127.0.0.1:0", Identity: c.identity, JetStreamDomain: domain})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		c.natsURL = ns.ClientURL()
		cfg := c.config(t, "region: {name: eu-west, replica_switch_timeout: 40s}\n")
		if domain == "eu-west" {
			bootstrap(t, cfg)
		}
		rs, _ := roles.Parse("crypto")
		in, closeInfra, err := roles.Dial(context.Background(), cfg, rs, nil)
		if err != nil {
			t.Fatal(err)
		}
		o, err := roles.OptionsFrom(cfg, rs)
		if err != nil || o.Region != "eu-west" || o.ReplicaSwitchTimeout != 40*time.Second {
			t.Fatalf("options of region: %q %v, %v", o.Region, o.ReplicaSwitchTimeout, err)
		}
		n, err := roles.Start(context.Background(), in, o)
		n.Stop()
		// keyflow bootstrap refuses the same, before it creates anything.
		nc, cerr := in.Connect(context.Background(), "", "keyflow-bootstrap")
		if cerr != nil {
			t.Fatal(cerr)
		}
		js, _ := in.JetStream(nc)
		_, berr := roles.Bootstrap(context.Background(), js, o)
		nc.Close()
		closeInfra()
		if (berr == nil) != (domain == "eu-west") {
			t.Fatalf("bootstrap of region eu-west on domain %q: %v", domain, berr)
		}
		if domain == "eu-west" {
			if err != nil {
				t.Fatalf("region eu-west on its own domain: %v", err)
			}
			continue
		}
		want := fmt.Sprintf("the NATS server's JetStream domain is %q", domain)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "jetstream { domain: eu-west }") {
			t.Fatalf("domain %q: error %v does not say what to set", domain, err)
		}
	}
}
