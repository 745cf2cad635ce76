package chain

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/keyflow/keyflow/internal/fuzzseed"
)

// exportFile writes a real export: header, the records and the digests.
func exportFile(t testing.TB, k *softKeys, recs []rec, ds []*Digest) []byte {
	var buf bytes.Buffer
	w := NewExportWriter(&buf)
	if err := w.Header(ExportHeader{Stream: "KF_AUDIT", FromSeq: 1, ExportedAt: time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC), Keys: k.public()}); err != nil {
		t.Fatal(err)
	}
	di := 0
	for _, r := range recs {
		if err := w.Record(r.seq, r.body); err != nil {
			t.Fatal(err)
		}
		if di < len(ds) && ds[di].ToSeq == r.seq {
			if err := w.Digest(ds[di]); err != nil {
				t.Fatal(err)
			}
			di++
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzReadExport: every refusal of an export is ErrBadExport; and the
// reader's fast path for record lines agrees with encoding/json: a line
// it takes is one JSON object of type "record" with the same sequence
// and the same event.
func FuzzReadExport(f *testing.F) {
	k := newSoftKeys(f, "sealer")
	recs, ds := sealed(f, k, 3, 2, 1)
	recs = append(recs, rec{5, []byte("{\"id\":\"odd\",\n\"x\":1}")}) // not single-line: base64
	file := exportFile(f, k, recs, ds)
	fuzzseed.Add(f, file)
	for _, line := range bytes.SplitAfter(file, []byte("\n")) {
		fuzzseed.Add(f, line)
	}
	for _, s := range []string{
		`{"type":"record","seq":1,"event":x}`,
		`{"type":"record","seq":1,"event":{"a":1},"seq":2}`,
		`{"type":"record","seq":01,"event":{}}`,
		`{"type":"record","seq":0,"event":{}}`,
		`{"type":"record","seq":18446744073709551616,"event":{}}`,
		`{"type":"record","seq":1,"event":{} }`,
		`{"type":"record","seq":1,"eventBase64":""}`,
		`{"type":"digest"}`,
		`{"type":"header","format":"keyflow.audit.export.v0"}`,
		`{"type":"nope"}`,
	} {
		fuzzseed.Add(f, []byte(s))
	}
	f.Fuzz(func(t *testing.T, file []byte) {
		err := ReadExport(bytes.NewReader(file), ExportVisitor{
			Header: func(*ExportHeader) error { return nil },
			Digest: func(*Digest) error { return nil },
			Record: func(seq uint64, body []byte) error {
				if seq == 0 || len(body) == 0 {
					t.Fatalf("record %d with %d bytes delivered", seq, len(body))
				}
				return nil
			},
		})
		if err != nil && !errors.Is(err, ErrBadExport) {
			t.Fatalf("refusal %v is not ErrBadExport", err)
		}
		for _, line := range bytes.Split(file, []byte("\n")) {
			line = bytes.TrimRight(line, " \t\r")
			rest, ok := bytes.CutPrefix(line, []byte(`{"type":"record","seq":`))
			if !ok {
				continue
			}
			seq, body, ok := fastRecord(rest)
			if !ok {
				continue
			}
			var l exportLine
			if err := json.Unmarshal(line, &l); err != nil {
				t.Fatalf("the fast path took %q, which is not JSON: %v", line, err)
			}
			if l.Type != "record" || l.Seq != seq || l.EventBase64 != nil || !bytes.Equal(bytes.TrimSpace(body), l.Event) {
				t.Fatalf("the fast path read %q as seq %d event %q; encoding/json reads seq %d event %q", line, seq, body, l.Seq, l.Event)
			}
		}
	})
}

// FuzzExportRoundTrip: what ExportWriter writes, ReadExport reads back
// byte for byte (records, header and digest), whatever the event body.
func FuzzExportRoundTrip(f *testing.F) {
	k := newSoftKeys(f, "sealer")
	recs, ds := sealed(f, k, 2, 2, 0)
	fuzzseed.Add(f, uint64(1), recs[0].body, uint64(2), recs[1].body, "KF_AUDIT")
	fuzzseed.Add(f, uint64(1), []byte("{\"id\":\"odd\",\n\"x\":1}"), uint64(1<<63), []byte("{} "), "KF_AUDIT")
	fuzzseed.Add(f, uint64(7), []byte("not json"), uint64(8), []byte(`{"a":"\u2028"}`), "")
	fuzzseed.Add(f, uint64(1), []byte("{}\r"), uint64(2), []byte("\xff"), "s\n")
	f.Fuzz(func(t *testing.T, seq1 uint64, body1 []byte, seq2 uint64, body2 []byte, stream string) {
		if seq1 == 0 || seq2 == 0 || len(body1) == 0 || len(body2) == 0 {
			return // not a record: the stream's sequences start at 1, and a stored event is never empty
		}
		if !utf8.ValidString(stream) {
			return // not a stream name (NATS names are ASCII); JSON would carry it as U+FFFD
		}
		want := []rec{{seq1, body1}, {seq2, body2}}
		var buf bytes.Buffer
		w := NewExportWriter(&buf)
		hdr := ExportHeader{Stream: stream, FromSeq: seq1, ExportedAt: time.Unix(int64(seq2%(1<<40)), 0).UTC(), Keys: k.public()}
		w.Header(hdr)
		for _, r := range want {
			w.Record(r.seq, r.body)
		}
		w.Digest(ds[0])
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		var gotHdr *ExportHeader
		var got []rec
		var gotD *Digest
		err := ReadExport(bytes.NewReader(buf.Bytes()), ExportVisitor{
			Header: func(h *ExportHeader) error { gotHdr = h; return nil },
			Record: func(seq uint64, body []byte) error { got = append(got, rec{seq, bytes.Clone(body)}); return nil },
			Digest: func(d *Digest) error { gotD = d; return nil },
		})
		if err != nil {
			t.Fatalf("an export as written is refused: %v\n%s", err, buf.Bytes())
		}
		hdr.Type, hdr.Format = "header", ExportFormat
		if h1, h2 := mustJSON(t, hdr), mustJSON(t, gotHdr); !bytes.Equal(h1, h2) {
			t.Fatalf("header changed:\n %.300s\n %.300s", h1, h2)
		}
		if len(got) != 2 {
			t.Fatalf("%d records read back", len(got))
		}
		for i := range want {
			if got[i].seq != want[i].seq || !bytes.Equal(got[i].body, want[i].body) {
				t.Fatalf("record %d read back as %d %q, written %d %q", i, got[i].seq, got[i].body, want[i].seq, want[i].body)
			}
		}
		if d1, d2 := mustJSON(t, ds[0]), mustJSON(t, gotD); !bytes.Equal(d1, d2) {
			t.Fatal("digest changed")
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
