package workflows_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"

	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/cloud"
	"github.com/keyflow/keyflow/cloud/awskms"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/localkms"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
	"github.com/keyflow/keyflow/schemas"
	"github.com/keyflow/keyflow/workers/rpc"
	"github.com/keyflow/keyflow/workflows"
)

// cloudBed is the whole stack of cloud distribution: the real NATS server
// and rpc workers, a real Temporal server running the cloud workflows
// with the AWS connector, and local-kms.
func cloudBed(t testing.TB) (*testbed.Bed, *workflows.Client, *localkms.Server) {
	t.Helper()
	b := testbed.New(t)
	srv := localkms.Start(t)
	var ts *temporaltest.TestServer
	if tt, ok := t.(*testing.T); ok {
		ts = temporaltest.NewServer(temporaltest.WithT(tt))
	} else {
		ts = temporaltest.NewServer()
		t.Cleanup(ts.Stop)
	}
	tc := ts.GetDefaultClient()
	w := ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) {
		workflows.Register(r, &workflows.Activities{KMS: b.KMS, Temporal: tc, CloudConnect: awsConnect})
	})
	t.Cleanup(w.Stop)
	wc := &workflows.Client{Temporal: tc, Tokens: b.KMS, Clouds: b.KMS}
	rs, err := rpc.Start(rpc.Config{Conn: b.Conn, KMS: b.KMS, Tenants: b.Identity, JS: b.JS, Lifecycle: wc, Cloud: wc, Workers: 8,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rs.Stop)
	return b, wc, srv
}

