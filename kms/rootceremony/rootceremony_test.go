package rootceremony_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/hsm/pkcs11"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/rootceremony"
)

func TestMain(m *testing.M) { pkcs11test.Main(m) }

const label = "keyflow-root"

// exported runs a 3-of-5 export on a fresh token and returns the ceremony
// with a key blob wrapped under that root key.
func exported(t testing.TB) (*rootceremony.Ceremony, []byte) {
	t.Helper()
	ctx := context.Background()
	cfg, so := pkcs11test.NewTokenConfigWithSO(t)
	tok, err := pkcs11.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tok.Close() })
	root, err := tok.EnsureRootKey(ctx, label)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := tok.GenerateWrappedAESKey(ctx, root, 32)
	if err != nil {
		t.Fatal(err)
	}
	c, err := rootceremony.Export(ctx, tok, rootceremony.ExportParams{RootKeyLabel: label, SOPIN: so})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Shares) != 5 || c.Wrapped.M != 3 || c.Wrapped.N != 5 {
		t.Fatalf("default ceremony: %d shares, %d of %d", len(c.Shares), c.Wrapped.M, c.Wrapped.N)
	}
	return c, blob
}

// roundTrip serialises and parses share files as the CLI does.
func parsed(t *testing.T, c *rootceremony.Ceremony, idx ...int) ([]*rootceremony.ShareFile, []string) {
	t.Helper()
	var out []*rootceremony.ShareFile
	var names []string
	for _, i := range idx {
		b, _ := json.Marshal(c.Shares[i])
		name := fmt.Sprintf("share-%d-of-5.json", i+1)
		f, err := rootceremony.ParseShareFile(name, b)
		if err != nil {
			t.Fatal(err)
		}
		out, names = append(out, f), append(names, name)
	}
	return out, names
}

// Any 3 of the 5 shares bring the root key into a fresh token, where a key
// wrapped under the old root opens.
func TestAnyThreeOfFiveImport(t *testing.T) {
	ctx := context.Background()
	c, blob := exported(t)
	for a := 0; a < 5; a++ {
		for b := a + 1; b < 5; b++ {
			for d := b + 1; d < 5; d++ {
				tok := pkcs11test.NewToken(t)
				shares, names := parsed(t, c, a, b, d)
				if err := rootceremony.Import(ctx, tok, rootceremony.ImportParams{Wrapped: &c.Wrapped, Shares: shares, ShareNames: names}); err != nil {
					t.Fatalf("shares %d,%d,%d: %v", a+1, b+1, d+1, err)
				}
				root, err := tok.EnsureRootKey(ctx, label)
				if err != nil {
					t.Fatal(err)
				}
				k, err := tok.UnwrapAESKey(ctx, root, blob)
				if err != nil {
					t.Fatalf("shares %d,%d,%d: a blob of the old root does not open: %v", a+1, b+1, d+1, err)
				}
				_ = tok.DestroyKey(ctx, k)
			}
		}
	}
	// All five work too; a second import into the same token is refused.
	tok := pkcs11test.NewToken(t)
	shares, _ := parsed(t, c, 0, 1, 2, 3, 4)
	if err := rootceremony.Import(ctx, tok, rootceremony.ImportParams{Wrapped: &c.Wrapped, Shares: shares}); err != nil {
		t.Fatal(err)
	}
	if err := rootceremony.Import(ctx, tok, rootceremony.ImportParams{Wrapped: &c.Wrapped, Shares: shares}); !errors.Is(err, kms.ErrAlreadyExists) {
		t.Fatalf("second import: %v, want AlreadyExists", err)
	}
}

