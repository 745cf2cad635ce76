package region_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"

	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/cbom"
	"github.com/keyflow/keyflow/region"
	"github.com/keyflow/keyflow/schemas"
	"github.com/keyflow/keyflow/workflows"
)

func TestMain(m *testing.M) { pkcs11test.Main(m) }

// deployment is one region's keyflow: its own SoftHSM token (so its own
// root key), NATS server with its own JetStream domain, Temporal server
// and lifecycle worker, and the region responder.
type deployment struct {
	name string
	bed  *testbed.Bed
	ts   *temporaltest.TestServer
	wf   *workflows.Client
	// shift moves the KMS clock (not Temporal's): set back 7 days while a
	// replica's deletion is scheduled, the 7-day minimum window ends
	// seconds later in real time.
	shift atomic.Int64
}

var alice = kms.Caller{Tenant: "alpha", Principal: "alice"}

func startDeployment(t *testing.T, name string, o testbed.Options) *deployment {
	t.Helper()
	return startDeploymentRetry(t, name, o, 300*time.Millisecond)
}

// startDeploymentRetry is startDeployment whose replica syncs pause up
// to retryMax between attempts while a region is out of reach.
func startDeploymentRetry(t *testing.T, name string, o testbed.Options, retryMax time.Duration) *deployment {
	t.Helper()
	o.Region = name
	d := &deployment{name: name}
	o.Now = func() time.Time { return time.Now().Add(time.Duration(d.shift.Load())) }
	d.bed = testbed.NewWith(t, o)
	d.ts = temporaltest.NewServer(temporaltest.WithT(t))
	d.wf = &workflows.Client{Temporal: d.ts.GetDefaultClient(), Tokens: d.bed.KMS, RotateWait: time.Minute}
	if _, err := region.Serve(region.ResponderConfig{Conn: d.bed.Conn, KMS: d.bed.KMS, Deletions: d.wf, Wake: d.wf}); err != nil {
		t.Fatal(err)
	}
	acts := &workflows.Activities{
		KMS: d.bed.KMS, Temporal: d.ts.GetDefaultClient(),
		Replicas:             &region.Peer{Conn: d.bed.Conn, From: name},
		ReplicaSwitchTimeout: 3 * time.Second, ReplicaRetryMax: retryMax,
	}
	d.ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) { workflows.Register(r, acts) })
	return d
}

// proxy stands for the network between two regions: cutting it is a
// partition of the leaf link.
type proxy struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, addr: ln.Addr().String(), target: target}
	p.serve(ln)
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) restore() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.serve(ln)
}

// linkedPair starts region A (us-east, the leaf hub) and region B
// (eu-west), linked the documented way: A listens for leaf nodes and
// issues B link creds; B's server connects to A as a leaf node.
func linkedPair(t *testing.T) (a, b *deployment, link *proxy) {
	return linkedPairRetry(t, 300*time.Millisecond)
}

// linkedPairRetry is linkedPair whose replica syncs pause up to retryMax.
func linkedPairRetry(t *testing.T, retryMax time.Duration) (a, b *deployment, link *proxy) {
	a = startDeploymentRetry(t, "us-east", testbed.Options{LeafListen: "127.0.0.1:0"}, retryMax)
	creds, err := a.bed.Identity.RegionLinkCreds("link-eu-west")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "link.creds")
	if err := os.WriteFile(file, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	leaf := natsserver.LeafURL(a.bed.NATS)
	if leaf == "" {
		t.Fatal("region A has no leaf listener")
	}
	link = newProxy(t, strings.TrimPrefix(leaf, "nats-leaf://"))
	b = startDeploymentRetry(t, "eu-west", testbed.Options{LeafRemotes: []natsserver.LeafRemote{{URL: "nats-leaf://" + link.addr, CredentialsFile: file}}}, retryMax)
	waitLinked(t, a, b, true)
	return a, b, link
}

