package awskms_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskmssdk "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// TestSDKMultiRegion drives the multi-Region operations with the real AWS
// SDK against one region's gateway: CreateKey MultiRegion=true, DescribeKey's
// MultiRegionConfiguration, ReplicateKey, and UpdatePrimaryRegion refused
// while the replica lacks versions, and a destroyed replica left out of
// ReplicaKeys. (Replication itself, across two linked
// deployments, is region's TestMultiRegion.)
func TestSDKMultiRegion(t *testing.T) {
	ctx := context.Background()
	var shift atomic.Int64
	bed := testbed.NewWith(t, testbed.Options{Region: "us-east", Now: func() time.Time { return time.Now().Add(time.Duration(shift.Load())) }})
	f := newFixtureOn(t, bed)
	admin := f.client(t, "alpha", "ada", keypolicy.RoleKeyAdmin)

	ck := must[*awskmssdk.CreateKeyOutput](t)(admin.CreateKey(ctx, &awskmssdk.CreateKeyInput{MultiRegion: aws.Bool(true)}))
	keyID := *ck.KeyMetadata.KeyId
	mr := ck.KeyMetadata.MultiRegionConfiguration
	if !*ck.KeyMetadata.MultiRegion || mr == nil || mr.MultiRegionKeyType != types.MultiRegionKeyTypePrimary || *mr.PrimaryKey.Region != "us-east" || len(mr.ReplicaKeys) != 0 {
		t.Fatalf("CreateKey: %+v", ck.KeyMetadata)
	}
	rk := must[*awskmssdk.ReplicateKeyOutput](t)(admin.ReplicateKey(ctx, &awskmssdk.ReplicateKeyInput{KeyId: aws.String(keyID), ReplicaRegion: aws.String("eu-west")}))
	if *rk.ReplicaKeyMetadata.KeyId != keyID || *rk.ReplicaKeyMetadata.Arn != "arn:aws:kms:eu-west:"+*rk.ReplicaKeyMetadata.AWSAccountId+":key/"+keyID ||
		rk.ReplicaKeyMetadata.MultiRegionConfiguration.MultiRegionKeyType != types.MultiRegionKeyTypeReplica {
		t.Fatalf("ReplicateKey: %+v", rk.ReplicaKeyMetadata)
	}
	d := must[*awskmssdk.DescribeKeyOutput](t)(admin.DescribeKey(ctx, &awskmssdk.DescribeKeyInput{KeyId: aws.String(keyID)}))
	if rs := d.KeyMetadata.MultiRegionConfiguration.ReplicaKeys; len(rs) != 1 || *rs[0].Region != "eu-west" {
		t.Fatalf("DescribeKey replicas: %+v", rs)
	}
	_, err := admin.UpdatePrimaryRegion(ctx, &awskmssdk.UpdatePrimaryRegionInput{KeyId: aws.String(keyID), PrimaryRegion: aws.String("eu-west")})
	wantCode(t, err, "KMSInvalidStateException")

	// A replica whose deletion ended is no longer listed, as AWS removes
	// a deleted replica (the primary keeps it as DESTROYED).
	if _, err := bed.KMS.ScheduleReplicaDeletion(ctx, kms.Caller{Tenant: "alpha", Principal: "ada"}, keyID, "eu-west", 7*kms.Day); err != nil {
		t.Fatal(err)
	}
	shift.Store(int64(7*kms.Day + time.Minute))
	_, err = bed.KMS.MarkReplicaDestroyed(ctx, kms.Caller{Tenant: "alpha", Principal: "region:eu-west"}, kms.ReplicaDestroyedParams{From: "eu-west", KeyID: keyID})
	shift.Store(0)
	if err != nil {
		t.Fatal(err)
	}
	d = must[*awskmssdk.DescribeKeyOutput](t)(admin.DescribeKey(ctx, &awskmssdk.DescribeKeyInput{KeyId: aws.String(keyID)}))
	if rs := d.KeyMetadata.MultiRegionConfiguration.ReplicaKeys; len(rs) != 0 {
		t.Fatalf("DescribeKey lists a destroyed replica: %+v", rs)
	}

	// A single-region key says so; an asymmetric multi-Region key is refused.
	single := must[*awskmssdk.CreateKeyOutput](t)(admin.CreateKey(ctx, &awskmssdk.CreateKeyInput{}))
	if *single.KeyMetadata.MultiRegion || single.KeyMetadata.MultiRegionConfiguration != nil {
		t.Fatalf("single-region key: %+v", single.KeyMetadata)
	}
	_, err = admin.CreateKey(ctx, &awskmssdk.CreateKeyInput{MultiRegion: aws.Bool(true), KeySpec: types.KeySpecEccNistP256, KeyUsage: types.KeyUsageTypeSignVerify})
	wantCode(t, err, "UnsupportedOperationException")
}
