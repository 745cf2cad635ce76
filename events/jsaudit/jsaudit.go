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
// clients only after their audit record is durable. Publishing is
// pipelined (see [Publisher]): many records are in flight on one
// connection, and each Emit waits on its own acknowledgement.
//
// # Subjects
//
// A record is stored on
//
//	kf.audit.<tenant>.<keyID or "none">.<type tokens...>
//
// for example kf.audit.default.4f0c…e1.io.keyflow.crypto.encrypt.v1. The key
// ID comes from the record's subject (the resource name kf:<tenant>:key/<id>);
// a record about no key (a key list, an audit read, a refused request) has
// "none". So every question "which records of this tenant, about this key,
// of these types" is a subject filter that the server evaluates, and a
// reader never downloads what it does not want: [FilterSubject] builds it,
// and `keyflow audit tail --key K --type io.keyflow.crypto.*` uses it.
// Records refused before a tenant was known, and deployment-wide records
// such as io.keyflow.audit.policy.changed.v1, have tenant "-".
//
// # Retention
//
// By default the stream keeps every record for ever. [MaxAge], [MaxBytes] and
// [MaxMsgs] bound it (`keyflow dev --audit-max-age 2160h --audit-max-bytes
// N`); once a limit is reached the oldest records are removed (JetStream's
// discard-old policy). Deletion and purge by API stay denied. Records that
// aged out cannot be read back: export them first (see below) if the trail
// must outlive the limit.
//
// # Subscribing
//
// Audit consumers, SIEM exports and remediation attach to the stream as
// durable pull consumers in keyflow's own NATS account (tenants cannot reach
// the stream). The read-only auditor (the dev stack's DIR/auditor.creds)
// may not create consumers: it reads with direct gets ([ReadAll]) and
// through the durable the operator creates for it ([Provision]). A
// subscriber that creates its own durable needs a credential that may
// (the operator's). [ConsumerConfig] returns the configuration to use:
//
//	cfg := jsaudit.ConsumerConfig("siem-export", jsaudit.AllSubjects)
//	cons, err := js.CreateOrUpdateConsumer(ctx, jsaudit.StreamName, cfg)
//
// It is durable (the server keeps the position across restarts of the
// subscriber and of the server), delivers from the first record, in stream
// order, and uses explicit acks: ack a record only once it is durably
// handled (written and synced, sent and confirmed). A record that is not
// acked within AckWait is delivered again, so a subscriber sees every
// record at least once. To see each exactly once, keep the stream sequence
// of the last record handled (it is in the message metadata) next to the
// output and skip records at or below it, which covers a crash between
// handling a record and acking it. To resume, start again with the same
// durable name: delivery continues after the last acked record.
//
// One trap: a redelivery comes after the records delivered meanwhile, so a
// record lost in flight (a crash, a reconnect) arrives behind newer ones,
// and "skip at or below the last handled" would then drop it. A subscriber
// that needs order without gaps restarts its consumer at the record after
// the last one handled (delete it and create it again with
// DeliverByStartSequencePolicy) when it starts with records still pending
// and whenever the delivery sequence in the metadata jumps. Filter
// subjects narrow the consumer ([FilterSubject]); each durable name is one
// independent position, so several subscribers never steal records from
// each other. Package events/siem is such a subscriber (`keyflow audit
// forward`).
package jsaudit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
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

// AllSubjects is the subject filter of every record of every tenant.
const AllSubjects = SubjectPrefix + ".>"

// NoKey is the key token of a record that concerns no key.
const NoKey = "none"

// TenantSubjects is the subject filter for one tenant's events.
func TenantSubjects(tenant string) string { return SubjectPrefix + "." + tenant + ".>" }

// Subject is the stream subject of a record of tenant about the resource
// (a key resource name, or "") of type eventType.
func Subject(tenant, resource, eventType string) string {
	return SubjectPrefix + "." + tenant + "." + KeyToken(resource) + "." + eventType
}

// KeyToken is the key token of a record's subject: the key ID of a key
// resource name kf:<tenant>:key/<id>, or [NoKey].
func KeyToken(resource string) string {
	rest, ok := strings.CutPrefix(resource, "kf:")
	if !ok {
		return NoKey
	}
	_, id, ok := strings.Cut(rest, ":key/")
	if !ok || !literalToken(id, true) {
		return NoKey
	}
	return id
}

// ErrInvalidFilter is returned for a filter that cannot be expressed as a
// subject filter. Its message says why, for the caller.
var ErrInvalidFilter = errors.New("invalid audit filter")

