// Package main is the temporal-postgres command: it runs, for a person trying keyflow past one
// process, what the cluster test runs for Temporal: PostgreSQL 15 on a
// free loopback port and a Temporal server process on it, its schema
// applied with Temporal's SQL tool, the namespace keyflow registered and
// the frontend requiring mutual TLS (package temporalpg). It prints the
// temporal section of a keyflow.yaml that reaches it, and stops both on
// Ctrl-C (SIGINT or SIGTERM), removing their data.
//
//	go tool task cluster-temporal            # or: go run ./e2e/cluster/cmd/temporal-postgres
//	go run ./e2e/cluster/cmd/temporal-postgres -json   # one JSON line, for scripts
//
// Run it inside the keyflow checkout: it builds Temporal's server and SQL
// tool from the pinned module (`go tool -n`). The certificates are written
// under -dir (default: a temporary directory removed at stop).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/keyflow/keyflow/e2e/cluster/temporalpg"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "temporal-postgres:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", "", "directory for the certificates and the server's configuration and log (default: a temporary one, removed at stop)")
	asJSON := flag.Bool("json", false, "print the endpoint as one JSON line (addr, namespace, ca_file, cert_file, key_file)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *dir == "" {
		d, err := os.MkdirTemp("", "keyflow-temporal-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		*dir = d
	} else if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "building Temporal's server and SQL tool (pinned module)…")
	tools, err := temporalpg.BuildTools(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "starting PostgreSQL 15…")
	pg, err := temporalpg.StartPostgres(ctx, "")
	if err != nil {
		return err
	}
	defer pg.Stop()
	fmt.Fprintf(os.Stderr, "PostgreSQL on %s (log %s); applying Temporal's schema and starting Temporal…\n", pg.Addr(), filepath.Join(pg.Dir, "postgres.log"))
	ts, err := temporalpg.StartTemporal(ctx, tools, temporalpg.TemporalConfig{Postgres: pg, Dir: abs})
	if err != nil {
		return err
	}
	defer ts.Stop()

	c := ts.Certs
	if *asJSON {
		b, _ := json.Marshal(map[string]string{"addr": ts.Addr, "namespace": ts.Namespace, "ca_file": c.CAFile, "cert_file": c.ClientCertFile, "key_file": c.ClientKeyFile})
		fmt.Println(string(b))
	} else {
		fmt.Printf(`Temporal on PostgreSQL ready: frontend %s (mutual TLS), namespace %s, log %s
In keyflow.yaml:

temporal:
  address: %s
  namespace: %s
  tls:
    ca_file: %s
    cert_file: %s
    key_file: %s

Ctrl-C stops Temporal and PostgreSQL and removes their data.
`, ts.Addr, ts.Namespace, ts.LogFile, ts.Addr, ts.Namespace, c.CAFile, c.ClientCertFile, c.ClientKeyFile)
	}
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "stopping…")
	return nil
}
