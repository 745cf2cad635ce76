package chain

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Kind is what is wrong at a sequence number.
type Kind string

// Finding kinds.
const (
	// KindModified: the record at this sequence is not the one that was
	// sealed. (In a live stream, where nothing can be rewritten in place,
	// this is a sealed record that was deleted and re-published with the
	// same event ID and altered content.)
	KindModified Kind = "modified"
	// KindDeleted: a sealed sequence has no record, or the sealer found it
	// already missing.
	KindDeleted Kind = "deleted"
	// KindReordered: a record is out of stream order, or appears twice, or
	// sits at another sealed record's sequence.
	KindReordered Kind = "reordered"
	// KindForgedDigest: a digest does not verify: a signature is bad or
	// missing, a key is not trusted, or it does not link to the previous
	// digest (prevDigestHash, startHash, sequence range) or to its records
	// (headHash). Its Seq is the digest's FromSeq.
	KindForgedDigest Kind = "forged-digest"
	// KindTruncated: the head of the trail was cut: records sealed in
	// digests, or digests themselves, are gone from the start of their
	// stream, and the deployment's retention policy does not explain it.
	// Its Seq is the first missing sequence; Missing counts the records.
	KindTruncated Kind = "truncated"
	// KindForged: the record is sealed as it was stored, but the sealer
	// found no valid record authenticator on it (events.RecordKey): it was
	// published on the audit stream by something other than keyflow's own
	// code, with a NATS credential that may publish there. Its Detail
	// names the event ID.
	KindForged Kind = "forged"
	// KindStreamChanged: a record of the trail says an audit stream's
	// retention or limits were changed outside the configured policy.
	KindStreamChanged Kind = "stream-changed"
	// KindReplayed: a sealed, authenticated record carries the event ID of
	// an earlier one: a genuine record published again after the stream's
	// duplicate window (two minutes), which JetStream no longer drops. Its
	// Seq is the later copy; Detail names both sequences and the event ID.
	KindReplayed Kind = "replayed"
	// KindForgedRequest: a worker refused a NATS request whose
	// server-vouched identity (Nats-Request-Info) named a user key,
	// principal or roles that keyflow never issued to that tenant
	// (UnrecognizedClientException). The server writes that header itself
	// on a tenant's requests, so only someone publishing inside keyflow's
	// own NATS account can send one: an attempt to act as a tenant. The
	// request was refused; the finding says someone holds such a
	// credential.
	KindForgedRequest Kind = "forged-request"
	// KindUnsignedRequest: a worker refused a NATS request that was not
	// signed, or not validly, by the user key its identity names (a
	// missing, malformed, expired or replayed request signature). Listed
	// in Report.Unsigned, not a failure: a tenant's own outdated or
	// misconfigured client causes these too, and so does someone inside
	// keyflow's account naming a genuine principal whose key it lacks.
	KindUnsignedRequest Kind = "unsigned-request"
)

// Finding is one problem, at the sequence number where it starts.
type Finding struct {
	Seq    uint64 `json:"seq"`
	Kind   Kind   `json:"kind"`
	Detail string `json:"detail"`
	// Missing is the number of records gone (KindTruncated).
	Missing uint64 `json:"missing,omitempty"`
}

func (f Finding) String() string {
	switch f.Kind {
	case KindForgedDigest:
		return fmt.Sprintf("seq %d: forged digest: %s", f.Seq, f.Detail)
	case KindTruncated, KindStreamChanged, KindForged, KindReplayed, KindForgedRequest, KindUnsignedRequest:
		return fmt.Sprintf("seq %d: %s: %s", f.Seq, f.Kind, f.Detail)
	}
	return fmt.Sprintf("seq %d: %s record: %s", f.Seq, f.Kind, f.Detail)
}

