package cluster

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/internal/clusterlab"
	"github.com/keyflow/keyflow/internal/loadbench"
)

// Requesters and connections of the encrypt benchmark: 64 goroutines over
// 8 client connections, the same for the dev stack and the cluster.
const (
	requesters  = 64
	connections = 8
)

// BenchmarkCluster gives the cluster's figures next to `keyflow dev` in the
// same run (run it with -benchtime, e.g. 20000x, and -run '^$'):
//
//	encrypt64/dev      encrypts at 64 requesters against `keyflow dev`
//	encrypt64/cluster  the same through the cluster (2 crypto workers, R3)
//	sealer-failover    kill -9 of the active sealer until the standby holds the lease
//	nats-recovery      kill -9 of one NATS server under load until the rate is back to 80%
//
// The last two run once whatever b.N is.
func BenchmarkCluster(b *testing.B) {
	if testing.Short() {
		b.Skip("starts a cluster of processes")
	}
	b.Run("encrypt64/dev", func(b *testing.B) {
		url, creds := startDev(b)
		benchEncrypt(b, url, creds)
	})
	// The lab lives as long as the parent benchmark (a sub-benchmark's
	// cleanup runs after each of its runs).
	parent := b
	var lab *clusterlab.Lab
	var once sync.Once
	get := func(*testing.B) *clusterlab.Lab {
		once.Do(func() { lab = startLab(parent, embeddedTemporal(parent)) })
		return lab
	}
	b.Run("encrypt64/cluster", func(b *testing.B) {
		lab := get(b)
		benchEncrypt(b, strings.Join(lab.URLs, ","), lab.Ceremony.Creds["default-admin"])
	})
	// The testing package runs each sub-benchmark with b.N = 1 before the
	// real run: the kills are measured once and reported by both.
	var failover time.Duration
	var failoverOnce sync.Once
	b.Run("sealer-failover", func(b *testing.B) {
		failoverOnce.Do(func() {
			lab := get(b)
			active := activeSealer(b, lab)
			t0 := time.Now()
			active.Kill()
			waitSealerOtherThan(b, lab, active)
			failover = time.Since(t0)
			restart(b, active)
		})
		b.ReportMetric(failover.Seconds(), "failover-s")
	})
	var base, dip float64
	var rec time.Duration
	var recOnce sync.Once
	b.Run("nats-recovery", func(b *testing.B) {
		recOnce.Do(func() { base, rec, dip = natsRecovery(b, get(b)) })
		if rec < 0 {
			b.Fatalf("the rate did not come back to 80%% of %.0f/s within 15 s", base)
		}
		b.ReportMetric(base, "base-ops/s")
		b.ReportMetric(rec.Seconds(), "recovery-s")
		b.ReportMetric(dip, "worst-1s/base")
	})
}

// natsRecovery runs a mixed load (16 clients), kills one NATS server and
// returns the rate before, how long the rate over a sliding second took to
// come back to 80% of it (1 s is the resolution), and the worst second
// after the kill as a fraction of the rate before.
func natsRecovery(b *testing.B, lab *clusterlab.Lab) (float64, time.Duration, float64) {
	key := createKey(b, dial(b, lab, lab.Ceremony.Creds["default-admin"]), "recovery")
	ld := newLoad()
	ld.start(b, lab, requesters/4, key)
	time.Sleep(5 * time.Second)
	kill := time.Now()
	base := ld.rate(kill.Add(-4*time.Second), kill)
	ld.setPhase("kill nats-1")
	lab.NATS[1].Kill()
	time.Sleep(15 * time.Second)
	end := time.Now()
	ld.stop()
	rec := ld.recovery(kill, base, 0.8, end)
	ld.report(b)
	restart(b, lab.NATS[1])
	return base, rec, ld.dip(kill, kill.Add(10*time.Second), base)
}

// benchEncrypt encrypts 64 bytes b.N times from 64 requesters.
func benchEncrypt(b *testing.B, url, creds string) {
	ctx := context.Background()
	var cls []*client.Client
	for range connections {
		cl, err := client.Dial(ctx, client.Options{Server: url, CredsFile: creds, Timeout: 30 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		cls = append(cls, cl)
	}
	k, err := cls[0].CreateKey(ctx, api.CreateKeyRequest{Description: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	req := api.EncryptRequest{KeyID: k.KeyID, Plaintext: make([]byte, 64)}
	// Warm the handle caches and connections.
	for _, cl := range cls {
		if _, err := cl.Encrypt(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	loadbench.Run(b, requesters, func(i int) error {
		_, err := cls[i%connections].Encrypt(ctx, req)
		return err
	}).Report(b, 1, time.Millisecond, "ms")
}

// startDev runs the built binary's `keyflow dev` on random ports and
// returns its NATS URL and admin creds.
func startDev(b *testing.B) (url, creds string) {
	dir := b.TempDir()
	cmd := exec.Command(keyflowBin, "dev", "--data-dir", dir, "--nats-listen", "127.0.0.1:0", "--temporal-listen", "127.0.0.1:0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() })
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "keyflow ready ") {
				ready <- line
			}
		}
	}()
	select {
	case line := <-ready:
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "nats="); ok {
				url = v
			}
		}
	case <-time.After(120 * time.Second):
		b.Fatal("keyflow dev did not become ready")
	}
	if url == "" {
		b.Fatal("keyflow dev printed no NATS URL")
	}
	return url, filepath.Join(dir, "admin.creds")
}
