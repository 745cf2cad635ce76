package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	tclient "go.temporal.io/sdk/client"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/deploy/config"
	"github.com/keyflow/keyflow/deploy/roles"
	"github.com/keyflow/keyflow/e2e/cluster/temporalpg"
	"github.com/keyflow/keyflow/workflows"
)

var (
	temporalToolsOnce sync.Once
	temporalTools     temporalpg.Tools
	temporalToolsErr  error
)

// startTemporalPostgres runs a separate Temporal server process (Temporal's
// own server binary, built from the pinned module) on a fresh PostgreSQL,
// its schema applied with Temporal's SQL tool, the namespace keyflow
// registered, and the frontend requiring mutual TLS with certificates
// written as files. It stops both when the test ends.
func startTemporalPostgres(t *testing.T) temporalEndpoint {
	t.Helper()
	return startTemporalServer(t, temporalpg.TemporalConfig{})
}

// startTemporalServer is startTemporalPostgres with a configuration.
func startTemporalServer(t testing.TB, cfg temporalpg.TemporalConfig) temporalEndpoint {
	t.Helper()
	ctx := context.Background()
	temporalToolsOnce.Do(func() { temporalTools, temporalToolsErr = temporalpg.BuildTools(ctx) })
	if temporalToolsErr != nil {
		t.Fatal(temporalToolsErr)
	}
	cfg.Postgres, cfg.Dir = startPostgresTB(t), t.TempDir()
	ts, err := temporalpg.StartTemporal(ctx, temporalTools, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ts.Stop)
	c := ts.Certs
	return temporalEndpoint{Addr: ts.Addr, Namespace: ts.Namespace, CAFile: c.CAFile, CertFile: c.ClientCertFile, KeyFile: c.ClientKeyFile}
}

// temporalClient dials the endpoint through deploy/config's temporal
// settings and deploy/roles, as `keyflow serve` does.
func temporalClient(t testing.TB, c config.Temporal) (tclient.Client, error) {
	t.Helper()
	opts, err := roles.TemporalOptions(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tc, err := tclient.DialContext(ctx, opts)
	if err != nil {
		return nil, err
	}
	t.Cleanup(tc.Close)
	return tc, nil
}

func endpointConfig(ep temporalEndpoint) config.Temporal {
	return config.Temporal{Address: ep.Addr, Namespace: ep.Namespace, TLS: config.TLS{CAFile: ep.CAFile, CertFile: ep.CertFile, KeyFile: ep.KeyFile}}
}

// describeNamespace is one call that needs the frontend to accept us.
func describeNamespace(tc tclient.Client, ns string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := tc.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: ns})
	return err
}

// The external frontend takes only clients whose certificate its CA
// signed: with the operator's files the configured client works; without a
// client certificate, or with one from another CA, it is refused (issue
// 12: production Temporal certificates against an external server).
func TestTemporalPostgresRequiresClientCertificate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and a Temporal server")
	}
	ep := startTemporalPostgres(t)

	tc, err := temporalClient(t, endpointConfig(ep))
	if err != nil {
		t.Fatalf("the operator's client certificate was refused: %v", err)
	}
	if err := describeNamespace(tc, ep.Namespace); err != nil {
		t.Fatalf("describe namespace with the operator's certificate: %v", err)
	}

	other, err := temporalpg.WriteCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		tls  config.TLS
	}{
		{"no client certificate", config.TLS{CAFile: ep.CAFile}},
		{"a client certificate from another CA", config.TLS{CAFile: ep.CAFile, CertFile: other.ClientCertFile, KeyFile: other.ClientKeyFile}},
		{"the server's CA not trusted", config.TLS{CAFile: other.CAFile, CertFile: ep.CertFile, KeyFile: ep.KeyFile}},
	} {
		cfg := endpointConfig(ep)
		cfg.TLS = c.tls
		tc, err := temporalClient(t, cfg)
		if err == nil {
			err = describeNamespace(tc, ep.Namespace)
		}
		if err == nil {
			t.Errorf("%s: the frontend answered", c.name)
			continue
		}
		t.Logf("%s: refused: %v", c.name, err)
	}
	// And plaintext gRPC, as to the embedded server before issue 12.
	cfg := endpointConfig(ep)
	cfg.TLS = config.TLS{}
	if tc, err := temporalClient(t, cfg); err == nil {
		if err := describeNamespace(tc, ep.Namespace); err == nil {
			t.Error("plaintext: the frontend answered")
		}
	}

	// A lifecycle process given another CA's client certificate stops at
	// start and says why.
	rig := startLifecycleRig(t, temporalEndpoint{Addr: ep.Addr, Namespace: ep.Namespace, CAFile: ep.CAFile, CertFile: other.ClientCertFile, KeyFile: other.ClientKeyFile})
	out, err := rig.serveFails(t, "lifecycle")
	if err == nil || !strings.Contains(out, "failed to connect to Temporal at "+ep.Addr) {
		t.Fatalf("keyflow serve --roles lifecycle with another CA's certificate: %v\n%s", err, out)
	}
	t.Logf("keyflow serve refused at start: %s", strings.TrimSpace(out))
}

