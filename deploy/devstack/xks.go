package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/keyflow/keyflow/deploy/roles"
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

// xksOptions configures the gateway role's proxy; on the first start
// without --xks-config it generates a key store for the default tenant
// with fresh credentials and a demo key (Prepare, once the KMS is up).
// Credentials are written to 0600 files and never logged.
func (s *Stack) xksOptions() (roles.GatewayOptions, error) {
	if s.cfg.XKSListen == "" {
		return roles.GatewayOptions{}, nil
	}
	dir := filepath.Join(s.cfg.DataDir, "xks")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return roles.GatewayOptions{}, fmt.Errorf("failed to create %s: %w", dir, err)
	}
	o := roles.GatewayOptions{XKSListen: s.cfg.XKSListen, XKSConfig: s.cfg.XKSConfig, Model: "SoftHSM 2 over PKCS#11 (keyflow dev)"}
	console := filepath.Join(dir, "aws-console.json")
	if o.XKSConfig == "" {
		o.XKSConfig = filepath.Join(dir, "config.json")
		o.Prepare = func(ctx context.Context, k *kms.Service) error {
			if _, err := os.Stat(o.XKSConfig); !errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return writeDefaultXKSConfig(ctx, k, o.XKSConfig, console)
		}
	}
	host, _, err := net.SplitHostPort(s.cfg.XKSListen)
	if err != nil {
		return o, fmt.Errorf("failed to read --xks-listen: %w", err)
	}
	hosts := []string{"localhost", "127.0.0.1"}
	if host != "" && host != "localhost" && host != "127.0.0.1" {
		hosts = append(hosts, host)
	}
	if o.XKSCert, s.xksCertPath, err = xks.SelfSignedCert(dir, hosts); err != nil {
		return o, err
	}
	s.xksConfigPath, s.xksConsole = o.XKSConfig, console
	return o, nil
}

// setXKSInfo says where the proxy runs, once it does.
func (s *Stack) setXKSInfo() {
	if s.Node.XKS == nil {
		return
	}
	s.XKS = &XKSInfo{URL: "https://" + s.Node.XKSAddr, ConfigPath: s.xksConfigPath, CertPath: s.xksCertPath, ConsoleJSON: s.xksConsole}
	if cfg, err := xks.LoadConfig(s.xksConfigPath); err == nil && len(cfg.KeyStores) > 0 {
		s.XKS.URIPath = cfg.KeyStores[0].URIPrefix + "/kms/xks/v1"
	}
}

// ReloadXKS reads the proxy configuration again (credential rotation
// without a restart).
func (s *Stack) ReloadXKS() error {
	if s.Node == nil || s.Node.XKS == nil {
		return errors.New("devstack: the XKS proxy is not running")
	}
	cfg, err := xks.LoadConfig(s.XKS.ConfigPath)
	if err != nil {
		return err
	}
	return s.Node.XKS.SetConfig(cfg)
}

func writeDefaultXKSConfig(ctx context.Context, svc *kms.Service, path, consolePath string) error {
	c := kms.Caller{Tenant: DefaultTenant, Principal: "keyflow-dev"}
	k, err := svc.DescribeKey(ctx, c, "alias/"+XKSDemoKey)
	if errors.Is(err, kms.ErrNotFound) {
		k, err = svc.CreateKey(ctx, c, kms.CreateKeyParams{Alias: XKSDemoKey, Description: "demo key of the dev stack's XKS proxy"})
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
