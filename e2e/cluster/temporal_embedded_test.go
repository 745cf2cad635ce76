package cluster

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/keyflow/keyflow/deploy/devstack"
)

// embeddedTemporal runs the dev stack's embedded Temporal (SQLite, mutual
// TLS) in the test process on a random port. The cluster benchmark uses it
// (what it measures does not go through Temporal); the cluster test runs on
// Temporal on PostgreSQL (startTemporalPostgres).
func embeddedTemporal(t testing.TB) temporalEndpoint {
	t.Helper()
	dir := t.TempDir()
	tlsFiles, err := devstack.DevTemporalTLS(filepath.Join(dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	tp, err := devstack.StartTemporal(context.Background(), devstack.TemporalConfig{
		DataDir: dir, ListenAddr: "127.0.0.1:0", Namespace: "keyflow", TLS: tlsFiles,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tp.Stop() })
	return temporalEndpoint{Addr: tp.HostPort(), Namespace: tp.Namespace(), CAFile: tlsFiles.CAFile, CertFile: tlsFiles.ClientCertFile, KeyFile: tlsFiles.ClientKeyFile}
}
