// Package remediation is the event-triggered side of compromise response:
// a durable subscriber of the audit stream that starts the remediation
// workflow for every compromise recorded there, whoever recorded it (the
// keys.compromise API, a state change to COMPROMISED, another tool that
// writes to the trail through keyflow).
//
// It is deliberately thin. Each io.keyflow.key.compromised.v1 record with a
// success outcome and a transition (a real change, not a repeat) becomes one
// call to Starter.StartRemediation, whose workflow ID is derived from
// (tenant, key, version): a record delivered twice, or a compromise
// reported twice, starts one remediation. A record is acked only after the
// start succeeded, so a crash or an unavailable Temporal means
// redelivery, never a lost remediation.
package remediation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/kms"
)

// DefaultDurable is the consumer name of the remediation trigger.
const DefaultDurable = "keyflow-remediation"

// Starter starts a remediation workflow (workflows.Client in production).
type Starter interface {
	StartRemediation(ctx context.Context, c kms.Caller, keyID string, version uint32, reason string) (string, error)
}

// Config wires a Worker.
type Config struct {
	JS      jetstream.JetStream // in keyflow's account (the audit stream)
	Starter Starter
	Durable string // default DefaultDurable
	Logger  *slog.Logger
	// RetryDelay is how long a record whose start failed waits before it
	// is delivered again (default 5s).
	RetryDelay time.Duration
}

// Worker is a running trigger.
type Worker struct {
	cc    jetstream.ConsumeContext
	log   *slog.Logger
	retry time.Duration
}

// Start attaches the durable consumer and starts handling records.
func Start(ctx context.Context, cfg Config) (*Worker, error) {
	if cfg.JS == nil || cfg.Starter == nil {
		return nil, errors.New("remediation: JS and Starter are required")
	}
	if cfg.Durable == "" {
		cfg.Durable = DefaultDurable
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = 5 * time.Second
	}
	filter, err := jsaudit.FilterSubject("*", "", events.TypeKeyCompromised)
	if err != nil {
		return nil, fmt.Errorf("failed to build the remediation filter: %w", err)
	}
	ccfg := jsaudit.ConsumerConfig(cfg.Durable, filter)
	ccfg.Description = "keyflow compromise remediation trigger"
	ccfg.AckWait = time.Minute
	ccfg.MaxAckPending = 64
	cons, err := cfg.JS.CreateOrUpdateConsumer(ctx, jsaudit.StreamName, ccfg)
	if err != nil {
		return nil, fmt.Errorf("failed to attach the remediation consumer: %w", err)
	}
	w := &Worker{log: cfg.Logger, retry: cfg.RetryDelay}
	w.cc, err = cons.Consume(func(m jetstream.Msg) { w.handle(cfg.Starter, m) },
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			cfg.Logger.Debug("remediation consumer", "err", err)
		}))
	if err != nil {
		return nil, fmt.Errorf("failed to consume audit records: %w", err)
	}
	return w, nil
}

// Stop stops taking records; unacked ones are redelivered to the next
// start.
func (w *Worker) Stop() { w.cc.Stop() }

// compromised is the part of a compromise record the trigger reads.
type compromised struct {
	Type      string `json:"type"`
	Tenant    string `json:"tenant"`
	Principal string `json:"principal"`
	RequestID string `json:"requestid"`
	Outcome   string `json:"outcome"`
	Data      struct {
		KeyID      string `json:"keyId"`
		Version    uint32 `json:"version"`
		Reason     string `json:"reason"`
		Transition string `json:"transition"`
	} `json:"data"`
}

func (w *Worker) handle(st Starter, m jetstream.Msg) {
	var e compromised
	if err := json.Unmarshal(m.Data(), &e); err != nil || e.Type != events.TypeKeyCompromised {
		_ = m.Ack() // not ours to fix; the sealer reports damaged records
		return
	}
	if e.Outcome != events.OutcomeSuccess || e.Data.Transition == "" || !kms.ValidKeyID(e.Data.KeyID) {
		_ = m.Ack() // a refused or repeated compromise: nothing new to remediate
		return
	}
	reason := e.Data.Reason
	if reason == "" {
		reason = "compromise recorded"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := kms.Caller{Tenant: e.Tenant, Principal: e.Principal, RequestID: e.RequestID}
	id, err := st.StartRemediation(ctx, c, e.Data.KeyID, e.Data.Version, reason)
	if err != nil {
		w.log.Error("remediation not started; will retry", "key", kms.ResourceName(e.Tenant, e.Data.KeyID), "version", e.Data.Version, "err", err)
		_ = m.NakWithDelay(w.retry)
		return
	}
	w.log.Info("remediation started", "workflow", id)
	_ = m.Ack()
}
