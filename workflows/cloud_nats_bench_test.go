package workflows_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// The API's figures (docs/multi-cloud.md), against local-kms and a real
// Temporal server:
//
//	go test -run '^$' -bench CloudAPI -benchtime 10x ./workflows/
//
// BenchmarkCloudAPIDistribute: `key distribute --wait` through NATS, the
// rpc worker, the Temporal server and the workflow, next to the bare SDK
// calls of a distribution in the same run. BenchmarkCloudAPIStatus:
// `cloud status` of a destination holding 1,000 keys, next to the domain
// listing the same placements without NATS.

func BenchmarkCloudAPIDistribute(b *testing.B) {
	ctx := context.Background()
	bed, _, srv := cloudBed(b)
	tadmin := bed.Principal("alpha", "tadmin", keypolicy.RoleTenantAdmin)
	kadmin := bed.Principal("alpha", "kadmin", keypolicy.RoleKeyAdmin)
	if _, err := tadmin.AddCloudDestination(ctx, api.CloudAddRequest{Name: "aws-local", Provider: "aws",
		Settings: map[string]string{"region": "us-east-1", "endpoint": srv.URL}}); err != nil {
		b.Fatal(err)
	}
	sdk := awsSDK(srv.URL)
	var viaAPI, bare []time.Duration
	for i := 0; i < b.N; i++ {
		k, err := bed.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Exportable: true})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		r, err := kadmin.DistributeKey(ctx, k.ID, "aws-local", true)
		if err != nil || r.Placement == nil {
			b.Fatalf("distribute: %+v, %v", r, err)
		}
		viaAPI = append(viaAPI, time.Since(start))
		start = time.Now()
		bareImport(b, sdk, fmt.Sprintf("alias/bare-api/%d", i))
		bare = append(bare, time.Since(start))
	}
	b.ReportMetric(median(viaAPI), "api-p50-ms")
	b.ReportMetric(median(bare), "bare-sdk-p50-ms")
}

func BenchmarkCloudAPIStatus(b *testing.B) {
	ctx := context.Background()
	bed := testbed.New(b)
	bed.StartRPC(nil)
	auditor := bed.Principal("alpha", "audit", keypolicy.RoleAuditor)
	if _, err := bed.KMS.AddCloudDestination(ctx, alice, kms.CloudDestination{Name: "aws-prod", Provider: "aws", Settings: map[string]string{"region": "eu-west-1"}}); err != nil {
		b.Fatal(err)
	}
	const n = 1000
	for i := range n {
		k, err := bed.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Exportable: true})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := bed.KMS.UpdateCloudPlacement(ctx, alice, k.ID, "aws-prod", "", func(p *kms.CloudPlacement) error {
			p.Resource, p.Versions = "alias/keyflow/"+k.ID, []kms.CloudVersion{{KeyVersion: 1, ProviderVersion: fmt.Sprintf("k%d", i)}}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	var status, list []time.Duration
	for b.Loop() {
		start := time.Now()
		st, err := auditor.CloudStatus(ctx, "aws-prod", false)
		if err != nil || st.Destinations[0].Placements != n {
			b.Fatalf("status: %v", err)
		}
		status = append(status, time.Since(start))
		start = time.Now()
		if ps, err := bed.KMS.CloudPlacements(ctx, alice, ""); err != nil || len(ps) != n {
			b.Fatalf("placements: %d, %v", len(ps), err)
		}
		list = append(list, time.Since(start))
	}
	b.ReportMetric(median(status), "status-p50-ms")
	b.ReportMetric(median(list), "list-placements-p50-ms")
}
