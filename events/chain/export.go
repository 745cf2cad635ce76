package chain

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// ExportFormat names the JSON Lines export format.
const ExportFormat = "keyflow.audit.export.v1"

// An export (`keyflow audit export --format jsonl`) is JSON Lines, one
// object per line, each with a "type":
//
//	{"type":"header","format":"keyflow.audit.export.v1","stream":"KF_AUDIT","fromSeq":1,"exportedAt":"…","keys":[…]}
//	{"type":"record","seq":1,"event":{…the stored CloudEvent, byte for byte…}}
//	…
//	{"type":"digest","digest":{…}}
//
// Records are in stream order; each digest follows the last record of its
// range. The event is embedded verbatim, so the file is also a plain
// CloudEvents log for other tools; a stored body that is not single-line
// JSON (only a damaged stream has one) is written as "eventBase64" instead.
// The header's keys are the sealer public keys as the key store held them
// at export time: convenient, but as trustworthy as the file itself, so an
// auditor who received the file from elsewhere pins the keys instead
// (`keyflow audit verify --pubkeys`).

// ExportHeader is the first line of an export.
type ExportHeader struct {
	Type       string      `json:"type"`
	Format     string      `json:"format"`
	Stream     string      `json:"stream"`
	FromSeq    uint64      `json:"fromSeq"`
	ExportedAt time.Time   `json:"exportedAt"`
	Keys       []PublicKey `json:"keys,omitempty"`
}

type exportLine struct {
	Type        string          `json:"type"`
	Seq         uint64          `json:"seq,omitempty"`
	Event       json.RawMessage `json:"event,omitempty"`
	EventBase64 []byte          `json:"eventBase64,omitempty"`
	Digest      *Digest         `json:"digest,omitempty"`
	ExportHeader
}

// ExportWriter writes an export.
type ExportWriter struct {
	w   *bufio.Writer
	buf []byte
}

// NewExportWriter returns a writer on w. Call Flush at the end.
func NewExportWriter(w io.Writer) *ExportWriter {
	return &ExportWriter{w: bufio.NewWriterSize(w, 256<<10)}
}

// Header writes the header line.
func (e *ExportWriter) Header(h ExportHeader) error {
	h.Type, h.Format = "header", ExportFormat
	return e.json(h)
}

// Record writes one record, its body verbatim.
func (e *ExportWriter) Record(seq uint64, body []byte) error {
	b := e.buf[:0]
	b = append(b, `{"type":"record","seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	if singleLineJSON(body) {
		b = append(b, `,"event":`...)
		b = append(b, body...)
	} else {
		b = append(b, `,"eventBase64":"`...)
		b = base64.StdEncoding.AppendEncode(b, body)
		b = append(b, '"')
	}
	b = append(b, "}\n"...)
	e.buf = b
	_, err := e.w.Write(b)
	return err
}

func singleLineJSON(b []byte) bool {
	return len(b) > 0 && b[0] == '{' && bytes.IndexAny(b, "\r\n") < 0 && json.Valid(b)
}

// Digest writes one digest.
func (e *ExportWriter) Digest(d *Digest) error {
	return e.json(struct {
		Type   string  `json:"type"`
		Digest *Digest `json:"digest"`
	}{"digest", d})
}

func (e *ExportWriter) json(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("failed to encode export line: %w", err)
	}
	if _, err := e.w.Write(append(b, '\n')); err != nil {
		return err
	}
	return nil
}

// Flush writes buffered lines.
func (e *ExportWriter) Flush() error { return e.w.Flush() }

// ExportVisitor receives the lines of an export. Nil fields skip that kind
// of line.
type ExportVisitor struct {
	Header func(*ExportHeader) error
	Record func(seq uint64, body []byte) error // body is only valid during the call
	Digest func(*Digest) error
}

// ErrBadExport is returned for a line that is not part of the format.
var ErrBadExport = errors.New("chain: malformed export")

// maxExportLine bounds one line (a digest of 10,000 records, the sealer's
// maximum, is about 540 KB).
const maxExportLine = 64 << 20

// ReadExport reads an export and calls v for each line.
func ReadExport(r io.Reader, v ExportVisitor) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), maxExportLine)
	n := 0
	recPrefix := []byte(`{"type":"record","seq":`)
	for sc.Scan() {
		n++
		line := bytes.TrimRight(sc.Bytes(), " \t\r")
		if len(line) == 0 {
			continue
		}
		if bytes.HasPrefix(line, recPrefix) {
			if v.Record == nil {
				continue
			}
			if seq, body, ok := fastRecord(line[len(recPrefix):]); ok {
				if err := v.Record(seq, body); err != nil {
					return err
				}
				continue
			}
		}
		var l exportLine
		if err := json.Unmarshal(line, &l); err != nil {
			return fmt.Errorf("%w: line %d: %v", ErrBadExport, n, err)
		}
		var err error
		switch l.Type {
		case "header":
			if l.Format != ExportFormat {
				return fmt.Errorf("%w: line %d: format %q, want %q", ErrBadExport, n, l.Format, ExportFormat)
			}
			if v.Header != nil {
				h := l.ExportHeader
				h.Type = l.Type // exportLine's own Type shadows the embedded one
				err = v.Header(&h)
			}
		case "record":
			body := []byte(l.Event)
			if l.EventBase64 != nil {
				body = l.EventBase64
			}
			if l.Seq == 0 || len(body) == 0 {
				return fmt.Errorf("%w: line %d: a record needs seq and event", ErrBadExport, n)
			}
			if v.Record != nil {
				err = v.Record(l.Seq, body)
			}
		case "digest":
			if l.Digest == nil {
				return fmt.Errorf("%w: line %d: a digest line without digest", ErrBadExport, n)
			}
			if v.Digest != nil {
				err = v.Digest(l.Digest)
			}
		default:
			return fmt.Errorf("%w: line %d: unknown type %q", ErrBadExport, n, l.Type)
		}
		if err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("failed to read export: %w", err)
	}
	return nil
}

// fastRecord parses `N,"event":BODY}` as ExportWriter writes it. It takes
// only what encoding/json reads the same way (a JSON number without a
// leading zero, a BODY that is one JSON value); anything else goes to
// the slow path, which refuses it or reads it as encoding/json does (a
// fuzz target checks the two agree).
func fastRecord(b []byte) (uint64, []byte, bool) {
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == 0 || b[0] == '0' {
		return 0, nil, false
	}
	seq, err := strconv.ParseUint(string(b[:i]), 10, 64)
	if err != nil {
		return 0, nil, false
	}
	rest := b[i:]
	const ev = `,"event":`
	if !bytes.HasPrefix(rest, []byte(ev)) || len(rest) < len(ev)+2 || rest[len(rest)-1] != '}' {
		return 0, nil, false
	}
	body := rest[len(ev) : len(rest)-1]
	if !json.Valid(body) {
		return 0, nil, false
	}
	return seq, body, true
}