// FilterSubject returns the subject filter for records of tenant ("*" for
// every tenant), about keyID ("" for any key, [NoKey] for records about no
// key), whose type matches typeGlob ("" for any type; see [TypeFilter]).
func FilterSubject(tenant, keyID, typeGlob string) (string, error) {
	if tenant != "*" && !literalToken(tenant, true) {
		return "", fmt.Errorf("%w: tenant %q is not a tenant name", ErrInvalidFilter, tenant)
	}
	key := "*"
	if keyID != "" {
		if !literalToken(keyID, true) {
			return "", fmt.Errorf("%w: key %q is not a key ID", ErrInvalidFilter, keyID)
		}
		key = keyID
	}
	typ := ">"
	if typeGlob != "" {
		var err error
		if typ, err = TypeFilter(typeGlob); err != nil {
			return "", err
		}
	}
	return SubjectPrefix + "." + tenant + "." + key + "." + typ, nil
}

// TypeFilter turns a type glob into the type part of a subject filter. Each
// dot-separated part of the glob is a literal (lower-case letters and
// digits, as in io.keyflow.crypto.encrypt.v1) or "*", which matches any one
// part; a "*" as the last part matches one or more parts. So
// "io.keyflow.crypto.*" matches every crypto event, "io.keyflow.*.*.v1"
// every version-1 event of two-part facts, and "*" everything. Anything else
// ("crypto*", "io.keyflow.**", "a..b") cannot be evaluated by the server
// and is refused with ErrInvalidFilter.
func TypeFilter(glob string) (string, error) {
	if glob == "" {
		return "", fmt.Errorf("%w: the type pattern is empty", ErrInvalidFilter)
	}
	if len(glob) > 256 {
		return "", fmt.Errorf("%w: the type pattern is longer than 256 bytes", ErrInvalidFilter)
	}
	parts := strings.Split(glob, ".")
	for i, p := range parts {
		switch {
		case p == "*":
			if i == len(parts)-1 {
				parts[i] = ">"
			}
		case literalToken(p, false):
		default:
			return "", fmt.Errorf("%w: type pattern %q: part %d (%q) must be a literal of a-z and 0-9 or a whole \"*\"; "+
				"wildcards inside a part and empty parts cannot be filtered server-side (example: io.keyflow.crypto.*)",
				ErrInvalidFilter, truncate(glob, 64), i+1, truncate(p, 32))
		}
	}
	return strings.Join(parts, "."), nil
}

// literalToken reports whether s is a safe literal subject token: type
// parts are lower-case letters and digits; tenants and key IDs may also
// hold '-' (and key IDs of other forms '_' and upper case).
func literalToken(s string, names bool) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		case names && (r == '-' || r == '_' || (r >= 'A' && r <= 'Z')):
		default:
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return strings.ToValidUTF8(s[:n], "") + "…"
	}
	return strings.ToValidUTF8(s, "")
}

// Publisher is an events.Sink backed by the audit stream.
//
// Emit is pipelined: it publishes its record asynchronously
// (JetStream's PublishMsgAsync) and then waits for that record's own
// acknowledgement, so any number of requests have their records in flight
// on one connection at once instead of each holding a synchronous
// request/reply. The guarantee is unchanged: Emit returns nil only after
// the stream acknowledged that record (stored, deduplicated by
// Nats-Msg-Id); a refusal, a missing stream, a lost connection or an
// expired context makes Emit fail, and the caller fails closed.
//
// Records in flight are bounded ([Publisher.MaxInFlight], default
// [DefaultMaxInFlight] per publisher): an Emit beyond the bound waits for a
// slot (or its context) before it publishes, so a slow stream turns into
// back-pressure on the requests, not into an unbounded queue.
//
// [Publisher.Spread] deals the records out over more connections, for
// when one connection's lock (held by its flusher for every write) or its
// one reader goroutine (for the acks) is the bound. With synchronous
// publishes, 4 connections stored 13-19% more records/s than one in
// BenchmarkEmit at 32 goroutines; with the pipelined publish the paired
// runs on the shared 2-core machine were within noise of each other.
type Publisher struct {
	js      jetstream.JetStream   // the stream's context (info, watch)
	pool    []jetstream.JetStream // publishing contexts: one per connection
	next    atomic.Uint32
	slots   chan struct{} // a token per record in flight
	opts    []Option      // the policy (Attach, Watch)
	source  string
	bad     atomic.Pointer[error] // set by Watch while a stream breaks the policy
	key     atomic.Pointer[events.RecordKey]
	pending atomic.Int64 // records published and not yet acknowledged
}

