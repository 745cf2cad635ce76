package jsaudit

// The audit streams' retention policy, who sets it, and who checks it.
//
// The operator provisions the streams ([Provision]): it creates or updates
// KF_AUDIT with the configured limits and KF_AUDIT_DIGESTS without limits,
// records the policy in each stream's metadata, and creates the auditor's
// pull durables. Workers only attach ([Attach]): their NATS users may not
// create or change the audit streams (package natsauth), and they refuse to
// serve (fail-closed: every Emit fails) while a stream's limits differ from
// the policy they were configured with. [Publisher.Watch] re-checks every
// few seconds; each difference it finds is itself an audit record
// (io.keyflow.audit.stream.changed.v1), which `keyflow audit verify`
// reports.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/events"
)

// Limits are the settings of an audit stream that decide what it keeps.
type Limits struct {
	MaxAgeSeconds int64 `json:"maxAgeSeconds"`
	MaxBytes      int64 `json:"maxBytes"`
	MaxMsgs       int64 `json:"maxMsgs"`
	DenyDelete    bool  `json:"denyDelete"`
	DenyPurge     bool  `json:"denyPurge"`
}

// LimitsOf returns the limits of a stream configuration (-1 and 0 both
// mean "no limit" to JetStream; they are normalised to -1).
func LimitsOf(c jetstream.StreamConfig) Limits {
	norm := func(v int64) int64 {
		if v <= 0 {
			return -1
		}
		return v
	}
	return Limits{MaxAgeSeconds: int64(c.MaxAge / time.Second), MaxBytes: norm(c.MaxBytes), MaxMsgs: norm(c.MaxMsgs), DenyDelete: c.DenyDelete, DenyPurge: c.DenyPurge}
}

// Unlimited reports whether the limits keep everything.
func (l Limits) Unlimited() bool { return l.MaxAgeSeconds == 0 && l.MaxBytes < 0 && l.MaxMsgs < 0 }

// MetadataPolicy is the stream metadata key under which Provision records
// the configured limits.
const MetadataPolicy = "keyflow.policy"

// StreamChange is one audit stream whose limits are not (or were not) the
// expected ones.
type StreamChange struct {
	Stream      string
	Provisioned bool // set by the operator (Provision), not found by a watch
	Expected    Limits
	Actual      Limits
}

// ErrStreamPolicy is returned while an audit stream's limits differ from
// the configured policy: workers refuse to serve.
var ErrStreamPolicy = errors.New("the audit stream's retention differs from the configured policy")

func auditConfig(opts ...Option) jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:        StreamName,
		Description: "keyflow audit trail (CloudEvents, structured mode)",
		Subjects:    []string{AllSubjects},
		Storage:     jetstream.FileStorage,
		Duplicates:  DuplicateWindow,
		DenyDelete:  true,
		DenyPurge:   true,
		Discard:     jetstream.DiscardOld,
		MaxBytes:    -1,
		MaxMsgs:     -1,
		AllowDirect: true,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.MaxAge > 0 && cfg.MaxAge < cfg.Duplicates {
		cfg.Duplicates = cfg.MaxAge // the server refuses a window longer than the age
	}
	return cfg
}

func digestConfig(opts ...Option) jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:        DigestStreamName,
		Description: "keyflow audit digests: the signed hash chain over " + StreamName,
		Subjects:    []string{DigestSubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Duplicates:  DuplicateWindow,
		DenyDelete:  true,
		DenyPurge:   true,
		MaxBytes:    -1,
		MaxMsgs:     -1,
		AllowDirect: true,
	}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// createOrUpdate applies cfg (with the policy in its metadata) and returns
