package awskms_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskmssdk "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
	"github.com/keyflow/keyflow/workers/awskms"
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
	if !*ck.KeyMetadata.MultiRegion || mr == nil || mr.MultiRegionKeyType != types.MultiRegionKeyTypePrimary || *mr.PrimaryKey.Region != "us-east" || len(mr.ReplicaKeys) != 0 ||
		*mr.PrimaryKey.Arn != *ck.KeyMetadata.Arn || f.gw.Region() != "us-east" {
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

// errMessage is the message of an AWS error reply (after wantCode).
func errMessage(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorMessage()
	}
	return ""
}

// TestSDKReplicaDeletionByARN drives a multi-Region key's deletion with the
// real AWS SDK against two regions' gateways (us-east, the primary, and
// eu-west, which holds a replica made by the domain's replication steps):
//   - ScheduleKeyDeletion of the primary is refused while it has replicas
//     that are not destroyed (KMSInvalidStateException naming them and the
//     way to delete them), and scheduled once they are;
//   - in the primary's region, ScheduleKeyDeletion and CancelKeyDeletion
//     on a replica's ARN are that replica's deletion and its cancel, with
//     the replica's ARN and its own deletion date in the reply;
//   - in the replica's region, the same call on its own ARN is refused,
//     naming the primary's region; DescribeKey there shows REPLICA with the
//     primary's ARN;
//   - an ARN of a region with no replica, or of another account, names no
//     key, and other operations on a replica's ARN are NotFound.
func TestSDKReplicaDeletionByARN(t *testing.T) {
	ctx := context.Background()
	var shift atomic.Int64
	a := testbed.NewWith(t, testbed.Options{Region: "us-east", Now: func() time.Time { return time.Now().Add(time.Duration(shift.Load())) }})
	b := testbed.NewWith(t, testbed.Options{Region: "eu-west"})
	fa, fb := newFixtureOn(t, a), newFixtureOn(t, b)
	adminA := fa.client(t, "alpha", "ada", keypolicy.RoleKeyAdmin)
	adminB := fb.client(t, "alpha", "ada", keypolicy.RoleKeyAdmin)
	ada := kms.Caller{Tenant: "alpha", Principal: "ada"}

	ck := must[*awskmssdk.CreateKeyOutput](t)(adminA.CreateKey(ctx, &awskmssdk.CreateKeyInput{MultiRegion: aws.Bool(true)}))
	keyID, primaryARN := *ck.KeyMetadata.KeyId, *ck.KeyMetadata.Arn
	replicaARN := map[string]string{}
	for _, r := range []string{"eu-west", "ap-south"} {
		rk := must[*awskmssdk.ReplicateKeyOutput](t)(adminA.ReplicateKey(ctx, &awskmssdk.ReplicateKeyInput{KeyId: aws.String(keyID), ReplicaRegion: aws.String(r)}))
		replicaARN[r] = *rk.ReplicaKeyMetadata.Arn
	}
	// eu-west gets version 1 the way the replication workflow sends it.
	params := must[*kms.ImportParameters](t)(b.KMS.ReplicaImportParameters(ctx, ada, keyID))
	rv := must[*kms.ReplicaVersion](t)(a.KMS.ExportReplicaVersion(ctx, ada, kms.ExportReplicaParams{KeyID: keyID, Region: "eu-west", Version: 1, PublicKey: params.PublicKey}))
	meta := must[*kms.Key](t)(a.KMS.GetKey(ctx, ada, keyID))
	must[*kms.ApplyResult](t)(b.KMS.ApplyReplicaVersion(ctx, ada, kms.ApplyReplicaParams{From: "us-east", Key: meta, Version: 1, Wrapped: rv.Wrapped, ImportToken: params.ImportToken}))

	// The replica region's view: REPLICA, its own ARN, the primary's ARN.
	d := must[*awskmssdk.DescribeKeyOutput](t)(adminB.DescribeKey(ctx, &awskmssdk.DescribeKeyInput{KeyId: aws.String(replicaARN["eu-west"])}))
	if mr := d.KeyMetadata.MultiRegionConfiguration; *d.KeyMetadata.Arn != replicaARN["eu-west"] || mr == nil || mr.MultiRegionKeyType != types.MultiRegionKeyTypeReplica ||
		*mr.PrimaryKey.Arn != primaryARN || *mr.PrimaryKey.Region != "us-east" {
		t.Fatalf("DescribeKey in the replica region: %+v %+v", d.KeyMetadata, d.KeyMetadata.MultiRegionConfiguration)
	}
	// ... where its own deletion is refused, naming the primary's region.
	_, err := adminB.ScheduleKeyDeletion(ctx, &awskmssdk.ScheduleKeyDeletionInput{KeyId: aws.String(replicaARN["eu-west"]), PendingWindowInDays: aws.Int32(7)})
	wantCode(t, err, "UnsupportedOperationException")
	if !strings.Contains(errMessage(err), "us-east") {
		t.Errorf("the replica region's refusal does not name the primary's region: %s", errMessage(err))
	}

	// The primary with live replicas: refused, naming them.
	scheduleSelf := func() (*awskmssdk.ScheduleKeyDeletionOutput, error) {
		return adminA.ScheduleKeyDeletion(ctx, &awskmssdk.ScheduleKeyDeletionInput{KeyId: aws.String(primaryARN), PendingWindowInDays: aws.Int32(7)})
	}
	_, err = scheduleSelf()
	wantCode(t, err, "KMSInvalidStateException")
	if m := errMessage(err); !strings.Contains(m, "eu-west") || !strings.Contains(m, "ap-south") || !strings.Contains(m, "ScheduleKeyDeletion with the replica's ARN") {
		t.Errorf("the primary's refusal: %s", m)
	}

	// A replica's ARN in the primary's region: the replica's deletion.
	replicaState := func(region string) kms.Replica {
		t.Helper()
		r, _ := must[*kms.Key](t)(a.KMS.GetKey(ctx, ada, keyID)).ReplicaIn(region)
		return r
	}
	before := time.Now()
	sd := must[*awskmssdk.ScheduleKeyDeletionOutput](t)(adminA.ScheduleKeyDeletion(ctx, &awskmssdk.ScheduleKeyDeletionInput{KeyId: aws.String(replicaARN["eu-west"]), PendingWindowInDays: aws.Int32(7)}))
	if *sd.KeyId != replicaARN["eu-west"] || sd.KeyState != types.KeyStatePendingDeletion || *sd.PendingWindowInDays != 7 ||
		sd.DeletionDate.Before(before.Add(7*kms.Day-time.Second)) || sd.DeletionDate.After(time.Now().Add(7*kms.Day)) {
		t.Fatalf("ScheduleKeyDeletion of the replica: %+v", sd)
	}
	if r := replicaState("eu-west"); r.State != kms.ReplicaPendingDeletion || !r.DeletionDate.Equal(*sd.DeletionDate) {
		t.Fatalf("the replica after ScheduleKeyDeletion: %+v", r)
	}
	if p := must[*awskmssdk.DescribeKeyOutput](t)(adminA.DescribeKey(ctx, &awskmssdk.DescribeKeyInput{KeyId: aws.String(keyID)})); p.KeyMetadata.KeyState != types.KeyStateEnabled {
		t.Fatalf("the primary after its replica's deletion was scheduled: %s", p.KeyMetadata.KeyState)
	}
	ca := must[*awskmssdk.CancelKeyDeletionOutput](t)(adminA.CancelKeyDeletion(ctx, &awskmssdk.CancelKeyDeletionInput{KeyId: aws.String(replicaARN["eu-west"])}))
	if *ca.KeyId != replicaARN["eu-west"] || replicaState("eu-west").State != kms.ReplicaDisabled {
		t.Fatalf("CancelKeyDeletion of the replica: %s %+v", *ca.KeyId, replicaState("eu-west"))
	}
	_, err = adminA.CancelKeyDeletion(ctx, &awskmssdk.CancelKeyDeletionInput{KeyId: aws.String(replicaARN["eu-west"])})
	wantCode(t, err, "KMSInvalidStateException")

	// ARNs that name no replica, and other operations on a replica's ARN.
	noReplica := "arn:aws:kms:sa-east:" + awskms.AccountID("alpha") + ":key/" + keyID
	_, err = adminA.ScheduleKeyDeletion(ctx, &awskmssdk.ScheduleKeyDeletionInput{KeyId: aws.String(noReplica), PendingWindowInDays: aws.Int32(7)})
	wantCode(t, err, "NotFoundException")
	otherAccount := "arn:aws:kms:eu-west:" + awskms.AccountID("beta") + ":key/" + keyID
	_, err = adminA.ScheduleKeyDeletion(ctx, &awskmssdk.ScheduleKeyDeletionInput{KeyId: aws.String(otherAccount), PendingWindowInDays: aws.Int32(7)})
	wantCode(t, err, "NotFoundException")
	_, err = adminA.DescribeKey(ctx, &awskmssdk.DescribeKeyInput{KeyId: aws.String(replicaARN["eu-west"])})
	wantCode(t, err, "NotFoundException")
	single := must[*awskmssdk.CreateKeyOutput](t)(adminA.CreateKey(ctx, &awskmssdk.CreateKeyInput{}))
	_, err = adminA.ScheduleKeyDeletion(ctx, &awskmssdk.ScheduleKeyDeletionInput{KeyId: aws.String("arn:aws:kms:eu-west:" + awskms.AccountID("alpha") + ":key/" + *single.KeyMetadata.KeyId)})
	wantCode(t, err, "UnsupportedOperationException")
	if !strings.Contains(errMessage(err), "not a multi-region key") {
		t.Errorf("another region's ARN of a single-region key: %s", errMessage(err))
	}

	// Both replicas deleted (AWS's default window of 30 days), then the
	// primary's deletion is scheduled.
	for _, r := range []string{"eu-west", "ap-south"} {
		sd := must[*awskmssdk.ScheduleKeyDeletionOutput](t)(adminA.ScheduleKeyDeletion(ctx, &awskmssdk.ScheduleKeyDeletionInput{KeyId: aws.String(replicaARN[r])}))
		if *sd.PendingWindowInDays != 30 {
			t.Fatalf("default window: %+v", sd)
		}
	}
	_, err = scheduleSelf()
	wantCode(t, err, "KMSInvalidStateException")
	shift.Store(int64(30*kms.Day + time.Minute))
	for _, r := range []string{"eu-west", "ap-south"} {
		if _, err := a.KMS.MarkReplicaDestroyed(ctx, kms.Caller{Tenant: "alpha", Principal: "region:" + r}, kms.ReplicaDestroyedParams{From: r, KeyID: keyID}); err != nil {
			t.Fatal(err)
		}
	}
	shift.Store(0)
	if own := must[*awskmssdk.ScheduleKeyDeletionOutput](t)(scheduleSelf()); *own.KeyId != primaryARN || own.KeyState != types.KeyStatePendingDeletion {
		t.Fatalf("the primary's deletion once its replicas are destroyed: %+v", own)
	}

	// Every step is in the primary's audit trail, refusals included.
	count := func(typ, outcome string) (n int) {
		for _, e := range a.EventsOfType("alpha", typ) {
			if e.Outcome == outcome && strings.HasSuffix(e.Subject, keyID) {
				n++
			}
		}
		return n
	}
	for _, c := range []struct {
		typ, outcome string
		want         int
	}{
		{events.TypeKeyDeletionScheduled, "failure", 2},
		{events.TypeKeyDeletionScheduled, "success", 1},
		{events.TypeKeyReplicaDeletionScheduled, "success", 3},
		{events.TypeKeyReplicaDeletionCancelled, "success", 1},
		{events.TypeKeyReplicaDeletionCancelled, "failure", 1},
	} {
		if got := count(c.typ, c.outcome); got != c.want {
			t.Errorf("%d %s records with outcome %s, want %d", got, c.typ, c.outcome, c.want)
		}
	}
}
