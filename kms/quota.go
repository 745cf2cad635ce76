package kms

import (
	"context"
	"errors"
	"time"

	"github.com/keyflow/keyflow/events"
)

// Quotas are enforced by the transport (a per-tenant token bucket before
// the worker pool, workers/rpc) from the tenant policy's Quotas, and by
// CreateKey (MaxKeys, see checkKeyCreate). This file has the error the
// transport answers with and the record of throttled requests.

// RetryAfter is the cause of a ThrottlingException: when a retry can
// succeed.
type RetryAfter struct{ After time.Duration }

func (r *RetryAfter) Error() string { return "retry after " + r.After.String() }

// ThrottlingError returns a ThrottlingException whose message and
// RetryAfterOf carry the retry hint.
func ThrottlingError(reason string, after time.Duration) error {
	after = max(after, time.Millisecond)
	return &Error{Code: CodeThrottling, Message: reason + "; retry after " + after.Round(time.Millisecond).String(), cause: &RetryAfter{After: after}}
}

// RetryAfterOf returns the retry hint of a ThrottlingException (0 for any
// other error).
func RetryAfterOf(err error) time.Duration {
	var r *RetryAfter
	if errors.As(err, &r) {
		return r.After
	}
	return 0
}

// ThrottleSummary counts a tenant's throttled requests since the last
// record.
type ThrottleSummary struct {
	Count     uint64
	Operation string // the last throttled operation
	Reason    string // "rate" or "concurrency"
	RequestID string // the last throttled request's ID
}

// RecordThrottled records throttled requests (io.keyflow.quota.throttled.v1,
// outcome failure, ThrottlingException). The rate limiter records them
// in summaries, at most one per tenant per second, so that a flood
// cannot flood the audit trail (which every tenant shares) in turn. A
// record that cannot be stored is logged at error level.
func (s *Service) RecordThrottled(ctx context.Context, tenant string, t ThrottleSummary) {
	data := map[string]any{"count": t.Count, "operation": truncate(t.Operation, 64), "reason": t.Reason}
	_ = s.emit(ctx, Caller{Tenant: tenant, RequestID: t.RequestID}, events.TypeQuotaThrottled, "", data, ErrThrottling)
}