// Report is the outcome of a verification.
type Report struct {
	// Findings, ordered by sequence; the first is the first bad record.
	// Capped at Options.MaxFindings.
	Findings []Finding `json:"findings,omitempty"`
	// Verified is the number of records checked against a digest.
	Verified uint64 `json:"verified"`
	// Digests is the number of digests whose signatures and links checked.
	Digests int `json:"digests"`
	// From and To are the sequence range checked against digests (To is
	// the last digest's ToSeq, or Options.To).
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
	// UnsealedFrom and Unsealed describe the unsealed tail: records after
	// the last digest. Informational; the sealer seals them within seconds.
	UnsealedFrom uint64 `json:"unsealedFrom,omitempty"`
	Unsealed     uint64 `json:"unsealed,omitempty"`
	// Anchor says what the check started from: the zero hash of a new
	// chain, or a digest trusted by its signatures alone (retention).
	Anchor string `json:"anchor"`
	// Retention, when the head of the trail was cut by the recorded
	// retention policy, says how many records it removed and which
	// limit explains it; verification then starts after the cut.
	Retention string `json:"retention,omitempty"`
	// Checkpoint says which checkpoint the trail was checked against.
	Checkpoint string `json:"checkpoint,omitempty"`
	// Legacy is the number of verified records sealed by version 1
	// digests, before records were authenticated: their chain is checked,
	// their origin is not.
	Legacy uint64 `json:"legacy,omitempty"`
	// Unsigned lists requests the workers refused for a missing or bad
	// request signature (KindUnsignedRequest), capped like Findings.
	// Informational: they do not fail the verification.
	Unsigned []Finding `json:"unsigned,omitempty"`
}

// AddFindings adds findings found outside the verifier (a cut head, a
// stream change) and keeps the findings ordered by sequence.
func (r *Report) AddFindings(fs ...Finding) {
	r.Findings = append(r.Findings, fs...)
	sort.SliceStable(r.Findings, func(i, j int) bool { return r.Findings[i].Seq < r.Findings[j].Seq })
}

// OK reports whether nothing is wrong.
func (r *Report) OK() bool { return len(r.Findings) == 0 }

// First returns the first finding, or nil.
func (r *Report) First() *Finding {
	if len(r.Findings) == 0 {
		return nil
	}
	return &r.Findings[0]
}

// Options configure a Verifier.
type Options struct {
	// Keys are the trusted sealer public keys (every version that may have
	// signed). Required.
	Keys []PublicKey
	// Stream is the audit stream's name that digests must name; empty
	// accepts any.
	Stream string
	// From is the first sequence to check; 0 means the first digest's
	// FromSeq. Records before it are ignored and need not exist (they may
	// have aged out). When From is not a digest boundary, the records of
	// its digest before From are not needed either: each record is checked
	// against its leaf, and the digest's head only when its whole range
	// was read.
	From uint64
	// To is the last sequence to check; 0 means through the last digest.
	To uint64
	// MaxFindings caps Report.Findings (default 1000).
	MaxFindings int
}

// ErrNoKeys is returned when Options.Keys is empty.
var ErrNoKeys = errors.New("chain: no trusted sealer keys given")

// window is a digest as the verifier walks it.
type window struct {
	d     *Digest
	ok    bool   // signatures and links verified
	next  uint64 // next sequence expected in it
	head  Hash
	whole bool // reading from its FromSeq: the head can be checked
	bad   bool // a finding fell in it
	seen  uint64
}

// Verifier checks records against digests. Give it the digests up front,
// then every record in the order read with Add, then call Finish.
type Verifier struct {
	opts     Options
	keys     *KeySet
	wins     []*window
	wi       int // current window
	lastSeq  uint64
	started  bool
	findings map[uint64]Finding
	// missing are sealed sequences found missing, by their event-ID tag,
	// so a later copy with the same event ID turns "deleted" into
	// "modified".
	missing map[[IDTagSize]byte]uint64
	// ids maps the event-ID tag of every verified record to its sequence,
	// to find a record stored twice (KindReplayed): about 40 bytes a record.
	ids    map[[IDTagSize]byte]uint64
	report Report
	x      hasher
}

