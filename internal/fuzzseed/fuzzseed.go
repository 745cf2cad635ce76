// Package fuzzseed keeps the seed corpora of keyflow's fuzz targets in the
// repository. A target calls Add where it would call f.Add; with
// KEYFLOW_FUZZ_SEEDS=write in the environment, Add also writes the seed to
// testdata/fuzz/<target>/ in Go's corpus file format, so plain `go test`
// replays it even where the code that made it changes. Regenerate with
//
//	KEYFLOW_FUZZ_SEEDS=write go test -run '^Fuzz' ./...
//
// Seeds are real encodings made by keyflow's own code (envelopes, backup
// headers, share files, export lines, requests) plus edge cases. For
// targets over an HSM the seeds are mutations relative to a value made in
// the run (an XOR mask and a cut), so a seed means the same thing on every
// fresh token.
//
// For tests only: no product package imports it.
package fuzzseed

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Add adds a seed to f and, when asked to, writes it to testdata.
func Add(f *testing.F, args ...any) {
	f.Helper()
	f.Add(args...)
	if os.Getenv("KEYFLOW_FUZZ_SEEDS") != "write" {
		return
	}
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, a := range args {
		b.WriteString(encode(f, a) + "\n")
	}
	sum := sha256.Sum256([]byte(b.String()))
	dir := filepath.Join("testdata", "fuzz", f.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "seed-"+hex.EncodeToString(sum[:8])), []byte(b.String()), 0o644); err != nil {
		f.Fatal(err)
	}
}

// encode writes one value as the corpus format does (Go syntax, typed).
func encode(f *testing.F, a any) string {
	switch v := a.(type) {
	case []byte:
		return "[]byte(" + strconv.Quote(string(v)) + ")"
	case string:
		return "string(" + strconv.Quote(v) + ")"
	case bool:
		return fmt.Sprintf("bool(%v)", v)
	case byte:
		return "byte(" + strconv.QuoteRune(rune(v)) + ")"
	case uint16:
		return fmt.Sprintf("uint16(%d)", v)
	case uint32:
		return fmt.Sprintf("uint32(%d)", v)
	case uint64:
		return fmt.Sprintf("uint64(%d)", v)
	case int:
		return fmt.Sprintf("int(%d)", v)
	default:
		f.Fatalf("fuzzseed: no corpus encoding for %T", a)
		return ""
	}
}