// DefaultMaxInFlight bounds the records one publisher has published and
// not yet seen acknowledged. It is above the request pool of a worker
// (workers/rpc: 64, plus the gateways' in-process requests), so a
// worker's requests do not wait for a slot on a healthy stream, and low
// enough that a stream which stopped acknowledging holds at most this many
// requests before the next ones wait (and time out, failing closed).
const DefaultMaxInFlight = 1024

// AckTimeout is how long a published record's acknowledgement is awaited
// at most, whatever the caller's context says. The KMS waits 10 s.
const AckTimeout = 15 * time.Second

// newPublisher is the publisher over js, with a publishing context on
// js's connection.
func newPublisher(js jetstream.JetStream, source string, opts []Option) (*Publisher, error) {
	p := &Publisher{js: js, opts: opts, source: source, slots: make(chan struct{}, DefaultMaxInFlight)}
	pub, err := publishing(js.Conn())
	if err != nil {
		return nil, err
	}
	p.pool = []jetstream.JetStream{pub}
	return p, nil
}

// publishing is a JetStream context for the asynchronous publishes of
// records on nc. Its own pending bound is never the one that stalls (the
// publisher's slots are; a record given up by its caller stays pending
// until AckTimeout), and it times acknowledgements out, so a record that
// is never acknowledged does not stay pending for ever. Publishing needs
// no API prefix or domain: records go to the stream's subjects.
func publishing(nc *nats.Conn) (jetstream.JetStream, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1<<20), jetstream.WithPublishAsyncTimeout(AckTimeout))
	if err != nil {
		return nil, fmt.Errorf("failed to open an audit publisher: %w", err)
	}
	return js, nil
}

// MaxInFlight sets how many records the publisher has in flight at most
// (published, acknowledgement awaited), over all its connections. Call it
// once, before the first Emit; n < 1 keeps the default.
func (p *Publisher) MaxInFlight(n int) {
	if n >= 1 {
		p.slots = make(chan struct{}, n)
	}
}

// InFlight reports how many records are published and not yet
// acknowledged (for metrics and tests).
func (p *Publisher) InFlight() int { return int(p.pending.Load()) }

var _ events.Authenticating = (*Publisher)(nil)

// SetRecordKey makes the publisher authenticate every record it stores
// from now on (header events.HeaderRecordMAC, see events.RecordKey). The
// KMS calls it when it starts; the sealer flags records without a valid
// authenticator as forged.
func (p *Publisher) SetRecordKey(k *events.RecordKey) { p.key.Store(k) }

// DuplicateWindow is how long the stream remembers event IDs to drop a
// re-published record.
const DuplicateWindow = 2 * time.Minute

// Option configures the stream [Open] creates or updates.
type Option func(*jetstream.StreamConfig)

// MaxAge removes records older than d (0: keep for ever). A d shorter than
// [DuplicateWindow] also shortens the duplicate window to d.
func MaxAge(d time.Duration) Option {
	return func(c *jetstream.StreamConfig) { c.MaxAge = max(d, 0) }
}

// MaxBytes bounds the stream's size; the oldest records are removed to make
// room (0: no bound).
func MaxBytes(n int64) Option {
	return func(c *jetstream.StreamConfig) {
		if n > 0 {
			c.MaxBytes = n
		}
	}
}

// MaxMsgs bounds the number of records; the oldest are removed to make room
// (0: no bound).
func MaxMsgs(n int64) Option {
	return func(c *jetstream.StreamConfig) {
		if n > 0 {
			c.MaxMsgs = n
		}
	}
}

// Open creates or updates the audit stream and returns a publisher, with
// every right of keyflow's account and no policy check. Tests use it; a
// deployment provisions as the operator ([Provision]) and attaches as the
// worker ([Attach]). Without options the stream keeps everything (limits-based,
// no max age): audit retention is a policy decision made by whoever
// operates it, with [MaxAge], [MaxBytes] and [MaxMsgs].
func Open(ctx context.Context, js jetstream.JetStream, opts ...Option) (*Publisher, error) {
	if _, err := createOrUpdate(ctx, js, auditConfig(opts...)); err != nil {
		return nil, fmt.Errorf("failed to open audit stream: %w", err)
	}
	return newPublisher(js, "/keyflow/audit", opts)
}

// DefaultConns is the number of connections the dev stack and the test
// bed spread audit records over (see Publisher).
const DefaultConns = 4

