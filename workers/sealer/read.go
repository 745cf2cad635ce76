package sealer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/events/chain"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/pqc"
)

// StoredPublicKeys reads the public keys of every version of both sealer
// keys from the key store. The auditor reads the store directly (with the
// KF account's creds), not through the KMS service, so the keys come from
// the store of record rather than from the stream being checked. ML-DSA
// public keys are stored raw and returned as DER SubjectPublicKeyInfo, as
// kms GetPublicKey returns them.
func StoredPublicKeys(ctx context.Context, store kms.Store) ([]chain.PublicKey, error) {
	var out []chain.PublicKey
	for _, alias := range []string{AliasEd25519, AliasMLDSA65} {
		id, err := store.ResolveAlias(ctx, SystemTenant, alias)
		if errors.Is(err, kms.ErrStoreNotFound) {
			return nil, fmt.Errorf("the sealer key alias/%s does not exist (has the sealer ever run?)", alias)
		}
		if err != nil {
			return nil, fmt.Errorf("failed to resolve sealer key alias/%s: %w", alias, err)
		}
		k, _, err := store.GetKey(ctx, SystemTenant, id)
		if err != nil {
			return nil, fmt.Errorf("failed to read sealer key %s: %w", id, err)
		}
		for _, v := range k.Versions {
			m, err := store.GetMaterial(ctx, SystemTenant, id, v.Number)
			if errors.Is(err, kms.ErrStoreNotFound) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("failed to read sealer key %s version %d: %w", id, v.Number, err)
			}
			der := m.PublicKey
			if k.Spec == kms.SpecMLDSA65 {
				if der, err = pqc.PublicKeyDER(string(kms.SpecMLDSA65), m.PublicKey); err != nil {
					return nil, fmt.Errorf("failed to encode sealer key %s version %d: %w", id, v.Number, err)
				}
			}
			out = append(out, chain.PublicKey{KeyID: id, KeyVersion: v.Number, KeySpec: string(k.Spec), PublicKey: der})
		}
	}
	return out, nil
}

// VerifyParams select what Verify checks.
type VerifyParams struct {
	// Keys are the trusted sealer public keys (StoredPublicKeys, or pinned).
	Keys []chain.PublicKey
	// From and To bound the sequences checked (see chain.Options). With
	// From 0 Verify also checks the head of the trail: see Verify.
	From, To uint64
	// Checkpoint, when set, is a digest exported earlier (`keyflow audit
	// checkpoint`), whose signatures the caller checked: the digest stream
	// must still hold it, unchanged.
	Checkpoint *chain.Digest
	// Now is the time the MaxAge limit is measured from (default now).
	Now time.Time
	// Read, when set, counts the records read into the verifier so far,
	// for a progress line read from another goroutine.
	Read *atomic.Uint64
}

