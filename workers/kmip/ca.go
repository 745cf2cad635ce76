package kmip

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

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// CA is the certificate authority of KMIP client and server certificates:
// a development CA kept in a directory (ca-cert.pem, ca-key.pem mode
// 0600). A client certificate's subject names the keyflow identity it
// stands for: Organization = tenant, CommonName = principal. Production
// deployments may use their own CA with the same subject convention.
type CA struct {
	Dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// CertPath is the CA certificate, to give to KMIP clients
// (--kmipServerCAFile) and to the server (client verification).
func (ca *CA) CertPath() string { return filepath.Join(ca.Dir, "ca-cert.pem") }

// LoadOrCreateCA opens the CA in dir, creating it on first use.
func LoadOrCreateCA(dir string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("kmip: failed to create %s: %w", dir, err)
	}
	ca := &CA{Dir: dir}
	certPath, keyPath := ca.CertPath(), filepath.Join(dir, "ca-key.pem")
	if pair, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		c, err := x509.ParseCertificate(pair.Certificate[0])
		k, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
		if err != nil || !ok {
			return nil, errors.New("kmip: the CA in " + dir + " is not an ECDSA CA made by keyflow")
		}
		ca.cert, ca.key = c, k
		return ca, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("kmip: failed to generate the CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:   pkix.Name{CommonName: "keyflow KMIP CA", Organization: []string{"keyflow"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := ca.sign(tmpl, &key.PublicKey, key, nil)
	if err != nil {
		return nil, err
	}
	if err := writePair(certPath, keyPath, der, key); err != nil {
		return nil, err
	}
	ca.cert, _ = x509.ParseCertificate(der)
	ca.key = key
	return ca, nil
}

func (ca *CA) sign(tmpl *x509.Certificate, pub, signer any, parent *x509.Certificate) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("kmip: failed to draw a serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("kmip: failed to sign a certificate: %w", err)
	}
	return der, nil
}

func writePair(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("kmip: failed to encode a key: %w", err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return fmt.Errorf("kmip: failed to write %s: %w", keyPath, err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("kmip: failed to write %s: %w", certPath, err)
	}
	return nil
}

// ExportByDefaultOU is the Organizational Unit that makes every key a
// client creates or registers exportable, for clients that cannot set the
// exportable attribute themselves (pg_tde, MongoDB's Get mode). Whoever
// holds the CA decides it when issuing the certificate; the principal still
// needs the kmip.exportable row.
const ExportByDefaultOU = "keyflow-export-by-default"

// IssueClient issues a client certificate for tenant/principal into
// dir/NAME-cert.pem and dir/NAME-key.pem (0600) and returns their paths.
// MongoDB wants both in one file (--kmipClientCertificateFile): NAME.pem
// holds the certificate followed by the key. exportByDefault adds
// ExportByDefaultOU.
func (ca *CA) IssueClient(dir, name, tenant, principal string, exportByDefault bool) (certPath, keyPath string, err error) {
	if !kms.ValidTenant(tenant) || !keypolicy.ValidPrincipalName(principal) {
		return "", "", fmt.Errorf("kmip: %q/%q is not a valid tenant and principal", tenant, principal)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("kmip: failed to generate a client key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:   pkix.Name{CommonName: principal, Organization: []string{tenant}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if exportByDefault {
		tmpl.Subject.OrganizationalUnit = []string{ExportByDefaultOU}
	}
	der, err := ca.sign(tmpl, &key.PublicKey, ca.key, ca.cert)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("kmip: failed to create %s: %w", dir, err)
	}
	certPath, keyPath = filepath.Join(dir, name+"-cert.pem"), filepath.Join(dir, name+"-key.pem")
	if err := writePair(certPath, keyPath, der, key); err != nil {
		return "", "", err
	}
	certPEM, _ := os.ReadFile(certPath)
	keyPEM, _ := os.ReadFile(keyPath)
	if err := os.WriteFile(filepath.Join(dir, name+".pem"), append(certPEM, keyPEM...), 0o600); err != nil {
		return "", "", fmt.Errorf("kmip: failed to write the combined PEM: %w", err)
	}
	return certPath, keyPath, nil
}

// ServerTLS returns a TLS configuration for the server: a certificate for
// hosts signed by the CA (made on each call, kept in memory), TLS 1.2 or
// later, and client certificates required and verified against the CA.
func (ca *CA) ServerTLS(hosts []string) (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("kmip: failed to generate the server key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:   pkix.Name{CommonName: "keyflow KMIP server"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := ca.sign(tmpl, &key.PublicKey, ca.key, ca.cert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}, nil
}

// ClientTLS returns a client TLS configuration for a certificate issued by
// IssueClient, trusting the CA (for tests and tools).
func (ca *CA) ClientTLS(certPath, keyPath string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("kmip: failed to load the client certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}, RootCAs: pool}, nil
}

// IssueClientOnce is IssueClient unless dir already holds NAME's
// certificate, which it keeps.
func (ca *CA) IssueClientOnce(dir, name, tenant, principal string) (certPath, keyPath string, err error) {
	certPath, keyPath = filepath.Join(dir, name+"-cert.pem"), filepath.Join(dir, name+"-key.pem")
	if _, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		return certPath, keyPath, nil
	}
	return ca.IssueClient(dir, name, tenant, principal, false)
}
