package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/internal/clusterlab"
	"github.com/keyflow/keyflow/workers/sealer"
)

const clients = 6

// TestClusterSurvivesKills runs the cluster under a bounded mixed load
// (encrypt, decrypt and data keys from several clients, rotations, a
// scheduled deletion, an approval in a tenant created at runtime) and
// kill -9s, one at a time, then restarts: one NATS server, one crypto
// worker, the active sealer, one lifecycle worker. Afterwards every request
// a client saw succeed has exactly one audit record, audit verify passes,
// every rotation produced exactly one version, the deletion and the
// approval completed, and every client works again without errors. The
// errors clients saw during each kill are logged and bounded.
func TestClusterSurvivesKills(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster of processes (nats-server ×3, keyflow ×7, Temporal)")
	}
	lab := startLab(t, startTemporalPostgres(t))
	ctx := context.Background()
	admin := dial(t, lab, lab.Ceremony.Creds["default-admin"])
	dataKey := createKey(t, admin, "data")
	rotKey := createKey(t, admin, "rotated")
	doomed := createKey(t, admin, "doomed")
	appr := newApproval(t, lab, admin)

	ld := newLoad()
	ld.start(t, lab, clients, dataKey)
	rot := startRotations(ctx, admin, rotKey)
	time.Sleep(5 * time.Second)
	warmEnd := time.Now()
	warm := ld.rate(warmEnd.Add(-4*time.Second), warmEnd)

	// One NATS server.
	ld.setPhase("kill nats-1")
	natsKill := time.Now()
	lab.NATS[1].Kill()
	time.Sleep(3 * time.Second)
	restart(t, lab.NATS[1])
	time.Sleep(4 * time.Second)

	// One crypto (and admin) worker.
	ld.setPhase("kill crypto-1")
	lab.Keyflow["crypto-1"].Kill()
	time.Sleep(3 * time.Second)
	restart(t, lab.Keyflow["crypto-1"])
	time.Sleep(3 * time.Second)

	// The active sealer: the standby takes over.
	ld.setPhase("kill active sealer")
	active := activeSealer(t, lab)
	sealerKill := time.Now()
	active.Kill()
	failover := waitSealerOtherThan(t, lab, active)
	failoverTime := time.Since(sealerKill)
	t.Logf("sealer failover: %s was active; the standby took the lease after %v", active.Name, failoverTime.Round(10*time.Millisecond))
	_ = failover
	restart(t, active)
	time.Sleep(2 * time.Second)

	// One lifecycle worker, while a deletion is scheduled and an approval
	// runs a rotation.
	ld.setPhase("kill lifecycle-1")
	lab.Keyflow["lifecycle-1"].Kill()
	del, err := admin.ScheduleDeletion(client.WithRequestID(ctx, "schedule-doomed"), api.ScheduleDeletionRequest{KeyID: doomed, PendingWindowInDays: 7})
	if err != nil {
		t.Fatalf("schedule deletion with a lifecycle worker down: %v", err)
	}
	appr.approve(t)
	time.Sleep(3 * time.Second)
	restart(t, lab.Keyflow["lifecycle-1"])
	time.Sleep(3 * time.Second)

	ld.setPhase("after")
	afterStart := time.Now()
	time.Sleep(5 * time.Second)
	afterEnd := time.Now()
	after := ld.rate(afterStart, afterEnd)
	ld.stop()
	rotations := rot.stop()
	ld.report(t)
	t.Logf("encrypt+decrypt+datakey: %.0f ok/s warm, %.0f ok/s after the kills (%.2f×); after the NATS kill the rate was back to 80%% in %v",
		warm, after, after/warm, ld.recovery(natsKill, warm, 0.8, afterStart).Round(100*time.Millisecond))

	// Errors were seen only while a process was down, and they are bounded:
	// the requests in flight to a dead process (each waits out the
	// client's 5 s timeout), and those refused (AuditUnavailableException)
	// or timed out while JetStream elected a new leader for a stream whose
	// leader was on the killed server: at most one per client per second
	// of the phase, where a dead cluster would fail every request.
	ld.mu.Lock()
	for _, name := range ld.order {
		st := ld.stats[name]
		switch {
		case name == "warm-up" || name == "after":
			if st.failed != 0 {
				t.Errorf("phase %s: %d client-visible errors, want none", name, st.failed)
			}
			if st.ok == 0 {
				t.Errorf("phase %s: no request succeeded", name)
			}
		case strings.HasPrefix(name, "kill"):
			bound := clients * int(math.Ceil(st.end.Sub(st.start).Seconds()))
			if st.failed > bound {
				t.Errorf("phase %s: %d client-visible errors, bound %d", name, st.failed, bound)
			}
		}
	}
	okOps := ld.ok
	ld.mu.Unlock()

	// Every rotation finished with exactly one version. The rotation in
	// flight when the rotations stopped may still be starting: the trail
	// and the key are read again until they agree, or for 30 s.
	var records auditRecords
	var k *api.KeyMetadata
	var started int
	waitFor(30*time.Second, func() bool {
		records = waitRotations(t, lab, 90*time.Second)
		var err error
		if k, err = admin.DescribeKey(ctx, rotKey); err != nil {
			t.Fatal(err)
		}
		started = records.count(func(e auditEvent) bool {
			return e.Type == "io.keyflow.key.rotation.started.v1" && e.Outcome == "success" && strings.HasPrefix(e.RequestID, rotationPrefix)
		})
		return len(k.Versions) == 1+started
	})
	if len(k.Versions) != 1+started || int(k.PrimaryVersion) != len(k.Versions) {
		rotated := records.count(func(e auditEvent) bool { return e.Type == "io.keyflow.key.rotated.v1" })
		t.Errorf("rotated key: %d versions, primary %d, after %d accepted rotations (%d key.rotated records, %d rotations the client saw done)",
			len(k.Versions), k.PrimaryVersion, started, rotated, len(rotations.ok))
		for id, es := range records.byRequest {
			if strings.HasPrefix(id, rotationPrefix) && len(es) != 2 {
				t.Logf("request %s: %+v", id, es)
			}
		}
	}
	seen := map[uint32]string{}
	for id, v := range rotations.ok {
		if v == 0 {
			continue
		}
		if other, dup := seen[v]; dup {
			t.Errorf("rotations %s and %s both reported version %d", id, other, v)
		}
		seen[v] = id
	}
	t.Logf("rotations: %d accepted, %d seen by the client as done, %d client-visible errors; %d versions", started, len(rotations.ok), rotations.failed, len(k.Versions))

	// Every request a client saw succeed has exactly one audit record.
	missing, extra := 0, 0
	for id, op := range okOps {
		switch n := len(records.byRequest[id]); {
		case n == 0:
			missing++
			if missing <= 5 {
				t.Errorf("%s %s succeeded but has no audit record", op, id)
			}
		case n > 1:
			extra++
			if extra <= 5 {
				t.Errorf("%s %s has %d audit records", op, id, n)
			}
		}
	}
	t.Logf("%d successful client requests checked against %d audit records: %d without a record, %d with more than one", len(okOps), records.total, missing, extra)

	// The deletion is scheduled and survived the kills; cancelling it is
	// served by its workflow, which then completes.
	d, err := admin.DescribeKey(ctx, doomed)
	if err != nil || !d.PendingDeletion {
		t.Fatalf("doomed key after the kills: %+v, %v", d, err)
	}
	if _, err := admin.CancelDeletion(ctx, doomed); err != nil {
		t.Fatalf("cancel deletion (workflow %s): %v", del.WorkflowID, err)
	}
	if !waitFor(30*time.Second, func() bool {
		d, err := admin.DescribeKey(ctx, doomed)
		return err == nil && !d.PendingDeletion
	}) {
		t.Fatal("the deletion was not cancelled")
	}
	appr.waitCompleted(t)

	// The trail is intact: audit verify against the sealer's pinned keys.
	verifyAudit(t, lab)
}