// Spread makes the publisher use n connections in all: it opens n-1 more
// with the options (server, credentials, name) of the connection given to
// Open, and returns them. The caller owns them as it owns the first: it
// closes (or drains) them at shutdown, and an Emit that runs into a
// closed connection fails (so its operation fails closed). Call Spread
// once, before the first Emit.
func (p *Publisher) Spread(n int) ([]*nats.Conn, error) {
	var opened []*nats.Conn
	for len(p.pool)+len(opened) < n {
		c, err := p.js.Conn().Opts.Connect()
		if err != nil {
			for _, c := range opened {
				c.Close()
			}
			return nil, fmt.Errorf("failed to open an audit connection: %w", err)
		}
		opened = append(opened, c)
	}
	pool := p.pool
	for _, c := range opened {
		js, err := publishing(c)
		if err != nil {
			for _, c := range opened {
				c.Close()
			}
			return nil, fmt.Errorf("failed to open an audit connection: %w", err)
		}
		pool = append(pool, js)
	}
	p.pool = pool
	return opened, nil
}

// Emit implements events.Sink. While an audit stream's limits differ from
// the policy (Watch), it fails: the operation fails closed.
func (p *Publisher) Emit(ctx context.Context, r events.Record) error {
	if bad := p.bad.Load(); bad != nil {
		return fmt.Errorf("failed to store audit event: %w", *bad)
	}
	return p.emit(ctx, r)
}

func (p *Publisher) emit(ctx context.Context, r events.Record) error {
	id, body, err := encode(r)
	if err != nil {
		return err
	}
	if len(body) > MaxEventBytes {
		return fmt.Errorf("audit event of %d bytes exceeds %d: %w", len(body), MaxEventBytes, events.ErrInvalidRecord)
	}
	msg := &nats.Msg{
		Subject: Subject(r.Tenant, r.Subject, strings.TrimSpace(r.Type)),
		Data:    body,
		Header:  nats.Header{"Content-Type": []string{ContentType}},
	}
	if k := p.key.Load(); k != nil {
		msg.Header[events.HeaderRecordMAC] = []string{k.Sum(msg.Subject, body)}
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("failed to store audit event: waiting for a publish slot: %w", ctx.Err())
	}
	defer func() { <-p.slots }()
	js := p.pool[0]
	if len(p.pool) > 1 {
		js = p.pool[p.next.Add(1)%uint32(len(p.pool))]
	}
	p.pending.Add(1)
	defer p.pending.Add(-1)
	ack, err := js.PublishMsgAsync(msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(StreamName))
	if err != nil {
		return fmt.Errorf("failed to store audit event: %w", err)
	}
	// This record's own acknowledgement, and nothing else: the stream
	// stored it (or had it already, a duplicate ID), or refused it.
	select {
	case <-ack.Ok():
		return nil
	case err := <-ack.Err():
		return fmt.Errorf("failed to store audit event: %w", err)
	case <-ctx.Done():
		return fmt.Errorf("failed to store audit event: no acknowledgement: %w", ctx.Err())
	}
}

// Stored is one event as read back from the stream.
type Stored struct {
	Seq     uint64          `json:"seq"`
	Subject string          `json:"-"` // the stream subject (tenant, key and type)
	Event   json.RawMessage `json:"event"`
}

// ReadParams select events of one tenant.
type ReadParams struct {
	Tenant   string
	AfterSeq uint64        // return events with a larger stream sequence
	Limit    int           // at most this many (default 100, max 1000)
	Wait     time.Duration // wait up to this long for the first event (long poll)
	// KeyID keeps the events about one key (by key ID, not alias; NoKey
	// for events about no key); "" keeps all.
	KeyID string
	// Type keeps the events whose type matches a glob (see TypeFilter);
	// "" keeps all.
	Type string
}

// Read returns a tenant's events in stream order.
func Read(ctx context.Context, js jetstream.JetStream, p ReadParams) ([]Stored, error) {
	if p.Limit <= 0 || p.Limit > 1000 {
		p.Limit = 100
	}
	if p.Wait <= 0 {
		p.Wait = 200 * time.Millisecond
	}
	filter := TenantSubjects(p.Tenant)
	if p.KeyID != "" || p.Type != "" {
		var err error
		if filter, err = FilterSubject(p.Tenant, p.KeyID, p.Type); err != nil {
			return nil, err
		}
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
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
		out = append(out, Stored{Seq: md.Sequence.Stream, Subject: m.Subject(), Event: json.RawMessage(m.Data())})
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
