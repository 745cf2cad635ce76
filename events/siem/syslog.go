package siem

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Syslog is an Output that sends each record as one RFC 5424 message to a
// syslog collector, over UDP (one datagram per message) or TCP (octet
// counting framing, RFC 6587). Its LastSeq is always 0: a collector cannot
// be asked what it holds, so forwarding to syslog is at least once (see the
// package doc).
//
// A message looks like
//
//	<110>1 2026-05-01T10:00:00.123456Z host keyflow 4711 audit [keyflow@32473 seq="1234" id="…" type="io.keyflow.crypto.encrypt.v1" tenant="default" outcome="success"] {"seq":1234,"event":{…}}
//
// with facility 13 (log audit) and severity informational for a success,
// notice for a failure and warning for a denial. 32473 is the private
// enterprise number RFC 5612 reserves for documentation, until keyflow has
// its own.
type Syslog struct {
	conn     net.Conn
	stream   bool // TCP: octet counting
	hostname string
	procid   string
	buf      bytes.Buffer
}

var _ Output = (*Syslog)(nil)

// DialSyslog connects to a collector. network is "udp" or "tcp".
func DialSyslog(network, addr string) (*Syslog, error) {
	switch network {
	case "udp", "tcp":
	default:
		return nil, fmt.Errorf("syslog network must be udp or tcp, not %q", network)
	}
	conn, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("failed to connect to syslog %s://%s: %w", network, addr, err)
	}
	host, _ := os.Hostname()
	return &Syslog{conn: conn, stream: network == "tcp", hostname: headerField(host, 255), procid: strconv.Itoa(os.Getpid())}, nil
}

// LastSeq implements Output.
func (s *Syslog) LastSeq() uint64 { return 0 }

// Close closes the connection.
func (s *Syslog) Close() error { return s.conn.Close() }

// Write implements Output. Over TCP the batch is one write; over UDP each
// message is a datagram.
func (s *Syslog) Write(lines []Line) error {
	s.buf.Reset()
	for _, l := range lines {
		msg, err := s.message(l)
		if err != nil {
			return err
		}
		if !s.stream {
			if _, err := s.conn.Write(msg); err != nil {
				return fmt.Errorf("failed to send to syslog: %w", err)
			}
			continue
		}
		s.buf.WriteString(strconv.Itoa(len(msg)))
		s.buf.WriteByte(' ')
		s.buf.Write(msg)
	}
	if s.stream {
		_ = s.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := s.conn.Write(s.buf.Bytes()); err != nil {
			return fmt.Errorf("failed to send to syslog: %w", err)
		}
	}
	return nil
}

// message formats one record as an RFC 5424 message.
func (s *Syslog) message(l Line) ([]byte, error) {
	var ev struct {
		ID      string    `json:"id"`
		Type    string    `json:"type"`
		Time    time.Time `json:"time"`
		Tenant  string    `json:"tenant"`
		Outcome string    `json:"outcome"`
	}
	if err := json.Unmarshal(l.Event, &ev); err != nil {
		return nil, fmt.Errorf("audit record %d is not a CloudEvent: %w", l.Seq, err)
	}
	const facility = 13 // log audit
	severity := 6       // informational
	switch ev.Outcome {
	case "failure":
		severity = 5 // notice
	case "denied":
		severity = 4 // warning
	}
	ts := "-"
	if !ev.Time.IsZero() {
		ts = ev.Time.UTC().Format("2006-01-02T15:04:05.000000Z07:00")
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "<%d>1 %s %s keyflow %s audit [keyflow@32473 seq=\"%d\" id=\"%s\" type=\"%s\" tenant=\"%s\" outcome=\"%s\"] ",
		facility*8+severity, ts, s.hostname, s.procid, l.Seq,
		sdValue(ev.ID), sdValue(ev.Type), sdValue(ev.Tenant), sdValue(ev.Outcome))
	b.WriteString(`{"seq":`)
	b.WriteString(strconv.FormatUint(l.Seq, 10))
	b.WriteString(`,"event":`)
	if err := json.Compact(&b, l.Event); err != nil {
		return nil, fmt.Errorf("audit record %d is not JSON: %w", l.Seq, err)
	}
	b.WriteString("}")
	return b.Bytes(), nil
}

// headerField makes s a valid RFC 5424 header field: printable US-ASCII
// without spaces, at most n characters, "-" when empty.
func headerField(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 33 || r > 126 {
			return -1
		}
		return r
	}, s)
	if len(s) > n {
		s = s[:n]
	}
	if s == "" {
		return "-"
	}
	return s
}

// sdValue escapes a structured-data parameter value (RFC 5424 6.3.3).
func sdValue(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, `]`, `\]`).Replace(strings.ToValidUTF8(s, ""))
}
