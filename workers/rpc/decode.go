package rpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"strings"
	"sync"
	"time"

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

// checkNestedKeys walks a decoded body by its request type and refuses,
// in every object at any depth, what encoding/json lets through: a key
// that appears twice (the last one silently wins), and in an object
// decoded into a struct, a key that names a field only
// case-insensitively ("keyid" for "keyId"). Top-level keys are checked
// by the single pass already; this covers the encryption context, batch
// items and the like. Objects of maps keep case-distinct keys ("Dept" and
// "dept" are two context keys, as in AWS KMS).
func checkNestedKeys(body []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	return walkKeys(dec, t, "")
}

func walkKeys(dec *json.Decoder, t reflect.Type, path string) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && (reflect.PointerTo(t).Implements(unmarshalerType) || t.Implements(unmarshalerType)) {
		t = nil // its own format: duplicate keys are still refused
	}
	tok, err := dec.Token()
	if err != nil {
		return nil // the decoder judged the syntax already
	}
	malformed := func(msg string) error {
		return &kms.Error{Code: kms.CodeValidation, Message: "malformed request: " + msg}
	}
	switch tok {
	case json.Delim('{'):
		var fields map[string]reflect.Type
		if t != nil && t.Kind() == reflect.Struct {
			fields = structJSONFields(t)
		}
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil
			}
			key, _ := kt.(string)
			name := strings.TrimPrefix(path+"."+key, ".")
			if seen[key] {
				return malformed(fmt.Sprintf("field %q appears twice", truncateName(name)))
			}
			seen[key] = true
			var et reflect.Type
			switch {
			case fields != nil:
				ft, ok := fields[key]
				if !ok {
					return malformed(fmt.Sprintf("unknown field %q (field names are case-sensitive)", truncateName(name)))
				}
				et = ft
			case t != nil && t.Kind() == reflect.Map:
				et = t.Elem()
			}
			if err := walkKeys(dec, et, name); err != nil {
				return err
			}
		}
		_, _ = dec.Token()
	case json.Delim('['):
		var et reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			et = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := walkKeys(dec, et, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, _ = dec.Token()
	}
	return nil
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// structFieldsCache maps a struct type to its JSON names' field types.
var structFieldsCache sync.Map // reflect.Type -> map[string]reflect.Type

func structJSONFields(t reflect.Type) map[string]reflect.Type {
	if m, ok := structFieldsCache.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := map[string]reflect.Type{}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() && !f.Anonymous {
			continue
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				maps.Copy(m, structJSONFields(ft))
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		m[name] = f.Type
	}
	structFieldsCache.Store(t, m)
	return m
}

// hasNested reports whether a body may hold objects or arrays below the
// top level, the only place checkNestedKeys can find anything.
func hasNested(body []byte) bool {
	return bytes.Count(body, []byte{'{'}) > 1 || bytes.IndexByte(body, '[') >= 0
}

// Dates in requests (activation, expiry, grant windows) must fall in
// [minRequestDate, now+maxDateAhead]: a year-9999 expiry is a typo or a
// probe, and far-off dates overflow durations computed from them.
var minRequestDate = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)

const maxDateAhead = 100 * 365 * 24 * time.Hour

// timeTypes caches whether a request type holds a time.Time anywhere.
var timeTypes sync.Map // reflect.Type -> bool

var timeType = reflect.TypeFor[time.Time]()

func holdsTime(t reflect.Type, depth int) bool {
	if depth > 8 {
		return false
	}
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
		return holdsTime(t.Elem(), depth+1)
	case reflect.Struct:
		if t == timeType {
			return true
		}
		for f := range t.Fields() {
			if f.IsExported() && holdsTime(f.Type, depth+1) {
				return true
			}
		}
	}
	return false
}

// checkDates refuses a date outside the sane window anywhere in a decoded
// request.
func checkDates(v any, now time.Time) error {
	rv := reflect.ValueOf(v)
	t := rv.Type()
	held, ok := timeTypes.Load(t)
	if !ok {
		held, _ = timeTypes.LoadOrStore(t, holdsTime(t, 0))
	}
	if !held.(bool) {
		return nil
	}
	return walkDates(rv, "", now.Add(maxDateAhead), 0)
}

func walkDates(v reflect.Value, path string, latest time.Time, depth int) error {
	if depth > 8 {
		return nil
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return walkDates(v.Elem(), path, latest, depth+1)
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if err := walkDates(v.Index(i), fmt.Sprintf("%s[%d]", path, i), latest, depth+1); err != nil {
				return err
			}
		}
	case reflect.Struct:
		if v.Type() == timeType {
			d := v.Interface().(time.Time)
			if !d.IsZero() && (d.Before(minRequestDate) || d.After(latest)) {
				return &kms.Error{Code: kms.CodeValidation, Message: fmt.Sprintf("%s %s is out of range: dates must lie between 1970 and 100 years from now",
					strings.TrimPrefix(path, "."), d.UTC().Format(time.RFC3339))}
			}
			return nil
		}
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" {
				name = f.Name
			}
			if err := walkDates(v.Field(i), path+"."+name, latest, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}
