// Package siem forwards keyflow's audit trail to a SIEM: every record of the
// KF_AUDIT stream, in stream order, as one JSON line each,
//
//	{"seq":1234,"event":{"specversion":"1.0","id":"…","type":"io.keyflow.crypto.encrypt.v1",…}}
//
// to a file (JSON Lines) or to a syslog collector (RFC 5424). seq is the
// record's stream sequence; event is the CloudEvent exactly as stored.
// `keyflow audit forward` is the command-line form:
//
//	keyflow audit forward --out /var/log/keyflow/audit.jsonl
//	keyflow audit forward --syslog tcp://siem.example:6514
//
// # How it attaches
//
// [Forward] is a durable pull consumer of KF_AUDIT with explicit acks (see
// the jsaudit package doc), so it needs a creds file of keyflow's own NATS
// account (the dev stack's DIR/auditor.creds); tenants cannot read the
// stream. The consumer's durable name (default "keyflow-forward") is its
// position: one forwarder process per name; two forwarders with different
// names each get every record.
//
// # No gaps, no duplicates
//
// For each batch the forwarder writes the lines, makes them durable (fsync
// for a file), and only then acks the records. After a crash it resumes
// where the output ends:
//
//   - A file says where it ends: on start the forwarder reads the seq of
//     its last complete line (and cuts a torn final line, which can only
//     be its own interrupted write) and skips every record at or below it.
//     So a crash between writing and acking does not write a record twice.
//   - Records delivered to a previous run but not acked would come back
//     only after the ack wait, behind newer ones. The forwarder therefore
//     restarts its consumer, on start and whenever it notices that a
//     delivery did not reach it (the consumer's delivery sequence jumped,
//     as happens across a NATS server restart), at the first record after
//     the last one it wrote. Records are never written out of order and
//     never skipped.
//
// A syslog collector cannot be asked where it ends, so syslog forwarding is
// at least once: after a crash, the records sent but not yet acked are sent
// again. Each message carries the seq and the event ID (in its structured
// data and in the JSON body) for the collector to drop the copy.
package siem

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/events/jsaudit"
)

// Line is one forwarded record.
type Line struct {
	Seq   uint64          `json:"seq"`
	Event json.RawMessage `json:"event"`
}

// Output receives forwarded records.
type Output interface {
	// Write hands lines over durably (for a file: written and synced)
	// and in order; the forwarder acks them only after it returned nil.
	Write(lines []Line) error
	// LastSeq is the seq of the last line the output already holds, or
	// 0 if it cannot tell.
	LastSeq() uint64
}

// DefaultConsumer is the durable name of the forwarder's consumer.
const DefaultConsumer = "keyflow-forward"

// Config configures Forward.
type Config struct {
	// Out receives the records.
	Out Output
	// Consumer is the durable consumer name (default DefaultConsumer).
	Consumer string
	// Filter is the subject filter (default every record of every
	// tenant, jsaudit.AllSubjects; see jsaudit.FilterSubject).
	Filter string
	// Batch is the most records written (and synced) at a time (default
	// 256).
	Batch int
	// AckWait is how long the server waits for an ack before delivering a
	// record again (default 30s).
	AckWait time.Duration
	Logger  *slog.Logger
	// Progress, if set, is called after each batch is written and acked
	// with the seq of its last record.
	Progress func(seq uint64)
	// Pinned uses a durable that the operator created (the read-only
	// auditor's, natsauth.AuditorDurable), which the forwarder may not
	// delete or create: it attaches as it is, and a lost delivery is
	// waited for (the records after it are handed back with a delay of
	// AckWait) instead of restarting the consumer. The durable's filter
	// applies; Filter must be empty or equal to it.
	Pinned bool
	// Direct reads the stream with direct gets after the output's last
	// line instead of through a durable: the output is the cursor. Only
	// for an output whose LastSeq is exact (a file), with the default
	// filter. Nothing is delivered that could be lost in flight, so a
	// kill -9 at any point resumes right after the last line written, in
	// stream order, with no redelivery wait. The read-only auditor may
	// use it: direct gets create no consumer.
	Direct bool
}

