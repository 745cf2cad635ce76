package workflows_test

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssdk "github.com/aws/aws-sdk-go-v2/service/kms"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"

	kmsclient "github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/cloud"
	"github.com/keyflow/keyflow/cloud/awskms"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/cloudfake"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/rpc"
	"github.com/keyflow/keyflow/workflows"
)

// liveCloud is the stack of automatic propagation: the real NATS server
// and rpc workers, a real Temporal server running the lifecycle and cloud
// workflows, and local-kms as the destination.
type liveCloud struct {
	*cloudFixture
	tc  client.Client
	wc  *workflows.Client
	rpc *rpc.Server
}

func newLiveCloud(t testing.TB, f *cloudFixture, connect workflows.CloudConnect) *liveCloud {
	t.Helper()
	var ts *temporaltest.TestServer
	if tt, ok := t.(*testing.T); ok {
		ts = temporaltest.NewServer(temporaltest.WithT(tt))
	} else {
		ts = temporaltest.NewServer() // WithT takes a *testing.T only
		t.Cleanup(ts.Stop)
	}
	tc := ts.GetDefaultClient()
	w := ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) {
		workflows.Register(r, &workflows.Activities{KMS: f.b.KMS, Temporal: tc, CloudConnect: connect})
	})
	t.Cleanup(w.Stop)
	f.b.KMS.SetApprovalEngine(&workflows.ApprovalEngine{Temporal: tc, Tokens: f.b.KMS})
	wc := &workflows.Client{Temporal: tc, Tokens: f.b.KMS, Clouds: f.b.KMS}
	srv, err := rpc.Start(rpc.Config{Conn: f.b.Conn, KMS: f.b.KMS, Tenants: f.b.Identity, JS: f.b.JS, Rotator: temporalRotator{wc}, Lifecycle: wc, Workers: 8,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return &liveCloud{cloudFixture: f, tc: tc, wc: wc, rpc: srv}
}

// distribute runs the first sync to the destination and waits for it.
func (l *liveCloud) distribute(dest string) {
	l.t.Helper()
	ctx := context.Background()
	id, err := l.wc.StartCloudSync(ctx, workflows.CloudSyncParams{Tenant: "alpha", KeyID: l.key.ID, Principal: "alice", RequestID: "dist", Destinations: []string{dest}, Step: workflows.CloudStepDistribute})
	if err != nil {
		l.t.Fatal(err)
	}
	if err := l.tc.GetWorkflow(ctx, id, "").Get(ctx, nil); err != nil {
		l.t.Fatal(err)
	}
}

// waitPlacement polls the key's one placement until ok holds.
func (l *liveCloud) waitPlacement(what string, ok func(*kms.CloudPlacement) bool) *kms.CloudPlacement {
	l.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		ps, err := l.b.KMS.CloudPlacements(context.Background(), alice, l.key.ID)
		if err == nil && len(ps) == 1 && ok(ps[0]) {
			return ps[0]
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("timed out waiting for %s: %v %+v", what, err, ps)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func atVersion(v uint32, state string) func(*kms.CloudPlacement) bool {
	return func(p *kms.CloudPlacement) bool {
		prim, _ := p.Primary()
		return prim.KeyVersion == v && p.State == state && p.Pending == "" && p.LastErrorCode == ""
	}
}

// awsStates are the provider's states of every version's AWS key.
func (l *liveCloud) awsStates(p *kms.CloudPlacement) []string {
	var out []string
	for _, v := range p.Versions {
		md, err := l.sdk.DescribeKey(context.Background(), &awssdk.DescribeKeyInput{KeyId: aws.String(v.ProviderVersion)})
		if err != nil {
			l.t.Fatal(err)
		}
		out = append(out, string(md.KeyMetadata.KeyState))
	}
	return out
}

func allAre(states []string, want string) bool {
	for _, s := range states {
		if s != want {
			return false
		}
	}
	return len(states) > 0
}

// TestCloudPropagatesKeyChangesAutomatically: once a key is distributed,
// nobody starts a sync by hand. Through the NATS API (which the AWS API
// and the CLI use) a rotation, a disable, an enable, a scheduled deletion
// and its cancellation each reach local-kms by themselves, and so does a
// rotation that the key's schedule runs. The provider is down during the
// first rotation: the sync retries with backoff, the placement shows the
// error meanwhile, and the rotation lands when the provider returns.
func TestCloudPropagatesKeyChangesAutomatically(t *testing.T) {
	ctx := context.Background()
	l := newLiveCloud(t, newCloudFixture(t, kms.DriftReport, ""), awsConnect)
	l.distribute("aws-local")
	alias := awskms.PrimaryAlias(l.key.ID)
	l.crossCheck(alias, 1)
	nc := l.b.Client("alpha", "alice")

	// A rotation over NATS while the provider is down.
	l.srv.Stop()
	rot, err := nc.RotateKey(ctx, l.key.ID)
	if err != nil || rot.NewVersion != 2 {
		t.Fatalf("rotate: %v %+v", err, rot)
	}
	l.waitPlacement("the unavailable provider on the placement", func(p *kms.CloudPlacement) bool {
		return p.LastErrorCode == cloud.CodeUnavailable && p.Pending == workflows.CloudStepRotate
	})
	// A disable while that sync still waits for the provider: the running
	// sync takes it too (one more round), and both land.
	if _, err := nc.SetKeyState(ctx, api.SetKeyStateRequest{KeyID: l.key.ID, State: string(kms.StateSuspended)}); err != nil {
		t.Fatal(err)
	}
	l.srv.Restart()
	p := l.waitPlacement("the rotation and the disable in the provider", atVersion(2, kms.PlacementDisabled))
	if st := l.awsStates(p); len(st) != 2 || !allAre(st, "Disabled") {
		t.Fatalf("provider after the disable: %v", st)
	}
	unavailable := 0
	for _, e := range l.b.EventsOfType("alpha", events.TypeCloudCall) {
		if e.Data["providerErrorCode"] == cloud.CodeUnavailable {
			unavailable++
		}
	}
	if unavailable == 0 {
		t.Fatal("no record of the calls that found the provider down")
	}

	// Enable.
	if _, err := nc.SetKeyState(ctx, api.SetKeyStateRequest{KeyID: l.key.ID, State: string(kms.StateActive)}); err != nil {
		t.Fatal(err)
	}
	l.waitPlacement("the enable in the provider", atVersion(2, kms.PlacementEnabled))
	l.crossCheck(alias, 2)

	// Scheduled deletion, with keyflow's window, then its cancellation.
	if _, err := nc.ScheduleDeletion(ctx, api.ScheduleDeletionRequest{KeyID: l.key.ID, PendingWindowInDays: 9}); err != nil {
		t.Fatal(err)
	}
	p = l.waitPlacement("the scheduled deletion in the provider", atVersion(2, kms.PlacementPendingDeletion))
	if st := l.awsStates(p); !allAre(st, "PendingDeletion") {
		t.Fatalf("provider after the scheduled deletion: %v", st)
	}
	md, err := l.sdk.DescribeKey(ctx, &awssdk.DescribeKeyInput{KeyId: aws.String(p.Versions[1].ProviderVersion)})
	if err != nil || md.KeyMetadata.DeletionDate == nil || md.KeyMetadata.DeletionDate.Sub(time.Now()) < 8*24*time.Hour || md.KeyMetadata.DeletionDate.Sub(time.Now()) > 10*24*time.Hour {
		t.Fatalf("provider's deletion date after a 9-day window: %v %+v", err, md)
	}
	meta, err := nc.CancelDeletion(ctx, l.key.ID)
	if err != nil {
		t.Fatal(err)
	}
	back := kms.PlacementDisabled
	if meta.KeyState == string(kms.StateActive) {
		back = kms.PlacementEnabled
	}
	p = l.waitPlacement("the cancelled deletion in the provider", atVersion(2, back))
	if st := l.awsStates(p); !allAre(st, map[string]string{kms.PlacementDisabled: "Disabled", kms.PlacementEnabled: "Enabled"}[back]) {
		t.Fatalf("provider after the cancellation: %v", st)
	}
	if back == kms.PlacementDisabled {
		if _, err := nc.SetKeyState(ctx, api.SetKeyStateRequest{KeyID: l.key.ID, State: string(kms.StateActive)}); err != nil {
			t.Fatal(err)
		}
		l.waitPlacement("the enable after the cancellation", atVersion(2, kms.PlacementEnabled))
	}
	l.crossCheck(alias, 2) // the aliases are back

	// A rotation the key's schedule runs (the schedule's action, started
	// by hand here rather than waiting a day).
	run, err := l.tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "scheduled-rotation", TaskQueue: workflows.TaskQueue}, workflows.RotateKeyWorkflow,
		workflows.RotateKeyParams{Tenant: "alpha", KeyID: l.key.ID, Principal: workflows.SchedulerPrincipal, RequestID: "schedule"})
	if err != nil {
		t.Fatal(err)
	}
	var res workflows.RotateKeyResult
	if err := run.Get(ctx, &res); err != nil || res.NewVersion != 3 || res.CloudSync != workflows.CloudSyncWorkflowID("alpha", l.key.ID) || res.CloudProblem != "" {
		t.Fatalf("scheduled rotation: %v %+v", err, res)
	}
	l.waitPlacement("the scheduled rotation in the provider", atVersion(3, kms.PlacementEnabled))
	l.crossCheck(alias, 3)

	// A key in no destination rotates as before and starts no sync.
	other, err := nc.CreateKey(ctx, api.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	run, err = l.tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "plain-rotation", TaskQueue: workflows.TaskQueue}, workflows.RotateKeyWorkflow,
		workflows.RotateKeyParams{Tenant: "alpha", KeyID: other.KeyID, Principal: "alice", RequestID: "plain"})
	if err != nil {
		t.Fatal(err)
	}
	var plain workflows.RotateKeyResult
	if err := run.Get(ctx, &plain); err != nil || plain.NewVersion != 2 || plain.CloudSync != "" || plain.CloudProblem != "" {
		t.Fatalf("rotation of a key in no cloud: %v %+v", err, plain)
	}
	l.assertNoMaterial()
	validateEvents(t, l.b, events.TypeCloudCall, events.TypeCloudPlacementChanged)
}