// Verify checks the audit stream against the digest stream.
//
// It also checks the heads of both streams. Digests are kept for ever, so
// a digest stream that no longer starts with the chain's first digest is
// a finding (KindTruncated). Records may age out, but only as the policy
// the operator recorded in the stream's metadata (jsaudit.Provision)
// allows: when the audit stream starts after the first sealed record,
// Verify counts the records missing and passes only when the stream's
// limits are still the recorded ones and one of them explains the cut
// (the stream is full by count or size, or the last record removed was
// older than the maximum age); it then says so in Report.Retention and
// checks from the first record left. Any other cut is a finding with the
// number of records missing. Every io.keyflow.audit.stream.changed.v1
// record that a watch wrote (limits changed outside the policy) is a
// finding too (KindStreamChanged).
func Verify(ctx context.Context, js jetstream.JetStream, p VerifyParams) (*chain.Report, error) {
	digests, err := jsaudit.ReadDigests(ctx, js)
	if err != nil {
		return nil, err
	}
	aud, err := streamInfo(ctx, js, jsaudit.StreamName)
	if err != nil {
		return nil, err
	}
	dig, err := streamInfo(ctx, js, jsaudit.DigestStreamName)
	if err != nil {
		return nil, err
	}
	if p.Now.IsZero() {
		p.Now = time.Now()
	}
	from := p.From
	var pre []chain.Finding
	var retention, checkpoint string
	if len(digests) > 0 {
		first := digests[0]
		// origin is the first sealed sequence: the first digest's, or,
		// when the digest trail itself was cut, the start of the stream.
		origin := first.FromSeq
		if dig.State.FirstSeq > 1 || !first.PrevDigestHash.IsZero() || !first.StartHash.IsZero() {
			origin = 1
			pre = append(pre, chain.Finding{Seq: first.FromSeq, Kind: chain.KindTruncated, Missing: first.FromSeq - 1,
				Detail: fmt.Sprintf("the digest trail's head was cut: %d digests removed (the digest stream starts at its seq %d, and its first digest %d-%d does not start the chain; %d sealed records are no longer covered); digests are kept for ever, so no retention policy explains it",
					dig.State.FirstSeq-1, dig.State.FirstSeq, first.FromSeq, first.ToSeq, first.FromSeq-1)})
		}
		if from == 0 && aud.State.FirstSeq > origin {
			cutTo := aud.State.FirstSeq - 1
			missing := cutTo - origin + 1
			why, ok := explainCut(aud, digestOf(digests, cutTo), p.Now)
			if ok {
				retention = fmt.Sprintf("the head of the trail was cut by retention: %d records (seq %d-%d) removed, as the recorded policy allows (%s); checked from seq %d",
					missing, origin, cutTo, why, aud.State.FirstSeq)
			} else {
				pre = append(pre, chain.Finding{Seq: origin, Kind: chain.KindTruncated, Missing: missing,
					Detail: fmt.Sprintf("the trail's head was cut: %d sealed records (seq %d-%d) are gone, and the recorded retention policy does not explain it: %s",
						missing, origin, cutTo, why)})
			}
			from = aud.State.FirstSeq
		}
	}
	if c := p.Checkpoint; c != nil {
		checkpoint = fmt.Sprintf("digest %d-%d (sealed %s)", c.FromSeq, c.ToSeq, c.Time.UTC().Format(time.RFC3339))
		if f := checkCheckpoint(digests, c); f != nil {
			pre = append(pre, *f)
		}
	}
	v, err := chain.NewVerifier(chain.Options{Keys: p.Keys, Stream: jsaudit.StreamName, From: from, To: p.To}, digests)
	if err != nil {
		return nil, err
	}
	if err := jsaudit.ReadAll(ctx, js, jsaudit.ReadAllParams{FromSeq: from, ToSeq: p.To}, func(seq uint64, body []byte) error {
		v.Add(seq, body)
		if p.Read != nil {
			p.Read.Add(1)
		}
		if f := streamChanged(seq, body); f != nil {
			pre = append(pre, *f)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	r := v.Finish()
	r.AddFindings(pre...)
	r.Retention, r.Checkpoint = retention, checkpoint
	explainRetention(ctx, js, r)
	return r, nil
}

func streamInfo(ctx context.Context, js jetstream.JetStream, name string) (*jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("failed to open stream %s: %w", name, err)
	}
	return s.CachedInfo(), nil
}

// digestOf returns the digest sealing seq, or nil.
func digestOf(ds []*chain.Digest, seq uint64) *chain.Digest {
	for _, d := range ds {
		if seq >= d.FromSeq && seq <= d.ToSeq {
			return d
		}
	}
	return nil
}

// maxAgeSlack is how much later than the record itself its digest may be
// sealed (the sealer's interval, with margin).
const maxAgeSlack = time.Minute

// explainCut says whether the recorded retention policy explains a cut
// head whose last removed record was sealed in d, and why (or why not).
func explainCut(info *jetstream.StreamInfo, d *chain.Digest, now time.Time) (string, bool) {
	raw, ok := info.Config.Metadata[jsaudit.MetadataPolicy]
	if !ok {
		return "no retention policy is recorded in the stream's metadata", false
	}
	var rec jsaudit.Limits
	if err := json.Unmarshal([]byte(raw), &rec); err != nil {
		return "the recorded retention policy does not parse", false
	}
	if cur := jsaudit.LimitsOf(info.Config); cur != rec {
		return fmt.Sprintf("the stream's limits %+v are not the recorded policy %+v", cur, rec), false
	}
	if rec.Unlimited() {
		return "the recorded policy keeps every record", false
	}
	st := info.State
	switch {
	case rec.MaxMsgs > 0 && st.Msgs >= uint64(rec.MaxMsgs):
		return fmt.Sprintf("max-msgs %d, and the stream holds %d records", rec.MaxMsgs, st.Msgs), true
	case rec.MaxBytes > 0 && st.Bytes+jsaudit.MaxEventBytes >= uint64(rec.MaxBytes):
		return fmt.Sprintf("max-bytes %d, and the stream holds %d bytes", rec.MaxBytes, st.Bytes), true
	case rec.MaxAgeSeconds > 0 && d != nil && !d.Time.After(now.Add(-time.Duration(rec.MaxAgeSeconds)*time.Second+maxAgeSlack)):
		return fmt.Sprintf("max-age %s, and the last record removed was sealed at %s", time.Duration(rec.MaxAgeSeconds)*time.Second, d.Time.UTC().Format(time.RFC3339)), true
	}
	return fmt.Sprintf("the policy %+v: the stream holds %d records and %d bytes, and no limit removes records this recent", rec, st.Msgs, st.Bytes), false
}

// checkCheckpoint finds the checkpoint's digest in the digest stream.
func checkCheckpoint(ds []*chain.Digest, c *chain.Digest) *chain.Finding {
	for _, d := range ds {
		if d.FromSeq != c.FromSeq || d.ToSeq != c.ToSeq {
			continue
		}
		if d.Hash() != c.Hash() {
			return &chain.Finding{Seq: c.FromSeq, Kind: chain.KindForgedDigest,
				Detail: fmt.Sprintf("digest %d-%d differs from the checkpoint's: the trail sealed before the checkpoint was rewritten", c.FromSeq, c.ToSeq)}
		}
		return nil
	}
	return &chain.Finding{Seq: c.FromSeq, Kind: chain.KindTruncated, Missing: c.ToSeq,
		Detail: fmt.Sprintf("the checkpoint's digest %d-%d is no longer in the digest stream: the trail sealed before the checkpoint was removed or replaced", c.FromSeq, c.ToSeq)}
}

var streamChangedType = []byte(`"` + events.TypeAuditStreamChanged + `"`)

// streamChanged turns a watch's io.keyflow.audit.stream.changed.v1 record
// into a finding.
func streamChanged(seq uint64, body []byte) *chain.Finding {
	if !bytes.Contains(body, streamChangedType) {
		return nil
	}
	var ev struct {
		Type string `json:"type"`
		Data struct {
			Stream      string         `json:"stream"`
			Provisioned bool           `json:"provisioned"`
			Expected    jsaudit.Limits `json:"expected"`
			Actual      jsaudit.Limits `json:"actual"`
		} `json:"data"`
	}
	if json.Unmarshal(body, &ev) != nil || ev.Type != events.TypeAuditStreamChanged || ev.Data.Provisioned {
		return nil
	}
	return &chain.Finding{Seq: seq, Kind: chain.KindStreamChanged,
		Detail: fmt.Sprintf("the limits of %s were changed outside the policy: %+v, the policy is %+v", ev.Data.Stream, ev.Data.Actual, ev.Data.Expected)}
}

// explainRetention adds a hint to a first "deleted" finding that is below
// the stream's first sequence: those records most likely aged out.
func explainRetention(ctx context.Context, js jetstream.JetStream, r *chain.Report) {
	f := r.First()
	if f == nil || f.Kind != chain.KindDeleted {
		return
	}
	s, err := js.Stream(ctx, jsaudit.StreamName)
	if err != nil {
		return
	}
	info, err := s.Info(ctx)
	if err != nil || f.Seq >= info.State.FirstSeq {
		return
	}
	r.Findings[0].Detail += fmt.Sprintf(" (the stream now starts at seq %d: if older records aged out by retention, verify from there with --from %d)",
		info.State.FirstSeq, info.State.FirstSeq)
}

// Export formats.
const (
	FormatJSONL = "jsonl"
	FormatCEF   = "cef"
)

// ExportParams select what Export writes.
type ExportParams struct {
	Format string    // FormatJSONL (default) or FormatCEF
	Since  time.Time // records stored at or after Since; zero: all
	// Keys go into a JSON Lines export's header (StoredPublicKeys).
	Keys []chain.PublicKey
}

// ExportResult says what Export wrote.
type ExportResult struct {
	Records uint64 `json:"records"`
	Digests int    `json:"digests"`
	FromSeq uint64 `json:"fromSeq"`
	ToSeq   uint64 `json:"toSeq"`
}

// Export writes the audit stream to w: JSON Lines (records and the digests
// covering them, which `keyflow audit verify --file` checks offline; see
// chain.ExportWriter), or CEF (one ArcSight Common Event Format line per
// record, for SIEMs; no digests).
func Export(ctx context.Context, js jetstream.JetStream, w io.Writer, p ExportParams) (*ExportResult, error) {
	res := &ExportResult{}
	rp := jsaudit.ReadAllParams{Since: p.Since}
	switch p.Format {
	case FormatCEF:
		bw := newLineWriter(w)
		err := jsaudit.ReadAll(ctx, js, rp, func(seq uint64, body []byte) error {
			if res.FromSeq == 0 {
				res.FromSeq = seq
			}
			res.ToSeq = seq
			res.Records++
			return bw.line(FormatCEFLine(seq, body))
		})
		if err != nil {
			return res, err
		}
		return res, bw.flush()
	case FormatJSONL, "":
	default:
		return nil, fmt.Errorf("unknown export format %q (want %s or %s)", p.Format, FormatJSONL, FormatCEF)
	}
	digests, err := jsaudit.ReadDigests(ctx, js)
	if err != nil {
		return nil, err
	}
	ew := chain.NewExportWriter(w)
	header := func(from uint64) error {
		return ew.Header(chain.ExportHeader{Stream: jsaudit.StreamName, FromSeq: from, ExportedAt: time.Now().UTC(), Keys: p.Keys})
	}
	di := 0
	err = jsaudit.ReadAll(ctx, js, rp, func(seq uint64, body []byte) error {
		if res.FromSeq == 0 {
			res.FromSeq = seq
			if err := header(seq); err != nil {
				return err
			}
			for di < len(digests) && digests[di].ToSeq < seq {
				di++ // digests of records before the export
			}
		}
		res.ToSeq = seq
		res.Records++
		if err := ew.Record(seq, body); err != nil {
			return err
		}
		for di < len(digests) && digests[di].ToSeq <= seq {
			if err := ew.Digest(digests[di]); err != nil {
				return err
			}
			di++
			res.Digests++
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	if res.FromSeq == 0 {
		if err := header(0); err != nil {
			return res, err
		}
	} else {
		// Digests of records that are no longer there (deleted at the end):
		// the verifier then reports them.
		for ; di < len(digests); di++ {
			if err := ew.Digest(digests[di]); err != nil {
				return res, err
			}
			res.Digests++
		}
	}
	return res, ew.Flush()
}
