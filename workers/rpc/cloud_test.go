package rpc_test

import (
	"context"
	"strings"
	"testing"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// The cloud endpoints without workflows: registration, its refusals and
// the roles, removal while keys are placed, and where a key lives in
// key describe and cloud status. (The distribution itself, through the
// workflows and local-kms, is workflows/cloud_nats_test.go.)

func TestCloudDestinationsOverNATS(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	ctx := context.Background()
	tadmin := b.Principal("alpha", "tadmin", keypolicy.RoleTenantAdmin)
	kadmin := b.Principal("alpha", "kadmin", keypolicy.RoleKeyAdmin)
	auditor := b.Principal("alpha", "audit", keypolicy.RoleAuditor)
	user := b.Principal("alpha", "app", keypolicy.RoleCryptoUser)

	d, err := tadmin.AddCloudDestination(ctx, api.CloudAddRequest{Name: "aws-prod", Provider: "aws", Drift: "repair",
		Settings: map[string]string{"region": "eu-west-1", "profile": "keyflow"}})
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "aws-prod" || d.Provider != "aws" || d.Drift != "repair" || d.Settings["region"] != "eu-west-1" || d.CreationDate.IsZero() {
		t.Fatalf("added %+v", d)
	}
	if _, err := tadmin.AddCloudDestination(ctx, api.CloudAddRequest{Name: "gcp-eu", Provider: "gcp", Settings: map[string]string{"project": "p", "location": "europe-west1", "keyRing": "kr"}}); err != nil {
		t.Fatal(err)
	}

	// Refusals: each with its stable code and its record.
	recT, recK, recA := &refusals{tenant: "alpha"}, &refusals{tenant: "alpha"}, &refusals{tenant: "alpha"}
	for _, tc := range []struct {
		what string
		req  api.CloudAddRequest
	}{
		{"unknown provider", api.CloudAddRequest{Name: "ibm", Provider: "ibm"}},
		{"a credential as a setting", api.CloudAddRequest{Name: "aws-x", Provider: "aws", Settings: map[string]string{"secretAccessKey": "wJalrXUtnFEMI"}}},
		{"a bad name", api.CloudAddRequest{Name: "Prod.X", Provider: "aws"}},
		{"a bad drift mode", api.CloudAddRequest{Name: "aws-x", Provider: "aws", Drift: "ignore"}},
		{"a reconcile period too short", api.CloudAddRequest{Name: "aws-x", Provider: "aws", ReconcileEverySeconds: 5}},
		{"a reconcile period with no workflows to run it", api.CloudAddRequest{Name: "aws-x", Provider: "aws", ReconcileEverySeconds: 3600}},
	} {
		_, err := tadmin.AddCloudDestination(ctx, tc.req)
		want := kms.CodeValidation
		if strings.HasPrefix(tc.what, "a reconcile period with") {
			want = kms.CodeInternal
		}
		ce := recT.add(t, err, want)
		if strings.Contains(ce.Message, "wJalrXUtnFEMI") {
			t.Errorf("%s: the refusal echoes the secret: %s", tc.what, ce.Message)
		}
	}
	for _, e := range b.EventsOfType("alpha", events.TypeCloudDestinationAdded) {
		if strings.Contains(string(e.Raw), "wJalrXUtnFEMI") {
			t.Error("a record holds the refused credential")
		}
	}

	// Roles: only tenant admins register and remove; key admins, auditors
	// and tenant admins read; crypto users do nothing here; only key
	// admins distribute.
	_, err = kadmin.AddCloudDestination(ctx, api.CloudAddRequest{Name: "aws-mine", Provider: "aws"})
	wantDenied(t, b, err, "alpha", "kadmin", "role:tenant-admin required")
	err = kadmin.RemoveCloudDestination(ctx, "aws-prod")
	wantDenied(t, b, err, "alpha", "kadmin", "role:tenant-admin required")
	_, err = user.ListCloudDestinations(ctx)
	wantDenied(t, b, err, "alpha", "app", "role:tenant-admin|key-admin|auditor required")
	_, err = user.CloudStatus(ctx, "", false)
	wantDenied(t, b, err, "alpha", "app", "role:tenant-admin|key-admin|auditor required")
	_, err = tadmin.DistributeKey(ctx, "alias/x", "aws-prod", false)
	wantDenied(t, b, err, "alpha", "tadmin", "role:key-admin required")
	_, err = auditor.UndistributeKey(ctx, "alias/x", "aws-prod", false)
	wantDenied(t, b, err, "alpha", "audit", "role:key-admin required")
	for _, c := range []interface {
		ListCloudDestinations(context.Context) (*api.CloudListReply, error)
	}{tadmin, kadmin, auditor} {
		l, err := c.ListCloudDestinations(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Destinations) != 2 || l.Destinations[0].Name != "aws-prod" || l.Destinations[1].Name != "gcp-eu" {
			t.Fatalf("list: %+v", l.Destinations)
		}
	}
	// The other tenant sees none of them.
	if l, err := b.Client("beta", "bob").ListCloudDestinations(ctx); err != nil || len(l.Destinations) != 0 {
		t.Fatalf("beta lists %+v, %v", l, err)
	}
	// A key admin without the cloud workflows cannot distribute.
	k, err := kadmin.CreateKey(ctx, api.CreateKeyRequest{Alias: "to-cloud", Exportable: true})
	if err != nil {
		t.Fatal(err)
	}
	if !k.Exportable {
		t.Fatal("key create --exportable made a key that is not exportable")
	}
	_, err = kadmin.DistributeKey(ctx, "alias/to-cloud", "aws-prod", false)
	recK.add(t, err, kms.CodeInternal)

	// A key placed in aws-prod (as the distribute workflow leaves it, with
	// a failure on record): key describe shows where it lives, cloud
	// status its pending work and error, and the destination cannot be
	// removed while it holds the key.
	c := kms.Caller{Tenant: "alpha", Principal: "kadmin", RequestID: "t1"}
	if _, err := b.KMS.UpdateCloudPlacement(ctx, c, k.KeyID, "aws-prod", "distribute", func(p *kms.CloudPlacement) error {
		p.Resource, p.Versions = "alias/keyflow/"+k.KeyID, []kms.CloudVersion{{KeyVersion: 1, ProviderVersion: "arn:aws:kms:eu-west-1:111122223333:key/k1"}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.KMS.NoteCloudError(ctx, c, k.KeyID, "aws-prod", "LimitExceededException", "the provider refused: quota"); err != nil {
		t.Fatal(err)
	}
	m, err := auditor.DescribeKey(ctx, "alias/to-cloud")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Clouds) != 1 {
		t.Fatalf("describe: clouds %+v", m.Clouds)
	}
	pl := m.Clouds[0]
	if pl.Destination != "aws-prod" || pl.Provider != "aws" || pl.Resource != "alias/keyflow/"+k.KeyID || pl.KeyVersion != 1 ||
		pl.ProviderVersion != "arn:aws:kms:eu-west-1:111122223333:key/k1" || pl.State != kms.PlacementEnabled ||
		pl.LastErrorCode != "LimitExceededException" || pl.LastErrorAt == nil {
		t.Fatalf("describe: placement %+v", pl)
	}
	st, err := auditor.CloudStatus(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Destinations) != 2 {
		t.Fatalf("status: %+v", st.Destinations)
	}
	aws, gcp := st.Destinations[0], st.Destinations[1]
	if aws.Name != "aws-prod" || aws.Health != api.CloudHealthError || aws.Placements != 1 || len(aws.Pending) != 1 || aws.LastErrorCode != "LimitExceededException" {
		t.Fatalf("status of aws-prod: %+v", aws)
	}
	if why := strings.Join(aws.Pending[0].Why, "; "); !strings.Contains(why, "last error LimitExceededException") {
		t.Fatalf("pending work of aws-prod: %q", why)
	}
	if gcp.Name != "gcp-eu" || gcp.Health != api.CloudHealthUnknown || gcp.Placements != 0 || len(gcp.Pending) != 0 {
		t.Fatalf("status of gcp-eu: %+v", gcp)
	}
	_, err = auditor.CloudStatus(ctx, "aws-prod", true)
	recA.add(t, err, kms.CodeInternal) // no workflows to probe with
	_, err = auditor.CloudStatus(ctx, "nowhere", false)
	wantErr(t, err, kms.CodeNotFound)

	// A destination that holds a key cannot move elsewhere; its drift
	// mode can change.
	_, err = tadmin.AddCloudDestination(ctx, api.CloudAddRequest{Name: "aws-prod", Provider: "aws", Settings: map[string]string{"region": "us-west-2", "profile": "keyflow"}})
	recT.add(t, err, kms.CodeConflict)
	if d, err := tadmin.AddCloudDestination(ctx, api.CloudAddRequest{Name: "aws-prod", Provider: "aws", Drift: "report",
		Settings: map[string]string{"region": "eu-west-1", "profile": "keyflow"}}); err != nil || d.Drift != "report" {
		t.Fatalf("changing the drift mode: %+v, %v", d, err)
	}

	err = tadmin.RemoveCloudDestination(ctx, "aws-prod")
	ce := wantErr(t, err, kms.CodeConflict)
	if !strings.Contains(ce.Message, k.KeyID) {
		t.Errorf("the refusal does not name the key: %s", ce.Message)
	}
	e := auditOf(t, b, "alpha", ce)
	if e.Type != events.TypeCloudDestinationRemoved || e.ErrorCode != string(kms.CodeConflict) || e.Data["placements"] != 1.0 {
		t.Fatalf("the refused removal's record: %s %s %v", e.Type, e.ErrorCode, e.Data)
	}
	if err := b.KMS.RemoveCloudPlacement(ctx, c, k.KeyID, "aws-prod"); err != nil {
		t.Fatal(err)
	}
	if err := tadmin.RemoveCloudDestination(ctx, "aws-prod"); err != nil {
		t.Fatal(err)
	}
	if l, _ := auditor.ListCloudDestinations(ctx); len(l.Destinations) != 1 {
		t.Fatalf("after remove: %+v", l.Destinations)
	}
	removed := 0
	for _, e := range b.EventsOfType("alpha", events.TypeCloudDestinationRemoved) {
		if e.Outcome == events.OutcomeSuccess && e.Data["destination"] == "aws-prod" && e.Principal == "tadmin" {
			removed++
		}
	}
	if removed != 1 {
		t.Fatalf("%d records of the removal, want 1", removed)
	}
	if m, _ := auditor.DescribeKey(ctx, "alias/to-cloud"); len(m.Clouds) != 0 {
		t.Fatalf("describe after undistribute: %+v", m.Clouds)
	}
	recT.check(t, b, "tadmin")
	recK.check(t, b, "kadmin")
	recA.check(t, b, "audit")
}
