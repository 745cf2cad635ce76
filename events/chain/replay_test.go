package chain

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyflow/keyflow/events"
)

// sealRecs seals the given bodies as seq 1..n in one digest per `every`.
func sealRecs(t *testing.T, k *softKeys, bodies [][]byte, every int) ([]rec, []*Digest) {
	t.Helper()
	b := NewBuilder("KF_AUDIT", nil)
	var recs []rec
	var ds []*Digest
	for i, body := range bodies {
		r := rec{uint64(i + 1), body}
		recs = append(recs, r)
		if _, err := b.Add(r.seq, r.body); err != nil {
			t.Fatal(err)
		}
		if b.Len() == every || i == len(bodies)-1 {
			d := b.Digest(time.Now(), k.identities())
			k.sign(t, d)
			if err := b.Commit(d); err != nil {
				t.Fatal(err)
			}
			ds = append(ds, d)
		}
	}
	return recs, ds
}

// A genuine record published again after JetStream's duplicate window (or
// under another Nats-Msg-Id) is stored, authenticated and sealed a second
// time; verify reports it as replayed, naming both sequences.
func TestReplayedRecord(t *testing.T) {
	k := newSoftKeys(t, "sealer")
	var bodies [][]byte
	for i := 1; i <= 30; i++ {
		bodies = append(bodies, event(t, i))
	}
	bodies = append(bodies, bodies[6]) // seq 31 is seq 7 again, byte for byte
	recs, ds := sealRecs(t, k, bodies, 10)
	r := verify(t, Options{Keys: k.public()}, ds, recs)
	wantFirst(t, r, 31, KindReplayed)
	id := ParseFields(bodies[6]).ID
	if f := r.Findings[0]; len(r.Findings) != 1 || !strings.Contains(f.Detail, id) || !strings.Contains(f.Detail, "seq 7") || !strings.Contains(f.Detail, "seq 31") {
		t.Errorf("finding %v: want one naming %s, seq 7 and seq 31 (all: %v)", f, id, r.Findings)
	}
	// A clean trail of the same length has no such finding.
	clean, cds := sealRecs(t, k, bodies[:30], 10)
	if r := verify(t, Options{Keys: k.public()}, cds, clean); !r.OK() {
		t.Fatalf("clean trail: %v", r.Findings)
	}
}

// Refusals of request signatures in the trail: an identity keyflow never
// issued is a forged-request finding; a missing or bad signature is listed,
// not failed; the AWS gateway's own SigV4 refusals are neither.
func TestRefusedRequestsInTheTrail(t *testing.T) {
	k := newSoftKeys(t, "sealer")
	refusal := func(code, op string) []byte {
		b, err := events.Record{Type: events.TypeRequestRejected, Tenant: "alpha", Principal: "app", Outcome: events.OutcomeDenied,
			ErrorCode: code, RequestID: "r-" + code, Source: "/keyflow/worker/test", Data: map[string]any{"operation": op}}.CloudEvent()
		if err != nil {
			t.Fatal(err)
		}
		j, _ := b.MarshalJSON()
		return j
	}
	bodies := [][]byte{event(t, 1),
		refusal("UnrecognizedClientException", "crypto.decrypt"),
		refusal("MissingAuthenticationTokenException", "crypto.decrypt"),
		refusal("InvalidSignatureException", "keys.create"),
		refusal("InvalidSignatureException", "aws.request"),
		refusal("UnrecognizedClientException", "aws.request"),
		refusal("AccessDeniedException", "crypto.encrypt"),
	}
	recs, ds := sealRecs(t, k, bodies, 100)
	r := verify(t, Options{Keys: k.public()}, ds, recs)
	wantFirst(t, r, 2, KindForgedRequest)
	if len(r.Findings) != 1 {
		t.Errorf("findings %v, want the one forged request", r.Findings)
	}
	var got []string
	for _, f := range r.Unsigned {
		got = append(got, fmt.Sprint(f.Seq))
		if f.Kind != KindUnsignedRequest || !strings.Contains(f.Detail, `"app"`) {
			t.Errorf("unsigned entry %v", f)
		}
	}
	if strings.Join(got, ",") != "3,4" {
		t.Errorf("unsigned at seq %v, want 3,4", got)
	}
}
