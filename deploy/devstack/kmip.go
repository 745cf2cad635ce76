package devstack

import (
	"fmt"
	"net"
	"path/filepath"

	"github.com/keyflow/keyflow/workers/kmip"
)

// KMIPInfo tells where the dev stack's KMIP server is and where its
// certificates are.
type KMIPInfo struct {
	Addr string
	// CACert is the dev CA's certificate: clients trust it for the
	// server (MongoDB --kmipServerCAFile) and it signs client
	// certificates.
	CACert string
	// ClientPEM is the first client's certificate and key in one file,
	// for the default tenant's admin principal (all roles).
	ClientPEM, ClientCert, ClientKey string
}

// KMIPDir is where the dev stack keeps its KMIP CA (ca/) and the client
// certificates it issues (clients/).
func KMIPDir(dataDir string) string { return filepath.Join(dataDir, "kmip") }

// startKMIP serves KMIP on Config.KMIPListen with the dev CA under
// DIR/kmip/ca (created on first use); on first use it also issues
// DIR/kmip/clients/admin.pem for the default tenant's admin.
func (s *Stack) startKMIP(life kmip.Lifecycle, rot kmip.Rotator) error {
	if s.cfg.KMIPListen == "" {
		return nil
	}
	dir := KMIPDir(s.cfg.DataDir)
	ca, err := kmip.LoadOrCreateCA(filepath.Join(dir, "ca"))
	if err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(s.cfg.KMIPListen)
	if err != nil {
		return fmt.Errorf("failed to read --kmip-listen: %w", err)
	}
	hosts := []string{"localhost", "127.0.0.1"}
	if host != "" && host != "localhost" && host != "127.0.0.1" {
		hosts = append(hosts, host)
	}
	tc, err := ca.ServerTLS(hosts)
	if err != nil {
		return err
	}
	clients := filepath.Join(dir, "clients")
	info := &KMIPInfo{CACert: ca.CertPath(), ClientPEM: filepath.Join(clients, "admin.pem"),
		ClientCert: filepath.Join(clients, "admin-cert.pem"), ClientKey: filepath.Join(clients, "admin-key.pem")}
	if _, _, err := ca.IssueClientOnce(clients, "admin", DefaultTenant, DefaultPrincipal); err != nil {
		return err
	}
	srv, err := kmip.New(kmip.Options{KMS: s.KMS, TLS: tc, Roles: kmip.DirectoryRoles(s.Identity), Lifecycle: life, Rotator: rot, Logger: s.cfg.Logger})
	if err != nil {
		return err
	}
	addr, err := srv.Listen(s.cfg.KMIPListen)
	if err != nil {
		return err
	}
	s.closers = append(s.closers, func() { _ = srv.Close() })
	info.Addr = addr.String()
	s.KMIP = info
	return nil
}
