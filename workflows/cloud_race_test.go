package workflows_test

import (
	"context"
	"encoding/base64"
	"flag"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssdk "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/keyflow/keyflow/cloud/awskms"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

// gate stands in front of local-kms and holds the first request of one
// operation until release is closed; held is closed when it arrives.
// Meanwhile it counts the other requests that reach the provider.
type gate struct {
	URL           string
	held, release chan struct{}

	mu      sync.Mutex
	skip    int // requests of op to let through before holding one
	holding bool
	passed  bool
	during  []string // operations that arrived while holding
	log     []string // every operation, in arrival order
}

// since returns the operations that arrived after the first n.
func (g *gate) since(n int) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.log[n:])
}

// seen is the number of operations that have arrived.
func (g *gate) seen() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.log)
}

func newGate(t *testing.T, target, op string) *gate {
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	g := &gate{held: make(chan struct{}), release: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.Header.Get("X-Amz-Target")
		name = name[strings.LastIndex(name, ".")+1:]
		g.mu.Lock()
		g.log = append(g.log, name)
		hold := name == op && !g.passed
		if hold && g.skip > 0 {
			g.skip, hold = g.skip-1, false
		}
		if hold {
			g.passed, g.holding = true, true
		} else if g.holding {
			g.during = append(g.during, name)
		}
		g.mu.Unlock()
		if hold {
			close(g.held)
			<-g.release
			g.mu.Lock()
			g.holding = false
			g.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		select {
		case <-g.release:
		default:
			close(g.release)
		}
	})
	g.URL = srv.URL
	return g
}

// answer is what a distribute or undistribute request with --wait said.
type answer struct {
	id   string
	done bool
	err  error
}

// goWait runs a distribute or undistribute request with wait, as alice,
// and delivers its answer.
func goWait(move func(context.Context, kms.Caller, string, string, bool) (string, bool, error), keyID, dest string) <-chan answer {
	ans := make(chan answer, 1)
	go func() {
		id, done, err := move(context.Background(), alice, keyID, dest, true)
		ans <- answer{id, done, err}
	}()
	return ans
}

