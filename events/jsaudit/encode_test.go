package jsaudit

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/keyflow/keyflow/events"
)

// sdkEncoding is the definition of a stored record: the SDK's CloudEvent
// marshalled with encoding/json.
func sdkEncoding(t *testing.T, r events.Record) ([]byte, error) {
	t.Helper()
	e, err := r.CloudEvent()
	if err != nil {
		return nil, err
	}
	return json.Marshal(e)
}

// TestEncodeMatchesSDK holds the direct encoder to the SDK's output, byte
// for byte, over every Record field (set by reflection, so a field added to
// Record later is covered or fails here), every event type, each outcome,
// and the inputs the fast path must hand to the SDK.
func TestEncodeMatchesSDK(t *testing.T) {
	now := time.Date(2026, 5, 1, 10, 0, 0, 123456789, time.FixedZone("x", 3600))
	full := events.Record{}
	v := reflect.ValueOf(&full).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("v" + v.Type().Field(i).Name)
		case reflect.Map:
			f.Set(reflect.ValueOf(map[string]any{"keyId": "k", "n": 3, "list": []string{"b", "a"}, "html": "<&>\u2028", "nested": map[string]any{"z": true, "a": nil}}))
		case reflect.Struct:
			if f.Type() != reflect.TypeOf(time.Time{}) {
				t.Fatalf("Record.%s: a struct field the test does not know", v.Type().Field(i).Name)
			}
			f.Set(reflect.ValueOf(now))
		default:
			t.Fatalf("Record.%s: a %s field the test does not know", v.Type().Field(i).Name, f.Kind())
		}
	}
	full.Type, full.Tenant, full.Outcome, full.ErrorCode = events.TypeEncrypt, "alpha", events.OutcomeFailure, "ValidationException"
	full.Source, full.Subject = "/keyflow/worker/host-1", "kf:alpha:key/0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b"

	var cases []events.Record
	cases = append(cases, full)
	for _, typ := range events.Types {
		r := full
		r.Type, r.Outcome, r.ErrorCode = typ, events.OutcomeSuccess, ""
		cases = append(cases, r)
	}
	denied := full
	denied.Outcome, denied.ErrorCode = events.OutcomeDenied, "AccessDeniedException"
	minimal := events.Record{ID: "id-1", Type: events.TypeKeyListed, Tenant: "-", Outcome: events.OutcomeSuccess, Time: now}
	withoutData := minimal
	withoutData.Data = map[string]any{}
	cases = append(cases, denied, minimal, withoutData)
	// Inputs the fast path must leave to the SDK.
	for _, mod := range []func(*events.Record){
		func(r *events.Record) { r.Principal = "<script>" },
		func(r *events.Record) { r.Principal = "zoë" },
		func(r *events.Record) { r.Principal = `a"b\c` },
		func(r *events.Record) { r.Subject = " kf:alpha:key/x " },
		func(r *events.Record) { r.Source = "/a b" },
		func(r *events.Record) { r.Source = "/keyflow/%41" },
		func(r *events.Record) { r.Source = "http://[::1" },
		func(r *events.Record) { r.RequestID = "tab\there" },
		func(r *events.Record) { r.Data = map[string]any{"bad": make(chan int)} },
		func(r *events.Record) { r.Outcome = "maybe" },
		func(r *events.Record) { r.ErrorCode = "" },
		func(r *events.Record) { r.Tenant = "" },
		func(r *events.Record) { r.Type = "" },
	} {
		r := full
		mod(&r)
		cases = append(cases, r)
	}
	for i, r := range cases {
		want, wantErr := sdkEncoding(t, r)
		id, got, err := encode(r)
		if (err != nil) != (wantErr != nil) || (err != nil && errors.Is(wantErr, events.ErrInvalidRecord) != errors.Is(err, events.ErrInvalidRecord)) {
			t.Errorf("case %d: error %v, SDK path %v", i, err, wantErr)
			continue
		}
		if err != nil {
			continue
		}
		var ev struct{ ID string }
		if json.Unmarshal(got, &ev) != nil || ev.ID != id {
			t.Errorf("case %d: returned ID %q, encoded %q", i, id, ev.ID)
		}
		if r.ID == "" {
			// A random ID: compare with the SDK under the same one.
			r.ID = id
			want, _ = sdkEncoding(t, r)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("case %d: encodings differ\nfast: %s\nSDK:  %s", i, got, want)
		}
	}
	if _, ok := encodeFast(full); !ok {
		t.Error("a record as keyflow emits it does not take the fast path")
	}
}

func BenchmarkEncode(b *testing.B) {
	r := events.Record{Type: events.TypeEncrypt, Source: "/keyflow/worker/host", Tenant: "alpha", Principal: "alice", RequestID: "mkSL1WUk21aaslZg3UOczh",
		Subject: "kf:alpha:key/0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b", Outcome: events.OutcomeSuccess, Time: time.Now(),
		Data: map[string]any{"keyId": "0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b", "keyVersion": uint32(1), "plaintextBytes": 32, "contextKeys": []string{"a"}}}
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := encode(r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sdk", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e, _ := r.CloudEvent()
			if _, err := json.Marshal(e); err != nil {
				b.Fatal(err)
			}
		}
	})
}