// TestCloudDistributeOverNATS drives cloud distribution as a tenant does:
// a tenant admin registers local-kms, a key admin distributes an
// exportable key with --wait, the placement shows in key describe and
// cloud status, and a ciphertext local-kms makes with the distributed key
// opens with keyflow's HSM object of that version (and the reverse). Then
// the refusals, a provider refusal visible in cloud status, a provider
// outage found by the probe, undistribute and remove.
func TestCloudDistributeOverNATS(t *testing.T) {
	ctx := context.Background()
	b, wc, srv := cloudBed(t)
	tadmin := b.Principal("alpha", "tadmin", keypolicy.RoleTenantAdmin)
	kadmin := b.Principal("alpha", "kadmin", keypolicy.RoleKeyAdmin)
	auditor := b.Principal("alpha", "audit", keypolicy.RoleAuditor)

	d, err := tadmin.AddCloudDestination(ctx, api.CloudAddRequest{Name: "aws-local", Provider: "aws", Drift: "report", ReconcileEverySeconds: 3600,
		Settings: map[string]string{"region": "us-east-1", "endpoint": srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	if d.ReconcileEverySeconds != 3600 {
		t.Fatalf("added %+v", d)
	}
	// The reconcile is scheduled at the destination's period.
	sd, err := wc.Temporal.ScheduleClient().GetHandle(ctx, workflows.CloudReconcileScheduleID("alpha")).Describe(ctx)
	if err != nil {
		t.Fatalf("no reconcile schedule: %v", err)
	}
	if iv := sd.Schedule.Spec.Intervals; len(iv) != 1 || iv[0].Every.Seconds() != 3600 {
		t.Fatalf("reconcile schedule spec %+v", sd.Schedule.Spec)
	}

	k, err := kadmin.CreateKey(ctx, api.CreateKeyRequest{Alias: "billing", Exportable: true})
	if err != nil {
		t.Fatal(err)
	}
	r, err := kadmin.DistributeKey(ctx, "alias/billing", "aws-local", true)
	if err != nil {
		t.Fatal(err)
	}
	if r.Running || r.Placement == nil || r.WorkflowID != workflows.CloudSyncWorkflowID("alpha", k.KeyID) {
		t.Fatalf("distribute reply %+v", r)
	}
	alias := awskms.PrimaryAlias(k.KeyID)
	m, err := auditor.DescribeKey(ctx, "alias/billing")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Clouds) != 1 {
		t.Fatalf("describe: %+v", m.Clouds)
	}
	pl := m.Clouds[0]
	if pl.Destination != "aws-local" || pl.Provider != "aws" || pl.Resource != alias || pl.KeyVersion != 1 || !strings.HasPrefix(pl.ProviderVersion, "arn:aws:kms:") ||
		pl.State != kms.PlacementEnabled || pl.LastSync == nil || pl.Pending != "" || pl.LastErrorCode != "" || !m.Exportable {
		t.Fatalf("describe: placement %+v", pl)
	}
	st, err := auditor.CloudStatus(ctx, "aws-local", false)
	if err != nil {
		t.Fatal(err)
	}
	if s := st.Destinations[0]; s.Health != api.CloudHealthOK || s.Placements != 1 || len(s.Pending) != 0 || s.LastErrorCode != "" {
		t.Fatalf("status: %+v", s)
	}

	// The provider's ciphertexts open in keyflow's HSM, and keyflow's in
	// the provider.
	f := &cloudFixture{t: t, b: b, srv: srv, sdk: awsSDK(srv.URL)}
	if f.key, err = b.KMS.GetKey(ctx, alice, k.KeyID); err != nil {
		t.Fatal(err)
	}
	f.crossCheck(alias, 1)

	// Refusals before any workflow: a key that is not exportable, a spec
	// the connectors do not take, an unknown destination, a key not
	// there.
	plain, _ := kadmin.CreateKey(ctx, api.CreateKeyRequest{Alias: "plain"})
	mac, _ := kadmin.CreateKey(ctx, api.CreateKeyRequest{Alias: "mac", KeySpec: "HMAC_256", Exportable: true})
	for _, tc := range []struct {
		what, key, dest string
		undo            bool
		code            kms.Code
	}{
		{"not exportable", plain.KeyID, "aws-local", false, kms.CodeAccessDenied},
		{"HMAC", mac.KeyID, "aws-local", false, kms.CodeUnsupportedOperation},
		{"no such destination", k.KeyID, "azure-x", false, kms.CodeNotFound},
		{"not there", plain.KeyID, "aws-local", true, kms.CodeNotFound},
	} {
		call := kadmin.DistributeKey
		if tc.undo {
			call = kadmin.UndistributeKey
		}
		_, err := call(ctx, tc.key, tc.dest, true)
		wantCode(t, tc.what, err, tc.code)
		var found int
		for _, e := range b.EventsOfType("alpha", events.TypeRequestRejected) {
			if e.ErrorCode == string(tc.code) && e.Principal == "kadmin" && strings.HasPrefix(e.Data["operation"].(string), "cloud.") {
				found++
			}
		}
		if found == 0 {
			t.Errorf("%s: no record of the refusal", tc.what)
		}
	}
	if ps, _ := b.KMS.CloudPlacements(ctx, alice, plain.KeyID); len(ps) != 0 {
		t.Fatalf("a refused key has placements: %+v", ps)
	}

	// A provider that refuses (its key quota): the step fails at once, and
	// cloud status shows the provider's code.
	if _, err := tadmin.AddCloudDestination(ctx, api.CloudAddRequest{Name: "aws-quota", Provider: "aws",
		Settings: map[string]string{"region": "us-east-1", "endpoint": quotaProxy(t, srv.URL)}}); err != nil {
		t.Fatal(err)
	}
	// (Another key: local-kms behind the proxy already has billing's.)
	ledger, err := kadmin.CreateKey(ctx, api.CreateKeyRequest{Alias: "ledger", Exportable: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = kadmin.DistributeKey(ctx, "alias/ledger", "aws-quota", true)
	wantCode(t, "quota", err, kms.CodeCloudProvider)
	st, err = auditor.CloudStatus(ctx, "aws-quota", false)
	if err != nil {
		t.Fatal(err)
	}
	if s := st.Destinations[0]; s.Health != api.CloudHealthError || s.LastErrorCode != "LimitExceededException" || len(s.Pending) != 1 || s.Pending[0].KeyID != ledger.KeyID {
		t.Fatalf("status of a refusing provider: %+v", s)
	}
	// The failed placement can be cleared, and then the destination goes.
	if _, err := kadmin.UndistributeKey(ctx, "alias/ledger", "aws-quota", true); err != nil {
		t.Fatalf("undistribute a placement that never made it: %v", err)
	}
	if err := tadmin.RemoveCloudDestination(ctx, "aws-quota"); err != nil {
		t.Fatal(err)
	}

	// The provider goes down: the probe finds it, with its code, and
	// records the call.
	srv.Stop()
	st, err = auditor.CloudStatus(ctx, "aws-local", true)
	if err != nil {
		t.Fatal(err)
	}
	if s := st.Destinations[0]; s.Health != api.CloudHealthUnreachable || s.Probe == nil || s.Probe.ErrorCode != cloud.CodeUnavailable {
		t.Fatalf("status of a provider that is down: %+v (probe %+v)", s, s.Probe)
	}
	srv.Restart()
	st, err = auditor.CloudStatus(ctx, "aws-local", true)
	if err != nil {
		t.Fatal(err)
	}
	if s := st.Destinations[0]; s.Health != api.CloudHealthOK || s.Probe == nil || s.Probe.ErrorCode != "" {
		t.Fatalf("status after the provider returned: %+v (probe %+v)", s, s.Probe)
	}
	probes := map[string]int{}
	for _, e := range b.EventsOfType("alpha", events.TypeCloudCall) {
		if e.Data["step"] == "probe" {
			code, _ := e.Data["providerErrorCode"].(string)
			probes[code]++
		}
	}
	// The healthy probe's answer is AWS's "no such key" (the probe
	// describes a key nobody has), recorded as the provider gave it.
	if probes[cloud.CodeUnavailable] != 1 || probes["NotFoundException"] != 1 || len(probes) != 2 {
		t.Fatalf("probe records by provider code: %v", probes)
	}

	// The destination cannot be removed while it holds the key; after
	// undistribute it can, and the key is scheduled for deletion in the
	// provider.
	err = tadmin.RemoveCloudDestination(ctx, "aws-local")
	wantCode(t, "remove while placed", err, kms.CodeConflict)
	if _, err := kadmin.UndistributeKey(ctx, "alias/billing", "aws-local", true); err != nil {
		t.Fatal(err)
	}
	if m, _ := auditor.DescribeKey(ctx, "alias/billing"); len(m.Clouds) != 0 {
		t.Fatalf("describe after undistribute: %+v", m.Clouds)
	}
	desc, err := awskms.New(f.sdk).Describe(ctx, cloud.KeyRef{KeyID: k.KeyID, Versions: []string{pl.ProviderVersion}})
	if err != nil {
		t.Fatal(err)
	}
	if desc.Versions[pl.ProviderVersion] != cloud.StatePendingDeletion {
		t.Fatalf("the provider's key after undistribute: %+v", desc)
	}
	if err := tadmin.RemoveCloudDestination(ctx, "aws-local"); err != nil {
		t.Fatal(err)
	}
	for _, e := range b.Events("alpha") {
		if err := schemas.ValidateEvent(e.Raw); err != nil {
			t.Errorf("%s (%s): %v", e.Type, e.ErrorCode, err)
		}
	}
}
