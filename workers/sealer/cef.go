package sealer

import (
	"bufio"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"time"
)

// FormatCEFLine renders one stored audit record as an ArcSight Common Event
// Format (CEF:0) line, without the trailing newline:
//
//	CEF:0|keyflow|keyflow|1|<type>|<name>|<severity>|<extensions>
//
// The Device Event Class ID is the CloudEvent type and the name is the type
// without its io.keyflow. prefix and version (crypto.encrypt). Severity is 3
// for success, 6 for failure and 8 for denied. The extensions are:
//
//	rt          the event time, milliseconds since the epoch
//	externalId  the CloudEvent ID
//	suser       the principal
//	outcome     success, failure or denied
//	cs1 tenant, cs2 resource (the key's resource name), cs3 requestId,
//	cs4 errorCode, cs5 source (with their csNLabel)
//	cn1 streamSeq (the record's stream sequence, with cn1Label)
//	msg         the event's data, as compact JSON
//
// Header fields escape "\" and "|"; extension values escape "\", "=" and
// line breaks, as the CEF specification requires. A record that is not a
// CloudEvent (only a damaged stream has one) still gets a line, of class
// "unparseable".
func FormatCEFLine(seq uint64, body []byte) string {
	var e struct {
		ID        string          `json:"id"`
		Type      string          `json:"type"`
		Source    string          `json:"source"`
		Subject   string          `json:"subject"`
		Time      time.Time       `json:"time"`
		Tenant    string          `json:"tenant"`
		Principal string          `json:"principal"`
		Outcome   string          `json:"outcome"`
		RequestID string          `json:"requestid"`
		ErrorCode string          `json:"errorcode"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Type == "" {
		return "CEF:0|keyflow|keyflow|1|unparseable|unparseable audit record|10|cn1Label=streamSeq cn1=" + strconv.FormatUint(seq, 10)
	}
	name := strings.TrimPrefix(e.Type, "io.keyflow.")
	if i := strings.LastIndex(name, ".v"); i > 0 {
		name = name[:i]
	}
	sev := "3"
	switch e.Outcome {
	case "failure":
		sev = "6"
	case "denied":
		sev = "8"
	}
	var b strings.Builder
	b.WriteString("CEF:0|keyflow|keyflow|1|")
	b.WriteString(cefHeader(e.Type))
	b.WriteByte('|')
	b.WriteString(cefHeader(name))
	b.WriteByte('|')
	b.WriteString(sev)
	b.WriteByte('|')
	first := true
	ext := func(k, v string) {
		if v == "" {
			return
		}
		if !first {
			b.WriteByte(' ')
		}
		first = false
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(cefValue(v))
	}
	if !e.Time.IsZero() {
		ext("rt", strconv.FormatInt(e.Time.UnixMilli(), 10))
	}
	ext("externalId", e.ID)
	ext("suser", e.Principal)
	ext("outcome", e.Outcome)
	if e.Tenant != "" {
		ext("cs1Label", "tenant")
		ext("cs1", e.Tenant)
	}
	if e.Subject != "" {
		ext("cs2Label", "resource")
		ext("cs2", e.Subject)
	}
	if e.RequestID != "" {
		ext("cs3Label", "requestId")
		ext("cs3", e.RequestID)
	}
	if e.ErrorCode != "" {
		ext("cs4Label", "errorCode")
		ext("cs4", e.ErrorCode)
	}
	if e.Source != "" {
		ext("cs5Label", "source")
		ext("cs5", e.Source)
	}
	ext("cn1Label", "streamSeq")
	ext("cn1", strconv.FormatUint(seq, 10))
	if len(e.Data) > 0 && string(e.Data) != "null" {
		ext("msg", string(e.Data))
	}
	return b.String()
}

var (
	cefHeaderEsc = strings.NewReplacer(`\`, `\\`, `|`, `\|`, "\r", " ", "\n", " ")
	cefValueEsc  = strings.NewReplacer(`\`, `\\`, `=`, `\=`, "\r\n", `\n`, "\n", `\n`, "\r", `\r`)
)

func cefHeader(s string) string { return cefHeaderEsc.Replace(s) }
func cefValue(s string) string  { return cefValueEsc.Replace(s) }

// lineWriter buffers lines.
type lineWriter struct{ w *bufio.Writer }

func newLineWriter(w io.Writer) *lineWriter { return &lineWriter{w: bufio.NewWriterSize(w, 256<<10)} }

func (l *lineWriter) line(s string) error {
	if _, err := l.w.WriteString(s); err != nil {
		return err
	}
	return l.w.WriteByte('\n')
}

func (l *lineWriter) flush() error { return l.w.Flush() }