// waitLinked waits until region A's responder is reachable from B and B's
// from A (up), or until neither is (down).
func waitLinked(t *testing.T, a, b *deployment, up bool) {
	t.Helper()
	waitFor(t, 20*time.Second, "the link to be "+map[bool]string{true: "up", false: "down"}[up], func() bool {
		ok := func(from, to *deployment) bool {
			p := &region.Peer{Conn: from.bed.Conn, From: from.name, Timeout: 200 * time.Millisecond}
			_, err := p.ApplyMetadata(context.Background(), to.name, &kms.Key{})
			var re *region.RemoteError
			return errors.As(err, &re) // a refusal is an answer: the link is up
		}
		return ok(a, b) == up && ok(b, a) == up
	})
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func getKey(d *deployment, id string) (*kms.Key, error) {
	return d.bed.KMS.GetKey(context.Background(), alice, id)
}

func encrypt(t *testing.T, d *deployment, keyID string, pt []byte) []byte {
	t.Helper()
	res, err := d.bed.KMS.Encrypt(context.Background(), alice, kms.EncryptParams{KeyRef: keyID, Plaintext: pt})
	if err != nil {
		t.Fatalf("encrypt in %s: %v", d.name, err)
	}
	return res.Ciphertext
}

func decrypt(t *testing.T, d *deployment, ct []byte) []byte {
	t.Helper()
	res, err := d.bed.KMS.Decrypt(context.Background(), alice, kms.DecryptParams{Ciphertext: ct})
	if err != nil {
		t.Fatalf("decrypt in %s: %v", d.name, err)
	}
	return res.Plaintext
}

// waitReplica waits until d has version v of keyID as its primary version.
func waitReplica(t *testing.T, d *deployment, keyID string, v uint32) *kms.Key {
	t.Helper()
	var k *kms.Key
	waitFor(t, 30*time.Second, "version to reach "+d.name, func() bool {
		var err error
		k, err = getKey(d, keyID)
		return err == nil && k.PrimaryVersion == v
	})
	return k
}

func versionsOf(k *kms.Key) []uint32 {
	var out []uint32
	for _, v := range k.Versions {
		out = append(out, v.Number)
	}
	return out
}

func appliedVersions(d *deployment, keyID string) []uint32 {
	var out []uint32
	for _, e := range d.bed.EventsOfType("alpha", events.TypeKeyReplicaApplied) {
		if e.Outcome == events.OutcomeSuccess && e.Data["keyId"] == keyID {
			out = append(out, uint32(e.Data["version"].(float64)))
		}
	}
	return out
}

// TestMultiRegion is the proof of docs/multi-region.md: two deployments
// with their own HSM roots, NATS and Temporal, linked by a NATS leaf node.
func TestMultiRegion(t *testing.T) {
	ctx := context.Background()
	a, b, link := linkedPair(t)

	// A multi-region primary in A, replicated to B.
	k, err := a.bed.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{MultiRegion: true, Alias: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	if k.PrimaryRegion != "us-east" || !k.MultiRegion {
		t.Fatalf("primary: %+v", k)
	}
	if _, err := a.bed.KMS.ReplicateKey(ctx, alice, kms.ReplicateKeyParams{KeyRef: "orders", Region: "eu-west"}); err != nil {
		t.Fatal(err)
	}
	if err := workflows.StartReplicaSync(ctx, a.ts.GetDefaultClient(), workflows.ReplicaSyncParams{Tenant: "alpha", KeyID: k.ID, Region: "eu-west"}); err != nil {
		t.Fatal(err)
	}
	rk := waitReplica(t, b, k.ID, 1)
	if rk.ID != k.ID || rk.PrimaryRegion != "us-east" || !slices.Equal(versionsOf(rk), []uint32{1}) {
		t.Fatalf("replica: %+v", rk)
	}
	waitFor(t, 10*time.Second, "A to record the replica's version", func() bool {
		pk, _ := getKey(a, k.ID)
		r, _ := pk.ReplicaIn("eu-west")
		return r.LastSyncedVersion == 1 && r.State == kms.ReplicaActive
	})

	t.Run("inventory", func(t *testing.T) {
		for _, d := range []*deployment{a, b} {
			inv, err := d.bed.KMS.Inventory(ctx, alice, kms.InventoryParams{})
			if err != nil {
				t.Fatal(err)
			}
			var regions []string
			for _, it := range inv.Keys {
				if it.ID == k.ID {
					regions = it.Regions
				}
			}
			if !slices.Equal(regions, []string{"us-east", "eu-west"}) {
				t.Fatalf("%s inventory lists regions %v", d.name, regions)
			}
			bom, err := cbom.JSON(inv, cbom.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(bom), `"keyflow:regions"`) || !strings.Contains(string(bom), `"us-east,eu-west"`) {
				t.Fatalf("%s CBOM does not list the regions", d.name)
			}
		}
	})

	t.Run("both ways", func(t *testing.T) {
		pt := []byte("made in us-east")
		if got := decrypt(t, b, encrypt(t, a, k.ID, pt)); string(got) != string(pt) {
			t.Fatalf("B decrypted %q", got)
		}
		pt = []byte("made in eu-west")
		if got := decrypt(t, a, encrypt(t, b, k.ID, pt)); string(got) != string(pt) {
			t.Fatalf("A decrypted %q", got)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		if _, err := b.bed.KMS.RequestRotation(ctx, alice, k.ID); kms.CodeOf(err) != kms.CodeUnsupportedOperation {
			t.Fatalf("replica rotation: %v", err)
		}
		if _, err := b.bed.KMS.CreateVersion(ctx, alice, kms.CreateVersionParams{KeyID: k.ID, Version: 2}); kms.CodeOf(err) != kms.CodeUnsupportedOperation {
			t.Fatalf("replica new version: %v", err)
		}
		var refused bool
		for _, e := range b.bed.EventsOfType("alpha", events.TypeKeyRotationStart) {
			refused = refused || e.Outcome == events.OutcomeFailure && e.ErrorCode == string(kms.CodeUnsupportedOperation) && e.Subject == kms.ResourceName("alpha", k.ID)
		}
		if !refused {
			t.Fatal("the replica's refusal to rotate is not on its audit trail")
		}
		local, err := a.bed.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.bed.KMS.DescribeKey(ctx, alice, local.ID); kms.CodeOf(err) != kms.CodeNotFound {
			t.Fatalf("a non-replicated key in B: %v", err)
		}
		if _, err := a.bed.KMS.ReplicateKey(ctx, alice, kms.ReplicateKeyParams{KeyRef: local.ID, Region: "eu-west"}); kms.CodeOf(err) != kms.CodeUnsupportedOperation {
			t.Fatalf("replicating a single-region key: %v", err)
		}
		if _, err := a.bed.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{MultiRegion: true, Spec: kms.SpecECCP256}); kms.CodeOf(err) != kms.CodeUnsupportedOperation {
			t.Fatalf("multi-region ECC key: %v", err)
		}
	})

	// Rotation on the primary reaches the replica before A switches.
	var lat []time.Duration
	for i := range 5 {
		start := time.Now()
		res, _, err := a.wf.RotateKey(ctx, workflows.RotateKeyParams{Tenant: "alpha", KeyID: k.ID, Principal: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		if res.NewVersion != uint32(i+2) {
			t.Fatalf("rotation %d made version %d", i, res.NewVersion)
		}
		// The replica had the version before the primary switched.
		pk, _ := getKey(a, k.ID)
		if r, _ := pk.ReplicaIn("eu-west"); r.LastSyncedVersion < res.NewVersion {
			t.Fatalf("A switched to version %d while B had %d", res.NewVersion, r.LastSyncedVersion)
		}
		waitReplica(t, b, k.ID, res.NewVersion)
		lat = append(lat, time.Since(start))
	}
	ct := encrypt(t, a, k.ID, []byte("v6"))
	if string(decrypt(t, b, ct)) != "v6" {
		t.Fatal("B cannot decrypt the new version")
	}
	slices.Sort(lat)
	t.Logf("FIGURE rotation in us-east until eu-west encrypts with the new version: p50 %v (n=%d, min %v, max %v)", lat[len(lat)/2], len(lat), lat[0], lat[len(lat)-1])

	// A cut link: B keeps serving; A rotates twice; B catches up those
	// two versions, in order, one audit record each.
	t.Run("partition", func(t *testing.T) {
		before, _ := getKey(b, k.ID)
		appliedBefore := appliedVersions(b, k.ID)
		link.cut()
		waitLinked(t, a, b, false)
		old := encrypt(t, b, k.ID, []byte("during the cut"))
		if string(decrypt(t, b, old)) != "during the cut" {
			t.Fatal("B stopped serving during the cut")
		}
		var made []uint32
		for range 2 {
			start := time.Now()
			res, _, err := a.wf.RotateKey(ctx, workflows.RotateKeyParams{Tenant: "alpha", KeyID: k.ID, Principal: "alice"})
			if err != nil {
				t.Fatal(err)
			}
			made = append(made, res.NewVersion)
			pk := mustKey(t, a, k.ID)
			t.Logf("rotation to %d during the cut took %v; replicas %+v", res.NewVersion, time.Since(start), pk.Replicas)
		}
		lagging := a.bed.EventsOfType("alpha", events.TypeKeyReplicaLagging)
		if len(lagging) != 2 || lagging[0].Data["regions"].([]any)[0] != "eu-west" {
			t.Fatalf("lagging records: %+v", lagging)
		}
		newInA := encrypt(t, a, k.ID, []byte("after the cut"))
		if got, _ := getKey(b, k.ID); got.NewestVersion() != before.NewestVersion() {
			t.Fatalf("B changed during the cut: %v", versionsOf(got))
		}
		restored := time.Now()
		link.restore()
		rk := waitReplica(t, b, k.ID, made[1])
		t.Logf("FIGURE catch-up after a cut of %d versions: %v from the link's return", len(made), time.Since(restored))
		after := appliedVersions(b, k.ID)
		if got := after[len(appliedBefore):]; !slices.Equal(got, made) {
			t.Fatalf("B applied %v after the cut, want exactly %v", got, made)
		}
		if !slices.Equal(versionsOf(rk), versionsOf(mustKey(t, a, k.ID))) {
			t.Fatalf("versions differ: A %v, B %v", versionsOf(mustKey(t, a, k.ID)), versionsOf(rk))
		}
		if string(decrypt(t, b, newInA)) != "after the cut" || string(decrypt(t, a, old)) != "during the cut" {
			t.Fatal("ciphertexts of the cut do not cross")
		}
	})

	t.Run("disable propagates", func(t *testing.T) {
		if _, err := a.bed.KMS.SetState(ctx, alice, kms.SetStateParams{KeyRef: k.ID, To: kms.StateSuspended}); err != nil {
			t.Fatal(err)
		}
		kick(t, a, k.ID)
		waitFor(t, 20*time.Second, "B to be disabled", func() bool { rk, _ := getKey(b, k.ID); return rk.State == kms.StateSuspended })
		if _, err := b.bed.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")}); err == nil {
			t.Fatal("a disabled replica encrypted")
		}
		if _, err := a.bed.KMS.SetState(ctx, alice, kms.SetStateParams{KeyRef: k.ID, To: kms.StateActive}); err != nil {
			t.Fatal(err)
		}
		kick(t, a, k.ID)
		waitFor(t, 20*time.Second, "B to be enabled", func() bool { rk, _ := getKey(b, k.ID); return rk.State == kms.StateActive })
	})

	t.Run("throughput", func(t *testing.T) {
		rate := func(d *deployment) float64 {
			n, start := 0, time.Now()
			for time.Since(start) < 500*time.Millisecond {
				encrypt(t, d, k.ID, []byte("0123456789abcdef0123456789abcdef"))
				n++
			}
			return float64(n) / time.Since(start).Seconds()
		}
		var pas, rbs []float64
		for range 3 {
			pas, rbs = append(pas, rate(a)), append(rbs, rate(b))
		}
		slices.Sort(pas)
		slices.Sort(rbs)
		pa, rb := pas[1], rbs[1]
		t.Logf("FIGURE encrypt ops/s (serial, in-process, same run): primary us-east %.0f, replica eu-west %.0f (ratio %.2f)", pa, rb, rb/pa)
	})

	// Failover: B becomes the primary; a rotation in B reaches A.
	t.Run("failover", func(t *testing.T) {
		if _, err := a.bed.KMS.UpdatePrimaryRegion(ctx, alice, k.ID, "eu-west"); err != nil {
			t.Fatal(err)
		}
		kick(t, a, k.ID) // hands over: A tells B it is the primary now
		waitFor(t, 20*time.Second, "B to become primary", func() bool { rk, _ := getKey(b, k.ID); return rk.PrimaryRegion == "eu-west" })
		if _, err := a.bed.KMS.RequestRotation(ctx, alice, k.ID); kms.CodeOf(err) != kms.CodeUnsupportedOperation {
			t.Fatalf("the former primary rotated: %v", err)
		}
		res, _, err := b.wf.RotateKey(ctx, workflows.RotateKeyParams{Tenant: "alpha", KeyID: k.ID, Principal: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		waitReplica(t, a, k.ID, res.NewVersion)
		if got := decrypt(t, a, encrypt(t, b, k.ID, []byte("from the new primary"))); string(got) != "from the new primary" {
			t.Fatalf("A decrypted %q", got)
		}
	})

	// Scheduled deletion of one replica (now us-east), with its own
	// window, ending in destruction there or cancelled before.
	t.Run("replica deletion", func(t *testing.T) { replicaDeletion(t, a, b, k.ID) })

	// Every record on both trails matches its schema, and together they
	// cover every replica event type.
	seen := map[string]bool{}
	for _, d := range []*deployment{a, b} {
		for _, e := range d.bed.Events("alpha") {
			if err := schemas.ValidateEvent(e.Raw); err != nil {
				t.Errorf("%s event %d (%s): %v", d.name, e.Seq, e.Type, err)
			}
			seen[e.Type] = true
		}
	}
	for _, typ := range events.Types {
		if strings.HasPrefix(typ, "io.keyflow.key.replica.") && !seen[typ] {
			t.Errorf("no %s record in either region", typ)
		}
	}

	// Nothing that crossed the link carried plaintext material: every
	// record on both trails is metadata (the envelope test in events
	// scans for secrets; here the replica records name versions only).
	for _, e := range b.bed.EventsOfType("alpha", events.TypeKeyReplicaApplied) {
		for key := range e.Data {
			if !slices.Contains([]string{"keyId", "version", "primaryRegion", "region", "role"}, key) {
				t.Errorf("replica record carries %q", key)
			}
		}
	}
}

func mustKey(t *testing.T, d *deployment, id string) *kms.Key {
	t.Helper()
	k, err := getKey(d, id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// kick is what a transport does after a change of a multi-region key.
func kick(t *testing.T, d *deployment, keyID string) {
	t.Helper()
	k := mustKey(t, d, keyID)
	for _, r := range k.Replicas {
		if err := workflows.StartReplicaSync(context.Background(), d.ts.GetDefaultClient(), workflows.ReplicaSyncParams{Tenant: "alpha", KeyID: keyID, Region: r.Region, RetryMax: 300 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
	}
	if k.PrimaryRegion != d.name {
		if err := workflows.StartReplicaSync(context.Background(), d.ts.GetDefaultClient(), workflows.ReplicaSyncParams{Tenant: "alpha", KeyID: keyID, Region: k.PrimaryRegion, RetryMax: 300 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
	}
}

// replicaDeletion is TestMultiRegion's replica deletion: b is the primary
// of keyID, a its replica. A replica pending deletion refuses every use
// and runs its region's deletion timer; a stale message does not
// re-activate it; a cancel before the window ends leaves it DISABLED with
// its material, and its timer destroys nothing; at the end of a window
// that runs out, a's material is destroyed in a, b shows the replica
// DESTROYED, both regions record it, and nothing from b brings it back.
func replicaDeletion(t *testing.T, a, b *deployment, keyID string) {
	ctx := context.Background()
	fromB := kms.Caller{Tenant: "alpha", Principal: "region:" + b.name}
	// schedule schedules the deletion of a's replica with the minimum
	// window of 7 days, which ends in lead (b's clock is set back for
	// the call), and returns the deletion date.
	schedule := func(lead time.Duration) time.Time {
		t.Helper()
		b.shift.Store(int64(lead - 7*kms.Day))
		pk, err := b.bed.KMS.ScheduleReplicaDeletion(ctx, alice, keyID, a.name, 7*kms.Day)
		b.shift.Store(0)
		if err != nil {
			t.Fatal(err)
		}
		kick(t, b, keyID)
		r, _ := pk.ReplicaIn(a.name)
		return r.DeletionDate
	}
	replicaState := func() kms.ReplicaState { r, _ := mustKey(t, b, keyID).ReplicaIn(a.name); return r.State }
	timer := func() (running bool) {
		d, err := a.ts.GetDefaultClient().DescribeWorkflowExecution(ctx, workflows.DeletionWorkflowID("alpha", keyID), "")
		return err == nil && d.WorkflowExecutionInfo.Status == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING
	}
	materialOf := func(v uint32) error { _, err := a.bed.Store.GetMaterial(ctx, "alpha", keyID, v); return err }
	stale := mustKey(t, b, keyID) // the primary's metadata before any deletion

	// 1. Scheduled, then cancelled before the window ends.
	date := schedule(10 * time.Second)
	waitFor(t, 20*time.Second, a.name+" to be pending deletion", func() bool { rk, _ := getKey(a, keyID); return rk.Lifecycle.PendingDeletion })
	if _, err := a.bed.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: keyID, Plaintext: []byte("x")}); kms.CodeOf(err) != kms.CodeInvalidState {
		t.Fatalf("a replica pending deletion encrypted: %v", err)
	}
	if got := decrypt(t, b, encrypt(t, b, keyID, []byte("primary still serves"))); string(got) != "primary still serves" {
		t.Fatalf("%s decrypted %q", b.name, got)
	}
	waitFor(t, 10*time.Second, a.name+"'s deletion timer", timer)
	if rk := mustKey(t, a, keyID); !rk.Lifecycle.DeletionDate.Equal(date) {
		t.Fatalf("%s deletes on %v, the primary said %v", a.name, rk.Lifecycle.DeletionDate, date)
	}
	pendingMeta := mustKey(t, b, keyID)
	// A stale message (from before the schedule) does not re-activate it.
	if _, err := a.bed.KMS.ApplyReplicaMetadata(ctx, fromB, kms.ApplyMetadataParams{From: b.name, Key: stale}); err != nil {
		t.Fatal(err)
	}
	if rk := mustKey(t, a, keyID); !rk.Lifecycle.PendingDeletion || !rk.Lifecycle.DeletionDate.Equal(date) {
		t.Fatalf("a stale message re-activated the replica: %+v", rk.Lifecycle)
	}
	// The replica region neither cancels nor schedules its own deletion.
	if _, err := a.bed.KMS.CancelDeletion(ctx, alice, keyID); kms.CodeOf(err) != kms.CodeUnsupportedOperation {
		t.Fatalf("the replica cancelled its own deletion: %v", err)
	}
	if _, err := b.bed.KMS.CancelReplicaDeletion(ctx, alice, keyID, a.name); err != nil {
		t.Fatal(err)
	}
	if st := replicaState(); st != kms.ReplicaDisabled {
		t.Fatalf("after the cancel the primary shows the replica %s", st)
	}
	kick(t, b, keyID)
	waitFor(t, 20*time.Second, a.name+" to be disabled", func() bool {
		rk, _ := getKey(a, keyID)
		return !rk.Lifecycle.PendingDeletion && rk.State == kms.StateSuspended
	})
	waitFor(t, 10*time.Second, a.name+"'s deletion timer to stop", func() bool { return !timer() })
	if _, err := a.bed.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: keyID, Plaintext: []byte("x")}); kms.CodeOf(err) != kms.CodeInvalidState {
		t.Fatalf("a disabled replica encrypted: %v", err)
	}
	// A stale message from while it was pending does not bring the
	// deletion back either.
	if _, err := a.bed.KMS.ApplyReplicaMetadata(ctx, fromB, kms.ApplyMetadataParams{From: b.name, Key: pendingMeta}); err != nil {
		t.Fatal(err)
	}
	if rk := mustKey(t, a, keyID); rk.Lifecycle.PendingDeletion || rk.State != kms.StateSuspended {
		t.Fatalf("a stale message undid the cancel: %s %+v", rk.State, rk.Lifecycle)
	}
	time.Sleep(time.Until(date) + 2*time.Second) // past the window that was cancelled
	if rk := mustKey(t, a, keyID); rk.State != kms.StateSuspended {
		t.Fatalf("after the cancelled window %s is %s", a.name, rk.State)
	}
	for _, v := range versionsOf(mustKey(t, a, keyID)) {
		if err := materialOf(v); err != nil {
			t.Fatalf("version %d of the cancelled replica is gone: %v", v, err)
		}
	}
	if n := len(a.bed.EventsOfType("alpha", events.TypeKeyMaterialDestroyed)); n != 0 {
		t.Fatalf("%d destruction records after a cancel", n)
	}
	// Replicating again enables it.
	if _, err := b.bed.KMS.ReplicateKey(ctx, alice, kms.ReplicateKeyParams{KeyRef: keyID, Region: a.name}); err != nil {
		t.Fatal(err)
	}
	kick(t, b, keyID)
	waitFor(t, 20*time.Second, a.name+" to be enabled", func() bool { rk, _ := getKey(a, keyID); return rk.State == kms.StateActive })
	before := encrypt(t, b, keyID, []byte("before the destruction"))
	if string(decrypt(t, a, before)) != "before the destruction" {
		t.Fatal("the re-enabled replica does not decrypt")
	}

	// 2. Scheduled, and the window runs out: destroyed in a.
	versions := versionsOf(mustKey(t, a, keyID))
	date = schedule(3 * time.Second)
	waitFor(t, 40*time.Second, a.name+" to destroy its replica", func() bool { rk, _ := getKey(a, keyID); return rk.State == kms.StateDestroyed })
	for _, v := range versions {
		if err := materialOf(v); err == nil {
			t.Fatalf("version %d of the destroyed replica is still stored in %s", v, a.name)
		}
	}
	if _, err := a.bed.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: before}); kms.CodeOf(err) != kms.CodeInvalidState {
		t.Fatalf("decrypt in the destroyed replica: %v", err)
	}
	waitFor(t, 20*time.Second, b.name+" to show the replica destroyed", func() bool { return replicaState() == kms.ReplicaDestroyed })
	t.Logf("FIGURE a replica's deletion window ended until its primary showed it DESTROYED: %v", time.Since(date))
	pk := mustKey(t, b, keyID)
	if slices.Contains(pk.Regions(), a.name) {
		t.Fatalf("the primary still lists %s among the key's regions: %v", a.name, pk.Regions())
	}
	if got := decrypt(t, b, encrypt(t, b, keyID, []byte("primary still serves"))); string(got) != "primary still serves" {
		t.Fatalf("%s decrypted %q", b.name, got)
	}
	recorded := func(d *deployment, role string) bool {
		for _, e := range d.bed.EventsOfType("alpha", events.TypeKeyReplicaDestroyed) {
			if e.Outcome == events.OutcomeSuccess && e.Data["role"] == role && e.Data["region"] == a.name {
				return true
			}
		}
		return false
	}
	waitFor(t, 10*time.Second, "both regions to record the destruction", func() bool { return recorded(a, "replica") && recorded(b, "primary") })
	if len(a.bed.EventsOfType("alpha", events.TypeKeyMaterialDestroyed)) != 1 || len(a.bed.EventsOfType("alpha", events.TypeKeyDestroyed)) != 1 {
		t.Fatalf("%s's standard destruction records are missing", a.name)
	}

	// Nothing from the primary brings a destroyed replica back.
	if _, err := a.bed.KMS.ApplyReplicaMetadata(ctx, fromB, kms.ApplyMetadataParams{From: b.name, Key: stale}); kms.CodeOf(err) != kms.CodeInvalidState {
		t.Fatalf("metadata to a destroyed replica: %v", err)
	}
	if _, err := a.bed.KMS.ApplyReplicaVersion(ctx, fromB, kms.ApplyReplicaParams{From: b.name, Key: mustKey(t, b, keyID), Version: 1}); kms.CodeOf(err) != kms.CodeInvalidState {
		t.Fatalf("a version to a destroyed replica: %v", err)
	}
	if rk := mustKey(t, a, keyID); rk.State != kms.StateDestroyed {
		t.Fatalf("the destroyed replica is %s again", rk.State)
	}
	refusedUpdate := false
	for _, e := range a.bed.EventsOfType("alpha", events.TypeKeyReplicaUpdated) {
		refusedUpdate = refusedUpdate || e.Outcome == events.OutcomeFailure && e.ErrorCode == string(kms.CodeInvalidState)
	}
	if !refusedUpdate {
		t.Fatal("the refused metadata is not on the replica's audit trail")
	}
	if _, err := b.bed.KMS.ReplicateKey(ctx, alice, kms.ReplicateKeyParams{KeyRef: keyID, Region: a.name}); kms.CodeOf(err) != kms.CodeInvalidState {
		t.Fatalf("replicating to a destroyed replica: %v", err)
	}
	if _, err := b.bed.KMS.ScheduleReplicaDeletion(ctx, alice, keyID, a.name, 7*kms.Day); kms.CodeOf(err) != kms.CodeInvalidState {
		t.Fatalf("scheduling a destroyed replica's deletion: %v", err)
	}
	if _, err := b.bed.KMS.CancelReplicaDeletion(ctx, alice, keyID, a.name); kms.CodeOf(err) != kms.CodeInvalidState {
		t.Fatalf("cancelling a destroyed replica's deletion: %v", err)
	}
}

// TestMultiRegionLinkUpWakesSync: with syncs that pause up to 30 s while
// the replica region is out of reach, a link that comes back wakes the
// waiting sync (the replica region's hello), so the versions made during
// the cut arrive long before the sync's next retry would have sent them.
func TestMultiRegionLinkUpWakesSync(t *testing.T) {
	ctx := context.Background()
	const retryMax = 30 * time.Second
	a, b, link := linkedPairRetry(t, retryMax)
	k, err := a.bed.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{MultiRegion: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.bed.KMS.ReplicateKey(ctx, alice, kms.ReplicateKeyParams{KeyRef: k.ID, Region: "eu-west"}); err != nil {
		t.Fatal(err)
	}
	if err := workflows.StartReplicaSync(ctx, a.ts.GetDefaultClient(), workflows.ReplicaSyncParams{Tenant: "alpha", KeyID: k.ID, Region: "eu-west", RetryMax: retryMax}); err != nil {
		t.Fatal(err)
	}
	waitReplica(t, b, k.ID, 1)

	link.cut()
	waitLinked(t, a, b, false)
	res, _, err := a.wf.RotateKey(ctx, workflows.RotateKeyParams{Tenant: "alpha", KeyID: k.ID, Principal: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	// The sync's attempts fail at once while the link is down, and its
	// pauses double from 100 ms. Wait for a pause of 10 s or more, and
	// restore the link in it: without a wake, the version cannot reach B
	// before that pause ends.
	var retryAt time.Time
	waitFor(t, 60*time.Second, "the sync to pause 10 s or more", func() bool {
		at, d := pendingTimer(t, a, workflows.ReplicaSyncWorkflowID("alpha", k.ID, "eu-west"))
		retryAt = at.Add(d)
		return d >= 10*time.Second
	})
	if got := mustKey(t, b, k.ID); slices.Contains(versionsOf(got), res.NewVersion) {
		t.Fatalf("B has version %d during the cut", res.NewVersion)
	}
	restored := time.Now()
	link.restore()
	waitFor(t, time.Until(retryAt.Add(-time.Second)), "the woken sync to send the version (before its next retry)", func() bool {
		got, err := getKey(b, k.ID)
		return err == nil && slices.Contains(versionsOf(got), res.NewVersion)
	})
	t.Logf("FIGURE catch-up after a cut of 1 version, woken by the link's return: %v from the link's return (the sync's next retry was %v away)", time.Since(restored), retryAt.Sub(restored).Round(time.Millisecond))
	if got := appliedVersions(b, k.ID); !slices.Equal(got, []uint32{1, res.NewVersion}) {
		t.Fatalf("B applied %v, want [1 %d]", got, res.NewVersion)
	}
}

// pendingTimer returns the start and duration of the workflow's last
// timer if it is still running (zero otherwise).
func pendingTimer(t *testing.T, d *deployment, workflowID string) (time.Time, time.Duration) {
	t.Helper()
	it := d.ts.GetDefaultClient().GetWorkflowHistory(context.Background(), workflowID, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var at time.Time
	var dur time.Duration
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		switch e.EventType {
		case enumspb.EVENT_TYPE_TIMER_STARTED:
			at, dur = e.EventTime.AsTime(), e.GetTimerStartedEventAttributes().GetStartToFireTimeout().AsDuration()
		case enumspb.EVENT_TYPE_TIMER_FIRED, enumspb.EVENT_TYPE_TIMER_CANCELED:
			at, dur = time.Time{}, 0
		}
	}
	return at, dur
}
