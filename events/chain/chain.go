// Package chain makes keyflow's audit trail tamper-evident, and checks it.
//
// # The chain
//
// One sealer reads the audit stream (KF_AUDIT) in stream order and folds
// every record into a SHA-256 hash chain:
//
//	canonical(n) = seq(n) as 8 bytes big-endian ‖ body(n)
//	h(0)         = 32 zero bytes
//	h(n)         = SHA-256(h(n-1) ‖ canonical(n))
//	leaf(n)      = SHA-256(canonical(n))
//
// body(n) is the message exactly as the stream stores it: the CloudEvent in
// its structured JSON form, byte for byte. Nothing is re-encoded, so an
// auditor needs no CloudEvents library to recompute a hash, only the bytes
// and the sequence number.
//
// # Digests
//
// Every N records (default 1000), or after at most T (default 2 s) when
// something new arrived, the sealer publishes a [Digest] for the records it
// folded since the previous one: the sequence range, the chain head before
// and after it, the hash of the previous digest (so the digests form a chain
// of their own), one leaf per record, and two signatures over all of that,
// one Ed25519 and one ML-DSA-65 (a hybrid signature: a digest is authentic
// only if both verify). The leaves are what lets a verifier name the first
// bad record instead of only saying that a range is bad, and check a range
// whose older records have aged out of the stream.
//
// # Verifying
//
// A [Verifier] takes the digests and the trusted sealer public keys, then
// the records in the order they were read (from the stream or from an
// export file), and reports every [Finding] with its sequence number and
// kind: a modified, deleted or reordered record, or a forged digest (a bad
// or missing signature, a key that is not trusted, or a broken link to the
// previous digest). Records after the last digest are the unsealed tail:
// reported, not an error, since the sealer has not reached them yet.
//
// # Retention
//
// When old records age out of the stream, verification starts at a later
// sequence ([Options.From]). The digest chain is then the trust anchor: the
// digest covering the start carries the chain head before its range
// (StartHash, equal to the previous digest's HeadHash and signed), and its
// leaves authenticate each record on their own, so a range that starts in
// the middle of a digest is still checked record by record. Digests are
// small (about 40 bytes per record) and are kept for longer than records.
//
// This package does pure computation: it imports no transport, so the same
// code checks a live stream and an export file.
package chain

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
)

// Hash is a SHA-256 value. It encodes as lower-case hex in JSON.
type Hash [32]byte

// String returns h in hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// IsZero reports whether h is all zeros (h(0), and the previous-digest hash
// of the first digest).
func (h Hash) IsZero() bool { return h == Hash{} }

// MarshalText implements encoding.TextMarshaler.
func (h Hash) MarshalText() ([]byte, error) {
	out := make([]byte, hex.EncodedLen(len(h)))
	hex.Encode(out, h[:])
	return out, nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (h *Hash) UnmarshalText(b []byte) error {
	if len(b) != hex.EncodedLen(len(h)) {
		return fmt.Errorf("chain: a hash is %d hex digits, got %d", hex.EncodedLen(len(h)), len(b))
	}
	if _, err := hex.Decode(h[:], b); err != nil {
		return fmt.Errorf("chain: failed to decode hash: %w", err)
	}
	return nil
}

// Leaf returns SHA-256(canonical(seq, body)).
func Leaf(seq uint64, body []byte) Hash {
	var h hasher
	return h.leaf(seq, body)
}

// Next returns SHA-256(prev ‖ canonical(seq, body)), the chain head after
// the record.
func Next(prev Hash, seq uint64, body []byte) Hash {
	var h hasher
	_, head := h.both(prev, seq, body)
	return head
}

// hasher computes leaves and heads without allocating.
type hasher struct {
	h   hash.Hash
	seq [8]byte
	out [32]byte
}

func (x *hasher) init() {
	if x.h == nil {
		x.h = sha256.New()
	}
}

func (x *hasher) leaf(seq uint64, body []byte) (leaf Hash) {
	x.init()
	binary.BigEndian.PutUint64(x.seq[:], seq)
	x.h.Reset()
	x.h.Write(x.seq[:])
	x.h.Write(body)
	x.h.Sum(leaf[:0])
	return leaf
}

// both returns leaf(seq, body) and the head after it.
func (x *hasher) both(prev Hash, seq uint64, body []byte) (leaf, head Hash) {
	leaf = x.leaf(seq, body)
	x.h.Reset()
	x.h.Write(prev[:])
	x.h.Write(x.seq[:])
	x.h.Write(body)
	x.h.Sum(head[:0])
	return leaf, head
}

// idTag is a short fingerprint of a CloudEvent ID. Digests carry one per
// record so that a verifier that finds a sealed record missing can tell
// "deleted" from "deleted and re-published with altered content" (JetStream
// cannot write at an old sequence, so a modification in the stream always
// shows up as a hole plus a later copy).
func idTag(id string) [IDTagSize]byte {
	sum := sha256.Sum256([]byte("keyflow.audit.id\x00" + id))
	var t [IDTagSize]byte
	copy(t[:], sum[:])
	return t
}

// IDTagSize is the length of one record's event-ID tag in a digest.
const IDTagSize = 8
