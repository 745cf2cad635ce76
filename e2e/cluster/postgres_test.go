package cluster

import (
	"context"
	"testing"

	"github.com/keyflow/keyflow/e2e/cluster/temporalpg"
)

// startPostgres runs a fresh PostgreSQL 15 cluster (Debian package
// postgresql) on a free loopback port, as the postgres system user when
// the test runs as root, and removes it when the test ends.
func startPostgres(t *testing.T) *temporalpg.Postgres {
	t.Helper()
	return startPostgresTB(t)
}

func startPostgresTB(t testing.TB) *temporalpg.Postgres {
	t.Helper()
	pg, err := temporalpg.StartPostgres(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Stop)
	return pg
}