// BenchmarkCloudRotationAutomatic is the propagation time of a rotation
// on the live stack (NATS, a real Temporal server, local-kms): from the
// rotate request over NATS until the placement records the new version
// in the provider, nobody starting a sync by hand. Baselines from the
// same run: the same rotation of a key in no cloud, and the bare SDK
// calls of one import into local-kms.
//
//	go test -run '^$' -bench CloudRotationAutomatic -benchtime 20x ./workflows/
func BenchmarkCloudRotationAutomatic(b *testing.B) {
	ctx := context.Background()
	f := newCloudFixtureB(b)
	l := newLiveCloud(b, f, awsConnect)
	l.distribute("aws-local")
	nc := l.b.Client("alpha", "alice")
	plain, err := nc.CreateKey(ctx, api.CreateKeyRequest{})
	if err != nil {
		b.Fatal(err)
	}
	var auto, afterReply, rotateOnly, bare []time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		rot, err := nc.RotateKey(ctx, f.key.ID)
		if err != nil {
			b.Fatal(err)
		}
		replied := time.Now()
		l.waitPlacement("the rotation in the provider", atVersion(rot.NewVersion, kms.PlacementEnabled))
		auto, afterReply = append(auto, time.Since(start)), append(afterReply, time.Since(replied))

		start = time.Now()
		if _, err := nc.RotateKey(ctx, plain.KeyID); err != nil {
			b.Fatal(err)
		}
		rotateOnly = append(rotateOnly, time.Since(start))

		start = time.Now()
		bareImport(b, f.sdk, fmt.Sprintf("alias/bare/%d", i))
		bare = append(bare, time.Since(start))
	}
	b.ReportMetric(median(auto), "rotate+propagate-p50-ms")
	b.ReportMetric(median(afterReply), "after-reply-p50-ms")
	b.ReportMetric(median(rotateOnly), "rotate-only-p50-ms")
	b.ReportMetric(median(bare), "bare-sdk-p50-ms")
}

