package chain

import (
	"fmt"
	"time"
)

// Builder folds records into the chain and cuts digests: the sealer's pure
// core. It is not safe for concurrent use.
type Builder struct {
	stream     string
	from       uint64 // first sequence of the pending range; 0 until known
	last       uint64 // last sequence added (or ToSeq of the previous digest)
	start      Hash   // head before the pending range
	head       Hash
	prevDigest Hash
	count      uint64
	gaps       []SeqRange
	leaves     []byte
	tags       []byte
	unauth     []uint64
	x          hasher
}

// NewBuilder starts a builder after prev, the last published digest, or at
// the beginning of a new chain when prev is nil (the first record added is
// then the chain's first sequence, and h(0) is zero).
func NewBuilder(stream string, prev *Digest) *Builder {
	b := &Builder{stream: stream}
	if prev != nil {
		b.last = prev.ToSeq
		b.from = prev.ToSeq + 1
		b.start, b.head = prev.HeadHash, prev.HeadHash
		b.prevDigest = prev.Hash()
	}
	return b
}

// NextSeq is the first sequence the builder has not seen: where a consumer
// resumes.
func (b *Builder) NextSeq() uint64 {
	if b.last == 0 && b.from == 0 {
		return 1
	}
	return b.last + 1
}

// Len is the number of records pending in the current range.
func (b *Builder) Len() int { return int(b.count) }

// Head is the chain head after the last record added.
func (b *Builder) Head() Hash { return b.head }

// Add folds one record into the chain. Sequences must increase; a jump
// records the skipped sequences as a gap (records deleted before they could
// be sealed). It returns the record's CloudEvent fields.
func (b *Builder) Add(seq uint64, body []byte) (EventFields, error) {
	if seq == 0 || seq <= b.last {
		return EventFields{}, fmt.Errorf("chain: record %d is out of order (after %d)", seq, b.last)
	}
	if b.from == 0 {
		b.from = seq
	} else if seq > b.last+1 {
		gapFrom := b.last + 1
		if b.count == 0 && gapFrom < b.from {
			gapFrom = b.from
		}
		if gapFrom <= seq-1 {
			b.gaps = append(b.gaps, SeqRange{From: gapFrom, To: seq - 1})
		}
	}
	leaf, head := b.x.both(b.head, seq, body)
	b.head = head
	b.last = seq
	b.count++
	b.leaves = append(b.leaves, leaf[:]...)
	f := ParseFields(body)
	t := idTag(f.ID)
	b.tags = append(b.tags, t[:]...)
	return f, nil
}

// MarkUnauthenticated flags the record added last as not authenticated:
// it carried no valid record authenticator (events.RecordKey), so keyflow's
// own code did not write it. The flag goes into the next digest
// ([Digest.Unauthenticated]) and a verifier reports the record as
// [KindForged].
func (b *Builder) MarkUnauthenticated() {
	if b.count > 0 && (len(b.unauth) == 0 || b.unauth[len(b.unauth)-1] < b.last) {
		b.unauth = append(b.unauth, b.last)
	}
}

// Digest returns the unsigned digest of the pending range, with the
// signature headers of signers (their Signature bytes empty), or nil if no
// record is pending. Sign [Digest.SignedMessage], fill in the signatures,
// publish, then call Commit.
func (b *Builder) Digest(now time.Time, signers []Signature) *Digest {
	if b.count == 0 {
		return nil
	}
	d := &Digest{
		Version: DigestVersion, Stream: b.stream,
		FromSeq: b.from, ToSeq: b.last, Count: b.count,
		Gaps:      append([]SeqRange(nil), b.gaps...),
		StartHash: b.start, HeadHash: b.head, PrevDigestHash: b.prevDigest,
		Leaves: append([]byte(nil), b.leaves...), IDTags: append([]byte(nil), b.tags...),
		Unauthenticated: append([]uint64(nil), b.unauth...),
		Time:            now.UTC(),
	}
	for _, s := range signers {
		s.Signature = nil
		d.Signatures = append(d.Signatures, s)
	}
	return d
}

// Commit starts the next range after d, a digest of the builder's pending
// range that was published. Records added after Digest was called (the
// builder keeps folding while a digest is being signed) stay pending.
func (b *Builder) Commit(d *Digest) error {
	if d.FromSeq != b.from || d.ToSeq > b.last || d.StartHash != b.start {
		return fmt.Errorf("chain: digest %d-%d is not the builder's pending range", d.FromSeq, d.ToSeq)
	}
	n := d.Count
	b.leaves = append(b.leaves[:0], b.leaves[n*32:]...)
	b.tags = append(b.tags[:0], b.tags[n*IDTagSize:]...)
	b.count -= n
	var rest []SeqRange
	for _, g := range b.gaps {
		if g.From > d.ToSeq {
			rest = append(rest, g)
		}
	}
	b.gaps = rest
	var unauth []uint64
	for _, u := range b.unauth {
		if u > d.ToSeq {
			unauth = append(unauth, u)
		}
	}
	b.unauth = unauth
	b.from = d.ToSeq + 1
	b.start = d.HeadHash
	b.prevDigest = d.Hash()
	return nil
}
