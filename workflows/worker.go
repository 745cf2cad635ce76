package workflows

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/keyflow/keyflow/kms"
)

// TaskQueue is the lifecycle workers' task queue.
const TaskQueue = "keyflow-lifecycle"

// KeyStep is the input of a per-key activity.
type KeyStep struct {
	Tenant    string
	KeyID     string
	Principal string
	RequestID string
	Version   uint32
}

// Activities are the lifecycle activities. Register a value with its KMS
// set; workflows reference the methods through a nil *Activities.
type Activities struct {
	KMS *kms.Service
	// Temporal manages rotation schedules (lifecycle.go); nil on workers
	// that run no destruction.
	Temporal client.Client
	// CloudConnect opens cloud destinations' connectors (cloud.go); nil
	// on workers that distribute no keys.
	CloudConnect CloudConnect
	// Replicas reaches the other regions of multi-region keys
	// (replication.go); nil in a single-region deployment.
	Replicas ReplicaLink
	// ReplicaSwitchTimeout bounds a rotation's wait for the replicas
	// (0: DefaultReplicaSwitchTimeout); ReplicaRetryMax is the longest
	// pause between attempts to reach a region (0: the default).
	ReplicaSwitchTimeout time.Duration
	ReplicaRetryMax      time.Duration
}

// caller builds the domain caller for an activity. The idempotency key names
// the fact the step establishes (this version of this key, this step), not
// the attempt, so a retried or re-run step re-emits the same event ID and
// the audit stream keeps one record.
func caller(ctx context.Context, s KeyStep) kms.Caller {
	info := activity.GetInfo(ctx)
	return kms.Caller{
		Tenant: s.Tenant, Principal: s.Principal, RequestID: s.RequestID,
		IdempotencyKey: fmt.Sprintf("%s/%s/v%d/%s", s.Tenant, s.KeyID, s.Version, info.ActivityType.Name),
	}
}

// activityError turns a domain error into a Temporal application error whose
// type is the stable code. Errors a retry cannot fix are non-retryable. Only
// the public message goes into history. A refusal (a self-approval, a key in
// the wrong state) is an expected outcome the workflow handles, so it is
// marked benign: the SDK logs it at debug level, not as an ERROR "Activity
// error"; internal and audit failures stay errors.
func activityError(err error) error {
	if err == nil {
		return nil
	}
	code := kms.CodeOf(err)
	switch code {
	case kms.CodeInternal, kms.CodeAuditUnavailable:
		return temporal.NewApplicationError(kms.PublicMessage(err), string(code))
	default:
		return temporal.NewApplicationErrorWithOptions(kms.PublicMessage(err), string(code), temporal.ApplicationErrorOptions{
			NonRetryable: true, Category: temporal.ApplicationErrorCategoryBenign,
		})
	}
}

// DomainError turns a workflow failure back into a keyflow error.
func DomainError(err error) error {
	if err == nil {
		return nil
	}
	var app *temporal.ApplicationError
	if errors.As(err, &app) && app.Type() != "" {
		return &kms.Error{Code: kms.Code(app.Type()), Message: app.Message()}
	}
	return fmt.Errorf("the lifecycle workflow failed: %w", err)
}

// Register registers every workflow and activity on a worker.
func Register(r interface {
	RegisterWorkflow(any)
	RegisterActivity(any)
}, a *Activities) {
	r.RegisterWorkflow(RotateKeyWorkflow)
	r.RegisterWorkflow(ArchivalWorkflow)
	r.RegisterWorkflow(RecoveryWorkflow)
	r.RegisterWorkflow(ApprovalWorkflow)
	r.RegisterWorkflow(ImportExpiryWorkflow)
	registerLifecycle(r)
	r.RegisterWorkflow(RewrapWorkflow)
	r.RegisterWorkflow(MigrationWorkflow)
	r.RegisterWorkflow(RetirementWorkflow)
	r.RegisterWorkflow(CloudSyncWorkflow)
	r.RegisterWorkflow(CloudUndistributeWorkflow)
	r.RegisterWorkflow(CloudReconcileWorkflow)
	r.RegisterWorkflow(CloudProbeWorkflow)
	r.RegisterWorkflow(ReplicaSyncWorkflow)
	r.RegisterActivity(a)
}

// Client starts lifecycle workflows.
type Client struct {
	Temporal client.Client
	// Tokens mints the authorization tokens of the signals it sends
	// (optoken.go); *kms.Service is one. Without it those calls fail.
	Tokens TokenMinter
	// RotateWait bounds how long RotateKey waits for the workflow
	// (default DefaultRotateWait).
	RotateWait time.Duration
	// Clouds finds a changed key's cloud placements, whose sync it then
	// starts (cloud_propagate.go); *kms.Service is one. Without it key
	// changes reach no cloud (the reconcile still finds them).
	Clouds CloudPlacementReader
}