// Forward forwards records until ctx is done (and then returns nil) or the
// output fails.
func Forward(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	if cfg.Out == nil {
		return errors.New("siem: an output is required")
	}
	if cfg.Consumer == "" {
		cfg.Consumer = DefaultConsumer
	}
	if cfg.Filter == "" {
		cfg.Filter = jsaudit.AllSubjects
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 256
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Direct && cfg.Filter == jsaudit.AllSubjects {
		return forwardDirect(ctx, js, cfg)
	}
	f := &forwarder{js: js, cfg: cfg, last: cfg.Out.LastSeq()}
	if err := f.attach(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	for ctx.Err() == nil {
		if err := f.step(ctx); err != nil {
			if ctx.Err() != nil {
				break
			}
			return err
		}
	}
	return nil
}

type forwarder struct {
	js   jetstream.JetStream
	cfg  Config
	cons jetstream.Consumer
	last uint64 // seq of the last record the output holds
	dseq uint64 // the consumer's delivery sequence of the last delivery seen
	// hold (Pinned) is a stream sequence up to which records delivered
	// before are still to be written: records after it are handed back
	// until the consumer's ack floor reaches it.
	hold uint64
}

func (f *forwarder) consumerConfig(start uint64) jetstream.ConsumerConfig {
	c := jsaudit.ConsumerConfig(f.cfg.Consumer, f.cfg.Filter)
	c.Description = "keyflow audit forward (SIEM export)"
	c.AckWait = f.cfg.AckWait
	c.MaxAckPending = max(c.MaxAckPending, 2*f.cfg.Batch)
	if start > 1 {
		c.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		c.OptStartSeq = start
	}
	return c
}

// attach finds or creates the durable consumer, restarting it where the
// output ends if a previous run left records in flight.
func (f *forwarder) attach(ctx context.Context) error {
	cons, err := f.js.Consumer(ctx, jsaudit.StreamName, f.cfg.Consumer)
	if f.cfg.Pinned {
		return f.attachPinned(ctx, cons, err)
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("the audit stream %s does not exist (has a keyflow worker run against this NATS?): %w", jsaudit.StreamName, err)
	}
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return f.reset(ctx, f.last+1)
	}
	if err != nil {
		return fmt.Errorf("failed to open the audit consumer %s: %w", f.cfg.Consumer, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("failed to read the audit consumer %s: %w", f.cfg.Consumer, err)
	}
	filters := info.Config.FilterSubjects
	if info.Config.FilterSubject != "" {
		filters = append(filters, info.Config.FilterSubject)
	}
	// With nothing delivered but unacked, and an output no further than
	// the acks, delivery simply continues after the last ack.
	if info.NumAckPending == 0 && f.last <= info.AckFloor.Stream && len(filters) == 1 && filters[0] == f.cfg.Filter {
		f.last = max(f.last, info.AckFloor.Stream)
		f.cons, f.dseq = cons, info.Delivered.Consumer
		return nil
	}
	return f.reset(ctx, max(f.last, info.AckFloor.Stream)+1)
}

// attachPinned attaches to the operator's durable as it is.
func (f *forwarder) attachPinned(ctx context.Context, cons jetstream.Consumer, err error) error {
	if err != nil {
		return fmt.Errorf("failed to open the audit durable %s, which the operator creates (keyflow dev does): %w", f.cfg.Consumer, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("failed to read the audit durable %s: %w", f.cfg.Consumer, err)
	}
	if f.cfg.Filter != jsaudit.AllSubjects && f.cfg.Filter != info.Config.FilterSubject {
		return fmt.Errorf("the durable %s filters %q, not %q: a read-only forwarder cannot change it (ask the operator for a durable with that filter)",
			f.cfg.Consumer, info.Config.FilterSubject, f.cfg.Filter)
	}
	f.last = max(f.last, info.AckFloor.Stream)
	f.cons, f.dseq = cons, info.Delivered.Consumer
	if info.NumAckPending > 0 && info.Delivered.Stream > f.last {
		// A previous run received records it did not write: they come
		// back after the ack wait, and must be written before newer ones.
		f.hold = info.Delivered.Stream
	}
	return nil
}

// holdBack hands a record after the hold back to the server (Pinned).
func (f *forwarder) holdBack(m jetstream.Msg) { _ = m.NakWithDelay(time.Second) }

// releaseHold ends the hold once every record up to it was acked.
func (f *forwarder) releaseHold(ctx context.Context) {
	if f.hold == 0 {
		return
	}
	if info, err := f.cons.Info(ctx); err == nil && info.AckFloor.Stream >= f.hold {
		f.hold = 0
	}
}

// reset (re)creates the durable consumer so that its first delivery is the
// first record at or after stream sequence start.
func (f *forwarder) reset(ctx context.Context, start uint64) error {
	err := f.js.DeleteConsumer(ctx, jsaudit.StreamName, f.cfg.Consumer)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("failed to restart the audit consumer %s: %w", f.cfg.Consumer, err)
	}
	cons, err := f.js.CreateConsumer(ctx, jsaudit.StreamName, f.consumerConfig(start))
	if err != nil {
		return fmt.Errorf("failed to create the audit consumer %s: %w", f.cfg.Consumer, err)
	}
	f.last = max(f.last, start-1)
	f.cons, f.dseq = cons, 0
	return nil
}

// step waits for records (up to a few seconds), writes them and acks them.
// Transport trouble (a NATS restart) is waited out; only a failing output
// is an error.
func (f *forwarder) step(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	first, err := f.cons.Next(jetstream.FetchContext(wctx))
	cancel()
	if err != nil {
		if ctx.Err() != nil || errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrNoMessages) {
			return nil
		}
		f.cfg.Logger.Warn("audit forward: waiting for NATS", "err", err)
		pause(ctx)
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) {
			return f.resetOrWait(ctx)
		}
		return nil
	}
	msgs := []jetstream.Msg{first}
	if f.cfg.Batch > 1 {
		if batch, err := f.cons.FetchNoWait(f.cfg.Batch - 1); err == nil {
			for m := range batch.Messages() {
				msgs = append(msgs, m)
			}
		}
	}
	var lines []Line
	var done []jetstream.Msg
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("failed to read audit record metadata: %w", err)
		}
		if f.cfg.Pinned {
			if md.Sequence.Consumer != f.dseq+1 && f.hold == 0 {
				// A delivery was lost: it comes back after its ack wait,
				// and must be written before what came after it.
				f.cfg.Logger.Warn("audit forward: a delivery was lost; waiting for its redelivery", "expected", f.dseq+1, "got", md.Sequence.Consumer, "last", f.last)
				f.hold = md.Sequence.Stream - 1
			}
			f.dseq = max(f.dseq, md.Sequence.Consumer)
			if f.hold > 0 && md.Sequence.Stream > f.hold {
				f.holdBack(m)
				continue
			}
		}
		if md.Sequence.Consumer != f.dseq+1 && !f.cfg.Pinned {
			// A delivery did not reach us (lost in a reconnect). It
			// would come back only after the ack wait, behind newer
			// records: write what came before it, then restart.
			f.cfg.Logger.Warn("audit forward: a delivery was lost; restarting the consumer after the last record written",
				"expected", f.dseq+1, "got", md.Sequence.Consumer, "last", f.last)
			if err := f.flush(lines, done); err != nil {
				return err
			}
			return f.resetOrWait(ctx)
		}
		f.dseq = md.Sequence.Consumer
		done = append(done, m)
		if md.Sequence.Stream <= f.last {
			continue // already written (a crash between write and ack)
		}
		lines = append(lines, Line{Seq: md.Sequence.Stream, Event: json.RawMessage(m.Data())})
		f.last = md.Sequence.Stream
	}
	if err := f.flush(lines, done); err != nil {
		return err
	}
	if f.cfg.Pinned {
		f.releaseHold(ctx)
	}
	return nil
}

