package region_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// TestReplicaApplyRefusals drives the replica side's domain calls
// directly (no link, no Temporal): what a replica takes, what it refuses,
// and that a repeated message changes nothing and records nothing.
func TestReplicaApplyRefusals(t *testing.T) {
	ctx := context.Background()
	a := testbed.NewWith(t, testbed.Options{Region: "us-east"})
	b := testbed.NewWith(t, testbed.Options{Region: "eu-west"})
	k, err := a.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{MultiRegion: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.KMS.ReplicateKey(ctx, alice, kms.ReplicateKeyParams{KeyRef: k.ID, Region: "eu-west"}); err != nil {
		t.Fatal(err)
	}
	for v := uint32(2); v <= 3; v++ {
		if _, err := a.KMS.CreateVersion(ctx, alice, kms.CreateVersionParams{KeyID: k.ID, Version: v}); err != nil {
			t.Fatal(err)
		}
	}
	meta, err := a.KMS.GetKey(ctx, alice, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	params, err := b.KMS.ReplicaImportParameters(ctx, alice, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	export := func(v uint32) []byte {
		t.Helper()
		rv, err := a.KMS.ExportReplicaVersion(ctx, alice, kms.ExportReplicaParams{KeyID: k.ID, Region: "eu-west", Version: v, PublicKey: params.PublicKey})
		if err != nil {
			t.Fatal(err)
		}
		return rv.Wrapped
	}
	apply := func(from string, m *kms.Key, v uint32, wrapped, token []byte) (*kms.ApplyResult, error) {
		return b.KMS.ApplyReplicaVersion(ctx, alice, kms.ApplyReplicaParams{From: from, Key: m, Version: v, Wrapped: wrapped, ImportToken: token})
	}
	w1 := export(1)

	cases := []struct {
		name string
		from string
		v    uint32
		wrap []byte
		tok  []byte
		want kms.Code
	}{
		{"a gap: version 3 before 1", "us-east", 3, export(3), params.ImportToken, kms.CodeConflict},
		{"this region as the sender", "eu-west", 1, w1, params.ImportToken, kms.CodeValidation},
		{"a token of the primary's own HSM", "us-east", 1, w1, mustParams(t, a.KMS, k.ID).ImportToken, kms.CodeInvalidImportToken},
		{"a token for another key", "us-east", 1, w1, mustParams(t, b.KMS, "0b7c2a3e-1d4f-4a5b-8c6d-7e8f9a0b1c2d").ImportToken, kms.CodeInvalidImportToken},
		{"tampered material", "us-east", 1, flip(w1), params.ImportToken, kms.CodeInvalidCiphertext},
	}
	for _, c := range cases {
		if _, err := apply(c.from, meta, c.v, c.wrap, c.tok); kms.CodeOf(err) != c.want {
			t.Errorf("%s: got %v, want %s", c.name, err, c.want)
		}
	}
	if _, err := b.KMS.GetKey(ctx, alice, k.ID); kms.CodeOf(err) != kms.CodeNotFound {
		t.Fatalf("a refused apply left a key behind: %v", err)
	}

	res, err := apply("us-east", meta, 1, w1, params.ImportToken)
	if err != nil || !res.Applied || res.Key.ID != k.ID {
		t.Fatalf("first apply: %+v %v", res, err)
	}
	records := len(b.EventsOfType("alpha", events.TypeKeyReplicaApplied))
	if res, err := apply("us-east", meta, 1, w1, params.ImportToken); err != nil || res.Applied {
		t.Fatalf("repeat: %+v %v", res, err)
	}
	if n := len(b.EventsOfType("alpha", events.TypeKeyReplicaApplied)); n != records {
		t.Fatalf("a repeated version made a record: %d, then %d", records, n)
	}
	// Once the replica exists, only its primary region may change it.
	if _, err := apply("ap-south", meta, 2, export(2), params.ImportToken); kms.CodeOf(err) != kms.CodeInvalidState {
		t.Fatalf("another region as the primary: %v", err)
	}
	// The same material: A's ciphertext decrypts in B.
	ct, err := a.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("v1")})
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: ct.Ciphertext}); err != nil || string(pt.Plaintext) != "v1" {
		t.Fatalf("decrypt in B: %v", err)
	}

	// A key of B's own with the same ID is never overwritten.
	own, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	if err != nil {
		t.Fatal(err)
	}
	fake := *meta
	fake.ID = own.ID
	if _, err := apply("us-east", &fake, 1, w1, mustParams(t, b.KMS, own.ID).ImportToken); kms.CodeOf(err) != kms.CodeConflict {
		t.Fatalf("a replica over a local key: %v", err)
	}
	// A replica refuses material changes of its own.
	if _, err := b.KMS.SetPrimaryVersion(ctx, alice, kms.SetPrimaryParams{KeyID: k.ID, Version: 1}); err != nil {
		t.Fatalf("setting the primary version it has is a no-op: %v", err)
	}
	if _, err := b.KMS.CreateVersion(ctx, alice, kms.CreateVersionParams{KeyID: k.ID, Version: 2}); kms.CodeOf(err) != kms.CodeUnsupportedOperation {
		t.Fatalf("a replica created a version: %v", err)
	}
	// Only the primary adds replicas or moves the primary region.
	if _, err := b.KMS.ReplicateKey(ctx, alice, kms.ReplicateKeyParams{KeyRef: k.ID, Region: "ap-south"}); kms.CodeOf(err) != kms.CodeUnsupportedOperation {
		t.Fatalf("a replica added a replica: %v", err)
	}
	if _, err := a.KMS.UpdatePrimaryRegion(ctx, alice, k.ID, "eu-west"); kms.CodeOf(err) != kms.CodeInvalidState {
		t.Fatalf("a replica without every version became primary: %v", err)
	}
}