// TestCloudDistributeAndRotateConcurrently: a key is rotated while its
// first distribution is in the middle of its import. Distribution is a
// round of the key's one sync, so the rotation's propagation waits for
// it: nothing else reaches the provider for the key while the import is
// held, each keyflow version is imported exactly once (one AWS key each
// in local-kms), the primary alias ends on version 2's material, and the
// placement carries no error.
func TestCloudDistributeAndRotateConcurrently(t *testing.T) {
	ctx := context.Background()
	f := newCloudFixture(t, kms.DriftReport, "")
	g := newGate(t, f.srv.URL, "ImportKeyMaterial")
	if _, err := f.b.KMS.AddCloudDestination(ctx, alice, kms.CloudDestination{Name: "aws-local", Provider: kms.CloudAWS,
		Settings: map[string]string{"region": "us-east-1", "endpoint": g.URL}}); err != nil {
		t.Fatal(err)
	}
	l := newLiveCloud(t, f, awsConnect)

	ans := goWait(l.wc.DistributeToCloud, l.key.ID, "aws-local")
	select {
	case <-g.held:
	case a := <-ans:
		t.Fatalf("the distribution ended before its import: %+v", a)
	case <-time.After(90 * time.Second):
		t.Fatal("the distribution's import never reached the provider")
	}
	// The rotation, over NATS, while version 1's import is held: it ends
	// after its cloud-propagate step has asked the key's sync for a round.
	rot, err := l.b.Client("alpha", "alice").RotateKey(ctx, l.key.ID)
	if err != nil || rot.NewVersion != 2 {
		t.Fatalf("rotate: %v %+v", err, rot)
	}
	close(g.release)
	a := <-ans
	if a.err != nil || a.id != workflows.CloudSyncWorkflowID("alpha", l.key.ID) {
		t.Fatalf("distribute --wait: %+v", a)
	}
	if !a.done {
		t.Log("the distribution's bounded wait ran out before both rounds; waiting for the placement")
	}
	p := l.waitPlacement("version 2 in the provider", atVersion(2, kms.PlacementEnabled))
	if p.LastError != "" || len(p.Versions) != 2 || p.Versions[0].KeyVersion != 1 {
		t.Fatalf("placement %+v", p)
	}
	g.mu.Lock()
	during := g.during
	g.mu.Unlock()
	if len(during) != 0 {
		t.Fatalf("provider calls while the first import was in flight: %v", during)
	}

	// One AWS key per keyflow version, each imported once.
	perVersion := map[string]int{}
	keys, err := f.sdk.ListKeys(ctx, &awssdk.ListKeysInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys.Keys {
		md, err := f.sdk.DescribeKey(ctx, &awssdk.DescribeKeyInput{KeyId: k.KeyId})
		if err != nil {
			t.Fatal(err)
		}
		if d := aws.ToString(md.KeyMetadata.Description); strings.Contains(d, l.key.ID) {
			perVersion[d]++
			if md.KeyMetadata.KeyState != "Enabled" {
				t.Errorf("%s is %s", d, md.KeyMetadata.KeyState)
			}
		}
	}
	if len(perVersion) != 2 {
		t.Fatalf("AWS keys of the keyflow key by description: %v", perVersion)
	}
	for d, n := range perVersion {
		if n != 1 {
			t.Fatalf("%d AWS keys for %q", n, d)
		}
	}
	imports := 0
	for _, e := range l.b.EventsOfType("alpha", events.TypeCloudCall) {
		if e.Data["operation"] == "ImportKeyMaterial" {
			imports++
		}
	}
	if imports != 2 {
		t.Fatalf("%d ImportKeyMaterial calls, want 2 (one per version)", imports)
	}
	l.crossCheck(awskms.PrimaryAlias(l.key.ID), 2)
}

// TestCloudUndistributeWhileRotationPropagates: a distributed key is
// rotated, and while the rotation's import of version 2 is held at the
// provider, the key is undistributed from that destination. The
// undistribute is a round of the key's one sync, so it waits for the
// propagation: no provider call reaches local-kms while the import is
// held, no import starts after the undistribute was asked for, both
// versions' AWS keys end pending deletion, no placement remains (the
// propagation's end did not bring it back), and the records say so.
func TestCloudUndistributeWhileRotationPropagates(t *testing.T) {
	ctx := context.Background()
	f := newCloudFixture(t, kms.DriftReport, "")
	g := newGate(t, f.srv.URL, "ImportKeyMaterial")
	g.skip = 1 // the distribution's import of version 1 goes through
	if _, err := f.b.KMS.AddCloudDestination(ctx, alice, kms.CloudDestination{Name: "aws-local", Provider: kms.CloudAWS,
		Settings: map[string]string{"region": "us-east-1", "endpoint": g.URL}}); err != nil {
		t.Fatal(err)
	}
	l := newLiveCloud(t, f, awsConnect)
	l.distribute("aws-local")
	l.waitPlacement("version 1 in the provider", atVersion(1, kms.PlacementEnabled))

	// The rotation, over NATS: its cloud-propagate step asks the key's
	// sync for a round, whose import of version 2 the gate holds.
	rot, err := l.b.Client("alpha", "alice").RotateKey(ctx, l.key.ID)
	if err != nil || rot.NewVersion != 2 {
		t.Fatalf("rotate: %v %+v", err, rot)
	}
	select {
	case <-g.held:
	case <-time.After(90 * time.Second):
		t.Fatal("the rotation's import never reached the provider")
	}
	mark := g.seen()
	ans := goWait(l.wc.UndistributeFromCloud, l.key.ID, "aws-local")
	// Give a removal that does not wait its turn the chance to reach the
	// provider while the import is held (it must not).
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && len(g.since(mark)) == 0 {
		time.Sleep(20 * time.Millisecond)
	}
	if during := g.since(mark); len(during) != 0 {
		t.Fatalf("provider calls while the rotation's import was held: %v", during)
	}
	close(g.release)
	a := <-ans
	syncID := workflows.CloudSyncWorkflowID("alpha", l.key.ID)
	if a.err != nil || a.id != syncID {
		t.Fatalf("undistribute --wait: %+v", a)
	}
	if !a.done {
		t.Log("the undistribute's bounded wait ran out; waiting for the sync")
	}
	if err := l.tc.GetWorkflow(ctx, syncID, "").Get(ctx, nil); err != nil {
		t.Fatalf("the key's sync: %v", err)
	}
	if *updateUndistributeHistory {
		saveHistory(t, fetchHistory(t, l.tc, syncID), undistributeHistory)
	}

	if ps, err := l.b.KMS.CloudPlacements(ctx, alice, l.key.ID); err != nil || len(ps) != 0 {
		t.Fatalf("placements after the undistribute: %v %+v", err, ps)
	}
	after := g.since(mark)
	for _, op := range after {
		if op == "ImportKeyMaterial" || op == "GetParametersForImport" || op == "CreateKey" {
			t.Fatalf("%s after the undistribute was asked for: %v", op, after)
		}
	}
	if !slices.Contains(after, "ScheduleKeyDeletion") {
		t.Fatalf("no ScheduleKeyDeletion after the undistribute: %v", after)
	}
	keys, err := f.sdk.ListKeys(ctx, &awssdk.ListKeysInput{})
	if err != nil {
		t.Fatal(err)
	}
	ours := 0
	for _, k := range keys.Keys {
		md, err := f.sdk.DescribeKey(ctx, &awssdk.DescribeKeyInput{KeyId: k.KeyId})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(aws.ToString(md.KeyMetadata.Description), l.key.ID) {
			ours++
			if md.KeyMetadata.KeyState != "PendingDeletion" {
				t.Errorf("%s (%s) is %s, want PendingDeletion", aws.ToString(k.KeyId), aws.ToString(md.KeyMetadata.Description), md.KeyMetadata.KeyState)
			}
		}
	}
	if ours != 2 {
		t.Fatalf("%d AWS keys of the keyflow key, want 2 (one per version)", ours)
	}
	removed := 0
	for _, e := range l.b.EventsOfType("alpha", events.TypeCloudPlacementChanged) {
		if e.Data["state"] == workflows.CloudPlacementRemoved {
			removed++
		}
	}
	if removed != 1 {
		t.Fatalf("%d placement-removed records, want 1", removed)
	}
}

var updateUndistributeHistory = flag.Bool("update-undistribute-history", false, "record testdata/cloud_undistribute_history.json (run with -run 'TestCloudUndistributeWhileRotationPropagates|TestCloudSyncUndistributeReplay')")

const undistributeHistory = "testdata/cloud_undistribute_history.json"

// A key's sync recorded with a rotation's round and an undistribute
// round (by TestCloudUndistributeWhileRotationPropagates) replays: the
// round's GetVersion marker and its CloudUndistribute activity are
// pinned.
func TestCloudSyncUndistributeReplay(t *testing.T) {
	raw, err := os.ReadFile(undistributeHistory)
	if err != nil {
		t.Fatal(err)
	}
	marker := base64.StdEncoding.EncodeToString([]byte(`"cloud-undistribute-round"`)) // the change ID, as the payload holds it
	for _, want := range []string{marker, `"CloudUndistribute"`, `"CloudSync"`} {
		if !strings.Contains(string(raw), want) {
			t.Fatalf("%s has no %s", undistributeHistory, want)
		}
	}
	replay(t, undistributeHistory, workflows.CloudSyncWorkflow)
}
