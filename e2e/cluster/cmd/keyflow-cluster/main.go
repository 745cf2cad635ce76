// Package main is the keyflow-cluster command: it starts on this machine the cluster the e2e
// cluster test starts (internal/clusterlab): three nats-server processes
// (JetStream R3, operator mode, full account resolver), Temporal, and
// seven keyflow serve processes with a share of the roles each. It prints
// how to point the keyflow CLI at it; Ctrl-C stops it.
//
//	go tool task cluster            (or: go run ./e2e/cluster/cmd/keyflow-cluster -dir DIR)
//
// Temporal here is the dev stack's embedded server (SQLite, mutual TLS) in
// this process, on a random loopback port. The cluster test runs on
// Temporal on PostgreSQL instead, which `go tool task cluster-temporal`
// starts for a person.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/keyflow/keyflow/deploy/devstack"
	"github.com/keyflow/keyflow/internal/clusterlab"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "keyflow-cluster:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", "", "directory for the cluster's state (default: a new temporary directory, removed at exit)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *dir == "" {
		d, err := os.MkdirTemp("", "keyflow-cluster-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		*dir = d
	} else if entries, err := os.ReadDir(*dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("%s is not empty: the cluster starts from nothing each time", *dir)
	}
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	fmt.Println("keyflow-cluster: building keyflow and nats-server …")
	bin := filepath.Join(*dir, "bin")
	kf, ns, err := clusterlab.Build(ctx, root, bin)
	if err != nil {
		return err
	}
	tlsFiles, err := devstack.DevTemporalTLS(filepath.Join(*dir, "temporal", "tls"))
	if err != nil {
		return err
	}
	tp, err := devstack.StartTemporal(ctx, devstack.TemporalConfig{DataDir: filepath.Join(*dir, "temporal"), ListenAddr: "127.0.0.1:0", Namespace: "keyflow", TLS: tlsFiles})
	if err != nil {
		return err
	}
	defer func() { _ = tp.Stop() }()
	fmt.Println("keyflow-cluster: starting 3 nats-server and 7 keyflow processes …")
	lab, err := clusterlab.Start(ctx, clusterlab.Config{
		Dir: filepath.Join(*dir, "lab"), KeyflowBin: kf, NATSBin: ns, Log: os.Stdout,
		Temporal: clusterlab.Temporal{Addr: tp.HostPort(), Namespace: tp.Namespace(), CAFile: tlsFiles.CAFile, CertFile: tlsFiles.ClientCertFile, KeyFile: tlsFiles.ClientKeyFile},
	})
	if err != nil {
		return err
	}
	defer lab.Stop()
	fmt.Printf(`
keyflow cluster ready
  NATS       %s
  keyflow    %s
  config     %s
  logs       %s
  XKS        %s

Point the keyflow CLI at it (the default tenant's admin):

  export KEYFLOW_SERVER=%s
  export KEYFLOW_CREDS=%s
  K=%s
  $K key create --alias demo
  echo -n hello | $K encrypt --key alias/demo -o raw | $K decrypt -o raw
  $K audit pubkeys --auditor-creds %s > pubkeys.json
  $K audit verify --auditor-creds %s --pubkeys pubkeys.json

Ops endpoints (/healthz /readyz /metrics):
`, strings.Join(lab.URLs, " "), kf, lab.ConfigFile, filepath.Join(*dir, "lab", "logs"), lab.XKSURL,
		strings.Join(lab.URLs, ","), lab.Ceremony.Creds["default-admin"], kf, lab.Ceremony.Creds["operator"], lab.Ceremony.Creds["auditor"])
	for _, p := range clusterlab.Processes {
		fmt.Printf("  %-12s %-14s http://%s\n", p.Name, p.Roles, lab.Keyflow[p.Name].OpsURL())
	}
	fmt.Println("\nCtrl-C stops it.")
	<-ctx.Done()
	fmt.Println("keyflow-cluster: stopping …")
	return nil
}