func mustParams(t *testing.T, s *kms.Service, keyID string) *kms.ImportParameters {
	t.Helper()
	p, err := s.ReplicaImportParameters(context.Background(), alice, keyID)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func flip(b []byte) []byte {
	out := append([]byte(nil), b...)
	out[len(out)/2] ^= 1
	return out
}

// TestReplicaDestroyedReport drives the primary's side of a replica's
// destruction directly: the report is taken only from a replica whose
// window ended here, once (a repeat records nothing), and every refusal
// has its code and its record.
func TestReplicaDestroyedReport(t *testing.T) {
	ctx := context.Background()
	var shift atomic.Int64
	a := testbed.NewWith(t, testbed.Options{Region: "us-east", Now: func() time.Time { return time.Now().Add(time.Duration(shift.Load())) }})
	k, err := a.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{MultiRegion: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.KMS.ReplicateKey(ctx, alice, kms.ReplicateKeyParams{KeyRef: k.ID, Region: "eu-west"}); err != nil {
		t.Fatal(err)
	}
	fromB := kms.Caller{Tenant: "alpha", Principal: "region:eu-west"}
	report := func(from string) (*kms.ApplyResult, error) {
		return a.KMS.MarkReplicaDestroyed(ctx, fromB, kms.ReplicaDestroyedParams{From: from, KeyID: k.ID})
	}
	if _, err := report("eu-west"); kms.CodeOf(err) != kms.CodeInvalidState {
		t.Fatalf("a report from an active replica: %v", err)
	}
	if _, err := a.KMS.ScheduleReplicaDeletion(ctx, alice, k.ID, "eu-west", 7*kms.Day); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		from string
		want kms.Code
	}{
		{"before the window ends", "eu-west", kms.CodeInvalidState},
		{"a region with no replica", "ap-south", kms.CodeNotFound},
		{"this region", "us-east", kms.CodeValidation},
	}
	for _, c := range cases {
		if _, err := report(c.from); kms.CodeOf(err) != c.want {
			t.Errorf("%s: got %v, want %s", c.name, err, c.want)
		}
	}
	refused := 0
	for _, e := range a.EventsOfType("alpha", events.TypeKeyReplicaDestroyed) {
		if e.Outcome == events.OutcomeFailure {
			refused++
		}
	}
	if refused != len(cases)+1 {
		t.Fatalf("%d refused reports recorded, want %d", refused, len(cases)+1)
	}
	shift.Store(int64(7*kms.Day + time.Minute))
	if _, err := a.KMS.CancelReplicaDeletion(ctx, alice, k.ID, "eu-west"); kms.CodeOf(err) != kms.CodeInvalidState {
		t.Fatalf("a cancel after the window ended: %v", err)
	}
	res, err := report("eu-west")
	if err != nil || !res.Applied {
		t.Fatalf("the report at the end of the window: %+v %v", res, err)
	}
	if r, _ := res.Key.ReplicaIn("eu-west"); r.State != kms.ReplicaDestroyed {
		t.Fatalf("the primary shows the replica %s", r.State)
	}
	if res, err := report("eu-west"); err != nil || res.Applied {
		t.Fatalf("a repeated report: %+v %v", res, err)
	}
	if n := len(a.EventsOfType("alpha", events.TypeKeyReplicaDestroyed)) - refused; n != 1 {
		t.Fatalf("%d destruction records, want 1", n)
	}
	if _, err := a.KMS.UpdatePrimaryRegion(ctx, alice, k.ID, "eu-west"); kms.CodeOf(err) != kms.CodeInvalidState {
		t.Fatalf("a destroyed replica became primary: %v", err)
	}
}
