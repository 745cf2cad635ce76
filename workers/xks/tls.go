package xks

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
	"slices"
	"time"
)

// SelfSignedCert returns the certificate kept in dir (xks-cert.pem and
// xks-key.pem, the key mode 0600), creating a self-signed ECDSA P-256 one
// for hosts on first use. It is for development only: AWS KMS accepts
// only certificates from public CAs (the spec's TrustedCertificateAuthorities)
// for a name that resolves publicly.
func SelfSignedCert(dir string, hosts []string) (tls.Certificate, string, error) {
	return SelfSignedCertNamed(dir, "xks", "keyflow XKS proxy (development)", hosts)
}

// SelfSignedCertNamed is SelfSignedCert for another development listener
// (the AWS KMS API): the files are DIR/<name>-cert.pem and
// DIR/<name>-key.pem, the subject's common name cn.
func SelfSignedCertNamed(dir, name, cn string, hosts []string) (tls.Certificate, string, error) {
	certPath, keyPath := filepath.Join(dir, name+"-cert.pem"), filepath.Join(dir, name+"-key.pem")
	if c, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		return c, certPath, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("failed to generate the XKS TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("failed to draw a serial number: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"keyflow dev"}},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:        true, BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("failed to create the XKS certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("failed to encode the XKS TLS key: %w", err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return tls.Certificate{}, "", fmt.Errorf("failed to write the XKS TLS key: %w", err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return tls.Certificate{}, "", fmt.Errorf("failed to write the XKS certificate: %w", err)
	}
	c, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("failed to load the XKS certificate: %w", err)
	}
	return c, certPath, nil
}

// configureMTLS requires a client certificate chained to the configured
// CA whose subject common name is one of the configured names (AWS KMS
// presents CN=cks.kms.<region>.amazonaws.com); the handshake fails
// otherwise, as the spec requires.
func configureMTLS(tc *tls.Config, m *MTLS) error {
	pemBytes, err := os.ReadFile(m.ClientCAFile)
	if err != nil {
		return fmt.Errorf("failed to read the mTLS client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return errors.New("xks: the mTLS client CA file holds no PEM certificate")
	}
	names := slices.Clone(m.CommonNames)
	tc.ClientCAs = pool
	tc.ClientAuth = tls.RequireAndVerifyClientCert
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 || !slices.Contains(names, cs.PeerCertificates[0].Subject.CommonName) {
			return errors.New("xks: the client certificate's subject is not allowed")
		}
		return nil
	}
	return nil
}