func dial(t testing.TB, lab *clusterlab.Lab, creds string) *client.Client {
	t.Helper()
	tenant, err := client.TenantFromCreds(creds)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.Dial(context.Background(), client.Options{Server: strings.Join(lab.URLs, ","), CredsFile: creds, Tenant: tenant, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func createKey(t testing.TB, cl *client.Client, desc string) string {
	t.Helper()
	k, err := cl.CreateKey(context.Background(), api.CreateKeyRequest{Description: desc})
	if err != nil {
		t.Fatal(err)
	}
	return k.KeyID
}

func restart(t testing.TB, p *clusterlab.Proc) {
	t.Helper()
	if err := p.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return cond()
}

// rotationPrefix starts the request ID of every rotation of the rotated key.
const rotationPrefix = "rotate-"

// rotations rotate one key about once a second, each under its own
// request ID.
type rotations struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	ok     map[string]uint32
	failed int
}

func startRotations(ctx context.Context, cl *client.Client, key string) *rotations {
	ctx, cancel := context.WithCancel(ctx)
	r := &rotations{cancel: cancel, done: make(chan struct{}), ok: map[string]uint32{}}
	go func() {
		defer close(r.done)
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			id := fmt.Sprintf("%s%d", rotationPrefix, i)
			res, err := cl.RotateKey(client.WithRequestID(ctx, id), key)
			if ctx.Err() != nil {
				return
			}
			r.mu.Lock()
			if err != nil {
				r.failed++
			} else {
				r.ok[id] = res.NewVersion
			}
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *rotations) stop() *rotations {
	r.cancel()
	<-r.done
	return r
}

// approval: a tenant created at runtime (its account pushed to the
// servers' full resolver), a key admin who asks for a rotation under dual
// control, and an approver who approves it.
type approval struct {
	key, id        string
	requester, bob *client.Client
}

func newApproval(t *testing.T, lab *clusterlab.Lab, admin *client.Client) *approval {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	_, creds, err := admin.CreateTenant(ctx, client.CreateTenantParams{Tenant: "acme"})
	if err != nil {
		t.Fatalf("create a tenant at runtime: %v", err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	acmeAdmin := dial(t, lab, write("acme-admin.creds", creds))
	a := &approval{}
	for _, p := range []struct {
		name string
		role string
		dst  **client.Client
	}{{"kate", "key-admin", &a.requester}, {"bob", "approver", &a.bob}} {
		_, c, err := acmeAdmin.CreatePrincipal(ctx, p.name, []string{p.role})
		if err != nil {
			t.Fatalf("principal %s: %v", p.name, err)
		}
		*p.dst = dial(t, lab, write(p.name+".creds", c))
	}
	if _, err := acmeAdmin.SetTenantPolicy(ctx, api.TenantPolicy{Approvals: []api.ApprovalRule{{Operation: "rotate", Required: 1, ExpiresAfter: "1h"}}}); err != nil {
		t.Fatal(err)
	}
	a.key = createKey(t, a.requester, "guarded")
	_, err = a.requester.RotateKey(ctx, a.key)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != "PendingApprovalException" || ce.ApprovalID == "" {
		t.Fatalf("rotation under dual control: %v", err)
	}
	a.id = ce.ApprovalID
	return a
}

func (a *approval) approve(t *testing.T) {
	t.Helper()
	if _, err := a.bob.Approve(context.Background(), a.id, "cluster test"); err != nil {
		t.Fatalf("approve with a lifecycle worker down: %v", err)
	}
}

func (a *approval) waitCompleted(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	var state string
	if !waitFor(60*time.Second, func() bool {
		ap, err := a.requester.ShowApproval(ctx, a.id)
		if err == nil {
			state = ap.State
		}
		return state == "COMPLETED"
	}) {
		t.Fatalf("approval %s: state %s, want COMPLETED", a.id, state)
	}
	k, err := a.requester.DescribeKey(ctx, a.key)
	if err != nil || k.PrimaryVersion != 2 {
		t.Fatalf("guarded key after the approved rotation: primary %d, %v", k.PrimaryVersion, err)
	}
}

// activeSealer is the process holding the sealer lease ("host/pid").
func activeSealer(t testing.TB, lab *clusterlab.Lab) *clusterlab.Proc {
	t.Helper()
	var p *clusterlab.Proc
	if !waitFor(20*time.Second, func() bool { p = leaseHolder(lab); return p != nil }) {
		t.Fatal("no sealer holds the lease")
	}
	return p
}

func waitSealerOtherThan(t testing.TB, lab *clusterlab.Lab, old *clusterlab.Proc) *clusterlab.Proc {
	t.Helper()
	var p *clusterlab.Proc
	if !waitFor(30*time.Second, func() bool { p = leaseHolder(lab); return p != nil && p != old }) {
		t.Fatalf("no standby took the lease from %s", old.Name)
	}
	return p
}

func leaseHolder(lab *clusterlab.Lab) *clusterlab.Proc {
	nc, err := lab.Connect("operator")
	if err != nil {
		return nil
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, sealer.LeaseBucket)
	if err != nil {
		return nil
	}
	e, err := kv.Get(ctx, "active")
	if err != nil {
		return nil
	}
	_, pid, _ := strings.Cut(string(e.Value()), "/")
	n, _ := strconv.Atoi(pid)
	for _, name := range []string{"sealer-1", "sealer-2"} {
		if p := lab.Keyflow[name]; p.Pid() == n && p.Alive() {
			return p
		}
	}
	return nil
}

type auditEvent struct {
	Type      string `json:"type"`
	Outcome   string `json:"outcome"`
	RequestID string `json:"requestid"`
}

type auditRecords struct {
	total     int
	byRequest map[string][]auditEvent
}

func (r auditRecords) count(f func(auditEvent) bool) int {
	n := 0
	for _, es := range r.byRequest {
		for _, e := range es {
			if f(e) {
				n++
			}
		}
	}
	return n
}

func readAudit(t *testing.T, lab *clusterlab.Lab) auditRecords {
	t.Helper()
	nc, err := lab.Connect("operator")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	out := auditRecords{byRequest: map[string][]auditEvent{}}
	err = jsaudit.ReadAll(context.Background(), js, jsaudit.ReadAllParams{}, func(_ uint64, body []byte) error {
		var e auditEvent
		if err := json.Unmarshal(body, &e); err != nil {
			return err
		}
		out.total++
		out.byRequest[e.RequestID] = append(out.byRequest[e.RequestID], e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitRotations waits until every accepted rotation (request IDs
// rotationPrefix...) has exactly one outcome (key.rotated or
// rotation.failed), and returns the trail.
func waitRotations(t *testing.T, lab *clusterlab.Lab, within time.Duration) auditRecords {
	t.Helper()
	var recs auditRecords
	var pending []string
	if !waitFor(within, func() bool {
		recs = readAudit(t, lab)
		pending = pending[:0]
		for id, es := range recs.byRequest {
			if !strings.HasPrefix(id, rotationPrefix) {
				continue
			}
			started, outcomes := 0, 0
			for _, e := range es {
				switch e.Type {
				case "io.keyflow.key.rotation.started.v1":
					if e.Outcome == "success" {
						started++
					}
				case "io.keyflow.key.rotated.v1", "io.keyflow.key.rotation.failed.v1":
					outcomes++
				}
			}
			if started > 1 || outcomes > started {
				t.Fatalf("request %s: %d rotation.started, %d outcomes", id, started, outcomes)
			}
			if started == 1 && outcomes == 0 {
				pending = append(pending, id)
			}
		}
		return len(pending) == 0
	}) {
		t.Fatalf("rotations without an outcome: %v", pending)
	}
	failed := recs.count(func(e auditEvent) bool {
		return e.Type == "io.keyflow.key.rotation.failed.v1" && strings.HasPrefix(e.RequestID, rotationPrefix)
	})
	if failed != 0 {
		t.Errorf("%d rotations failed", failed)
	}
	return recs
}

// verifyAudit runs keyflow audit pubkeys (operator) and audit verify
// (the read-only auditor) against the cluster.
func verifyAudit(t *testing.T, lab *clusterlab.Lab) {
	t.Helper()
	run := func(args ...string) string {
		cmd := exec.Command(keyflowBin, args...)
		cmd.Env = lab.CLIEnv()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("keyflow %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	pub := run("audit", "pubkeys", "--auditor-creds", lab.Ceremony.Creds["operator"])
	path := filepath.Join(t.TempDir(), "pubkeys.json")
	if err := os.WriteFile(path, []byte(pub), 0o600); err != nil {
		t.Fatal(err)
	}
	// Let the sealer seal the tail first.
	time.Sleep(3 * time.Second)
	out := run("audit", "verify", "--auditor-creds", lab.Ceremony.Creds["auditor"], "--pubkeys", path)
	t.Logf("audit verify: %s", strings.TrimSpace(out))
}
