package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/events/jsaudit"
)

// audit verify on a trail with a forged request refused, an unsigned one
// refused, and a genuine record re-published under another Nats-Msg-Id:
// the forged request and the replay fail it, by name; the unsigned
// request is listed.
func TestAuditVerifyReportsRequestsAndReplays(t *testing.T) {
	st := newAuditStack(t)
	ctx := context.Background()
	for _, code := range []string{"UnrecognizedClientException", "MissingAuthenticationTokenException"} {
		if err := st.audit.Emit(ctx, events.Record{Type: events.TypeRequestRejected, Tenant: "alpha", Principal: "app", Outcome: events.OutcomeDenied,
			ErrorCode: code, RequestID: "req-" + code, Data: map[string]any{"operation": "crypto.decrypt"}}); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := st.js.Stream(ctx, jsaudit.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := stream.GetMsg(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(orig.Subject)
	m.Data = orig.Data
	m.Header.Set(events.HeaderRecordMAC, orig.Header.Get(events.HeaderRecordMAC))
	m.Header.Set(jetstream.MsgIDHeader, uuid.NewString())
	ack, err := st.js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for st.sealer.Status().SealedTo < ack.Sequence {
		if time.Now().After(deadline) {
			t.Fatalf("sealer stuck at %+v", st.sealer.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	out, errs, code := st.run(t, "audit", "verify", "-o", "table")
	t.Logf("%s%s", out, errs)
	if code == exitOK || !strings.Contains(errs, "forged-request") || !strings.Contains(errs, "(2 findings in all)") {
		t.Errorf("verify: exit %d, want a failure naming the forged request of 2 findings:\n%s", code, errs)
	}
	if !strings.Contains(out, "unsigned requests: 1 refused") || !strings.Contains(out, "MissingAuthenticationTokenException") {
		t.Errorf("the unsigned request is not listed:\n%s", out)
	}
	out, _, _ = st.run(t, "audit", "verify")
	if !strings.Contains(out, `"kind": "replayed"`) || !strings.Contains(out, "stored at seq 3") {
		t.Errorf("-o json does not report the replay:\n%s", out)
	}
}
