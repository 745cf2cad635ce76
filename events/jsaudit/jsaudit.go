// Package jsaudit stores keyflow's audit events in a JetStream stream and
// reads them back.
//
// Content mode: structured. Each NATS message body is the CloudEvent in its
// JSON form (Content-Type: application/cloudevents+json), as the CloudEvents
// NATS protocol binding allows. Structured mode keeps a record
// self-contained: what the stream stores is exactly what an auditor
// verifies and what `keyflow audit tail` prints.
//
// Every message carries Nats-Msg-Id = the event ID, so JetStream's duplicate
// window drops a record re-published by a retried step. Emit returns only
// after the stream acknowledged the record: callers reply to their own
// clients only after their audit record is durable.
package jsaudit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/events"
)

// Stream and subject layout.
const (
	StreamName    = "KF_AUDIT"
	SubjectPrefix = "kf.audit"
	ContentType   = "application/cloudevents+json"
)

// MaxEventBytes bounds one stored event. Events carry identifiers and sizes
// only, so a larger one is a bug (unbounded caller input in the data).
const MaxEventBytes = 64 * 1024

// TenantSubjects is the subject filter for one tenant's events.
func TenantSubjects(tenant string) string { return SubjectPrefix + "." + tenant + ".>" }

// Publisher is an events.Sink backed by the audit stream.
type Publisher struct {
	js jetstream.JetStream
}

var _ events.Sink = (*Publisher)(nil)

// Open creates the audit stream if it does not exist and returns a
// publisher. The stream keeps everything (limits-based, no max age): audit
// retention is a policy decision made by whoever operates it.
func Open(ctx context.Context, js jetstream.JetStream) (*Publisher, error) {
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamName,
		Description: "keyflow audit trail (CloudEvents, structured mode)",
		Subjects:    []string{SubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Duplicates:  2 * time.Minute,
		DenyDelete:  true,
		DenyPurge:   true,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to open audit stream: %w", err)
	}
	return &Publisher{js: js}, nil
}

// Emit implements events.Sink.
func (p *Publisher) Emit(ctx context.Context, r events.Record) error {
	e, err := r.CloudEvent()
	if err != nil {
		return err
	}
	body, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("failed to encode audit event: %w", err)
	}
	if len(body) > MaxEventBytes {
		return fmt.Errorf("audit event of %d bytes exceeds %d: %w", len(body), MaxEventBytes, events.ErrInvalidRecord)
	}
	msg := &nats.Msg{
		Subject: SubjectPrefix + "." + r.Tenant + "." + e.Type(),
		Data:    body,
		Header:  nats.Header{"Content-Type": []string{ContentType}},
	}
	if _, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(e.ID()), jetstream.WithExpectStream(StreamName)); err != nil {
		return fmt.Errorf("failed to store audit event: %w", err)
	}
	return nil
}

// Stored is one event as read back from the stream.
type Stored struct {
	Seq   uint64          `json:"seq"`
	Event json.RawMessage `json:"event"`
}

// ReadParams select events of one tenant.
type ReadParams struct {
	Tenant   string
	AfterSeq uint64        // return events with a larger stream sequence
	Limit    int           // at most this many (default 100, max 1000)
	Wait     time.Duration // wait up to this long for the first event (long poll)
}

// Read returns a tenant's events in stream order.
func Read(ctx context.Context, js jetstream.JetStream, p ReadParams) ([]Stored, error) {
	if p.Limit <= 0 || p.Limit > 1000 {
		p.Limit = 100
	}
	if p.Wait <= 0 {
		p.Wait = 200 * time.Millisecond
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{TenantSubjects(p.Tenant)},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	if p.AfterSeq > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = p.AfterSeq + 1
	}
	cons, err := js.OrderedConsumer(ctx, StreamName, cfg)
	if err != nil {
		return nil, fmt.Errorf("failed to read audit stream: %w", err)
	}
	// Wait only for the first event; then take what is already there.
	// (Fetch with a max wait would sit out the whole wait unless Limit
	// events arrived, which makes `audit tail --follow` lag.)
	waitCtx, cancel := context.WithTimeout(ctx, p.Wait)
	defer cancel()
	first, err := cons.Next(jetstream.FetchContext(waitCtx))
	if err != nil {
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
			errors.Is(err, context.Canceled) || errors.Is(err, jetstream.ErrNoMessages) {
			return nil, nil
		}
		return nil, fmt.Errorf("failed to read audit stream: %w", err)
	}
	var out []Stored
	add := func(m jetstream.Msg) error {
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("failed to read audit metadata: %w", err)
		}
		out = append(out, Stored{Seq: md.Sequence.Stream, Event: json.RawMessage(m.Data())})
		return nil
	}
	if err := add(first); err != nil {
		return nil, err
	}
	if p.Limit == 1 {
		return out, nil
	}
	batch, err := cons.FetchNoWait(p.Limit - 1)
	if err != nil {
		return out, fmt.Errorf("failed to read audit stream: %w", err)
	}
	for m := range batch.Messages() {
		if err := add(m); err != nil {
			return nil, err
		}
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
		return out, fmt.Errorf("failed to read audit stream: %w", err)
	}
	return out, nil
}
