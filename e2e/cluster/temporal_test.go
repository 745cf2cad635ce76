package cluster

import (
	"context"
	"sync"
	"testing"

	"github.com/keyflow/keyflow/e2e/cluster/temporalpg"
)

var (
	temporalToolsOnce sync.Once
	temporalTools     temporalpg.Tools
	temporalToolsErr  error
)

// startTemporalPostgres runs a separate Temporal server process (Temporal's
// own server binary, built from the pinned module) on a fresh PostgreSQL,
// its schema applied with Temporal's SQL tool, the namespace keyflow
// registered, and the frontend requiring mutual TLS with certificates
// written as files. It stops both when the test ends.
func startTemporalPostgres(t *testing.T) temporalEndpoint {
	t.Helper()
	_, ep := startTemporalServer(t)
	return ep
}

// startTemporalServer is startTemporalPostgres with the server itself, for
// tests that look at its certificates or stop it.
func startTemporalServer(t *testing.T) (*temporalpg.Temporal, temporalEndpoint) {
	t.Helper()
	ctx := context.Background()
	temporalToolsOnce.Do(func() { temporalTools, temporalToolsErr = temporalpg.BuildTools(ctx) })
	if temporalToolsErr != nil {
		t.Fatal(temporalToolsErr)
	}
	pg := startPostgres(t)
	ts, err := temporalpg.StartTemporal(ctx, temporalTools, temporalpg.TemporalConfig{Postgres: pg, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ts.Stop)
	c := ts.Certs
	return ts, temporalEndpoint{Addr: ts.Addr, Namespace: ts.Namespace, CAFile: c.CAFile, CertFile: c.ClientCertFile, KeyFile: c.ClientKeyFile}
}

func TestTemporalOnPostgresSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and a Temporal server")
	}
	ep := startTemporalPostgres(t)
	t.Logf("%+v", ep)
}
