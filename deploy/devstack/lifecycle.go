package devstack

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/workers/remediation"
	"github.com/keyflow/keyflow/workflows"
)

// startRemediation starts the compromise remediation trigger: a durable
// audit subscriber that starts the remediation workflow for every
// compromise recorded.
func (s *Stack) startRemediation(ctx context.Context, js jetstream.JetStream, wc *workflows.Client) error {
	w, err := remediation.Start(ctx, remediation.Config{JS: js, Starter: wc, Logger: s.cfg.Logger})
	if err != nil {
		return err
	}
	s.closers = append(s.closers, w.Stop)
	return nil
}
