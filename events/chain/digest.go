package chain

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/keyflow/keyflow/pqc"
)

// Key specs and signing algorithms of the two sealer keys, with the names
// keyflow's KMS uses (package kms is not imported here; a test there keeps
// the names equal).
const (
	SpecEd25519 = "ECC_NIST_EDWARDS25519"
	SpecMLDSA65 = "ML_DSA_65"
	AlgEd25519  = "ED25519_SHA_512"
	AlgMLDSA    = "ML_DSA_SHAKE_256"
)

// MLDSAContext is the FIPS 204 context string of digest signatures, so an
// ML-DSA signature over a digest can never be taken for one over anything
// else the key might sign. (Ed25519 has no context; the signed message
// starts with its own domain-separation prefix instead.)
var MLDSAContext = []byte("keyflow.audit.digest.v1")

// DigestVersion is the version of the digest format and signed message.
// Version 2 added Unauthenticated; version 1 digests (sealed before record
// authentication) still verify, and their records are counted as
// [Report.Legacy].
const DigestVersion = 2

// SeqRange is an inclusive range of stream sequence numbers.
type SeqRange struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
}

// Digest seals a contiguous range of the audit stream. It is published as
// JSON on the digest stream; [Digest.SignedMessage] is what is signed.
type Digest struct {
	Version int    `json:"version"`
	Stream  string `json:"stream"` // the audit stream sealed, "KF_AUDIT"
	FromSeq uint64 `json:"fromSeq"`
	ToSeq   uint64 `json:"toSeq"`
	// Count is the number of records sealed: ToSeq-FromSeq+1 minus the
	// sequences in Gaps.
	Count uint64 `json:"count"`
	// Gaps are sequences in the range that were not in the stream when the
	// sealer read it (deleted before they could be sealed). A verifier
	// reports them as deleted records.
	Gaps []SeqRange `json:"gaps,omitempty"`
	// StartHash is the chain head before FromSeq: the previous digest's
	// HeadHash, or zero for the first digest.
	StartHash Hash `json:"startHash"`
	// HeadHash is the chain head after ToSeq.
	HeadHash Hash `json:"headHash"`
	// PrevDigestHash is [Digest.Hash] of the previous digest, zero for the
	// first.
	PrevDigestHash Hash `json:"prevDigestHash"`
	// Leaves holds Count leaf hashes (32 bytes each), in sequence order.
	Leaves []byte `json:"leaves"`
	// IDTags holds Count event-ID tags (IDTagSize bytes each).
	IDTags []byte `json:"idTags"`
	// Unauthenticated lists, in increasing order, the sequences of the
	// records in the range that carried no valid record authenticator
	// (events.RecordKey) when the sealer read them: records keyflow's own
	// code did not write. A verifier reports each as forged. Version 2.
	Unauthenticated []uint64    `json:"unauthenticated,omitempty"`
	Time            time.Time   `json:"time"`
	Signatures      []Signature `json:"signatures"`
}

// Signature is one of the digest's signatures, with the identity of the key
// that made it. Everything but the Signature bytes is part of the signed
// message.
type Signature struct {
	KeyID      string `json:"keyId"`
	KeyVersion uint32 `json:"keyVersion"`
	KeySpec    string `json:"keySpec"`
	Algorithm  string `json:"algorithm"`
	// PublicKeySHA256 is SHA-256 of the key's DER SubjectPublicKeyInfo.
	PublicKeySHA256 Hash   `json:"publicKeySha256"`
	Signature       []byte `json:"signature"`
}

// PublicKey is a sealer public key a verifier trusts.
type PublicKey struct {
	KeyID      string `json:"keyId"`
	KeyVersion uint32 `json:"keyVersion"`
	KeySpec    string `json:"keySpec"`
	// PublicKey is the DER SubjectPublicKeyInfo, as kms GetPublicKey
	// returns it (PublicKeyDER).
	PublicKey []byte `json:"publicKey"`
}

// Fingerprint is SHA-256 of the DER public key.
func (k PublicKey) Fingerprint() Hash { return sha256.Sum256(k.PublicKey) }

// Identity returns the signature header of k (without the signature).
func (k PublicKey) Identity() Signature {
	alg := AlgEd25519
	if k.KeySpec == SpecMLDSA65 {
		alg = AlgMLDSA
	}
	return Signature{KeyID: k.KeyID, KeyVersion: k.KeyVersion, KeySpec: k.KeySpec, Algorithm: alg, PublicKeySHA256: k.Fingerprint()}
}

// Seqs returns the number of sequence numbers in [FromSeq, ToSeq].
func (d *Digest) span() uint64 { return d.ToSeq - d.FromSeq + 1 }

// Leaf returns the i-th leaf.
func (d *Digest) leaf(i uint64) (h Hash) {
	copy(h[:], d.Leaves[i*32:])
	return h
}

