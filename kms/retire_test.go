package kms_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// Retiring an old version destroys it (its ciphertexts no longer open,
// the other versions keep working), refuses with the exact code while
// registered data keys use it, never touches the primary, keeps the fact
// of a compromise (K1), and records every attempt once.
func TestRetireVersion(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k, _ := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	old, err := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("v1")})
	if err != nil {
		t.Fatal(err)
	}
	regs, _ := registerN(t, b, k.ID, 2)
	rotate(t, b, k.ID, 2)
	cur, _ := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("v2")})

	for name, tc := range map[string]struct {
		p    kms.RetireVersionParams
		code kms.Code
		msg  string
	}{
		"no version":  {kms.RetireVersionParams{KeyRef: k.ID, Now: true}, kms.CodeValidation, "name the version"},
		"unknown":     {kms.RetireVersionParams{KeyRef: k.ID, Version: 7, Now: true}, kms.CodeNotFound, "no version 7"},
		"primary":     {kms.RetireVersionParams{KeyRef: k.ID, Version: 2, Now: true}, kms.CodeInvalidState, "primary version"},
		"in use":      {kms.RetireVersionParams{KeyRef: k.ID, Version: 1, Now: true}, kms.CodeInvalidState, "2 registered data keys still use version 1"},
		"unknown key": {kms.RetireVersionParams{KeyRef: "alias/nope", Version: 1, Now: true}, kms.CodeNotFound, ""},
	} {
		_, err := b.KMS.RetireVersion(ctx, alice, tc.p)
		if kms.CodeOf(err) != tc.code || !strings.Contains(kms.PublicMessage(err), tc.msg) {
			t.Errorf("%s: %v, want %s %q", name, err, tc.code, tc.msg)
		}
	}
	for _, r := range regs {
		if err := b.KMS.DeregisterDataKey(ctx, alice, r.ID); err != nil {
			t.Fatal(err)
		}
	}
	// A compromised old version is destroyed as DESTROYED_COMPROMISED (K1).
	if _, err := b.KMS.SetState(ctx, alice, kms.SetStateParams{KeyRef: k.ID, Version: 1, To: kms.StateCompromised, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	res, err := b.KMS.RetireVersion(ctx, alice, kms.RetireVersionParams{KeyRef: k.ID, Version: 1, Now: true})
	if err != nil || res.State != kms.StateDestroyedCompromised || res.Transition != "K1" || res.From != kms.StateCompromised {
		t.Fatalf("retire of the compromised version: %+v %v", res, err)
	}
	// The version is destroyed: its ciphertexts are refused by state, even
	// with the compromise override.
	if _, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: old.Ciphertext, AllowCompromised: true}); kms.CodeOf(err) != kms.CodeInvalidState {
		t.Fatalf("a ciphertext of the retired version: %v, want KMSInvalidStateException", err)
	}
	if pt, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: cur.Ciphertext}); err != nil || string(pt.Plaintext) != "v2" {
		t.Fatalf("the primary after the retirement: %v", err)
	}
	// Again: nothing changes, no transition.
	res, err = b.KMS.RetireVersion(ctx, alice, kms.RetireVersionParams{KeyRef: k.ID, Version: 1, Now: true})
	if err != nil || res.Transition != "" || res.State != kms.StateDestroyedCompromised {
		t.Fatalf("second retire: %+v %v", res, err)
	}
	var ok, failed int
	for _, e := range b.EventsOfType("alpha", events.TypeKeyVersionRetired) {
		if e.Outcome == events.OutcomeSuccess {
			ok++
		} else {
			failed++
		}
	}
	if ok != 2 || failed != 5 {
		t.Fatalf("retired records: %d success, %d failure; want 2 and 5", ok, failed)
	}
}

