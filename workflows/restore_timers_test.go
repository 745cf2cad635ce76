package workflows_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/rpc"
	"github.com/keyflow/keyflow/workflows"
)

// importExpirer is the dev stack's adapter of the workflow client.
type importExpirer struct{ c *workflows.Client }

func (e importExpirer) ScheduleExpiry(ctx context.Context, c kms.Caller, keyID, importID string, validTo time.Time) (string, error) {
	return e.c.ScheduleImportExpiry(ctx, workflows.ImportExpiryParams{
		Tenant: c.Tenant, KeyID: keyID, ImportID: importID, ValidTo: validTo, Principal: c.Principal, RequestID: c.RequestID,
	})
}

// lifecycleBed runs b's rpc workers with every lifecycle workflow on a
// Temporal server of its own, as a dev stack does.
func lifecycleBed(t *testing.T, b *testbed.Bed) client.Client {
	t.Helper()
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	tc := ts.GetDefaultClient()
	w := ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) {
		workflows.Register(r, &workflows.Activities{KMS: b.KMS, Temporal: tc})
	})
	t.Cleanup(w.Stop)
	wc := &workflows.Client{Temporal: tc, Tokens: b.KMS}
	srv, err := rpc.Start(rpc.Config{Conn: b.Conn, KMS: b.KMS, Tenants: b.Identity, JS: b.JS, Rotator: temporalRotator{wc}, Lifecycle: wc,
		Imports: importExpirer{wc}, Workers: 8, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return tc
}

// Issue 13: after a restore, every restored key has the timers and
// schedules it had on the original stack: the activation timer, the
// cryptoperiod timer, the rotation schedule, the deletion window, a
// version's retirement window and the expiry of imported material. Before
// the fix the restored stack had none of them (a key set to activate
// stayed PRE_ACTIVE).
func TestRestoreRestartsLifecycleTimers(t *testing.T) {
	ctx := context.Background()
	a := testbed.New(t)
	tcA := lifecycleBed(t, a)
	alice := a.Client("alpha", "alice")
	create := func(r api.CreateKeyRequest) string {
		m, err := alice.CreateKey(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		return m.KeyID
	}
	at := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	keys := []string{
		create(api.CreateKeyRequest{Alias: "alias/later", ActivationDate: &at}),
		create(api.CreateKeyRequest{Alias: "alias/rotating", RotationPeriodInDays: 90, CryptoperiodInDays: 30}),
		create(api.CreateKeyRequest{Alias: "alias/doomed"}),
		create(api.CreateKeyRequest{Alias: "alias/retiring"}),
		create(api.CreateKeyRequest{Alias: "alias/byok", Origin: "EXTERNAL"}),
	}
	if _, err := alice.ScheduleDeletion(ctx, api.ScheduleDeletionRequest{KeyID: "alias/doomed", PendingWindowInDays: 7}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.RotateKey(ctx, "alias/retiring"); err != nil {
		t.Fatal(err)
	}
	if r, err := alice.RetireVersion(ctx, api.RetireVersionRequest{KeyID: "alias/retiring", Version: 1, PendingWindowInDays: 7}); err != nil || r.RetirementDate == nil {
		t.Fatalf("retire-version: %+v %v", r, err)
	}
	imp := wrapForImport(t, alice, "alias/byok", make32())
	validTo := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	imp.ValidTo = &validTo
	if _, err := alice.ImportKeyMaterial(ctx, imp); err != nil {
		t.Fatal(err)
	}
	want := lifecycleTimers(t, tcA, a, keys)
	// Every kind of timer is there to compare.
	for _, kind := range []string{"ActivationWorkflow", "CryptoperiodWorkflow", "schedule", "DeletionWorkflow", "RetirementWorkflow", "ImportExpiryWorkflow"} {
		found := false
		for _, v := range want {
			found = found || v.Kind == kind
		}
		if !found {
			t.Fatalf("the original stack has no %s: %v", kind, want)
		}
	}

	bk, err := alice.CreateBackup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := testbed.NewOn(t, a.HSM)
	tcB := lifecycleBed(t, b)
	if _, err := b.Client("alpha", "alice").RestoreBackup(ctx, api.BackupRestoreRequest{Backup: bk.Backup}); err != nil {
		t.Fatal(err)
	}
	got := lifecycleTimers(t, tcB, b, keys)
	if !reflect.DeepEqual(got, want) {
		for id, w := range want {
			if g, ok := got[id]; !ok || !reflect.DeepEqual(g, w) {
				t.Errorf("%s: restored %+v, original %+v", id, g, w)
			}
		}
		for id, g := range got {
			if _, ok := want[id]; !ok {
				t.Errorf("%s: restored %+v, not on the original", id, g)
			}
		}
	}
}

func make32() []byte {
	m := make([]byte, 32)
	for i := range m {
		m[i] = byte(i + 1)
	}
	return m
}

// timer is one running lifecycle workflow (its type and its input, less
// who asked for it) or one schedule (its interval).
type timer struct {
	Kind  string
	Input string
}

// lifecycleTimers lists the running lifecycle workflows and the
// schedules of keys on a stack, by ID.
func lifecycleTimers(t *testing.T, tc client.Client, b *testbed.Bed, keys []string) map[string]timer {
	t.Helper()
	ctx := context.Background()
	out := map[string]timer{}
	for _, id := range keys {
		k, err := b.KMS.GetKey(ctx, alice, id)
		if err != nil {
			t.Fatal(err)
		}
		ids := []string{workflows.ActivationWorkflowID("alpha", id), workflows.CryptoperiodWorkflowID("alpha", id), workflows.DeletionWorkflowID("alpha", id)}
		for _, v := range k.Versions {
			ids = append(ids, workflows.RetirementWorkflowID("alpha", id, v.Number))
		}
		if k.Import != nil && k.Import.ImportID != "" {
			ids = append(ids, workflows.ImportExpiryWorkflowID("alpha", id, k.Import.ImportID))
		}
		for _, wid := range ids {
			d, err := tc.DescribeWorkflowExecution(ctx, wid, "")
			if err != nil || d.WorkflowExecutionInfo.Status != enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
				continue
			}
			iter := tc.GetWorkflowHistory(ctx, wid, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
			first, err := iter.Next()
			if err != nil {
				t.Fatal(err)
			}
			var in map[string]any
			if p := first.GetWorkflowExecutionStartedEventAttributes().GetInput().GetPayloads(); len(p) > 0 {
				if err := json.Unmarshal(p[0].Data, &in); err != nil {
					t.Fatal(err)
				}
			}
			delete(in, "Principal")
			delete(in, "RequestID")
			raw, _ := json.Marshal(in)
			out[wid] = timer{Kind: d.WorkflowExecutionInfo.Type.Name, Input: string(raw)}
		}
		sid := workflows.RotationScheduleID("alpha", id)
		if d, err := tc.ScheduleClient().GetHandle(ctx, sid).Describe(ctx); err == nil {
			out[sid] = timer{Kind: "schedule", Input: fmt.Sprint(d.Schedule.Spec.Intervals)}
		}
	}
	return out
}