// NewVerifier checks the digests (signatures, and the links between
// consecutive digests) and prepares to check records. Digest problems are
// findings in the final report, not errors; the error is for unusable
// options.
func NewVerifier(opts Options, digests []*Digest) (*Verifier, error) {
	if len(opts.Keys) == 0 {
		return nil, ErrNoKeys
	}
	ks, err := NewKeySet(opts.Keys)
	if err != nil {
		return nil, err
	}
	if opts.MaxFindings <= 0 {
		opts.MaxFindings = 1000
	}
	v := &Verifier{opts: opts, keys: ks, findings: map[uint64]Finding{}, missing: map[[IDTagSize]byte]uint64{}, ids: map[[IDTagSize]byte]uint64{}}
	ds := slices.Clone(digests)
	sort.SliceStable(ds, func(i, j int) bool {
		if ds[i].FromSeq != ds[j].FromSeq {
			return ds[i].FromSeq < ds[j].FromSeq
		}
		return ds[i].ToSeq < ds[j].ToSeq
	})
	var prev *window
	for _, d := range ds {
		w := &window{d: d, ok: true}
		fail := func(format string, args ...any) {
			w.ok = false
			v.add(Finding{Seq: d.FromSeq, Kind: KindForgedDigest, Detail: fmt.Sprintf("digest %d-%d: ", d.FromSeq, d.ToSeq) + fmt.Sprintf(format, args...)})
		}
		if err := d.checkShape(); err != nil {
			fail("%v", err)
		} else if opts.Stream != "" && d.Stream != opts.Stream {
			fail("seals stream %q, not %q", d.Stream, opts.Stream)
		} else if err := ks.VerifySignatures(d); err != nil {
			fail("%v", err)
		}
		if prev != nil {
			pd := prev.d
			switch {
			case d.FromSeq == pd.FromSeq && d.ToSeq == pd.ToSeq && d.Hash() == pd.Hash():
				continue // the same digest twice (an export of overlapping runs)
			case d.FromSeq <= pd.ToSeq:
				fail("overlaps digest %d-%d", pd.FromSeq, pd.ToSeq)
			case d.FromSeq != pd.ToSeq+1:
				fail("the digest chain has a hole: no digest covers %d-%d", pd.ToSeq+1, d.FromSeq-1)
			case d.PrevDigestHash != pd.Hash():
				fail("prevDigestHash does not match the previous digest %d-%d", pd.FromSeq, pd.ToSeq)
			case d.StartHash != pd.HeadHash:
				fail("startHash does not match the previous digest's headHash")
			}
		} else if w.ok {
			if d.PrevDigestHash.IsZero() && d.StartHash.IsZero() {
				v.report.Anchor = fmt.Sprintf("chain start at seq %d (h0 = 32 zero bytes)", d.FromSeq)
			} else {
				v.report.Anchor = fmt.Sprintf("digest %d-%d, trusted by its signatures alone (earlier digests not given)", d.FromSeq, d.ToSeq)
			}
		}
		if w.ok {
			v.report.Digests++
		}
		v.wins = append(v.wins, w)
		prev = w
	}
	if len(v.wins) > 0 {
		if v.opts.From == 0 {
			v.opts.From = v.wins[0].d.FromSeq
		}
		last := v.wins[len(v.wins)-1].d.ToSeq
		v.report.From, v.report.To = v.opts.From, last
		if v.opts.To != 0 && v.opts.To < last {
			v.report.To = v.opts.To
		}
	}
	// Skip windows that end before From.
	for v.wi < len(v.wins) && v.wins[v.wi].d.ToSeq < v.opts.From {
		v.wi++
	}
	if v.wi > 0 && v.wi < len(v.wins) {
		d := v.wins[v.wi].d
		v.report.Anchor = fmt.Sprintf("digest %d-%d: its startHash is the headHash of digest %d-%d, linked back through the signed digest chain to the %s",
			d.FromSeq, d.ToSeq, v.wins[v.wi-1].d.FromSeq, v.wins[v.wi-1].d.ToSeq, v.report.Anchor)
	}
	v.open()
	return v, nil
}

// open prepares the current window.
func (v *Verifier) open() {
	if v.wi >= len(v.wins) {
		return
	}
	w := v.wins[v.wi]
	w.next = max(w.d.FromSeq, v.opts.From)
	w.whole = w.next == w.d.FromSeq
	w.head = w.d.StartHash
}

func (v *Verifier) inRange(seq uint64) bool {
	return seq >= v.opts.From && (v.opts.To == 0 || seq <= v.opts.To)
}

func (v *Verifier) add(f Finding) {
	if old, ok := v.findings[f.Seq]; ok && old.Kind != KindDeleted {
		return // keep the first finding at a sequence, but let a later one explain a deletion
	}
	if len(v.findings) >= v.opts.MaxFindings {
		// Keep the lowest sequences: drop the highest if f is lower.
		var hi uint64
		for s := range v.findings {
			hi = max(hi, s)
		}
		if f.Seq >= hi {
			return
		}
		delete(v.findings, hi)
	}
	v.findings[f.Seq] = f
}

// markMissing records the expected sequences [from, to] of w as deleted.
func (v *Verifier) markMissing(w *window, from, to uint64) {
	if v.opts.To != 0 && to > v.opts.To {
		to = v.opts.To
	}
	for s := from; s <= to && s >= from; s++ {
		if len(v.findings) >= v.opts.MaxFindings {
			return
		}
		w.bad = true
		if !w.ok {
			continue // its leaves are not trusted; the digest finding covers it
		}
		if w.d.inGap(s) {
			v.add(Finding{Seq: s, Kind: KindDeleted, Detail: "the record was already missing when the sealer reached it"})
			continue
		}
		i := w.d.index(s)
		v.missing[w.d.idTag(uint64(i))] = s
		v.add(Finding{Seq: s, Kind: KindDeleted, Detail: fmt.Sprintf("sealed in digest %d-%d but not found", w.d.FromSeq, w.d.ToSeq)})
	}
}

