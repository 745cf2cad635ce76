package workflows

// Automatic propagation of a distributed key's lifecycle to its cloud
// destinations (docs/multi-cloud.md, "Lifecycle propagation"):
//
//   - a rotation, whether asked for (NATS, the AWS API's RotateKeyOnDemand,
//     KMIP re-key) or run by the key's schedule, ends with the step
//     "cloud-propagate" of RotateKeyWorkflow: an activity that starts the
//     key's CloudSyncWorkflow when the key has placements. It is part of
//     the rotation's durable history, so a crash after the switch to the
//     new version still propagates it.
//   - enable, disable, compromise, scheduled deletion and its cancellation
//     reach Client.KeyStateChanged (and a rotation or re-key also reaches
//     Client.KeyChanged) from the transport, which starts the same sync;
//     a disable or scheduled deletion approved under dual control starts
//     it from the approval workflow's activity (gates.go).
//
// Every start is a signal-with-start of the key's one sync workflow
// (CloudSyncWorkflowID): a sync already running takes one more round and
// reads keyflow's latest state, so nothing is lost and nothing runs twice
// at once. A start that fails (Temporal unreachable after the domain
// change) is caught by the scheduled reconcile, which reports the
// difference as drift and, in repair mode, repairs it.

import (
	"context"
	"fmt"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/keyflow/keyflow/kms"
)

// CloudPlacementReader lists a key's cloud placements (*kms.Service).
type CloudPlacementReader interface {
	CloudPlacements(ctx context.Context, c kms.Caller, keyID string) ([]*kms.CloudPlacement, error)
}

// cloudPropagateChange guards the rotation's propagation step (histories
// recorded before it have none).
const cloudPropagateChange = "cloud-propagate"

// propagateRotation is the rotation's last step before its rewrap: the
// new primary version goes to every destination the key is in. A failure
// to start the sync leaves the rotation done; it is reported in
// res.CloudProblem and the reconcile finds the version behind.
func propagateRotation(ctx workflow.Context, p RotateKeyParams, res *RotateKeyResult) {
	if workflow.GetVersion(ctx, cloudPropagateChange, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return
	}
	var a *Activities
	var id string
	q := CloudSyncParams{Tenant: p.Tenant, KeyID: p.KeyID, Principal: p.Principal, RequestID: p.RequestID, Step: CloudStepRotate}
	if err := workflow.ExecuteActivity(ctx, a.PropagateToClouds, q).Get(ctx, &id); err != nil {
		res.CloudProblem = failureMessage(err)
		return
	}
	res.CloudSync = id
}

// PropagateToClouds starts (or adds a round to) the key's cloud sync when
// the key is distributed anywhere, and returns the sync's workflow ID
// (empty when the key is in no destination).
func (a *Activities) PropagateToClouds(ctx context.Context, p CloudSyncParams) (string, error) {
	has, err := hasPlacements(ctx, a.KMS, cloudCaller(p.Tenant, p.Principal, p.RequestID), p.KeyID)
	if err != nil || !has {
		return "", activityError(err)
	}
	if a.Temporal == nil {
		return "", temporal.NewNonRetryableApplicationError("this worker starts no workflows; the reconcile will find the rotation", string(kms.CodeUnsupportedOperation), nil)
	}
	p.Destinations = nil
	if _, err := startCloudSync(ctx, a.Temporal, p); err != nil {
		return "", err
	}
	return CloudSyncWorkflowID(p.Tenant, p.KeyID), nil
}

// hasPlacements reports whether a key is distributed anywhere. A store
// that keeps no cloud placements has none.
func hasPlacements(ctx context.Context, r CloudPlacementReader, c kms.Caller, keyID string) (bool, error) {
	if r == nil {
		return false, nil
	}
	ps, err := r.CloudPlacements(ctx, c, keyID)
	switch {
	case kms.CodeOf(err) == kms.CodeUnsupportedOperation:
		return false, nil
	case err != nil:
		return false, err
	}
	return len(ps) > 0, nil
}

// cloudStepFor names the step a change of k is in the records.
func cloudStepFor(k *kms.Key) string {
	switch kms.WantedCloudState(k) {
	case kms.PlacementPendingDeletion:
		return CloudStepScheduleDeletion
	case kms.PlacementDisabled:
		return CloudStepDisable
	}
	return CloudStepSync
}

// stateToClouds starts the cloud sync of a key whose state an activity
// changed (an approved disable or deletion).
func (a *Activities) stateToClouds(ctx context.Context, c kms.Caller, k *kms.Key) error {
	if a.Temporal == nil {
		return nil // no workflows here; the reconcile finds the change
	}
	wc := &Client{Temporal: a.Temporal, Clouds: a.KMS}
	if err := wc.KeyStateChanged(ctx, c, k); err != nil {
		return temporal.NewApplicationError(err.Error(), string(kms.CodeInternal))
	}
	return nil
}

// KeyStateChanged carries a key's new state (enabled, disabled,
// compromised, pending deletion or no longer) to the clouds it is
// distributed to. A key in no destination costs one placement lookup.
func (c *Client) KeyStateChanged(ctx context.Context, kc kms.Caller, k *kms.Key) error {
	return c.syncClouds(ctx, kc, k, cloudStepFor(k))
}

// syncClouds starts the key's cloud sync when it has placements.
func (c *Client) syncClouds(ctx context.Context, kc kms.Caller, k *kms.Key, step string) error {
	if kc.Principal == "" {
		kc.Principal = SchedulerPrincipal
	}
	has, err := hasPlacements(ctx, c.Clouds, kms.Caller{Tenant: k.Tenant, Principal: kc.Principal, RequestID: kc.RequestID}, k.ID)
	if err != nil {
		return fmt.Errorf("failed to read the key's cloud placements: %w", err)
	}
	if !has {
		return nil
	}
	_, err = startCloudSync(ctx, c.Temporal, CloudSyncParams{Tenant: k.Tenant, KeyID: k.ID, Principal: kc.Principal, RequestID: kc.RequestID, Step: step})
	return err
}
