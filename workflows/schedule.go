package workflows

import (
	"context"
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
)

// RotationScheduleID is the ID of a key's rotation schedule.
func RotationScheduleID(tenant, keyID string) string { return "rotation/" + tenant + "/" + keyID }

// ScheduledRotationWorkflowID is the workflow ID prefix of the rotations a
// schedule starts (Temporal appends the scheduled time).
func ScheduledRotationWorkflowID(tenant, keyID string) string {
	return "scheduled-rotate/" + tenant + "/" + keyID
}

// SetRotationSchedule makes the key's Temporal Schedule rotate it every
// period, creating or updating it; a zero period deletes it. The schedule
// runs RotateKeyWorkflow as SchedulerPrincipal, skips a rotation while the
// previous one still runs, and belongs to the key: destruction deletes it.
func (c *Client) SetRotationSchedule(ctx context.Context, tenant, keyID string, period time.Duration) error {
	sc := c.Temporal.ScheduleClient()
	id := RotationScheduleID(tenant, keyID)
	if period <= 0 {
		err := sc.GetHandle(ctx, id).Delete(ctx)
		if err != nil && !isNotFound(err) {
			return fmt.Errorf("failed to delete the rotation schedule: %w", err)
		}
		return nil
	}
	spec := client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: period}}}
	_, err := sc.Create(ctx, client.ScheduleOptions{
		ID:      id,
		Spec:    spec,
		Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_SKIP,
		Action: &client.ScheduleWorkflowAction{
			ID:        ScheduledRotationWorkflowID(tenant, keyID),
			Workflow:  RotateKeyWorkflow,
			Args:      []any{RotateKeyParams{Tenant: tenant, KeyID: keyID, Principal: SchedulerPrincipal, RequestID: id}},
			TaskQueue: TaskQueue,
		},
		Note: "keyflow automatic rotation",
	})
	if err = updateSpecIfRunning(ctx, sc, id, spec, err); err != nil {
		return fmt.Errorf("failed to set the rotation schedule: %w", err)
	}
	return nil
}

// updateSpecIfRunning finishes a create-or-update of a schedule: when the
// create found the schedule already there (err), its spec is updated.
func updateSpecIfRunning(ctx context.Context, sc client.ScheduleClient, id string, spec client.ScheduleSpec, err error) error {
	if !errors.Is(err, temporal.ErrScheduleAlreadyRunning) {
		return err
	}
	return sc.GetHandle(ctx, id).Update(ctx, client.ScheduleUpdateOptions{
		DoUpdate: func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
			s := in.Description.Schedule
			s.Spec = &spec
			return &client.ScheduleUpdate{Schedule: &s}, nil
		},
	})
}