// flush writes lines, then acks every message handled.
func (f *forwarder) flush(lines []Line, done []jetstream.Msg) error {
	if len(lines) > 0 {
		if err := f.cfg.Out.Write(lines); err != nil {
			return fmt.Errorf("failed to write audit records: %w", err)
		}
	}
	for _, m := range done {
		// A lost ack means a redelivery, which is skipped by seq.
		_ = m.Ack()
	}
	if len(done) > 0 && f.cfg.Progress != nil {
		f.cfg.Progress(f.last)
	}
	return nil
}

func (f *forwarder) resetOrWait(ctx context.Context) error {
	if f.cfg.Pinned {
		return fmt.Errorf("the audit durable %s is gone: the operator must create it again (keyflow dev does at start)", f.cfg.Consumer)
	}
	for ctx.Err() == nil {
		err := f.reset(ctx, f.last+1)
		if err == nil {
			return nil
		}
		f.cfg.Logger.Warn("audit forward: waiting for NATS", "err", err)
		pause(ctx)
	}
	return nil
}

// pause waits a moment before the next try, or until ctx is done.
func pause(ctx context.Context) {
	t := time.NewTimer(250 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// forwardDirect forwards with batched direct gets from the output's last
// line on (Config.Direct), until ctx is done or the output fails.
func forwardDirect(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	last := cfg.Out.LastSeq()
	var lines []Line
	write := func() error {
		if len(lines) == 0 {
			return nil
		}
		if err := cfg.Out.Write(lines); err != nil {
			return fmt.Errorf("failed to write audit records: %w", err)
		}
		last = lines[len(lines)-1].Seq
		lines = lines[:0]
		if cfg.Progress != nil {
			cfg.Progress(last)
		}
		return nil
	}
	var outErr error
	for ctx.Err() == nil {
		before := last
		err := jsaudit.ReadAll(ctx, js, jsaudit.ReadAllParams{FromSeq: last + 1}, func(seq uint64, body []byte) error {
			if seq <= last {
				return nil
			}
			lines = append(lines, Line{Seq: seq, Event: json.RawMessage(append([]byte(nil), body...))})
			if len(lines) >= cfg.Batch {
				if outErr = write(); outErr != nil {
					return outErr
				}
			}
			return nil
		})
		if outErr != nil {
			return outErr
		}
		if err == nil {
			if outErr = write(); outErr != nil {
				return outErr
			}
		} else {
			lines = lines[:0] // read again from the last line written
			if ctx.Err() != nil {
				break
			}
			cfg.Logger.Warn("audit forward: waiting for NATS", "err", err)
		}
		if last == before {
			pause(ctx)
		}
	}
	return nil
}