// Two shares of a 3-of-5 ceremony are refused before anything reaches the
// HSM; two shares that were edited to claim a 2-of-5 ceremony rebuild a
// wrong key, which the KEK check refuses. The token stays empty.
func TestBelowThresholdFailsCleanly(t *testing.T) {
	ctx := context.Background()
	c, _ := exported(t)
	tok := pkcs11test.NewToken(t)
	shares, names := parsed(t, c, 1, 3)
	err := rootceremony.Import(ctx, tok, rootceremony.ImportParams{Wrapped: &c.Wrapped, Shares: shares, ShareNames: names})
	if !errors.Is(err, kms.ErrValidation) || !strings.Contains(err.Error(), "needs 3 of its 5 shares; 2 given") {
		t.Fatalf("2 of 3: %v", err)
	}
	// A forger rewrites M to 2 in two shares and the wrapped file, with
	// fresh checksums: the arithmetic runs and yields a wrong key.
	forgedWrapped := c.Wrapped
	forgedWrapped.M = 2
	var forged []*rootceremony.ShareFile
	for _, s := range shares {
		f := *s
		f.M = 2
		f.Checksum = ""
		b, _ := json.Marshal(f)
		// recompute the checksum the way a forger would: parse refuses
		// until it matches, so find it through the package's own check
		forged = append(forged, reChecksum(t, b))
	}
	err = rootceremony.Import(ctx, tok, rootceremony.ImportParams{Wrapped: &forgedWrapped, Shares: forged})
	if !errors.Is(err, kms.ErrInvalidCiphertext) || !strings.Contains(err.Error(), "do not rebuild") {
		t.Fatalf("forged 2-of-5: %v", err)
	}
	if _, err := tok.ExportRootKey(ctx, label, make([]byte, 32), "x"); !errors.Is(err, hsm.ErrNotFound) {
		t.Fatalf("a refused import left a root key behind: %v", err)
	}
}

// reChecksum fixes a share file's checksum, as a forger with the format in
// hand can.
func reChecksum(t *testing.T, b []byte) *rootceremony.ShareFile {
	t.Helper()
	var f rootceremony.ShareFile
	_ = json.Unmarshal(b, &f)
	f.Checksum = rootceremony.ChecksumForTest(f)
	out, _ := json.Marshal(f)
	p, err := rootceremony.ParseShareFile("forged", out)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBadSharesAreRefused(t *testing.T) {
	ctx := context.Background()
	c, _ := exported(t)
	other, _ := exported(t)
	tok := pkcs11test.NewToken(t)

	// A share of another ceremony.
	mine, _ := parsed(t, c, 0, 1)
	theirs, _ := parsed(t, other, 2)
	err := rootceremony.Import(ctx, tok, rootceremony.ImportParams{Wrapped: &c.Wrapped, Shares: append(mine, theirs...), ShareNames: []string{"a", "b", "c"}})
	if !errors.Is(err, kms.ErrValidation) || !strings.Contains(err.Error(), "c belongs to ceremony "+other.ID) {
		t.Fatalf("foreign share: %v", err)
	}
	// The same share twice.
	dup, _ := parsed(t, c, 0, 1, 1)
	if err := rootceremony.Import(ctx, tok, rootceremony.ImportParams{Wrapped: &c.Wrapped, Shares: dup}); !errors.Is(err, kms.ErrValidation) || !strings.Contains(err.Error(), "same share") {
		t.Fatalf("duplicate share: %v", err)
	}
	// A corrupted file: one hex digit of the share changed.
	corrupt := c.Shares[0]
	corrupt.Share = flipHex(corrupt.Share[:1]) + corrupt.Share[1:]
	b, _ := json.Marshal(corrupt)
	if _, err := rootceremony.ParseShareFile("share-1-of-5.json", b); !errors.Is(err, kms.ErrValidation) || !strings.Contains(err.Error(), "share-1-of-5.json is corrupt") {
		t.Fatalf("corrupt share: %v", err)
	}
	// An altered wrapped root key, with good shares.
	w := c.Wrapped
	w.WrappedRoot = append([]byte(nil), w.WrappedRoot...)
	w.WrappedRoot[3] ^= 1
	good, _ := parsed(t, c, 0, 1, 2)
	if err := rootceremony.Import(ctx, tok, rootceremony.ImportParams{Wrapped: &w, Shares: good}); !errors.Is(err, kms.ErrInvalidCiphertext) || !strings.Contains(err.Error(), "altered") {
		t.Fatalf("altered wrapped root: %v", err)
	}
}

func flipHex(s string) string {
	if s == "0" {
		return "1"
	}
	return "0"
}
