package devstack

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.temporal.io/server/common/config"
)

// Temporal's frontend is not a trust boundary by itself: whoever reaches
// it can list, signal, update, start and terminate every workflow. So the
// embedded server takes mutual TLS only, on the frontend and between its
// own services, and the dev stack listens on loopback only.
//
// TemporalTLS names the PEM files; production fills it from the
// operator's certificates. DevTemporalTLS generates a private set under
// the data directory on first start: a CA, a server certificate for
// 127.0.0.1 and localhost, and one client certificate for keyflow's
// workers and client. The CA's private key is not kept, so no other
// client certificate can ever be issued for that set; the files are
// 0600 in a 0700 directory, and keyflow's process is their only reader.

// TemporalTLS is the mutual-TLS material of the Temporal server and its
// clients, as PEM files.
type TemporalTLS struct {
	// CAFile holds the CA certificates that sign the server's and the
	// clients' certificates: clients verify the server with them, and the
	// server admits only clients whose certificate they sign.
	CAFile string
	// ServerCertFile and ServerKeyFile are the frontend's certificate; the
	// server's own services also present it to each other.
	ServerCertFile string
	ServerKeyFile  string
	// ClientCertFile and ClientKeyFile are what keyflow presents.
	ClientCertFile string
	ClientKeyFile  string
	// ServerName is the name clients expect in the server certificate.
	ServerName string
}

// The files DevTemporalTLS keeps under its directory.
const (
	devTLSCA         = "ca.pem"
	devTLSServerCert = "server.pem"
	devTLSServerKey  = "server-key.pem"
	devTLSClientCert = "client.pem"
	devTLSClientKey  = "client-key.pem"
	devTLSServerName = "localhost"
	devTLSValidity   = 397 * 24 * time.Hour
	// devTLSRenewBefore: certificates this close to expiry are replaced
	// at start (a fresh CA, so old client certificates stop working).
	devTLSRenewBefore = 30 * 24 * time.Hour
)

// DevTemporalTLS returns the dev stack's certificates in dir, generating
// a fresh set when they are missing, unreadable or near expiry.
func DevTemporalTLS(dir string) (*TemporalTLS, error) {
	t := &TemporalTLS{
		CAFile:         filepath.Join(dir, devTLSCA),
		ServerCertFile: filepath.Join(dir, devTLSServerCert),
		ServerKeyFile:  filepath.Join(dir, devTLSServerKey),
		ClientCertFile: filepath.Join(dir, devTLSClientCert),
		ClientKeyFile:  filepath.Join(dir, devTLSClientKey),
		ServerName:     devTLSServerName,
	}
	if t.usable(time.Now()) {
		return t, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("failed to create the temporal TLS directory: %w", err)
	}
	if err := t.generate(); err != nil {
		return nil, fmt.Errorf("failed to generate the temporal TLS certificates: %w", err)
	}
	return t, nil
}

// usable reports whether every file loads and no certificate is near expiry.
func (t *TemporalTLS) usable(now time.Time) bool {
	for _, pair := range [][2]string{{t.ServerCertFile, t.ServerKeyFile}, {t.ClientCertFile, t.ClientKeyFile}} {
		c, err := tls.LoadX509KeyPair(pair[0], pair[1])
		if err != nil || c.Leaf == nil || now.Add(devTLSRenewBefore).After(c.Leaf.NotAfter) {
			return false
		}
	}
	_, err := t.caPool()
	return err == nil
}

func (t *TemporalTLS) generate() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now().Add(-time.Minute)
	ca := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "keyflow dev Temporal CA"},
		NotBefore: now, NotAfter: now.Add(devTLSValidity),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		return err
	}
	issue := func(cn string, usage []x509.ExtKeyUsage, server bool, certFile, keyFile string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(), Subject: pkix.Name{CommonName: cn},
			NotBefore: now, NotAfter: now.Add(devTLSValidity),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage,
		}
		if server {
			tmpl.DNSNames = []string{devTLSServerName}
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		if err := writePEM(keyFile, "PRIVATE KEY", keyDER); err != nil {
			return err
		}
		return writePEM(certFile, "CERTIFICATE", der)
	}
	// The server certificate also authenticates the server's services to
	// each other (internode mutual TLS), hence client auth too.
	if err := issue("keyflow dev Temporal", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, true, t.ServerCertFile, t.ServerKeyFile); err != nil {
		return err
	}
	if err := issue("keyflow", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, false, t.ClientCertFile, t.ClientKeyFile); err != nil {
		return err
	}
	// The CA certificate last: its presence marks a complete set.
	return writePEM(t.CAFile, "CERTIFICATE", caDER)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n
}

// writePEM writes one block, 0600, replacing the file atomically.
func writePEM(path, typ string, der []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (t *TemporalTLS) caPool() (*x509.CertPool, error) {
	b, err := os.ReadFile(t.CAFile)
	if err != nil {
		return nil, fmt.Errorf("failed to read the temporal CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, errors.New("failed to read the temporal CA: no certificate in " + t.CAFile)
	}
	return pool, nil
}

// ClientConfig is the TLS configuration keyflow's Temporal clients use:
// the client certificate, and the CA to verify the server with.
func (t *TemporalTLS) ClientConfig() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.ClientCertFile, t.ClientKeyFile)
	if err != nil {
		return nil, fmt.Errorf("failed to load the temporal client certificate: %w", err)
	}
	pool, err := t.caPool()
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: t.ServerName, MinVersion: tls.VersionTLS12}, nil
}

// serverConfig is the server's TLS section: mutual TLS on the frontend
// and between its services, and the system worker's client settings.
func (t *TemporalTLS) serverConfig() config.RootTLS {
	server := config.ServerTLS{CertFile: t.ServerCertFile, KeyFile: t.ServerKeyFile, ClientCAFiles: []string{t.CAFile}, RequireClientAuth: true}
	client := config.ClientTLS{ServerName: t.ServerName, RootCAFiles: []string{t.CAFile}}
	return config.RootTLS{
		Internode: config.GroupTLS{Server: server, Client: client},
		Frontend:  config.GroupTLS{Server: server, Client: client},
		SystemWorker: config.WorkerTLS{
			CertFile: t.ClientCertFile, KeyFile: t.ClientKeyFile, Client: client,
		},
	}
}
