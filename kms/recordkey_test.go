package kms_test

import (
	"context"
	"testing"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
)

// keySink is an audit sink that keeps the record key the KMS gives it.
type keySink struct {
	events.Sink
	key *events.RecordKey
}

func (s *keySink) SetRecordKey(k *events.RecordKey) { s.key = k }

// TestRecordKey: every worker of a deployment derives the same record key
// from the HSM and gives it to its audit sink at start; the key
// authenticates a record on its own subject only.
func TestRecordKey(t *testing.T) {
	b := testbed.New(t)
	sink := &keySink{Sink: events.SinkFunc(func(context.Context, events.Record) error { return nil })}
	b.NewKMS(sink)
	if sink.key == nil {
		t.Fatal("the KMS did not give its audit sink the record key")
	}
	other, err := b.KMS.RecordKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const subject = "kf.audit.alpha.none.io.keyflow.key.list.v1"
	body := []byte(`{"specversion":"1.0","id":"x"}`)
	mac := sink.key.Sum(subject, body)
	if !other.Check(subject, body, mac) {
		t.Fatal("two workers of one deployment derived different record keys")
	}
	for name, ok := range map[string]bool{
		"another subject": other.Check("kf.audit.beta.none.io.keyflow.key.list.v1", body, mac),
		"another body":    other.Check(subject, append(body, ' '), mac),
		"no mac":          other.Check(subject, body, ""),
		"a long mac":      other.Check(subject, body, mac+mac),
	} {
		if ok {
			t.Errorf("%s: the authenticator checked", name)
		}
	}
	if s := sink.key.String(); s != "events.RecordKey{…}" {
		t.Errorf("a record key prints as %q", s)
	}
}
