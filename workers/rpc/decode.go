package rpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"

	"github.com/keyflow/keyflow/kms"
)

// decodeSinglePass is decode's fast path: one pass over the body that
// reads the top-level object key by key, refuses unknown, case-folded and
// duplicate keys as it meets them, and decodes each value straight into
// its field (nested values keep encoding/json's strict rules, unknown
// fields refused). It handles request structs with plain, named fields;
// for anything else (or a body that is not an object) it reports
// handled=false and decode takes its two-pass path, whose messages it
// matches.
func decodeSinglePass(body []byte, v any) (handled bool, err error) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return false, nil
	}
	fields, ok := singlePassFields(rv.Elem().Type())
	if !ok {
		return false, nil
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return false, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if _, err := dec.Token(); err != nil { // the '{'
		return false, nil
	}
	malformed := func(msg string) error {
		return &kms.Error{Code: kms.CodeValidation, Message: "malformed request: " + msg}
	}
	target := rv.Elem()
	var seen []int
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return true, malformed(jsonProblem(err))
		}
		key, _ := tok.(string)
		idx, ok := fields[key]
		if !ok {
			return true, malformed(fmt.Sprintf("unknown field %q (field names are case-sensitive)", truncateName(key)))
		}
		for _, s := range seen {
			if s == idx {
				return true, malformed(fmt.Sprintf("field %q appears twice", key))
			}
		}
		seen = append(seen, idx)
		if err := dec.Decode(target.Field(idx).Addr().Interface()); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				te.Field = strings.TrimSuffix(key+"."+te.Field, ".")
			}
			return true, malformed(jsonProblem(err))
		}
	}
	if _, err := dec.Token(); err != nil { // the '}'
		return true, malformed(jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return true, malformed("trailing data after the JSON object")
	}
	return true, nil
}

// singlePassCache maps a request type to its JSON names and field indexes
// (ok false: the type has fields the fast path does not handle).
var singlePassCache sync.Map // reflect.Type -> singlePassEntry

type singlePassEntry struct {
	fields map[string]int
	ok     bool
}

func singlePassFields(t reflect.Type) (map[string]int, bool) {
	if e, ok := singlePassCache.Load(t); ok {
		e := e.(singlePassEntry)
		return e.fields, e.ok
	}
	e := singlePassEntry{fields: map[string]int{}, ok: true}
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous || !f.IsExported() || name == "-" || strings.Contains(opts, "string") {
			e.ok = false
			break
		}
		if name == "" {
			name = f.Name
		}
		e.fields[name] = i
	}
	singlePassCache.Store(t, e)
	return e.fields, e.ok
}
