package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"go.temporal.io/server/temporaltest"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/rpc"
	"github.com/keyflow/keyflow/workflows"
)

// heldRotator runs rotations through a real Temporal server on which no
// worker polls, as while the lifecycle worker is down: every workflow
// outlives the wait.
type heldRotator struct{ c *workflows.Client }

func (r heldRotator) Rotate(ctx context.Context, c kms.Caller, keyID string) (*rpc.RotateResult, error) {
	_, id, err := r.c.RotateKey(ctx, workflows.RotateKeyParams{Tenant: c.Tenant, KeyID: keyID, Principal: c.Principal, RequestID: c.RequestID})
	if errors.Is(err, workflows.ErrStillRunning) {
		return &rpc.RotateResult{KeyID: keyID, WorkflowID: id, Running: true}, nil
	}
	return nil, err
}

// `keyflow key rotate` on a workflow that outlives the call returns at
// once with "still running: WORKFLOW_ID" and exit code 5, instead of
// waiting out its timeout; with -o json the reply says running.
func TestKeyRotateStillRunning(t *testing.T) {
	st := newAuditStack(t)
	k, err := st.kms.CreateKey(t.Context(), kms.Caller{Tenant: "alpha", Principal: "admin"}, kms.CreateKeyParams{Alias: "held"})
	if err != nil {
		t.Fatal(err)
	}
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	srv, err := rpc.Start(rpc.Config{Conn: st.nc, KMS: st.kms, Tenants: st.id,
		Rotator: heldRotator{&workflows.Client{Temporal: ts.GetDefaultClient(), RotateWait: 200 * time.Millisecond}},
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	wfID := workflows.RotateKeyWorkflowID("alpha", k.ID)

	stdout, stderr, code := st.run(t, "--creds", st.dir+"/admin.creds", "-o", "table", "key", "rotate", "held")
	if code != exitRunning || !strings.Contains(stderr, "still running: "+wfID) || stdout != "" {
		t.Fatalf("rotate: exit %d, stdout %q, stderr %q; want exit %d and \"still running: %s\"", code, stdout, stderr, exitRunning, wfID)
	}
	// The held workflow still runs: a second rotate is refused naming it.
	_, stderr, code = st.run(t, "--creds", st.dir+"/admin.creds", "key", "rotate", "held")
	if code != exitRefused || !strings.Contains(stderr, "already running: "+wfID) {
		t.Fatalf("second rotate: exit %d, stderr %q; want ConflictException naming %s", code, stderr, wfID)
	}
}