// the change, if the stream was created or its limits changed.
func createOrUpdate(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (*StreamChange, error) {
	want := LimitsOf(cfg)
	pol, _ := json.Marshal(want)
	cfg.Metadata = map[string]string{MetadataPolicy: string(pol)}
	var before *Limits
	if s, err := js.Stream(ctx, cfg.Name); err == nil {
		l := LimitsOf(s.CachedInfo().Config)
		before = &l
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("failed to read stream %s: %w", cfg.Name, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
		return nil, fmt.Errorf("failed to provision stream %s: %w", cfg.Name, err)
	}
	if before != nil && *before == want {
		return nil, nil
	}
	ch := &StreamChange{Stream: cfg.Name, Provisioned: true, Expected: want, Actual: want}
	if before != nil {
		ch.Actual = *before
	}
	return ch, nil
}

// Provision is the operator's step: it creates or updates both audit
// streams to the policy (opts apply to KF_AUDIT; the digest stream keeps
// everything) and creates the pull durable named durable (the auditor's,
// natsauth.AuditorDurable) on both, unless durable is "". It returns the
// streams whose limits it set or changed, for the record
// ([Publisher.RecordChanges]).
func Provision(ctx context.Context, js jetstream.JetStream, durable string, opts ...Option) ([]StreamChange, error) {
	var out []StreamChange
	for _, cfg := range []jetstream.StreamConfig{auditConfig(opts...), digestConfig()} {
		ch, err := createOrUpdate(ctx, js, cfg)
		if err != nil {
			return nil, err
		}
		if ch != nil {
			out = append(out, *ch)
		}
		if durable == "" {
			continue
		}
		cc := ConsumerConfig(durable)
		cc.FilterSubject = cfg.Subjects[0]
		cc.Description = "keyflow auditor: read-only pull durable (created by the operator)"
		// A forwarder that crashed gets its unwritten records back this
		// long after they were delivered.
		cc.AckWait = 10 * time.Second
		if _, err := js.CreateOrUpdateConsumer(ctx, cfg.Name, cc); err != nil {
			return nil, fmt.Errorf("failed to create the auditor's durable on %s: %w", cfg.Name, err)
		}
	}
	return out, nil
}

// checkStreams compares both audit streams with the policy.
func checkStreams(ctx context.Context, js jetstream.JetStream, opts []Option) ([]StreamChange, error) {
	var out []StreamChange
	for _, cfg := range []jetstream.StreamConfig{auditConfig(opts...), digestConfig()} {
		s, err := js.Stream(ctx, cfg.Name)
		if err != nil {
			return nil, fmt.Errorf("failed to read stream %s (has the operator provisioned it?): %w", cfg.Name, err)
		}
		want, got := LimitsOf(cfg), LimitsOf(s.CachedInfo().Config)
		if want != got {
			out = append(out, StreamChange{Stream: cfg.Name, Expected: want, Actual: got})
		}
	}
	return out, nil
}

func policyError(chs []StreamChange) error {
	ch := chs[0]
	return fmt.Errorf("%w: %s has %+v, the policy is %+v; the workers refuse to serve until the operator restores it (keyflow dev restores it at start)",
		ErrStreamPolicy, ch.Stream, ch.Actual, ch.Expected)
}

// Attach is the workers' step: it checks that both audit streams have the
// configured limits (opts, as given to Provision) and returns a publisher.
// While they differ it records each difference and returns ErrStreamPolicy:
// the worker must not serve.
func Attach(ctx context.Context, js jetstream.JetStream, source string, opts ...Option) (*Publisher, error) {
	p, err := newPublisher(js, source, opts)
	if err != nil {
		return nil, err
	}
	chs, err := checkStreams(ctx, js, opts)
	if err != nil {
		return nil, err
	}
	if len(chs) > 0 {
		if err := p.RecordChanges(ctx, chs); err != nil {
			return nil, err
		}
		return nil, policyError(chs)
	}
	return p, nil
}

// RecordChanges stores one io.keyflow.audit.stream.changed.v1 record per
// change. It bypasses the fail-closed check: the record of the change must
// get through.
func (p *Publisher) RecordChanges(ctx context.Context, chs []StreamChange) error {
	for _, ch := range chs {
		r := events.Record{
			Type: events.TypeAuditStreamChanged, Source: p.source, Tenant: "-", Time: time.Now().UTC(),
			Outcome: events.OutcomeSuccess,
			Data: map[string]any{"stream": ch.Stream, "provisioned": ch.Provisioned,
				"expected": limitsData(ch.Expected), "actual": limitsData(ch.Actual)},
		}
		if !ch.Provisioned {
			r.Outcome = events.OutcomeFailure
			r.ErrorCode = "AuditStreamPolicyViolation"
		}
		if err := p.emit(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

func limitsData(l Limits) map[string]any {
	return map[string]any{"maxAgeSeconds": l.MaxAgeSeconds, "maxBytes": l.MaxBytes, "maxMsgs": l.MaxMsgs, "denyDelete": l.DenyDelete, "denyPurge": l.DenyPurge}
}

// DefaultWatchInterval is how often Watch re-checks the streams.
const DefaultWatchInterval = 2 * time.Second

// Watch re-checks both streams' limits every interval until ctx ends.
// While they differ from the policy every Emit fails (the operations fail
// closed) and each new difference is recorded once.
func (p *Publisher) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		var last []StreamChange
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			chs, err := checkStreams(ctx, p.js, p.opts)
			if err != nil {
				continue // unreachable is not a policy change; Emit fails on its own
			}
			if len(chs) == 0 {
				p.bad.Store(nil)
				last = nil
				continue
			}
			perr := policyError(chs)
			p.bad.Store(&perr)
			if !sameChanges(chs, last) {
				if err := p.RecordChanges(ctx, chs); err == nil {
					last = chs
				}
			}
		}
	}()
}

func sameChanges(a, b []StreamChange) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
