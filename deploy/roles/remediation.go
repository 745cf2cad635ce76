package roles

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/workers/remediation"
	"github.com/keyflow/keyflow/workflows"
)

// startRemediation starts the compromise remediation trigger: a durable
// audit subscriber that starts the remediation workflow for every
// compromise recorded.
func (n *Node) startRemediation(ctx context.Context, js jetstream.JetStream, wc *workflows.Client) error {
	w, err := remediation.Start(ctx, remediation.Config{JS: js, Starter: wc, Logger: n.infra.Logger})
	if err != nil {
		return err
	}
	n.closers = append(n.closers, w.Stop)
	return nil
}
