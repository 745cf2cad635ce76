package sealer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
	// From and To bound the sequences checked (see chain.Options).
	From, To uint64
}

// Verify checks the audit stream against the digest stream.
func Verify(ctx context.Context, js jetstream.JetStream, p VerifyParams) (*chain.Report, error) {
	digests, err := jsaudit.ReadDigests(ctx, js)
	if err != nil {
		return nil, err
	}
	v, err := chain.NewVerifier(chain.Options{Keys: p.Keys, Stream: jsaudit.StreamName, From: p.From, To: p.To}, digests)
	if err != nil {
		return nil, err
	}
	if err := jsaudit.ReadAll(ctx, js, jsaudit.ReadAllParams{FromSeq: p.From, ToSeq: p.To}, func(seq uint64, body []byte) error {
		v.Add(seq, body)
		return nil
	}); err != nil {
		return nil, err
	}
	r := v.Finish()
	explainRetention(ctx, js, r)
	return r, nil
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
