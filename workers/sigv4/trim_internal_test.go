package sigv4

import (
	"strings"
	"testing"
)

// TestAppendTrimmed: a header value is canonicalised exactly as
// strings.Join(strings.Fields(v), " ") does, for ASCII and Unicode
// spaces alike, after whatever the buffer already holds.
func TestAppendTrimmed(t *testing.T) {
	for _, v := range []string{"", " ", "a", " a ", "a  b", "\ta\t b\r\n", "attempt=1; max=1", "x\u00a0y", " \u2003 z ", "é  é", "a\vb\fc"} {
		want := "host:" + strings.Join(strings.Fields(v), " ")
		if got := string(appendTrimmed([]byte("host:"), v)); got != want {
			t.Errorf("appendTrimmed(%q) = %q, want %q", v, got, want)
		}
	}
}
