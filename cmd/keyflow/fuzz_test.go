package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/keyflow/keyflow/internal/fuzzseed"
)

// FuzzParseContext: --context flags (one per line of the input) that
// parse give a context with one entry per flag, each the flag's key and
// value, which formatted back as flags parses to the same context. Every
// refusal is a usage error (exit 2).
func FuzzParseContext(f *testing.F) {
	for _, s := range []string{"app=billing", "app=billing\nenv=prod", "a=b=c", "a=", "=b", "a", "a=1\na=2", "a=1\nA=2", "k=\x00\xff", ""} {
		fuzzseed.Add(f, s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var flags []string
		if s != "" {
			flags = strings.Split(s, "\n")
		}
		ec, err := parseContext(flags)
		if err != nil {
			var u usageError
			if !errors.As(err, &u) {
				t.Fatalf("refusal %v is not a usage error", err)
			}
			return
		}
		if len(ec) != len(flags) {
			t.Fatalf("%d flags gave %d entries", len(flags), len(ec))
		}
		for _, p := range flags {
			k, v, _ := strings.Cut(p, "=")
			if got, ok := ec[k]; !ok || got != v {
				t.Fatalf("flag %q gave %q=%q", p, k, got)
			}
		}
		var again []string
		for _, k := range slices.Sorted(maps.Keys(ec)) {
			again = append(again, k+"="+ec[k])
		}
		ec2, err := parseContext(again)
		if err != nil || !maps.Equal(ec, ec2) {
			t.Fatalf("formatted back, %v parses to %v (%v)", ec, ec2, err)
		}
	})
}

// b64RE is standard, padded Base64 (RFC 4648 section 4).
var b64RE = regexp.MustCompile(`^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$`)

// FuzzDecodeBase64Input: the CLI takes Base64 input exactly when, with
// white space removed, it is standard padded Base64; what it decodes
// re-encodes to the same length and decodes to the same bytes; and any
// bytes, encoded and wrapped as `base64` wraps them, decode to
// themselves. Every refusal is a usage error.
func FuzzDecodeBase64Input(f *testing.F) {
	for _, s := range []string{"QUJD", "QUI=", "QQ==", "QR==", "QUJD\nREVG\n", " Q U J D ", "QUJ", "QQ", "Q===", "QUJD====", "-_-_", "QUJD\u00a0", "QUJD\u2028REVG", "\xffQUJD", ""} {
		fuzzseed.Add(f, []byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		stripped := strings.Map(func(r rune) rune {
			if unicode.IsSpace(r) {
				return -1
			}
			return r
		}, string(in))
		out, err := decodeBase64Input(in)
		if valid := b64RE.MatchString(stripped); valid != (err == nil) {
			t.Fatalf("%q: standard Base64 %v, but decode error %v", in, valid, err)
		}
		if err != nil {
			var u usageError
			if !errors.As(err, &u) {
				t.Fatalf("refusal %v is not a usage error", err)
			}
		} else {
			enc := base64.StdEncoding.EncodeToString(out)
			again, err := decodeBase64Input([]byte(enc))
			if len(enc) != len(stripped) || err != nil || !bytes.Equal(again, out) {
				t.Fatalf("%q decoded to %x, which encodes to %q", in, out, enc)
			}
		}
		// As data: encoded, wrapped at 76 columns, decoded.
		enc := base64.StdEncoding.EncodeToString(in)
		var wrapped strings.Builder
		for len(enc) > 76 {
			wrapped.WriteString(enc[:76] + "\n")
			enc = enc[76:]
		}
		wrapped.WriteString(enc + "\n")
		got, err := decodeBase64Input([]byte(wrapped.String()))
		if err != nil || !bytes.Equal(got, in) {
			t.Fatalf("%x did not survive Base64: %x, %v", in, got, err)
		}
	})
}