func (d *Digest) idTag(i uint64) (t [IDTagSize]byte) {
	copy(t[:], d.IDTags[i*IDTagSize:])
	return t
}

// index maps a sequence in the range to its leaf index, or -1 for a gap.
func (d *Digest) index(seq uint64) int64 {
	skipped := uint64(0)
	for _, g := range d.Gaps {
		if seq < g.From {
			break
		}
		if seq <= g.To {
			return -1
		}
		skipped += g.To - g.From + 1
	}
	return int64(seq - d.FromSeq - skipped)
}

// unauthenticated reports whether the sealer flagged seq.
func (d *Digest) unauthenticated(seq uint64) bool {
	_, ok := slices.BinarySearch(d.Unauthenticated, seq)
	return ok
}

// inGap reports whether seq is one of the digest's gaps.
func (d *Digest) inGap(seq uint64) bool {
	for _, g := range d.Gaps {
		if seq >= g.From && seq <= g.To {
			return true
		}
	}
	return false
}

// checkShape validates the digest's internal consistency.
func (d *Digest) checkShape() error {
	if d.Version != 1 && d.Version != DigestVersion {
		return fmt.Errorf("unsupported digest version %d", d.Version)
	}
	if d.Version == 1 && len(d.Unauthenticated) > 0 {
		return errors.New("a version 1 digest has no unauthenticated records")
	}
	for i, u := range d.Unauthenticated {
		if u < d.FromSeq || u > d.ToSeq || (i > 0 && u <= d.Unauthenticated[i-1]) || d.inGap(u) {
			return fmt.Errorf("bad unauthenticated record %d", u)
		}
	}
	if d.FromSeq == 0 || d.ToSeq < d.FromSeq {
		return fmt.Errorf("bad range %d-%d", d.FromSeq, d.ToSeq)
	}
	gapped := uint64(0)
	prev := d.FromSeq
	for i, g := range d.Gaps {
		if g.From < prev || g.To < g.From || g.To > d.ToSeq || (i > 0 && g.From == prev) {
			return fmt.Errorf("bad gap %d-%d", g.From, g.To)
		}
		gapped += g.To - g.From + 1
		prev = g.To + 1
	}
	if d.Count != d.span()-gapped {
		return fmt.Errorf("count %d does not match range %d-%d with %d gaps", d.Count, d.FromSeq, d.ToSeq, gapped)
	}
	if uint64(len(d.Leaves)) != 32*d.Count || uint64(len(d.IDTags)) != IDTagSize*d.Count {
		return fmt.Errorf("leaves or ID tags do not match count %d", d.Count)
	}
	return nil
}

// SignedMessage is the byte string both signatures sign. It binds every
// field of the digest except the signature values themselves, the leaves
// and ID tags through their SHA-256, and the identity (key, version, spec,
// algorithm, public-key hash) of both signers, so a signature cannot be
// moved to another key's slot.
func (d *Digest) SignedMessage() []byte {
	var b bytes.Buffer
	b.Grow(512)
	b.WriteString("keyflow.audit.digest.v1\x00")
	u64 := func(v uint64) { b.Write(binary.BigEndian.AppendUint64(nil, v)) }
	str := func(s string) {
		b.Write(binary.BigEndian.AppendUint16(nil, uint16(len(s))))
		b.WriteString(s)
	}
	u64(uint64(d.Version))
	str(d.Stream)
	u64(d.FromSeq)
	u64(d.ToSeq)
	u64(d.Count)
	u64(uint64(len(d.Gaps)))
	for _, g := range d.Gaps {
		u64(g.From)
		u64(g.To)
	}
	b.Write(d.StartHash[:])
	b.Write(d.HeadHash[:])
	b.Write(d.PrevDigestHash[:])
	leaves := sha256.Sum256(d.Leaves)
	b.Write(leaves[:])
	tags := sha256.Sum256(d.IDTags)
	b.Write(tags[:])
	if d.Version >= 2 {
		u64(uint64(len(d.Unauthenticated)))
		for _, u := range d.Unauthenticated {
			u64(u)
		}
	}
	u64(uint64(d.Time.UnixNano()))
	u64(uint64(len(d.Signatures)))
	for _, s := range d.Signatures {
		str(s.KeyID)
		u64(uint64(s.KeyVersion))
		str(s.KeySpec)
		str(s.Algorithm)
		b.Write(s.PublicKeySHA256[:])
	}
	return b.Bytes()
}

// Hash is SHA-256 of the signed message: the next digest's PrevDigestHash.
func (d *Digest) Hash() Hash { return sha256.Sum256(d.SignedMessage()) }

// Errors of signature checks.
var (
	ErrBadSignature = errors.New("chain: digest signature does not verify")
	ErrUnknownKey   = errors.New("chain: digest signed by a key that is not trusted")
	ErrNotHybrid    = errors.New("chain: digest does not carry exactly one Ed25519 and one ML-DSA-65 signature")
)

