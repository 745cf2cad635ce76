package jsaudit

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/keyflow/keyflow/events"
)

// encode returns the stored form of r (the structured-mode CloudEvent
// JSON) and its event ID.
//
// The definition of that form is events.Record.CloudEvent marshalled with
// encoding/json. Building it through the CloudEvents SDK costs about a
// third of the CPU of storing a record, so records whose attributes need
// no escaping or normalisation (all that keyflow emits) are written here
// directly, byte for byte the same (TestEncodeMatchesSDK holds the two
// together); anything else takes the SDK path.
func encode(r events.Record) (id string, body []byte, err error) {
	if fast, ok := encodeFast(r); ok {
		return fast.id, fast.body, fast.err
	}
	e, err := r.CloudEvent()
	if err != nil {
		return "", nil, err
	}
	body, err = json.Marshal(e)
	if err != nil {
		return "", nil, fmt.Errorf("failed to encode audit event: %w", err)
	}
	return e.ID(), body, nil
}

type encoded struct {
	id   string
	body []byte
	err  error
}

// encodeFast writes r directly, or reports false if r needs the SDK path
// (an attribute to escape, trim or normalise, or an invalid record, whose
// error the SDK path words).
func encodeFast(r events.Record) (encoded, bool) {
	if r.Type == "" || r.Tenant == "" {
		return encoded{}, false
	}
	switch r.Outcome {
	case events.OutcomeSuccess, events.OutcomeFailure, events.OutcomeDenied:
	default:
		return encoded{}, false
	}
	if (r.Outcome == events.OutcomeSuccess) != (r.ErrorCode == "") {
		return encoded{}, false
	}
	id := r.ID
	if id == "" {
		id = uuid.NewString()
	}
	src := r.Source
	if src == "" {
		src = events.SpecSource
	}
	for _, s := range [...]string{id, src, r.Type, r.Subject, r.Tenant, r.Principal, r.Outcome, r.RequestID, r.ErrorCode} {
		if !plain(s) {
			return encoded{}, false
		}
	}
	// The SDK stores the source as a parsed URL.
	if u, err := url.Parse(src); err != nil || u.String() != src {
		return encoded{}, false
	}
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	var data []byte
	if r.Data == nil {
		data = []byte("{}")
	} else {
		var err error
		if data, err = json.Marshal(r.Data); err != nil {
			return encoded{}, false
		}
	}
	b := make([]byte, 0, 384+len(data))
	field := func(name, value string) {
		b = append(b, ',', '"')
		b = append(b, name...)
		b = append(b, `":"`...)
		b = append(b, value...)
		b = append(b, '"')
	}
	b = append(b, `{"specversion":"1.0"`...)
	field("id", id)
	field("source", src)
	field("type", r.Type)
	if r.Subject != "" {
		field("subject", r.Subject)
	}
	field("datacontenttype", "application/json")
	b = append(b, `,"time":"`...)
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","data":`...)
	b = append(b, data...)
	// Extensions, in name order, as the SDK writes them.
	if r.ErrorCode != "" {
		field(events.ExtErrorCode, r.ErrorCode)
	}
	field(events.ExtOutcome, r.Outcome)
	if r.Principal != "" {
		field(events.ExtPrincipal, r.Principal)
	}
	if r.RequestID != "" {
		field(events.ExtRequestID, r.RequestID)
	}
	field(events.ExtTenant, r.Tenant)
	b = append(b, '}')
	return encoded{id: id, body: b}, true
}

// plain reports whether s can be written into JSON as it is, exactly as
// the SDK path writes it: printable ASCII that encoding/json does not
// escape, with no surrounding space (which the SDK trims).
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return s == strings.TrimSpace(s)
}
