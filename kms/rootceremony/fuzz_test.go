package rootceremony_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/keyflow/keyflow/internal/fuzzseed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/rootceremony"
	"github.com/keyflow/keyflow/kms/shamir"
)

// ceremonySeeds returns the files of a real 3-of-5 export on a fresh token.
func ceremonySeeds(f *testing.F) (shares [][]byte, wrapped []byte) {
	c, _ := exported(f)
	for _, s := range c.Shares {
		b, err := json.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		shares = append(shares, b)
	}
	wrapped, err := json.Marshal(c.Wrapped)
	if err != nil {
		f.Fatal(err)
	}
	return shares, wrapped
}

// reparse encodes what a parser accepted and parses it again: the result
// must encode the same (decode after encode is the identity).
func reparse[T any](t *testing.T, v *T, parse func(string, []byte) (*T, error)) {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	again, err := parse("again", b)
	if err != nil {
		t.Fatalf("an accepted file re-encoded is refused: %v", err)
	}
	b2, _ := json.Marshal(again)
	if !bytes.Equal(b, b2) {
		t.Fatalf("fields changed through encode and parse:\n %s\n %s", b, b2)
	}
}

// refusedHelpfully checks that a refusal is a validation error naming the
// file.
func refusedHelpfully(t *testing.T, err error) {
	if kms.CodeOf(err) != kms.CodeValidation || !strings.Contains(kms.PublicMessage(err), "custodian.json") {
		t.Fatalf("refusal %v is not a validation error naming the file", err)
	}
}

// FuzzParseShareFile: a share file that parses has an index that is a
// share index (1 to N, N at most 255, so that it fits the byte Combine
// uses), a possible threshold and a matching checksum, and it re-encodes
// to the same fields. Every refusal is a validation error naming the file.
func FuzzParseShareFile(f *testing.F) {
	shares, _ := ceremonySeeds(f)
	for _, s := range shares[:2] {
		fuzzseed.Add(f, s)
	}
	fuzzseed.Add(f, bytes.Replace(shares[0], []byte(`"index":1`), []byte(`"index":0`), 1))
	fuzzseed.Add(f, bytes.Replace(shares[0], []byte(`"index":1`), []byte(`"INDEX":1`), 1))
	fuzzseed.Add(f, shares[0][:len(shares[0])-1])
	// A forged checksum (it is no MAC) with an index past 255.
	forged := rootceremony.ShareFile{Format: rootceremony.ShareFormat, CeremonyID: "c", Index: 257, M: 2, N: 300, Share: "00"}
	forged.Checksum = rootceremony.ChecksumForTest(forged)
	b, _ := json.Marshal(forged)
	fuzzseed.Add(f, b)
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := rootceremony.ParseShareFile("custodian.json", b)
		if err != nil {
			refusedHelpfully(t, err)
			return
		}
		if s.Format != rootceremony.ShareFormat || s.Index < 1 || s.Index > s.N || s.N > shamir.MaxShares || s.M < shamir.MinShares || s.M > s.N {
			t.Fatalf("accepted share file with format %q, index %d, %d of %d", s.Format, s.Index, s.M, s.N)
		}
		if s.Checksum != rootceremony.ChecksumForTest(*s) {
			t.Fatalf("accepted checksum %q", s.Checksum)
		}
		reparse(t, s, rootceremony.ParseShareFile)
	})
}

// FuzzParseWrappedRootFile: a wrapped root key file that parses names its
// ceremony and root key, has a possible threshold, and re-encodes to the
// same fields. Every refusal is a validation error naming the file.
func FuzzParseWrappedRootFile(f *testing.F) {
	_, wrapped := ceremonySeeds(f)
	fuzzseed.Add(f, wrapped)
	fuzzseed.Add(f, bytes.Replace(wrapped, []byte(`"m":3`), []byte(`"m":0`), 1))
	fuzzseed.Add(f, bytes.Replace(wrapped, []byte(`"n":5`), []byte(`"n":256`), 1))
	fuzzseed.Add(f, []byte(`{"format":"keyflow-root-wrapped/v1"}`))
	fuzzseed.Add(f, []byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := rootceremony.ParseWrappedRootFile("custodian.json", b)
		if err != nil {
			refusedHelpfully(t, err)
			return
		}
		if w.Format != rootceremony.WrappedFormat || w.CeremonyID == "" || w.RootKeyLabel == "" || w.M < shamir.MinShares || w.M > w.N || w.N > shamir.MaxShares {
			t.Fatalf("accepted wrapped root key file %q, ceremony %q, label %q, %d of %d", w.Format, w.CeremonyID, w.RootKeyLabel, w.M, w.N)
		}
		reparse(t, w, rootceremony.ParseWrappedRootFile)
	})
}