// trustedKey is a parsed PublicKey.
type trustedKey struct {
	PublicKey
	fp    Hash
	ed    ed25519.PublicKey
	mldsa []byte
}

// KeySet is a parsed set of trusted sealer keys.
type KeySet struct {
	keys []trustedKey
}

// NewKeySet parses the trusted keys. Each must be an Ed25519 or ML-DSA-65
// DER SubjectPublicKeyInfo.
func NewKeySet(keys []PublicKey) (*KeySet, error) {
	ks := &KeySet{}
	for _, k := range keys {
		tk := trustedKey{PublicKey: k, fp: k.Fingerprint()}
		switch k.KeySpec {
		case SpecEd25519:
			pub, err := x509.ParsePKIXPublicKey(k.PublicKey)
			if err != nil {
				return nil, fmt.Errorf("failed to parse Ed25519 key %s v%d: %w", k.KeyID, k.KeyVersion, err)
			}
			ed, ok := pub.(ed25519.PublicKey)
			if !ok {
				return nil, fmt.Errorf("key %s v%d is not an Ed25519 key", k.KeyID, k.KeyVersion)
			}
			tk.ed = ed
		case SpecMLDSA65:
			raw, err := MLDSAPublicKey(k.PublicKey)
			if err != nil {
				return nil, fmt.Errorf("failed to parse ML-DSA-65 key %s v%d: %w", k.KeyID, k.KeyVersion, err)
			}
			tk.mldsa = raw
		default:
			return nil, fmt.Errorf("key %s v%d has spec %q; sealer keys are %s or %s", k.KeyID, k.KeyVersion, k.KeySpec, SpecEd25519, SpecMLDSA65)
		}
		ks.keys = append(ks.keys, tk)
	}
	return ks, nil
}

// Keys returns the trusted keys.
func (ks *KeySet) Keys() []PublicKey {
	out := make([]PublicKey, len(ks.keys))
	for i, k := range ks.keys {
		out[i] = k.PublicKey
	}
	return out
}

func (ks *KeySet) find(s Signature) *trustedKey {
	for i := range ks.keys {
		k := &ks.keys[i]
		if k.KeyID == s.KeyID && k.KeyVersion == s.KeyVersion && k.KeySpec == s.KeySpec && k.fp == s.PublicKeySHA256 {
			return k
		}
	}
	return nil
}

// MLDSAPublicKey extracts the raw ML-DSA-65 public key (what
// pqc.Signer.Verify takes) from its DER SubjectPublicKeyInfo, checking
// that the DER is exactly the encoding pqc produces.
func MLDSAPublicKey(der []byte) ([]byte, error) {
	var spki struct {
		Algorithm struct {
			Algorithm asn1.ObjectIdentifier
		}
		PublicKey asn1.BitString
	}
	rest, err := asn1.Unmarshal(der, &spki)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, errors.New("trailing data after the public key")
	}
	raw := spki.PublicKey.Bytes
	again, err := pqc.PublicKeyDER(SpecMLDSA65, raw)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, der) {
		return nil, errors.New("not an ML-DSA-65 SubjectPublicKeyInfo")
	}
	return raw, nil
}

// VerifySignatures checks that d carries exactly one Ed25519 and one
// ML-DSA-65 signature, that both keys are trusted, and that both
// signatures verify over the signed message.
func (ks *KeySet) VerifySignatures(d *Digest) error {
	var ed, ml int
	for _, s := range d.Signatures {
		switch {
		case s.KeySpec == SpecEd25519 && s.Algorithm == AlgEd25519:
			ed++
		case s.KeySpec == SpecMLDSA65 && s.Algorithm == AlgMLDSA:
			ml++
		default:
			return fmt.Errorf("%w: unexpected %s/%s", ErrNotHybrid, s.KeySpec, s.Algorithm)
		}
	}
	if ed != 1 || ml != 1 || len(d.Signatures) != 2 {
		return ErrNotHybrid
	}
	msg := d.SignedMessage()
	for _, s := range d.Signatures {
		k := ks.find(s)
		if k == nil {
			return fmt.Errorf("%w: %s %s v%d (public key %s)", ErrUnknownKey, s.KeySpec, s.KeyID, s.KeyVersion, s.PublicKeySHA256.String()[:16])
		}
		if k.ed != nil {
			if !ed25519.Verify(k.ed, msg, s.Signature) {
				return fmt.Errorf("%w: Ed25519 key %s v%d", ErrBadSignature, s.KeyID, s.KeyVersion)
			}
			continue
		}
		mldsa, err := pqc.SignerByName(SpecMLDSA65)
		if err != nil {
			return err
		}
		if err := mldsa.Verify(k.mldsa, msg, s.Signature, pqc.SignOptions{Context: MLDSAContext}); err != nil {
			return fmt.Errorf("%w: ML-DSA-65 key %s v%d", ErrBadSignature, s.KeyID, s.KeyVersion)
		}
	}
	return nil
}