// close finishes the current window: whatever it still expected is missing,
// and when it was read whole and clean its head must match.
func (v *Verifier) close() {
	w := v.wins[v.wi]
	if w.next <= w.d.ToSeq && v.inRange(w.next) {
		v.markMissing(w, w.next, w.d.ToSeq)
	}
	if w.ok && w.whole && !w.bad && (v.opts.To == 0 || v.opts.To >= w.d.ToSeq) && w.head != w.d.HeadHash {
		v.add(Finding{Seq: w.d.FromSeq, Kind: KindForgedDigest, Detail: fmt.Sprintf("digest %d-%d: headHash does not match its records", w.d.FromSeq, w.d.ToSeq)})
	}
	v.wi++
	v.open()
}

// Add checks one record. Call it for every record in the order it was read
// (stream order for a stream; file order for an export). body is not
// retained.
func (v *Verifier) Add(seq uint64, body []byte) {
	if !v.inRange(seq) {
		return
	}
	if v.started && seq <= v.lastSeq {
		detail := fmt.Sprintf("out of order: it comes after seq %d", v.lastSeq)
		if seq == v.lastSeq {
			detail = "it appears twice"
		}
		v.add(Finding{Seq: seq, Kind: KindReordered, Detail: detail})
		v.markWindowBad(seq)
		return
	}
	v.started = true
	v.lastSeq = seq
	v.check(seq, body)
	if len(v.missing) > 0 {
		v.explainMissing(seq, body)
	}
}

// check checks an in-order record against its digest.
func (v *Verifier) check(seq uint64, body []byte) {
	for v.wi < len(v.wins) && v.wins[v.wi].d.ToSeq < seq {
		v.close()
	}
	if v.wi >= len(v.wins) || seq < v.wins[v.wi].d.FromSeq {
		if v.wi >= len(v.wins) {
			if v.report.Unsealed == 0 {
				v.report.UnsealedFrom = seq
			}
			v.report.Unsealed++
		}
		return
	}
	w := v.wins[v.wi]
	if seq > w.next {
		v.markMissing(w, w.next, seq-1)
	}
	w.next = seq + 1
	if !w.ok {
		return
	}
	i := w.d.index(seq)
	if i < 0 {
		w.bad = true
		v.add(Finding{Seq: seq, Kind: KindModified, Detail: "a record at a sequence the sealer found empty"})
		return
	}
	var leaf Hash
	if w.whole && !w.bad {
		leaf, w.head = v.x.both(w.head, seq, body)
	} else {
		leaf = v.x.leaf(seq, body)
	}
	if leaf != w.d.leaf(uint64(i)) {
		w.bad = true
		if j, ok := v.sealedElsewhere(w, seq, body); ok {
			v.add(Finding{Seq: seq, Kind: KindReordered, Detail: fmt.Sprintf("it holds the record sealed at seq %d", j)})
		} else {
			v.add(Finding{Seq: seq, Kind: KindModified, Detail: fmt.Sprintf("its hash does not match the leaf in digest %d-%d", w.d.FromSeq, w.d.ToSeq)})
		}
		return
	}
	v.report.Verified++
	authentic := true
	if w.d.Version == 1 {
		v.report.Legacy++
	} else if w.d.unauthenticated(seq) {
		authentic = false
		id := ParseFields(body).ID
		v.add(Finding{Seq: seq, Kind: KindForged, Detail: fmt.Sprintf("record %s carried no valid record authenticator when the sealer read it: keyflow did not write it", id)})
	}
	tag := w.d.idTag(uint64(i))
	if first, ok := v.ids[tag]; ok {
		if id := ParseFields(body).ID; id != "" {
			v.add(Finding{Seq: seq, Kind: KindReplayed, Detail: fmt.Sprintf("record %s, stored at seq %d, is stored again at seq %d: a genuine record re-published after the stream's duplicate window or under another Nats-Msg-Id (a replay), or a step retried that late", id, first, seq)})
		}
	} else {
		v.ids[tag] = seq
	}
	if authentic {
		v.refusedRequest(seq, body)
	}
	if seq == w.d.ToSeq {
		v.close()
	}
}

