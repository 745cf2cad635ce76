package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/cloud"
	"github.com/keyflow/keyflow/cloud/connect"
	"github.com/keyflow/keyflow/internal/localkms"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/rpc"
	"github.com/keyflow/keyflow/workflows"
)

// The cloud commands against a stack with the cloud workflows on a real
// Temporal server and local-kms behind the production connector
// (cloud/connect, credentials from a shared credentials file, as
// --setting credentialsFile=... names it).
func TestCloudCLI(t *testing.T) {
	st := newAuditStack(t)
	srv := localkms.Start(t)
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	tc := ts.GetDefaultClient()
	w := ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) {
		workflows.Register(r, &workflows.Activities{KMS: st.kms, Temporal: tc, CloudConnect: func(ctx context.Context, d *kms.CloudDestination) (cloud.Connector, error) {
			return connect.Open(ctx, d.Provider, d.Settings)
		}})
	})
	t.Cleanup(w.Stop)
	wc := &workflows.Client{Temporal: tc, Tokens: st.kms}
	rs, err := rpc.Start(rpc.Config{Conn: st.nc, KMS: st.kms, Tenants: st.id, Lifecycle: wc, Cloud: wc,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rs.Stop)
	credFile := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(credFile, []byte("[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, string, int) {
		t.Helper()
		return st.run(t, append([]string{"--creds", st.dir + "/admin.creds"}, args...)...)
	}
	mustRun := func(args ...string) string {
		t.Helper()
		out, errs, code := run(args...)
		if code != exitOK {
			t.Fatalf("keyflow %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
		}
		return out
	}

	out := mustRun("-o", "table", "cloud", "add", "aws-local", "--provider", "aws", "--setting", "region=us-east-1",
		"--setting", "endpoint="+srv.URL, "--setting", "credentialsFile="+credFile, "--drift", "repair", "--reconcile-every", "10m")
	if !strings.Contains(out, "aws-local") || !strings.Contains(out, "repair") || !strings.Contains(out, "10m0s") {
		t.Fatalf("cloud add printed:\n%s", out)
	}
	var list api.CloudListReply
	if err := json.Unmarshal([]byte(mustRun("cloud", "list")), &list); err != nil || len(list.Destinations) != 1 || list.Destinations[0].Settings["endpoint"] != srv.URL {
		t.Fatalf("cloud list: %+v, %v", list, err)
	}

	keyID := strings.TrimSpace(mustRun("-o", "raw", "key", "create", "--alias", "billing", "--exportable"))
	var r api.CloudDistributeReply
	if err := json.Unmarshal([]byte(mustRun("key", "distribute", "billing", "--to", "aws-local", "--wait")), &r); err != nil {
		t.Fatal(err)
	}
	if r.KeyID != keyID || r.Running || r.Placement == nil || r.Placement.Resource != "alias/keyflow/"+keyID || r.Placement.State != "ENABLED" {
		t.Fatalf("key distribute: %+v", r)
	}
	out = mustRun("-o", "table", "key", "describe", "billing")
	if !strings.Contains(out, "CLOUD DESTINATION") || !strings.Contains(out, "alias/keyflow/"+keyID) || !strings.Contains(out, r.Placement.ProviderVersion) {
		t.Fatalf("key describe does not show where the key lives:\n%s", out)
	}
	out = mustRun("-o", "table", "cloud", "status")
	if f := strings.Fields(strings.Split(out, "\n")[1]); len(f) < 5 || f[0] != "aws-local" || f[2] != "ok" || f[3] != "1" || f[4] != "0" {
		t.Fatalf("cloud status:\n%s", out)
	}

	// Refusals: a key that is not exportable; a destination that still
	// holds a key.
	mustRun("key", "create", "--alias", "plain")
	_, errs, code := run("key", "distribute", "plain", "--to", "aws-local")
	if code != exitRefused || !strings.Contains(errs, string(kms.CodeAccessDenied)) || !strings.Contains(errs, "exportable") {
		t.Fatalf("distribute a key that is not exportable: exit %d, %s", code, errs)
	}
	_, errs, code = run("cloud", "remove", "aws-local")
	if code != exitRefused || !strings.Contains(errs, string(kms.CodeConflict)) || !strings.Contains(errs, keyID) {
		t.Fatalf("remove a destination that holds a key: exit %d, %s", code, errs)
	}

	// The provider goes away: status --probe says so, with its code.
	srv.Stop()
	out = mustRun("-o", "table", "cloud", "status", "aws-local", "--probe")
	if !strings.Contains(out, "unreachable") || !strings.Contains(out, "Unavailable (probe)") {
		t.Fatalf("cloud status --probe with the provider down:\n%s", out)
	}
	srv.Restart()

	mustRun("key", "undistribute", "billing", "--from", "aws-local", "--wait")
	out = mustRun("-o", "table", "key", "describe", "billing")
	if strings.Contains(out, "CLOUD DESTINATION") {
		t.Fatalf("key describe after undistribute:\n%s", out)
	}
	mustRun("cloud", "remove", "aws-local")
	if err := json.Unmarshal([]byte(mustRun("cloud", "list")), &list); err != nil || len(list.Destinations) != 0 {
		t.Fatalf("cloud list after remove: %+v, %v", list, err)
	}
}
