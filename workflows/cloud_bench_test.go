package workflows_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssdk "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/keyflow/keyflow/cloud/awskms"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

// The figures of docs/multi-cloud.md, against local-kms:
//
//	go test -run '^$' -bench Cloud -benchtime 10x ./workflows/
//
// Each reports p50 (ms) of its own iterations next to a baseline from the
// same run: the bare SDK calls a distribution needs, with the material
// wrapped in Go (no keyflow, no workflow, no audit).

func newCloudFixtureB(b *testing.B) *cloudFixture { return newCloudFixture(b, kms.DriftReport, "") }

func median(ds []time.Duration) float64 {
	slices.Sort(ds)
	return float64(ds[len(ds)/2]) / float64(time.Millisecond)
}

func BenchmarkCloudDistribute(b *testing.B) {
	f := newCloudFixtureB(b)
	ctx := context.Background()
	var keyflow, bare []time.Duration
	for i := 0; i < b.N; i++ {
		k, err := f.b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Exportable: true})
		if err != nil {
			b.Fatal(err)
		}
		f.key = k
		start := time.Now()
		if _, err := f.sync(workflows.CloudStepDistribute); err != nil {
			b.Fatal(err)
		}
		keyflow = append(keyflow, time.Since(start))

		start = time.Now()
		bareImport(b, f.sdk, fmt.Sprintf("alias/bare/%d", i))
		bare = append(bare, time.Since(start))
	}
	b.ReportMetric(median(keyflow), "keyflow-p50-ms")
	b.ReportMetric(median(bare), "bare-sdk-p50-ms")
}

// bareImport is the baseline: CreateKey (EXTERNAL), CreateAlias,
// GetParametersForImport, ImportKeyMaterial with Go-side wrapping.
func bareImport(b *testing.B, c *awssdk.Client, alias string) {
	ctx := context.Background()
	k, err := c.CreateKey(ctx, &awssdk.CreateKeyInput{Origin: types.OriginTypeExternal})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.CreateAlias(ctx, &awssdk.CreateAliasInput{AliasName: aws.String(alias), TargetKeyId: k.KeyMetadata.KeyId}); err != nil {
		b.Fatal(err)
	}
	p, err := c.GetParametersForImport(ctx, &awssdk.GetParametersForImportInput{KeyId: k.KeyMetadata.KeyId, WrappingAlgorithm: types.AlgorithmSpecRsaesOaepSha256, WrappingKeySpec: types.WrappingKeySpecRsa2048})
	if err != nil {
		b.Fatal(err)
	}
	pub, _ := x509.ParsePKIXPublicKey(p.PublicKey)
	wrapped, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub.(*rsa.PublicKey), bytes.Repeat([]byte{7}, 32), nil)
	if _, err := c.ImportKeyMaterial(ctx, &awssdk.ImportKeyMaterialInput{KeyId: k.KeyMetadata.KeyId, ImportToken: p.ImportToken, EncryptedKeyMaterial: wrapped,
		ExpirationModel: types.ExpirationModelTypeKeyMaterialDoesNotExpire}); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkCloudRotationPropagation(b *testing.B) {
	f := newCloudFixtureB(b)
	if _, err := f.sync(workflows.CloudStepDistribute); err != nil {
		b.Fatal(err)
	}
	var prop []time.Duration
	for i := 0; i < b.N; i++ {
		env := f.env()
		env.ExecuteWorkflow(workflows.RotateKeyWorkflow, workflows.RotateKeyParams{Tenant: "alpha", KeyID: f.key.ID, Principal: "alice", RequestID: "r"})
		if err := env.GetWorkflowError(); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if _, err := f.sync(workflows.CloudStepRotate); err != nil {
			b.Fatal(err)
		}
		prop = append(prop, time.Since(start))
	}
	b.ReportMetric(median(prop), "propagate-p50-ms")
}

// BenchmarkCloudReconcile1000 reconciles 1,000 placements (AWS keys made
// directly in local-kms with their aliases, placements recorded as a
// distribution would) once per iteration, against the bare baseline of
// the same DescribeKey calls with the SDK alone.
func BenchmarkCloudReconcile1000(b *testing.B) {
	const n = 1000
	f := newCloudFixtureB(b)
	ctx := context.Background()
	arns := make([]string, n)
	for i := range n {
		k, err := f.b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
		if err != nil {
			b.Fatal(err)
		}
		out, err := f.sdk.CreateKey(ctx, &awssdk.CreateKeyInput{})
		if err != nil {
			b.Fatal(err)
		}
		arns[i] = aws.ToString(out.KeyMetadata.Arn)
		if _, err := f.sdk.CreateAlias(ctx, &awssdk.CreateAliasInput{AliasName: aws.String(awskms.PrimaryAlias(k.ID)), TargetKeyId: out.KeyMetadata.KeyId}); err != nil {
			b.Fatal(err)
		}
		if _, err := f.b.KMS.UpdateCloudPlacement(ctx, alice, k.ID, "aws-local", "", func(p *kms.CloudPlacement) error {
			p.Resource, p.State = awskms.PrimaryAlias(k.ID), kms.PlacementEnabled
			p.Versions = []kms.CloudVersion{{KeyVersion: 1, ProviderVersion: arns[i]}}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	var rec, bare []time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		env := f.env()
		env.ExecuteWorkflow(workflows.CloudReconcileWorkflow, workflows.CloudReconcileParams{Tenant: "alpha", Principal: "reconciler", RequestID: "rec"})
		var res workflows.CloudReconcileResult
		if err := env.GetWorkflowResult(&res); err != nil || res.Checked != n || res.Drifts != 0 {
			b.Fatalf("reconcile: %v %+v", err, res)
		}
		rec = append(rec, time.Since(start))
		start = time.Now()
		for _, arn := range arns {
			if _, err := f.sdk.DescribeKey(ctx, &awssdk.DescribeKeyInput{KeyId: aws.String(arn)}); err != nil {
				b.Fatal(err)
			}
			if _, err := f.sdk.DescribeKey(ctx, &awssdk.DescribeKeyInput{KeyId: aws.String(arn)}); err != nil {
				b.Fatal(err)
			}
		}
		bare = append(bare, time.Since(start))
	}
	b.ReportMetric(median(rec)/1000, "reconcile-1000-p50-s")
	b.ReportMetric(median(bare)/1000, "bare-2000-describes-p50-s")
}
