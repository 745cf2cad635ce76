package jsaudit

// The digest stream and whole-stream reading, for the audit sealer
// (workers/sealer) and the auditor's `keyflow audit verify` and `export`.
// See package events/chain for the hash chain and the digest format.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/events/chain"
)

// The digest stream: one signed chain.Digest per message, on
// kf.auditdigest.<fromSeq>-<toSeq>, with Nats-Msg-Id "digest-<toSeq>".
// Like the audit stream it denies deletes and purges, and it has no limits:
// digests are small (about 40 bytes per sealed record) and are the trust
// anchor that lets records age out of the audit stream and still be
// verified from a later digest boundary.
const (
	DigestStreamName    = "KF_AUDIT_DIGESTS"
	DigestSubjectPrefix = "kf.auditdigest"
	DigestContentType   = "application/json"
)

// DigestSubject is the subject of the digest of [from, to].
func DigestSubject(from, to uint64) string {
	return DigestSubjectPrefix + "." + strconv.FormatUint(from, 10) + "-" + strconv.FormatUint(to, 10)
}

// DigestMsgID is the Nats-Msg-Id of the digest ending at to: a digest
// re-published after a lost acknowledgement is dropped as a duplicate.
func DigestMsgID(to uint64) string { return "digest-" + strconv.FormatUint(to, 10) }

// TestingAllowDelete creates the stream with message deletes and purges
// allowed. It exists for tests that tamper with a stream the way an
// attacker with admin rights on the NATS account would; never use it
// elsewhere. (DenyDelete and DenyPurge are on by default, and JetStream
// refuses to turn them off once on, so the option only acts on a stream
// being created.)
func TestingAllowDelete() Option {
	return func(c *jetstream.StreamConfig) { c.DenyDelete, c.DenyPurge = false, false }
}

// OpenDigests creates the digest stream if it does not exist. opts apply as
// for Open (TestingAllowDelete is the only one tests need).
func OpenDigests(ctx context.Context, js jetstream.JetStream, opts ...Option) error {
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
	}
	for _, o := range opts {
		o(&cfg)
	}
	if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("failed to open the audit digest stream: %w", err)
	}
	return nil
}

// LastDigest returns the newest digest and its sequence in the digest
// stream, or (nil, 0) when there is none yet.
func LastDigest(ctx context.Context, js jetstream.JetStream) (*chain.Digest, uint64, error) {
	s, err := js.Stream(ctx, DigestStreamName)
	if err != nil {
		return nil, 0, fmt.Errorf("failed to open the audit digest stream: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("failed to read the audit digest stream: %w", err)
	}
	if info.State.Msgs == 0 {
		return nil, info.State.LastSeq, nil
	}
	m, err := s.GetLastMsgForSubject(ctx, DigestSubjectPrefix+".>")
	if err != nil {
		return nil, 0, fmt.Errorf("failed to read the last audit digest: %w", err)
	}
	var d chain.Digest
	if err := json.Unmarshal(m.Data, &d); err != nil {
		return nil, 0, fmt.Errorf("audit digest %d is not a digest: %w", m.Sequence, err)
	}
	return &d, m.Sequence, nil
}

// ReadDigests returns every digest in the digest stream, in stream order.
// A message that does not decode is an error: nothing else is published
// there.
func ReadDigests(ctx context.Context, js jetstream.JetStream) ([]*chain.Digest, error) {
	var out []*chain.Digest
	err := readAll(ctx, js, DigestStreamName, 1, 0, func(seq uint64, body []byte) error {
		var d chain.Digest
		if err := json.Unmarshal(body, &d); err != nil {
			return fmt.Errorf("audit digest message %d is not a digest: %w", seq, err)
		}
		out = append(out, &d)
		return nil
	})
	return out, err
}

// ReadAllParams select records of the whole audit stream (every tenant),
// which only keyflow's own NATS account can read.
type ReadAllParams struct {
	FromSeq uint64    // first sequence (default 1)
	ToSeq   uint64    // last sequence (0: up to the end as of the call)
	Since   time.Time // start at the first record stored at or after Since (instead of FromSeq)
}

// ReadAll calls fn for each record of the audit stream in stream order,
// from p.FromSeq up to the last record stored when it was called. body is
// only valid during the call.
func ReadAll(ctx context.Context, js jetstream.JetStream, p ReadAllParams, fn func(seq uint64, body []byte) error) error {
	if !p.Since.IsZero() {
		return readAllSince(ctx, js, p, fn)
	}
	return readAll(ctx, js, StreamName, max(p.FromSeq, 1), p.ToSeq, fn)
}

func readAllSince(ctx context.Context, js jetstream.JetStream, p ReadAllParams, fn func(seq uint64, body []byte) error) error {
	return readCons(ctx, js, StreamName, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &p.Since,
	}, p.ToSeq, fn)
}

func readAll(ctx context.Context, js jetstream.JetStream, stream string, from, to uint64, fn func(seq uint64, body []byte) error) error {
	return readCons(ctx, js, stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from,
	}, to, fn)
}

// readCons drains an ordered consumer up to the stream's last sequence as
// of the call (or to).
func readCons(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.OrderedConsumerConfig, to uint64, fn func(seq uint64, body []byte) error) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("failed to open stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("failed to read stream %s: %w", stream, err)
	}
	last := info.State.LastSeq
	if to != 0 && to < last {
		last = to
	}
	if info.State.Msgs == 0 || last < info.State.FirstSeq || (cfg.OptStartSeq > last) {
		return nil
	}
	cons, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("failed to read stream %s: %w", stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(2048))
	if err != nil {
		return fmt.Errorf("failed to read stream %s: %w", stream, err)
	}
	defer it.Stop()
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		return nil // nothing at or after the start (e.g. --since a time after the last record)
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := it.Next(jetstream.NextMaxWait(5 * time.Second))
		if err != nil {
			if errors.Is(err, nats.ErrTimeout) {
				// Nothing more within the range: the last records were
				// deleted or aged out while reading.
				return nil
			}
			return fmt.Errorf("failed to read stream %s: %w", stream, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("failed to read stream %s metadata: %w", stream, err)
		}
		seq := md.Sequence.Stream
		if seq > last {
			return nil
		}
		if err := fn(seq, m.Data()); err != nil {
			return err
		}
		if seq == last || md.NumPending == 0 {
			return nil
		}
	}
}
