package devstack

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/keyflow/keyflow/workers/awskms"
	"github.com/keyflow/keyflow/workers/xks"
)

// AWSInfo says where the dev stack's AWS KMS API is.
type AWSInfo struct {
	URL      string // http://127.0.0.1:port (loopback) or https://host:port
	Region   string
	CertPath string // the self-signed certificate, for HTTPS
}

// startAWS serves the AWS KMS API when Config.AWSListen is set: plain
// HTTP on a loopback address (development), HTTPS with a self-signed
// certificate (DIR/aws/aws-cert.pem) otherwise. It calls the same
// in-process dispatch as the NATS services (rpc.Server.Invoke).
func (s *Stack) startAWS(_ context.Context) error {
	if s.cfg.AWSListen == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(s.cfg.AWSListen)
	if err != nil {
		return fmt.Errorf("failed to read --aws-listen: %w", err)
	}
	srv, err := awskms.New(awskms.Options{KMS: s.KMS, Invoker: s.Node.RPC, Logger: s.cfg.Logger})
	if err != nil {
		return err
	}
	info := &AWSInfo{Region: srv.Region()}
	var cert *tls.Certificate
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		dir := filepath.Join(s.cfg.DataDir, "aws")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("failed to create %s: %w", dir, err)
		}
		c, path, err := xks.SelfSignedCertNamed(dir, "aws", "keyflow AWS KMS API (development)", []string{"localhost", "127.0.0.1", host})
		if err != nil {
			return err
		}
		cert, info.CertPath = &c, path
	}
	addr, err := srv.Listen(s.cfg.AWSListen, cert)
	if err != nil {
		return err
	}
	s.closers = append(s.closers, func() { _ = srv.Close() })
	info.URL = "http://" + addr.String()
	if cert != nil {
		info.URL = "https://" + addr.String()
	}
	s.AWS = info
	return nil
}