// A lifecycle worker (`keyflow serve --roles lifecycle`) reaches the
// PostgreSQL-backed Temporal through keyflow.yaml's temporal section and
// runs a real rotation for the admin role of another process: the new
// version is primary, old ciphertexts still decrypt, and the workflow's
// record is on the external server.
func TestLifecycleRotatesOnTemporalPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, a Temporal server and keyflow processes")
	}
	t0 := time.Now()
	ep := startTemporalPostgres(t)
	t.Logf("PostgreSQL and Temporal up in %v", time.Since(t0).Round(time.Millisecond))
	rig := startLifecycleRig(t, ep)
	t.Logf("rig up in %v", time.Since(t0).Round(time.Millisecond))
	rig.serve(t, "crypto,admin")
	rig.serve(t, "lifecycle")
	t.Logf("keyflow up in %v", time.Since(t0).Round(time.Millisecond))
	cl := rig.client(t)
	ctx := context.Background()

	key, err := cl.CreateKey(ctx, api.CreateKeyRequest{Description: "temporal on postgres"})
	if err != nil {
		t.Fatal(err)
	}
	before, err := cl.Encrypt(ctx, api.EncryptRequest{KeyID: key.KeyID, Plaintext: []byte("before the rotation")})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rot, err := cl.RotateKey(ctx, key.KeyID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rotation through Temporal on PostgreSQL: %v", time.Since(start).Round(time.Millisecond))
	if rot.Running || rot.PreviousVersion != 1 || rot.NewVersion != 2 {
		t.Fatalf("rotate = %+v, want version 1 → 2, finished", rot)
	}
	d, err := cl.DescribeKey(ctx, key.KeyID)
	if err != nil {
		t.Fatal(err)
	}
	if d.PrimaryVersion != 2 || len(d.Versions) != 2 {
		t.Fatalf("after rotation: primary %d, %d versions; want 2 and 2", d.PrimaryVersion, len(d.Versions))
	}
	dec, err := cl.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: before.CiphertextBlob})
	if err != nil || !bytes.Equal(dec.Plaintext, []byte("before the rotation")) {
		t.Fatalf("decrypt of a version-1 ciphertext: %q, %v", dec.Plaintext, err)
	}

	tc, err := temporalClient(t, endpointConfig(ep))
	if err != nil {
		t.Fatal(err)
	}
	desc, err := tc.DescribeWorkflowExecution(ctx, rot.WorkflowID, "")
	if err != nil {
		t.Fatal(err)
	}
	if st := desc.GetWorkflowExecutionInfo().GetStatus(); st != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
		t.Fatalf("workflow %s on the PostgreSQL server: %v", rot.WorkflowID, st)
	}
}

