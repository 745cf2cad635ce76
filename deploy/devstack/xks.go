package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/xks"
)

// The dev stack's XKS proxy (AWS KMS External Key Store), when
// Config.XKSListen is set. Its files live under DIR/xks:
//
//	DIR/xks/config.json       the proxy configuration, with the generated SigV4 credentials (0600)
//	DIR/xks/aws-console.json  the same credentials in the AWS KMS console's import format (0600)
//	DIR/xks/xks-cert.pem      the self-signed TLS certificate (development only)
//	DIR/xks/xks-key.pem       its private key (0600)
const (
	XKSDefaultPrefix = "/keyflow-dev"
	// XKSDemoKey is the external key ID, and the alias of the keyflow key
	// behind it, of the key store generated on first start.
	XKSDemoKey = "xks-demo"
)

// XKSInfo says where the dev stack's proxy is.
type XKSInfo struct {
	URL         string // https://host:port (XksProxyUriEndpoint)
	URIPath     string // XksProxyUriPath of the default key store
	ConfigPath  string
	ConsoleJSON string
	CertPath    string
}

// startXKS starts the proxy; on the first start without --xks-config it
// generates a key store for the default tenant with fresh credentials and
// a demo key. Credentials are written to 0600 files and never logged.
func (s *Stack) startXKS(ctx context.Context) error {
	if s.cfg.XKSListen == "" {
		return nil
	}
	dir := filepath.Join(s.cfg.DataDir, "xks")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("failed to create %s: %w", dir, err)
	}
	path := s.cfg.XKSConfig
	if path == "" {
		path = filepath.Join(dir, "config.json")
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			if err := s.writeDefaultXKSConfig(ctx, path, filepath.Join(dir, "aws-console.json")); err != nil {
				return err
			}
		}
	}
	cfg, err := xks.LoadConfig(path)
	if err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(s.cfg.XKSListen)
	if err != nil {
		return fmt.Errorf("failed to read --xks-listen: %w", err)
	}
	hosts := []string{"localhost", "127.0.0.1"}
	if host != "" && host != "localhost" && host != "127.0.0.1" {
		hosts = append(hosts, host)
	}
	cert, certPath, err := xks.SelfSignedCert(dir, hosts)
	if err != nil {
		return err
	}
	srv, err := xks.New(xks.Options{KMS: s.KMS, Config: cfg, Logger: s.cfg.Logger, Model: "SoftHSM 2 over PKCS#11 (keyflow dev)"})
	if err != nil {
		return err
	}
	addr, err := srv.Listen(s.cfg.XKSListen, cert)
	if err != nil {
		return err
	}
	s.closers = append(s.closers, func() { _ = srv.Close() })
	s.xksSrv = srv
	s.XKS = &XKSInfo{URL: "https://" + addr.String(), ConfigPath: path, CertPath: certPath, ConsoleJSON: filepath.Join(dir, "aws-console.json")}
	if len(cfg.KeyStores) > 0 {
		s.XKS.URIPath = cfg.KeyStores[0].URIPrefix + "/kms/xks/v1"
	}
	return nil
}

// ReloadXKS reads the proxy configuration again (credential rotation
// without a restart).
func (s *Stack) ReloadXKS() error {
	if s.xksSrv == nil {
		return errors.New("devstack: the XKS proxy is not running")
	}
	cfg, err := xks.LoadConfig(s.XKS.ConfigPath)
	if err != nil {
		return err
	}
	return s.xksSrv.SetConfig(cfg)
}

func (s *Stack) writeDefaultXKSConfig(ctx context.Context, path, consolePath string) error {
	c := kms.Caller{Tenant: DefaultTenant, Principal: "keyflow-dev"}
	k, err := s.KMS.DescribeKey(ctx, c, "alias/"+XKSDemoKey)
	if errors.Is(err, kms.ErrNotFound) {
		k, err = s.KMS.CreateKey(ctx, c, kms.CreateKeyParams{Alias: XKSDemoKey, Description: "demo key of the dev stack's XKS proxy"})
	}
	if err != nil {
		return fmt.Errorf("failed to set up the XKS demo key: %w", err)
	}
	cred, err := xks.NewCredential()
	if err != nil {
		return err
	}
	cfg := &xks.Config{KeyStores: []xks.KeyStore{{
		URIPrefix: XKSDefaultPrefix, Tenant: DefaultTenant, Credentials: []xks.Credential{cred},
		// A key ID rather than the alias: it saves two KV reads a request.
		Keys: map[string]xks.Key{XKSDemoKey: {KeyRef: k.ID}},
	}}}
	if err := cfg.Save(path); err != nil {
		return err
	}
	// The AWS KMS console's "XKS proxy configuration file" (spec: Other
	// considerations), to upload when creating the key store.
	console, err := json.MarshalIndent(map[string]any{
		"XksProxyUriPath": XKSDefaultPrefix + "/kms/xks/v1",
		"XksProxyAuthenticationCredential": map[string]string{
			"AccessKeyId": cred.AccessKeyID, "RawSecretAccessKey": cred.SecretAccessKey,
		},
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode the AWS console file: %w", err)
	}
	if err := os.WriteFile(consolePath, append(console, '\n'), 0o600); err != nil {
		return fmt.Errorf("failed to write the AWS console file: %w", err)
	}
	return nil
}
