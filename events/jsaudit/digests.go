package jsaudit

// The digest stream and whole-stream reading, for the audit sealer
// (workers/sealer) and the auditor's `keyflow audit verify` and `export`.
// See package events/chain for the hash chain and the digest format.

import (
	"context"
	"encoding/json"
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

// OpenDigests creates or updates the digest stream. opts apply as for Open
// (TestingAllowDelete is the only one tests need). Deployments provision
// it with [Provision].
func OpenDigests(ctx context.Context, js jetstream.JetStream, opts ...Option) error {
	if _, err := createOrUpdate(ctx, js, digestConfig(opts...)); err != nil {
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
	return readDirect(ctx, js, StreamName, 0, &p.Since, p.ToSeq, fn)
}

func readAll(ctx context.Context, js jetstream.JetStream, stream string, from, to uint64, fn func(seq uint64, body []byte) error) error {
	return readDirect(ctx, js, stream, from, nil, to, fn)
}

// directBatch is the number of records one direct get returns.
const directBatch = 1000

// readDirect reads a stream with batched direct gets
// ($JS.API.DIRECT.GET.<stream>), from sequence from (or the first record
// stored at or after since) up to the stream's last sequence as of the
// call (or to). Direct gets create no consumer, so the read-only auditor,
// which may not create consumers, can read this way.
func readDirect(ctx context.Context, js jetstream.JetStream, stream string, from uint64, since *time.Time, to uint64, fn func(seq uint64, body []byte) error) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("failed to open stream %s: %w", stream, err)
	}
	info := s.CachedInfo()
	last := info.State.LastSeq
	if to != 0 && to < last {
		last = to
	}
	if info.State.Msgs == 0 || last < info.State.FirstSeq || from > last {
		return nil
	}
	nc := js.Conn()
	seq := max(from, 1)
	for {
		req := map[string]any{"batch": directBatch}
		if since != nil {
			req["start_time"] = since.UTC()
			since = nil
		} else {
			req["seq"] = seq
		}
		body, _ := json.Marshal(req)
		n, next, err := directGet(ctx, nc, stream, body, last, fn)
		if err != nil || n == 0 || next > last {
			return err
		}
		seq = next
	}
}

// directGet sends one batched direct get and hands each record up to last
// to fn. It returns how many it handed over and the sequence after the
// last one.
func directGet(ctx context.Context, nc *nats.Conn, stream string, req []byte, last uint64, fn func(seq uint64, body []byte) error) (int, uint64, error) {
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return 0, 0, fmt.Errorf("failed to read stream %s: %w", stream, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest("$JS.API.DIRECT.GET."+stream, inbox, req); err != nil {
		return 0, 0, fmt.Errorf("failed to read stream %s: %w", stream, err)
	}
	n, next := 0, uint64(0)
	for {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		m, err := sub.NextMsgWithContext(wctx)
		cancel()
		if err != nil {
			return n, next, fmt.Errorf("failed to read stream %s: %w", stream, err)
		}
		switch m.Header.Get("Status") {
		case "404", "204": // nothing (more) at or after the start; end of batch
			return n, next, nil
		case "":
		default:
			return n, next, fmt.Errorf("failed to read stream %s: %s %s", stream, m.Header.Get("Status"), m.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return n, next, fmt.Errorf("failed to read stream %s: a direct get reply without a sequence", stream)
		}
		next = seq + 1
		if seq > last {
			continue // after the end as of the call; drain to the EOB
		}
		n++
		if err := fn(seq, m.Data); err != nil {
			return n, next, err
		}
	}
}