// Issue 13: retire-version has a pending window like a key's deletion.
// During it every use of the version is refused and recorded (a
// use.refused record naming the version), the other versions work, it can
// be cancelled, a stale date destroys nothing, and at its date the
// material is destroyed.
func TestRetireVersionWindow(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k, _ := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	old, err := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("v1")})
	if err != nil {
		t.Fatal(err)
	}
	rotate(t, b, k.ID, 2)
	cur, _ := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("v2")})
	if _, err := b.KMS.RetireVersion(ctx, alice, kms.RetireVersionParams{KeyRef: k.ID, Version: 1, Window: 3 * kms.Day}); kms.CodeOf(err) != kms.CodeValidation {
		t.Fatalf("a 3-day window: %v, want ValidationException", err)
	}
	before := time.Now()
	res, err := b.KMS.RetireVersion(ctx, alice, kms.RetireVersionParams{KeyRef: k.ID, Version: 1})
	if err != nil || res.State != kms.StateActive || res.Transition != "" || res.RetirementDate.Before(before.Add(30*kms.Day-time.Minute)) {
		t.Fatalf("scheduled retirement: %+v %v", res, err)
	}
	date := res.RetirementDate
	if v, _ := res.Key.Version(1); !v.RetirementDate.Equal(date) {
		t.Fatalf("version 1 after scheduling: %+v", v)
	}
	if _, err := b.KMS.RetireVersion(ctx, alice, kms.RetireVersionParams{KeyRef: k.ID, Version: 1}); kms.CodeOf(err) != kms.CodeInvalidState {
		t.Fatalf("a second schedule: %v, want KMSInvalidStateException", err)
	}
	// Refused and recorded; the primary still works.
	_, err = b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: old.Ciphertext})
	if kms.CodeOf(err) != kms.CodeInvalidState || !strings.Contains(kms.PublicMessage(err), "pending retirement") {
		t.Fatalf("decrypt under a version pending retirement: %v", err)
	}
	refused := b.EventsOfType("alpha", events.TypeKeyUseRefused)
	if len(refused) != 1 || refused[0].Data["operation"] != events.TypeDecrypt || refused[0].Data["version"] != float64(1) || refused[0].Outcome == events.OutcomeSuccess {
		t.Fatalf("use.refused records: %+v", refused)
	}
	if pt, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: cur.Ciphertext}); err != nil || string(pt.Plaintext) != "v2" {
		t.Fatalf("the primary during the window: %v", err)
	}
	// A stale date (the timer of an older, cancelled window) destroys nothing.
	if r, err := b.KMS.RetireVersion(ctx, alice, kms.RetireVersionParams{KeyRef: k.ID, Version: 1, Due: date.Add(-time.Hour)}); err != nil || !r.Cancelled {
		t.Fatalf("stale due date: %+v %v", r, err)
	}
	// Cancel: usable again.
	if _, err := b.KMS.CancelRetirement(ctx, alice, k.ID, 1); err != nil {
		t.Fatal(err)
	}
	if pt, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: old.Ciphertext}); err != nil || string(pt.Plaintext) != "v1" {
		t.Fatalf("decrypt after the cancellation: %v", err)
	}
	if _, err := b.KMS.CancelRetirement(ctx, alice, k.ID, 1); kms.CodeOf(err) != kms.CodeInvalidState {
		t.Fatalf("cancelling twice: %v", err)
	}
	if r, err := b.KMS.RetireVersion(ctx, alice, kms.RetireVersionParams{KeyRef: k.ID, Version: 1, Due: date}); err != nil || !r.Cancelled {
		t.Fatalf("the timer of a cancelled window: %+v %v", r, err)
	}
	if pt, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: old.Ciphertext}); err != nil || string(pt.Plaintext) != "v1" {
		t.Fatalf("a cancelled window's timer destroyed the version: %v", err)
	}
	// Scheduled again; at its date the timer destroys it.
	res, err = b.KMS.RetireVersion(ctx, alice, kms.RetireVersionParams{KeyRef: k.ID, Version: 1, Window: 7 * kms.Day})
	if err != nil {
		t.Fatal(err)
	}
	done, err := b.KMS.RetireVersion(ctx, alice, kms.RetireVersionParams{KeyRef: k.ID, Version: 1, Due: res.RetirementDate})
	if err != nil || done.Cancelled || done.State != kms.StateDestroyed || done.Transition != "T5" {
		t.Fatalf("retirement at its date: %+v %v", done, err)
	}
	if v, _ := done.Key.Version(1); !v.RetirementDate.IsZero() {
		t.Fatalf("destroyed version still pending: %+v", v)
	}
	if _, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: old.Ciphertext}); kms.CodeOf(err) != kms.CodeInvalidState {
		t.Fatalf("decrypt after the retirement: %v", err)
	}
	if n := len(b.EventsOfType("alpha", events.TypeKeyVersionRetirementScheduled)); n != 4 { // 2 scheduled, 2 refused
		t.Fatalf("%d retirement.scheduled records, want 4", n)
	}
	if n := len(b.EventsOfType("alpha", events.TypeKeyVersionRetirementCancelled)); n != 2 { // 1 done, 1 refused
		t.Fatalf("%d retirement.cancelled records, want 2", n)
	}
}

// Issue 13: a signature made by an archived version is not reported as
// invalid: the refusal says the version is archived.
func TestVerifyUnderArchivedVersion(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: kms.SpecECCP256})
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("release 1.0")
	sig, err := b.KMS.Sign(ctx, alice, kms.SignParams{KeyRef: k.ID, Message: msg, Algorithm: kms.SignECDSASHA256})
	if err != nil {
		t.Fatal(err)
	}
	rotate(t, b, k.ID, 2)
	deactivateVersion(t, b, "alpha", k.ID, 1)
	s, offset := clockKMS(t, b)
	offset.Store(int64(91 * 24 * time.Hour))
	if err := s.ArchiveVersion(ctx, alice, kms.ArchiveVersionParams{KeyID: k.ID, Version: 1}); err != nil {
		t.Fatal(err)
	}
	b.KMS.Invalidate("alpha", k.ID)
	for _, want := range []uint32{0, 1} {
		_, err := b.KMS.Verify(ctx, alice, kms.VerifyParams{KeyRef: k.ID, KeyVersion: want, Message: msg, Signature: sig.Signature, Algorithm: kms.SignECDSASHA256})
		if kms.CodeOf(err) != kms.CodeInvalidState || !strings.Contains(kms.PublicMessage(err), "archived") {
			t.Fatalf("verify (version %d) of a signature by the archived version: %v", want, err)
		}
	}
}
