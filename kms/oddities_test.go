package kms_test

import (
	"context"
	"errors"
	"testing"

	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// Context keys and values that JSON decoders would fold together (invalid
// UTF-8 becomes U+FFFD, so "a\xff" and "a\xfe" were one context), or that
// carry NUL, are refused; free text that terminals show (a key's
// description) refuses control characters and ANSI escapes.
func TestTextOdditiesRefused(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k := mustCreate(t, b.KMS, alice, "odd")
	for name, ec := range map[string]kms.EncryptionContext{
		"invalid UTF-8 key":   {"a\xff": "1"},
		"invalid UTF-8 value": {"a": "\xfe"},
		"U+FFFD":              {"a\uFFFD": "1"},
		"NUL in a key":        {"a\x00b": "1"},
		"NUL in a value":      {"a": "x\x00"},
	} {
		if _, err := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x"), Context: ec}); !errors.Is(err, kms.ErrValidation) {
			t.Errorf("%s: %v, want ValidationException", name, err)
		}
	}
	if _, err := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x"), Context: kms.EncryptionContext{"Dept": "ü", "dept": "2"}}); err != nil {
		t.Errorf("a well-formed context: %v", err)
	}
	for _, d := range []string{"red \x1b[31malert\x1b[0m", "two\nlines", "nul\x00", "bad \xff", "c1 \u009b"} {
		if _, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Description: d}); !errors.Is(err, kms.ErrValidation) {
			t.Errorf("description %q: %v, want ValidationException", d, err)
		}
	}
	if _, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Description: "payments — ключ 🔑"}); err != nil {
		t.Errorf("a printable description: %v", err)
	}
}
