package devstack

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
)

// TestTemporalFrontendRequiresMutualTLS replays the side door: a local
// program dials the dev stack's Temporal frontend with a plain SDK client,
// with TLS but no certificate, and with a certificate from a CA of its
// own. None gets an answer; keyflow's client (the generated certificate)
// does. The key files are private to keyflow's user.
func TestTemporalFrontendRequiresMutualTLS(t *testing.T) {
	dataDir := t.TempDir()
	tmp := startTestTemporal(t, dataDir)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	intruder, err := DevTemporalTLS(t.TempDir()) // another CA, another client certificate
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := intruder.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	noCert := tmp.tls.Clone()
	noCert.Certificates = nil
	// The intruder trusts the real server (it can read the CA file, which
	// is not secret) but presents its own client certificate.
	otherCA.RootCAs = tmp.tls.RootCAs
	for name, opts := range map[string]client.ConnectionOptions{
		"plaintext":              {},
		"TLS without a cert":     {TLS: noCert},
		"a cert from another CA": {TLS: otherCA},
	} {
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := client.DialContext(dctx, client.Options{HostPort: tmp.HostPort(), Namespace: tmp.Namespace(), ConnectionOptions: opts})
		if err == nil {
			_, err = c.ListWorkflow(dctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: tmp.Namespace()})
			c.Close()
		}
		dcancel()
		if err == nil {
			t.Fatalf("%s: the frontend answered", name)
		}
	}
	c, err := tmp.NewClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: tmp.Namespace()}); err != nil {
		t.Fatalf("keyflow's own client: %v", err)
	}
	for _, f := range []string{devTLSServerKey, devTLSClientKey} {
		fi, err := os.Stat(filepath.Join(dataDir, "tls", f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, fi.Mode(), err)
		}
	}
}
