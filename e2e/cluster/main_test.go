// Package cluster proves keyflow as separate processes on a NATS JetStream
// cluster: three nats-server processes (R3, operator mode with the full
// account resolver), Temporal, and keyflow serve processes with a share
// of the roles each (internal/clusterlab starts them). The test kills one
// process at a time under load and checks what clients saw against the
// audit trail; the benchmark compares the cluster's encrypt rate with
// `keyflow dev`. The region test (region_test.go) runs two production
// regions, a nats-server and a keyflow serve process each, linked by the
// leaf node of `keyflow region nats-config`. `go test -short` skips them.
package cluster

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/keyflow/keyflow/internal/clusterlab"
)

// The binaries, built once per run from this module.
var keyflowBin, natsBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "keyflow-cluster-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	root, err := filepath.Abs("../..")
	if err == nil {
		keyflowBin, natsBin, err = clusterlab.Build(context.Background(), root, dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// tlog writes the lab's process events to the test log.
type tlog struct{ t testing.TB }

func (w tlog) Write(p []byte) (int, error) { w.t.Log(string(p[:len(p)-1])); return len(p), nil }

// startLab starts Temporal and the cluster for t.
func startLab(t testing.TB, tp temporalEndpoint) *clusterlab.Lab {
	t.Helper()
	lab, err := clusterlab.Start(context.Background(), clusterlab.Config{
		Dir: t.TempDir(), KeyflowBin: keyflowBin, NATSBin: natsBin, Log: tlog{t},
		Temporal: clusterlab.Temporal{Addr: tp.Addr, Namespace: tp.Namespace, CAFile: tp.CAFile, CertFile: tp.CertFile, KeyFile: tp.KeyFile},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lab.Stop)
	return lab
}
