package siem

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
)

// File is an Output that appends JSON Lines to a file and syncs each batch
// before it returns.
type File struct {
	f    *os.File
	last uint64
	buf  bytes.Buffer
}

var _ Output = (*File)(nil)

// OpenFile opens (or creates, mode 0600) the JSON Lines file at path for
// appending, and reads the seq of its last line. A torn last line (no final
// newline: the forwarder was killed inside a write) is cut off; its record
// was not acked, so it is forwarded again. A last line that is not a
// forwarded record is an error: the forwarder appends only to its own
// files.
func OpenFile(path string) (*File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("failed to open %s: %w", path, err)
	}
	last, end, err := lastRecord(f)
	if err == nil {
		err = f.Truncate(end) // no-op unless a torn line is cut
	}
	if err == nil {
		_, err = f.Seek(end, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("failed to resume %s: %w", path, err)
	}
	return &File{f: f, last: last}, nil
}

// LastSeq implements Output.
func (w *File) LastSeq() uint64 { return w.last }

// Write implements Output: one line per record, then fsync.
func (w *File) Write(lines []Line) error {
	w.buf.Reset()
	for _, l := range lines {
		w.buf.WriteString(`{"seq":`)
		w.buf.WriteString(strconv.FormatUint(l.Seq, 10))
		w.buf.WriteString(`,"event":`)
		// Compact guarantees one line whatever the stored form.
		if err := json.Compact(&w.buf, l.Event); err != nil {
			return fmt.Errorf("audit record %d is not JSON: %w", l.Seq, err)
		}
		w.buf.WriteString("}\n")
	}
	if _, err := w.f.Write(w.buf.Bytes()); err != nil {
		return fmt.Errorf("failed to write %s: %w", w.f.Name(), err)
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("failed to sync %s: %w", w.f.Name(), err)
	}
	w.last = lines[len(lines)-1].Seq
	return nil
}

// Close closes the file.
func (w *File) Close() error { return w.f.Close() }

// lastRecord returns the seq of the last complete line of f and the offset
// just after it (the file's size unless its last line is torn).
func lastRecord(f *os.File) (seq uint64, end int64, err error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	size := fi.Size()
	// Read backwards in chunks until the last complete line is whole:
	// two newlines, or one and the start of the file.
	const chunk = 64 * 1024
	var tail []byte
	for off := size; ; {
		n := min(int64(chunk), off)
		off -= n
		b := make([]byte, n, int(n)+len(tail))
		if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
			return 0, 0, err
		}
		tail = append(b, tail...)
		last := bytes.LastIndexByte(tail, '\n')
		if last < 0 {
			if off == 0 {
				if !ownTornLine(tail) {
					return 0, 0, errNotOurs
				}
				return 0, 0, nil // no complete line at all
			}
			continue
		}
		if !ownTornLine(tail[last+1:]) {
			return 0, 0, errNotOurs
		}
		prev := bytes.LastIndexByte(tail[:last], '\n')
		if prev < 0 && off > 0 {
			continue
		}
		end = off + int64(last) + 1
		var l struct {
			Seq   *uint64         `json:"seq"`
			Event json.RawMessage `json:"event"`
		}
		if err := json.Unmarshal(tail[prev+1:last], &l); err != nil || l.Seq == nil || len(l.Event) == 0 {
			return 0, 0, errNotOurs
		}
		return *l.Seq, end, nil
	}
}

var errNotOurs = errors.New(`its last line is not a forwarded record ({"seq":N,"event":{...}}); use a new file`)

// ownTornLine reports whether b (what follows the last newline) is empty or
// the start of a line the forwarder writes, so cutting it loses nothing.
func ownTornLine(b []byte) bool {
	const head = `{"seq":`
	if len(b) <= len(head) {
		return bytes.HasPrefix([]byte(head), b)
	}
	return bytes.HasPrefix(b, []byte(head))
}