// A disable under dual control reaches the cloud once it is approved:
// the approval workflow's activity starts the sync, as the handler does
// for a disable that needs no approval.
func TestCloudApprovedDisablePropagates(t *testing.T) {
	ctx := context.Background()
	l := newLiveCloud(t, newCloudFixture(t, kms.DriftReport, ""), awsConnect)
	l.distribute("aws-local")
	ac, bob, carol := l.b.Client("alpha", "alice"), l.b.Client("alpha", "bob"), l.b.Client("alpha", "carol")
	if _, err := ac.SetTenantPolicy(ctx, api.TenantPolicy{Approvals: []api.ApprovalRule{{Operation: "disable", Required: 2, ExpiresAfter: "1h"}}}); err != nil {
		t.Fatal(err)
	}
	_, err := ac.SetKeyState(ctx, api.SetKeyStateRequest{KeyID: l.key.ID, State: string(kms.StateSuspended)})
	id := pending(t, "disable", err)
	if p := l.waitPlacement("the placement before approval", atVersion(1, kms.PlacementEnabled)); p.State != kms.PlacementEnabled {
		t.Fatal("the disable reached the provider before its approval")
	}
	for _, c := range []*kmsclient.Client{bob, carol} {
		if _, err := c.Approve(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
	}
	p := l.waitPlacement("the approved disable in the provider", atVersion(1, kms.PlacementDisabled))
	if st := l.awsStates(p); !allAre(st, "Disabled") {
		t.Fatalf("provider after the approved disable: %v", st)
	}
}

var updateCloudHistory = flag.Bool("update-cloud-history", false, "record testdata/rotate_cloud_history.json from a real Temporal server")

// A rotation recorded with the cloud-propagate step replays: the step's
// GetVersion marker and activity are pinned, as the older
// testdata/rotate_history.json pins the rotation without them.
func TestRotateKeyWithCloudStepReplay(t *testing.T) {
	const path = "testdata/rotate_cloud_history.json"
	if *updateCloudHistory {
		recordHistory(t, path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "PropagateToClouds") {
		t.Fatalf("%s has no cloud-propagate step", path)
	}
	r := worker.NewWorkflowReplayer()
	r.RegisterWorkflow(workflows.RotateKeyWorkflow)
	if err := r.ReplayWorkflowHistoryFromJSONFile(nil, path); err != nil {
		t.Fatalf("replay of %s: %v", path, err)
	}
}

// A cancelled deletion in Cloud KMS: the versions scheduled for
// destruction are restored (cloud.Restorer) and take keyflow's state
// again.
func TestCloudCancelledDeletionRestoresGCPVersions(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	fake := cloudfake.StartGCP(t)
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Exportable: true})
	if err != nil {
		t.Fatal(err)
	}
	d := kms.CloudDestination{Name: "gcp-fake", Provider: kms.CloudGCP, Drift: kms.DriftReport,
		Settings: map[string]string{"project": "p1", "location": "europe-west1", "keyRing": "kr", "endpoint": fake.Addr}}
	if _, err := b.KMS.AddCloudDestination(ctx, alice, d); err != nil {
		t.Fatal(err)
	}
	sync := func(step string) {
		t.Helper()
		runCloudSync(t, func() *testsuite.TestWorkflowEnvironment { return cloudEnv(b, gcpConnect) }, k.ID, "gcp-fake", step)
	}
	conn, err := gcpConnect(ctx, &d)
	if err != nil {
		t.Fatal(err)
	}
	states := func() []string {
		t.Helper()
		ps, _ := b.KMS.CloudPlacements(ctx, alice, k.ID)
		desc, err := conn.Describe(ctx, cloud.KeyRef{KeyID: k.ID, Resource: ps[0].Resource, Versions: ps[0].ProviderVersions()})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, v := range ps[0].ProviderVersions() {
			out = append(out, desc.Versions[v])
		}
		return out
	}
	sync(workflows.CloudStepDistribute)
	if _, err := b.KMS.ScheduleDeletion(ctx, alice, kms.ScheduleDeletionParams{KeyRef: k.ID, Window: 7 * kms.Day}); err != nil {
		t.Fatal(err)
	}
	sync(workflows.CloudStepScheduleDeletion)
	if st := states(); !allAre(st, cloud.StatePendingDeletion) {
		t.Fatalf("Cloud KMS after the scheduled deletion: %v", st)
	}
	back, err := b.KMS.CancelDeletion(ctx, alice, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	sync(workflows.CloudStepSync)
	want := map[kms.KeyState]string{kms.StateActive: cloud.StateEnabled}[back.State]
	if want == "" {
		want = cloud.StateDisabled
	}
	if st := states(); !allAre(st, want) {
		t.Fatalf("Cloud KMS after the cancelled deletion (keyflow %s): %v", back.State, st)
	}
	restored := 0
	for _, e := range b.EventsOfType("alpha", events.TypeCloudCall) {
		if e.Data["operation"] == "RestoreCryptoKeyVersion" {
			restored++
		}
	}
	if restored != 1 {
		t.Fatalf("%d RestoreCryptoKeyVersion records, want 1", restored)
	}
}

// BenchmarkCloudPlacementLookup is what automatic propagation costs a key
// in no cloud on every change: one placement lookup (a filtered watch of
// the kf_cloud bucket), next to a plain key read from the same store.
//
//	go test -run '^$' -bench CloudPlacementLookup -benchtime 200x ./workflows/
func BenchmarkCloudPlacementLookup(b *testing.B) {
	ctx := context.Background()
	bed := testbed.New(b)
	k, err := bed.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	if err != nil {
		b.Fatal(err)
	}
	var lookup, read []time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if ps, err := bed.KMS.CloudPlacements(ctx, alice, k.ID); err != nil || len(ps) != 0 {
			b.Fatal(err, ps)
		}
		lookup = append(lookup, time.Since(start))
		start = time.Now()
		if _, err := bed.KMS.GetKey(ctx, alice, k.ID); err != nil {
			b.Fatal(err)
		}
		read = append(read, time.Since(start))
	}
	b.ReportMetric(median(lookup), "lookup-p50-ms")
	b.ReportMetric(median(read), "getkey-p50-ms")
}
