package roles_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/keyflow/keyflow/deploy/config"
	"github.com/keyflow/keyflow/deploy/devstack"
	"github.com/keyflow/keyflow/deploy/roles"
)

// operatorPKI writes what an operator's PKI hands out, as PEM files: a CA,
// a server certificate for temporal.internal and 127.0.0.1 (server and
// client use: Temporal's services also present it to each other), and a
// client certificate for keyflow. Nothing here comes from the dev stack.
type operatorPKI struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

func writePKI(t *testing.T, dir, name string) operatorPKI {
	t.Helper()
	p := operatorPKI{
		ca: filepath.Join(dir, name+"-ca.pem"), serverCert: filepath.Join(dir, name+"-server.pem"), serverKey: filepath.Join(dir, name+"-server-key.pem"),
		clientCert: filepath.Join(dir, name+"-client.pem"), clientKey: filepath.Join(dir, name+"-client-key.pem"),
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(path, typ string, der []byte) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " operator CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	write(p.ca, "CERTIFICATE", caDER)
	leaf := func(serial int64, cn string, usage []x509.ExtKeyUsage, certPath, keyPath string, hosts ...string) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kd, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		write(certPath, "CERTIFICATE", der)
		write(keyPath, "PRIVATE KEY", kd)
	}
	leaf(2, "temporal.internal", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, p.serverCert, p.serverKey, "temporal.internal", "127.0.0.1")
	leaf(3, "keyflow", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, p.clientCert, p.clientKey)
	return p
}

// Production Temporal certificates: the embedded Temporal server requires
// mutual TLS with certificates an operator supplies as files, and a
// lifecycle worker of `keyflow serve` connects through keyflow.yaml's
// temporal.tls. A client certificate from another CA, and none at all,
// are refused.
func TestTemporalWithOperatorCertificates(t *testing.T) {
	dir := t.TempDir()
	pki := writePKI(t, dir, "operator")
	rogue := writePKI(t, dir, "rogue")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	tmp, err := devstack.StartTemporal(ctx, devstack.TemporalConfig{DataDir: filepath.Join(dir, "temporal"), ListenAddr: "127.0.0.1:0",
		TLS: &devstack.TemporalTLS{CAFile: pki.ca, ServerCertFile: pki.serverCert, ServerKeyFile: pki.serverKey,
			ClientCertFile: pki.clientCert, ClientKeyFile: pki.clientKey, ServerName: "temporal.internal"}})
	if err != nil {
		t.Fatalf("StartTemporal with the operator's certificates: %v", err)
	}
	t.Cleanup(func() { _ = tmp.Stop() })

	c := startCluster(t)
	c.temporal, c.ns = tmp.HostPort(), tmp.Namespace()
	withTLS := func(clientCert, clientKey string) *config.Config {
		tls := fmt.Sprintf("    ca_file: %s\n    server_name: temporal.internal\n", pki.ca)
		if clientCert != "" {
			tls += fmt.Sprintf("    cert_file: %s\n    key_file: %s\n", clientCert, clientKey)
		}
		return c.configWith(t, "  tls:\n"+tls)
	}

	// A lifecycle worker through temporal.tls: it starts, and a client
	// built from the same settings is answered.
	cfg := withTLS(pki.clientCert, pki.clientKey)
	bootstrap(t, cfg)
	serve(t, cfg, "lifecycle")
	opts, err := roles.TemporalOptions(cfg.Temporal)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := client.DialContext(ctx, opts)
	if err != nil {
		t.Fatalf("keyflow's client through temporal.tls: %v", err)
	}
	defer tc.Close()
	if _, err := tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: c.ns}); err != nil {
		t.Fatalf("keyflow's client through temporal.tls: %v", err)
	}

	// The same settings with a certificate from another CA, or none:
	// the frontend refuses, and so does `keyflow serve`.
	for name, cfg := range map[string]*config.Config{
		"a client certificate from another CA": withTLS(rogue.clientCert, rogue.clientKey),
		"no client certificate":                withTLS("", ""),
	} {
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		rs, _ := roles.Parse("lifecycle")
		in, closeInfra, err := roles.Dial(dctx, cfg, rs, nil)
		dcancel()
		closeInfra()
		if err == nil && in.Temporal != nil {
			_, err = in.Temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: c.ns})
		}
		if err == nil {
			t.Errorf("%s: the Temporal frontend answered", name)
			continue
		}
		t.Logf("%s: refused: %v", name, err)
	}
}

// configWith writes a keyflow.yaml like config, with lines added to its
// temporal section.
func (c *cluster) configWith(t *testing.T, temporalExtra string) *config.Config {
	t.Helper()
	y := fmt.Sprintf(`roles: [lifecycle]
nats:
  urls: [%s]
  creds_file: %s
  identity_file: %s
  replicas: 1
temporal:
  address: %s
  namespace: %s
%shsm:
  token_label: %s
  pin_file: %s
`, c.natsURL, filepath.Join(c.dir, "worker.creds"), filepath.Join(c.dir, "identity.json"),
		c.temporal, c.ns, temporalExtra, tokenLabel, filepath.Join(c.dir, "pin"))
	return loadConfig(t, filepath.Join(c.dir, "keyflow-tls.yaml"), y)
}
