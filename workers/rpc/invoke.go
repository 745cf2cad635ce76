package rpc

import (
	"context"
	"fmt"

	"github.com/nats-io/nuid"

	"github.com/keyflow/keyflow/kms"
)

// Invoke runs one operation ("crypto.encrypt", "keys.create", ...) in
// process, for a caller that another door has already authenticated: the
// gateways (the AWS KMS JSON API, workers/awskms) use it instead of a NATS
// round trip. It is the NATS path without the transport: the same tenant
// admission and quotas (quota.go), the same kms.Authorize, the same
// handler (strict decoding, the domain call, dual-control gates) and so
// the same single audit record. body is the operation's NATS request
// (JSON, schemas/api); the result is the handler's reply value, one of the
// client/api reply types.
//
// Unlike a NATS request it runs on the caller's goroutine rather than in
// the pool's per-tenant round robin: the in-flight bound per tenant still
// applies, and the HTTP server is the queue.
func (s *Server) Invoke(ctx context.Context, c kms.Caller, op string, body []byte) (any, error) {
	fn, ok := s.ops[op]
	if !ok {
		return nil, fmt.Errorf("rpc: no operation %q: %w", op, kms.ErrInternal)
	}
	if c.RequestID == "" {
		c.RequestID = nuid.Next()
	}
	if !kms.ValidTenant(c.Tenant) {
		return nil, s.cfg.KMS.Reject(ctx, c, op, &kms.Error{Code: kms.CodeAccessDenied, Message: "the caller has no valid tenant"})
	}
	release, err := s.limits.admit(c.Tenant, op, c.RequestID)
	if err != nil {
		return nil, err
	}
	defer release()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if err := s.authorize(ctx, op, c, body); err != nil {
		return nil, err
	}
	return fn(ctx, c, body)
}
