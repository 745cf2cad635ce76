package chain

import (
	"encoding/json"
)

// EventFields are the CloudEvent attributes the sealer and the verifier
// read from a stored record.
type EventFields struct {
	ID        string `json:"id"`
	Tenant    string `json:"tenant"`
	Principal string `json:"principal"`
}

// ParseFields reads the top-level id, tenant and principal attributes of a
// structured-mode CloudEvent. It scans the object once without allocating
// for the common case (plain strings) and falls back to encoding/json for
// anything unusual. A body that is not a JSON object gives zero fields.
func ParseFields(body []byte) EventFields {
	if f, ok := scanFields(body); ok {
		return f
	}
	var f EventFields
	_ = json.Unmarshal(body, &f)
	return f
}

// scanFields is the fast path of ParseFields. It reports !ok when it meets
// anything it does not handle (escapes in a wanted value, malformed JSON).
func scanFields(b []byte) (f EventFields, ok bool) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return f, false
	}
	i++
	for {
		i = skipWS(b, i)
		if i >= len(b) {
			return f, false
		}
		if b[i] == '}' {
			return f, true
		}
		if b[i] != '"' {
			return f, false
		}
		ks, ke, esc, next := scanString(b, i)
		if next < 0 {
			return f, false
		}
		key := b[ks:ke]
		i = skipWS(b, next)
		if i >= len(b) || b[i] != ':' {
			return f, false
		}
		i = skipWS(b, i+1)
		if i >= len(b) {
			return f, false
		}
		var dst *string
		if !esc {
			switch string(key) {
			case "id":
				dst = &f.ID
			case "tenant":
				dst = &f.Tenant
			case "principal":
				dst = &f.Principal
			}
		}
		if dst != nil && b[i] == '"' {
			vs, ve, vesc, vnext := scanString(b, i)
			if vnext < 0 || vesc {
				return f, false
			}
			*dst = string(b[vs:ve])
			i = vnext
		} else if i = skipValue(b, i); i < 0 {
			return f, false
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return f, false
		}
		switch b[i] {
		case ',':
			i++
		case '}':
			return f, true
		default:
			return f, false
		}
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString scans the string starting at b[i] == '"'. It returns the
// content bounds, whether it has escapes, and the index after the closing
// quote (-1 if unterminated).
func scanString(b []byte, i int) (start, end int, esc bool, next int) {
	start = i + 1
	for j := start; j < len(b); j++ {
		switch b[j] {
		case '\\':
			esc = true
			j++
		case '"':
			return start, j, esc, j + 1
		}
	}
	return 0, 0, false, -1
}

// skipValue skips one JSON value starting at b[i] and returns the index
// after it (-1 if malformed). Scalars are skipped up to the next delimiter;
// their validity does not matter here.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		_, _, _, next := scanString(b, i)
		return next
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				_, _, _, next := scanString(b, j)
				if next < 0 {
					return -1
				}
				j = next - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	default:
		for j := i; j < len(b); j++ {
			switch b[j] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return j
			}
		}
		return len(b)
	}
}
