package workflows_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

// crashPoint is an activity boundary: just before an activity runs, or
// just after it did its work but before its result reached Temporal.
type crashPoint struct {
	activity string
	after    bool
}

func (p crashPoint) String() string {
	if p.after {
		return "after " + p.activity
	}
	return "before " + p.activity
}

// crasher makes a worker "die" at a crash point: the activity there fails
// (after its side effects, for an "after" point) as a killed process
// would leave it, and from then on the worker does no more activity work.
// The test then stops that worker and starts a fresh one, which finishes
// the workflow from its history.
type crasher struct {
	interceptor.WorkerInterceptorBase
	point   crashPoint
	mu      sync.Mutex
	dead    bool
	crashed chan struct{}
}

func (c *crasher) InterceptActivity(ctx context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	return &crashActivity{ActivityInboundInterceptorBase: interceptor.ActivityInboundInterceptorBase{Next: next}, c: c}
}

type crashActivity struct {
	interceptor.ActivityInboundInterceptorBase
	c *crasher
}

var errCrash = errors.New("simulated crash: the worker process died")

func (a *crashActivity) ExecuteActivity(ctx context.Context, in *interceptor.ExecuteActivityInput) (any, error) {
	c := a.c
	name := activity.GetInfo(ctx).ActivityType.Name
	c.mu.Lock()
	dead := c.dead
	hit := !dead && name == c.point.activity
	if hit {
		c.dead = true
	}
	c.mu.Unlock()
	if dead {
		return nil, errCrash
	}
	if !hit {
		return a.Next.ExecuteActivity(ctx, in)
	}
	defer close(c.crashed)
	if c.point.after {
		if _, err := a.Next.ExecuteActivity(ctx, in); err != nil {
			return nil, err
		}
	}
	return nil, errCrash
}

// The crash test: for every activity boundary of rotation and of
// destruction, the worker dies there and a new one takes over. Afterwards
// exactly one new version exists (rotation) or the key is destroyed once
// (destruction), and the audit trail has each fact once, with no
// duplicate event IDs.
func TestCrashAtEveryActivityBoundary(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Temporal server")
	}
	ctx := context.Background()
	b := testbed.New(t)
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	tc := ts.GetDefaultClient()
	// Schedules the deletions in the past, so the window has passed when
	// the workflow starts (the window itself is covered with time skipping
	// in TestDeletionWorkflowDestroysAfterWindow).
	early, err := kms.New(ctx, kms.Config{HSM: b.HSM, Store: b.Store, Audit: b.Audit, Now: func() time.Time { return time.Now().Add(-7*kms.Day - time.Minute) },
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	acts := &workflows.Activities{KMS: b.KMS, Temporal: tc}
	newWorker := func(ic interceptor.WorkerInterceptor) worker.Worker {
		opts := worker.Options{DeadlockDetectionTimeout: time.Minute, WorkerStopTimeout: time.Second}
		if ic != nil {
			opts.Interceptors = []interceptor.WorkerInterceptor{ic}
		}
		w := worker.New(tc, workflows.TaskQueue, opts)
		workflows.Register(w, acts)
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		return w
	}

	type flow struct {
		name   string
		points []string
		run    func(t *testing.T, k *kms.Key) client.WorkflowRun
		check  func(t *testing.T, k *kms.Key)
		facts  []string // event types that must appear exactly once for the key
	}
	flows := []flow{
		{
			name:   "rotation",
			points: []string{"NextVersion", "CreateVersion", "SetPrimaryVersion"},
			run: func(t *testing.T, k *kms.Key) client.WorkflowRun {
				run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.RotateKeyWorkflowID("alpha", k.ID), TaskQueue: workflows.TaskQueue},
					workflows.RotateKeyWorkflow, workflows.RotateKeyParams{Tenant: "alpha", KeyID: k.ID, Principal: "alice", RequestID: "crash"})
				if err != nil {
					t.Fatal(err)
				}
				return run
			},
			check: func(t *testing.T, k *kms.Key) {
				got, _ := b.KMS.GetKey(ctx, alice, k.ID)
				if len(got.Versions) != 2 || got.PrimaryVersion != 2 {
					t.Errorf("after the rotation: %d versions, primary %d; want exactly one new version, primary", len(got.Versions), got.PrimaryVersion)
				}
			},
			facts: []string{events.TypeKeyVersionCreated, events.TypeKeyRotated},
		},
		{
			name:   "destruction",
			points: []string{"DestroyMaterial", "MarkDestroyed", "DeleteRotationSchedule"},
			run: func(t *testing.T, k *kms.Key) client.WorkflowRun {
				pk, err := early.ScheduleDeletion(ctx, alice, kms.ScheduleDeletionParams{KeyRef: k.ID, Window: 7 * kms.Day})
				if err != nil {
					t.Fatal(err)
				}
				run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.DeletionWorkflowID("alpha", k.ID), TaskQueue: workflows.TaskQueue},
					workflows.DeletionWorkflow, workflows.DeletionParams{Tenant: "alpha", KeyID: k.ID, DeletionDate: pk.Lifecycle.DeletionDate, Principal: "alice", RequestID: "crash"})
				if err != nil {
					t.Fatal(err)
				}
				return run
			},
			check: func(t *testing.T, k *kms.Key) {
				got, _ := b.KMS.GetKey(ctx, alice, k.ID)
				if got.State != kms.StateDestroyed || got.Versions[0].State != kms.StateDestroyed {
					t.Errorf("after the destruction: key %s, version %s", got.State, got.Versions[0].State)
				}
				if _, err := b.Store.GetMaterial(ctx, "alpha", k.ID, 1); !errors.Is(err, kms.ErrStoreNotFound) {
					t.Errorf("material after the destruction: %v", err)
				}
			},
			facts: []string{events.TypeKeyMaterialDestroyed, events.TypeKeyDestroyed},
		},
	}
	for _, f := range flows {
		for _, a := range f.points {
			for _, after := range []bool{false, true} {
				p := crashPoint{activity: a, after: after}
				t.Run(f.name+"/"+p.String(), func(t *testing.T) {
					k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
					if err != nil {
						t.Fatal(err)
					}
					cr := &crasher{point: p, crashed: make(chan struct{})}
					w1 := newWorker(cr)
					run := f.run(t, k)
					select {
					case <-cr.crashed:
					case <-time.After(time.Minute):
						t.Fatal("the crash point was never reached")
					}
					w1.Stop()
					w2 := newWorker(nil)
					defer w2.Stop()
					rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
					defer cancel()
					if err := run.Get(rctx, nil); err != nil {
						t.Fatalf("workflow after the restart: %v", err)
					}
					f.check(t, k)
					checkTrail(t, b, k, f.facts)
				})
			}
		}
	}
}

// checkTrail asserts that each fact is recorded once for the key and that
// no event ID appears twice in the tenant's trail.
func checkTrail(t *testing.T, b *testbed.Bed, k *kms.Key, facts []string) {
	t.Helper()
	ids := map[string]int{}
	count := map[string]int{}
	for _, e := range b.Events("alpha") {
		ids[e.ID]++
		if e.Subject == k.ResourceName() && e.Outcome == events.OutcomeSuccess {
			count[e.Type]++
		}
	}
	for id, n := range ids {
		if n > 1 {
			t.Errorf("event ID %s appears %d times", id, n)
		}
	}
	for _, typ := range facts {
		if count[typ] != 1 {
			t.Errorf("%d successful %s records for the key, want 1", count[typ], typ)
		}
	}
	if t.Failed() {
		fmt.Fprintf(os.Stderr, "counts for %s: %v\n", k.ID, count)
	}
}
