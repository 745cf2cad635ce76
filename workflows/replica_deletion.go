package workflows

// The deletion of one replica of a multi-region key (kms/replica_deletion.go,
// docs/multi-region.md) reuses the standard deletion: the replica region's
// transport (package region) starts DeletionWorkflow on the replica
// region's own Temporal when the primary's metadata makes the replica
// pending deletion, and stops it when a cancel arrives. The workflow's
// last step, for a replica only, reports the destruction to the primary
// over the link and records it in the replica region.

import (
	"context"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/keyflow/keyflow/kms"
)

// replicaDestroyedChange guards the report step (histories recorded
// before it have none).
const replicaDestroyedChange = "replica-destroyed"

// reportReplicaDestroyed runs ReportReplicaDestroyed, which does nothing
// for a key that is not a replica. Like the sync, it retries without end
// while the link is down: the primary learns of the destruction once the
// link is back.
func reportReplicaDestroyed(ctx workflow.Context, step DestroyStep) error {
	if workflow.GetVersion(ctx, replicaDestroyedChange, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return nil
	}
	var a *Activities
	return workflow.ExecuteActivity(linkOptions(ctx, 0), a.ReportReplicaDestroyed, step).Get(ctx, nil)
}

// ReportReplicaDestroyed tells the primary region of a destroyed replica
// that its material is gone (kms.MarkReplicaDestroyed there), then records
// io.keyflow.key.replica.destroyed.v1 here. A key that is not a replica
// here, or not destroyed, is left alone.
func (a *Activities) ReportReplicaDestroyed(ctx context.Context, s DestroyStep) error {
	k, err := a.KMS.GetKey(ctx, kms.Caller{Tenant: s.Tenant, Principal: "keyflow-replication"}, s.KeyID)
	if err != nil {
		return activityError(err)
	}
	if !a.KMS.IsReplica(k) || (k.State != kms.StateDestroyed && k.State != kms.StateDestroyedCompromised) {
		return nil
	}
	if a.Replicas == nil {
		return temporal.NewNonRetryableApplicationError("this worker has no region link to report the replica's destruction", string(kms.CodeUnsupportedOperation), nil)
	}
	if _, err := a.Replicas.ReplicaDestroyed(ctx, k.PrimaryRegion, s.Tenant, s.KeyID); err != nil {
		return linkError(err)
	}
	return activityError(a.KMS.RecordReplicaDestroyed(ctx, destroyCaller(ctx, s), s.KeyID))
}
