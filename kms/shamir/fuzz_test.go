package shamir

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/keyflow/keyflow/internal/fuzzseed"
)

// FuzzSplitCombine: any m of the n shares of a split, in any order,
// rebuild the secret; a repeated or zero index is refused.
func FuzzSplitCombine(f *testing.F) {
	fuzzseed.Add(f, []byte("a 256-bit ceremony key, 32 bytes"), byte(5), byte(3), []byte{4, 0, 2})
	fuzzseed.Add(f, []byte{0}, byte(2), byte(2), []byte{1, 0})
	fuzzseed.Add(f, []byte{0xff, 0x00, 0x80}, byte(255), byte(255), []byte(nil))
	fuzzseed.Add(f, []byte("x"), byte(3), byte(2), []byte{1, 1})
	f.Fuzz(func(t *testing.T, secret []byte, n, m byte, pick []byte) {
		shares, err := Split(secret, int(n), int(m))
		if err != nil {
			if !errors.Is(err, ErrInvalidParams) || (len(secret) > 0 && m >= MinShares && n >= m) {
				t.Fatalf("Split(%d bytes, %d, %d): %v", len(secret), n, m, err)
			}
			return
		}
		// Choose m shares: pick's bytes select (mod n) among those left.
		left := slices.Clone(shares)
		var chosen []Share
		for i := 0; len(chosen) < int(m); i++ {
			j := 0
			if i < len(pick) {
				j = int(pick[i]) % len(left)
			}
			chosen = append(chosen, left[j])
			left = slices.Delete(left, j, j+1)
		}
		got, err := Combine(chosen)
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("%d of %d shares rebuilt %x (%v), want %x", m, n, got, err, secret)
		}
		if len(pick) > 0 {
			dup := append(slices.Clone(chosen), chosen[int(pick[0])%len(chosen)])
			if _, err := Combine(dup); !errors.Is(err, ErrInvalidShares) {
				t.Fatalf("a repeated share was combined: %v", err)
			}
		}
	})
}

// FuzzCombine: arbitrary shares (each byte string is an index, then its
// value) either are refused with ErrInvalidShares or combine to a value
// of their length that does not depend on their order.
func FuzzCombine(f *testing.F) {
	fuzzseed.Add(f, []byte("\x01abc"), []byte("\x02def"), []byte("\x03ghi"))
	fuzzseed.Add(f, []byte("\x00abc"), []byte("\x02def"), []byte("\x03ghi"))
	fuzzseed.Add(f, []byte("\x01abc"), []byte("\x01def"), []byte("\x03ghi"))
	fuzzseed.Add(f, []byte("\x01ab"), []byte("\x02def"), []byte("\x03ghi"))
	fuzzseed.Add(f, []byte("\x01"), []byte("\x02"), []byte(""))
	f.Fuzz(func(t *testing.T, a, b, c []byte) {
		var shares []Share
		for _, s := range [][]byte{a, b, c} {
			if len(s) > 0 {
				shares = append(shares, Share{X: s[0], Y: s[1:]})
			}
		}
		got, err := Combine(shares)
		if err != nil {
			if !errors.Is(err, ErrInvalidShares) {
				t.Fatalf("refusal %v is not ErrInvalidShares", err)
			}
			return
		}
		if len(got) != len(shares[0].Y) || len(got) == 0 {
			t.Fatalf("%d shares of %d bytes combined to %d bytes", len(shares), len(shares[0].Y), len(got))
		}
		slices.Reverse(shares)
		if again, err := Combine(shares); err != nil || !bytes.Equal(again, got) {
			t.Fatalf("the order of the shares changed the result: %x, %x (%v)", got, again, err)
		}
	})
}