// Refusal codes of request signatures (workers/rpc, reqsig.go), as
// recorded in io.keyflow.request.rejected.v1.
var (
	forgedRequestCodes   = []string{"UnrecognizedClientException"}
	unsignedRequestCodes = []string{"MissingAuthenticationTokenException", "IncompleteSignatureException", "InvalidSignatureException"}
)

var typeRequestRejected = []byte(`"io.keyflow.request.rejected.v1"`)

// refusedRequest reports a genuine record of a NATS request refused for
// its identity or signature (KindForgedRequest, KindUnsignedRequest).
// Refusals of the AWS and KMIP gateways (operation aws.* or kmip.*) share
// some codes, for their own authentication; they are not these.
func (v *Verifier) refusedRequest(seq uint64, body []byte) {
	if !bytes.Contains(body, typeRequestRejected) {
		return
	}
	var e struct {
		Type      string `json:"type"`
		Tenant    string `json:"tenant"`
		Principal string `json:"principal"`
		ErrorCode string `json:"errorcode"`
		RequestID string `json:"requestid"`
		Data      struct {
			Operation string `json:"operation"`
		} `json:"data"`
	}
	if json.Unmarshal(body, &e) != nil || string(typeRequestRejected[1:len(typeRequestRejected)-1]) != e.Type ||
		strings.HasPrefix(e.Data.Operation, "aws.") || strings.HasPrefix(e.Data.Operation, "kmip.") {
		return
	}
	what := fmt.Sprintf("a request for %s of tenant %s naming principal %q (request %s) was refused with %s", e.Data.Operation, e.Tenant, e.Principal, e.RequestID, e.ErrorCode)
	switch {
	case slices.Contains(forgedRequestCodes, e.ErrorCode):
		v.add(Finding{Seq: seq, Kind: KindForgedRequest, Detail: what + ": its identity was not one keyflow issued, so it was published inside keyflow's own NATS account by someone acting as the tenant"})
	case slices.Contains(unsignedRequestCodes, e.ErrorCode) && len(v.report.Unsigned) < v.opts.MaxFindings:
		v.report.Unsigned = append(v.report.Unsigned, Finding{Seq: seq, Kind: KindUnsignedRequest, Detail: what + ": not signed, or not validly, by the principal's own key (an outdated client, or someone without the key)"})
	}
}

// markWindowBad flags the window holding seq, so its head is not checked
// (the finding already explains it).
func (v *Verifier) markWindowBad(seq uint64) {
	for _, w := range v.wins {
		if seq >= w.d.FromSeq && seq <= w.d.ToSeq {
			w.bad = true
			return
		}
	}
}

// sealedElsewhere looks for the sequence in w whose leaf body has: a record
// moved to another record's place.
func (v *Verifier) sealedElsewhere(w *window, seq uint64, body []byte) (uint64, bool) {
	if len(v.findings) >= 100 {
		return 0, false // bound the cost on a badly damaged range
	}
	for j := w.d.FromSeq; j <= w.d.ToSeq; j++ {
		i := w.d.index(j)
		if j == seq || i < 0 {
			continue
		}
		if v.x.leaf(j, body) == w.d.leaf(uint64(i)) {
			return j, true
		}
	}
	return 0, false
}

// explainMissing turns a "deleted" finding into "modified" when this
// record carries the missing record's event ID.
func (v *Verifier) explainMissing(seq uint64, body []byte) {
	f := ParseFields(body)
	if f.ID == "" {
		return
	}
	s, ok := v.missing[idTag(f.ID)]
	if !ok {
		return
	}
	delete(v.missing, idTag(f.ID))
	if old, ok := v.findings[s]; ok && old.Kind == KindDeleted {
		v.findings[s] = Finding{Seq: s, Kind: KindModified, Detail: fmt.Sprintf("the sealed record was deleted and an altered copy (same event ID %s) was added at seq %d", f.ID, seq)}
	}
}

// Finish closes the remaining digests (their records not seen are
// deleted) and returns the report.
func (v *Verifier) Finish() *Report {
	for v.wi < len(v.wins) {
		w := v.wins[v.wi]
		if v.opts.To != 0 && w.d.FromSeq > v.opts.To {
			break
		}
		v.close()
	}
	r := v.report
	for _, f := range v.findings {
		r.Findings = append(r.Findings, f)
	}
	sort.Slice(r.Findings, func(i, j int) bool { return r.Findings[i].Seq < r.Findings[j].Seq })
	return &r
}