// kill -9 of the lifecycle worker in the middle of a rotation (after the
// workflow's first step completed, before its last): once a worker runs
// again, the rotation completes with exactly one new version.
func TestLifecycleWorkerKilledMidRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, a Temporal server and keyflow processes")
	}
	ep := startTemporalPostgres(t)
	rig := startLifecycleRig(t, ep)
	rig.serve(t, "crypto,admin")
	cl := rig.client(t)
	tc, err := temporalClient(t, endpointConfig(ep))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key, err := cl.CreateKey(ctx, api.CreateKeyRequest{Description: "killed mid-rotation"})
	if err != nil {
		t.Fatal(err)
	}
	wid := workflows.RotateKeyWorkflowID("default", key.KeyID)

	// The kill must land while the workflow runs; a rotation that
	// finished first is counted and another is tried.
	rotations, killedMid := 0, false
	for attempt := 0; attempt < 5 && !killedMid; attempt++ {
		worker := rig.serve(t, "lifecycle")
		done := make(chan error, 1)
		go func() {
			_, err := cl.RotateKey(ctx, key.KeyID)
			done <- err
		}()
		runID, err := waitFirstStep(ctx, tc, wid)
		if err != nil {
			t.Fatal(err)
		}
		worker.kill()
		rotations++
		desc, err := tc.DescribeWorkflowExecution(ctx, wid, runID)
		if err != nil {
			t.Fatal(err)
		}
		killedMid = desc.GetWorkflowExecutionInfo().GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING
		t.Logf("attempt %d: worker killed, workflow %v", attempt, desc.GetWorkflowExecutionInfo().GetStatus())

		start := time.Now()
		rig.serve(t, "lifecycle")
		var res workflows.RotateKeyResult
		wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		err = tc.GetWorkflow(wctx, wid, runID).Get(wctx, &res)
		cancel()
		if err != nil {
			t.Fatalf("the rotation did not complete after the restart: %v", err)
		}
		if res.NewVersion != res.PreviousVersion+1 || res.NewVersion != uint32(rotations+1) {
			t.Fatalf("rotation %d: %+v, want version %d → %d", rotations, res, rotations, rotations+1)
		}
		if err := <-done; err != nil {
			// The admin role waits 20 s at most and then reports the
			// rotation as running; it never fails it.
			t.Fatalf("rotate request: %v", err)
		}
		t.Logf("attempt %d: completed %v after the restart (version %d → %d)", attempt, time.Since(start).Round(time.Millisecond), res.PreviousVersion, res.NewVersion)
	}
	if !killedMid {
		t.Fatal("every rotation finished before the kill landed")
	}
	d, err := cl.DescribeKey(ctx, key.KeyID)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Versions) != rotations+1 || d.PrimaryVersion != uint32(rotations+1) {
		t.Fatalf("%d rotations left %d versions, primary %d; want exactly one new version each", rotations, len(d.Versions), d.PrimaryVersion)
	}
	// And the trail: one rotation.started and one key.rotated each, the
	// activities retried after the kill deduplicated.
	counts := map[string]int{}
	tail, err := cl.AuditTail(ctx, api.AuditTailRequest{KeyID: key.KeyID, Type: "io.keyflow.key.*", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range tail.Events {
		var ev struct{ Type, Outcome string }
		if err := json.Unmarshal(e.Event, &ev); err != nil {
			t.Fatal(err)
		}
		counts[ev.Type+"/"+ev.Outcome]++
	}
	if counts["io.keyflow.key.rotation.started.v1/success"] != rotations || counts["io.keyflow.key.rotated.v1/success"] != rotations {
		t.Fatalf("%d rotations, audit records %v; want one rotation.started and one key.rotated each", rotations, counts)
	}
}

// waitFirstStep polls the rotation's history until its first activity
// (rotation.started) completed, and returns the run.
func waitFirstStep(ctx context.Context, tc tclient.Client, wid string) (string, error) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		desc, err := tc.DescribeWorkflowExecution(ctx, wid, "")
		if err == nil {
			runID := desc.GetWorkflowExecutionInfo().GetExecution().GetRunId()
			it := tc.GetWorkflowHistory(ctx, wid, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
			for it.HasNext() {
				ev, err := it.Next()
				if err != nil {
					break
				}
				if ev.GetEventType() == enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED {
					return runID, nil
				}
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return "", errors.New("the rotation's first step did not complete within 1m")
}
