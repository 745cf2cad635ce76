package kms_test

import (
	"context"
	"strings"
	"testing"

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
		"no version":  {kms.RetireVersionParams{KeyRef: k.ID}, kms.CodeValidation, "name the version"},
		"unknown":     {kms.RetireVersionParams{KeyRef: k.ID, Version: 7}, kms.CodeNotFound, "no version 7"},
		"primary":     {kms.RetireVersionParams{KeyRef: k.ID, Version: 2}, kms.CodeInvalidState, "primary version"},
		"in use":      {kms.RetireVersionParams{KeyRef: k.ID, Version: 1}, kms.CodeInvalidState, "2 registered data keys still use version 1"},
		"unknown key": {kms.RetireVersionParams{KeyRef: "alias/nope", Version: 1}, kms.CodeNotFound, ""},
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
	res, err := b.KMS.RetireVersion(ctx, alice, kms.RetireVersionParams{KeyRef: k.ID, Version: 1})
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
	res, err = b.KMS.RetireVersion(ctx, alice, kms.RetireVersionParams{KeyRef: k.ID, Version: 1})
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
