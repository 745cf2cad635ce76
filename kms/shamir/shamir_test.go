package shamir

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
)

// Known answers for the field: FIPS 197 section 4.2 (0x57·0x83 = 0xc1,
// 0x57·0x13 = 0xfe) and section 4.2.1's inverse pair (0x53·0xca = 1).
func TestFieldKnownAnswers(t *testing.T) {
	for _, c := range []struct{ a, b, want byte }{
		{0x57, 0x83, 0xc1}, {0x57, 0x13, 0xfe}, {0x53, 0xca, 0x01}, {0x00, 0xff, 0x00}, {0x01, 0x9a, 0x9a},
	} {
		if got := mul(c.a, c.b); got != c.want {
			t.Errorf("mul(%#x, %#x) = %#x, want %#x", c.a, c.b, got, c.want)
		}
		if got := mul(c.b, c.a); got != c.want {
			t.Errorf("mul(%#x, %#x) = %#x, want %#x (commutativity)", c.b, c.a, got, c.want)
		}
	}
	if inv(0x53) != 0xca || inv(0xca) != 0x53 || inv(1) != 1 {
		t.Errorf("inv(0x53) = %#x, inv(0xca) = %#x, inv(1) = %#x", inv(0x53), inv(0xca), inv(1))
	}
	for a := 1; a < 256; a++ {
		if mul(byte(a), inv(byte(a))) != 1 {
			t.Fatalf("a·inv(a) != 1 for a = %#x", a)
		}
	}
}

// fixedReader yields the same bytes again and again: the coefficients of a
// known-answer split.
type fixedReader []byte

func (f fixedReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = f[i%len(f)]
	}
	return len(p), nil
}

// A split worked by hand: secret 0x42, m = 2, a1 = 0x01, so f(x) = 0x42 ^ x;
// and with a1 = 0x02, f(3) = 0x42 ^ mul(2, 3) = 0x42 ^ 0x06 = 0x44.
func TestSplitKnownAnswer(t *testing.T) {
	shares, err := split(fixedReader{0x01}, []byte{0x42}, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0x43, 0x40, 0x41}
	for i, s := range shares {
		if s.X != byte(i+1) || s.Y[0] != want[i] {
			t.Errorf("share %d = (%d, %#x), want (%d, %#x)", i, s.X, s.Y[0], i+1, want[i])
		}
	}
	shares, _ = split(fixedReader{0x02}, []byte{0x42}, 3, 2)
	if shares[2].Y[0] != 0x44 {
		t.Errorf("f(3) = %#x, want 0x44", shares[2].Y[0])
	}
	got, err := Combine([]Share{{X: 1, Y: []byte{0x43}}, {X: 3, Y: []byte{0x41}}})
	if err != nil || got[0] != 0x42 {
		t.Errorf("Combine = %x, %v; want 42", got, err)
	}
}

// subsets calls fn with every k-subset of shares.
func subsets(shares []Share, k int, fn func([]Share)) {
	var rec func(start int, cur []Share)
	rec = func(start int, cur []Share) {
		if len(cur) == k {
			fn(append([]Share(nil), cur...))
			return
		}
		for i := start; i < len(shares); i++ {
			rec(i+1, append(cur, shares[i]))
		}
	}
	rec(0, nil)
}

// Any m of n reconstruct; any m-1 do not; more than m do too.
func TestAnyMOfNReconstruct(t *testing.T) {
	for _, p := range []struct{ m, n int }{{2, 2}, {2, 3}, {3, 5}, {4, 7}, {5, 5}} {
		secret := make([]byte, 32)
		rand.Read(secret)
		shares, err := Split(secret, p.n, p.m)
		if err != nil {
			t.Fatal(err)
		}
		subsets(shares, p.m, func(sub []Share) {
			got, err := Combine(sub)
			if err != nil || !bytes.Equal(got, secret) {
				t.Errorf("m=%d n=%d: %d shares did not reconstruct: %v", p.m, p.n, len(sub), err)
			}
		})
		if p.m > 2 {
			subsets(shares, p.m-1, func(sub []Share) {
				got, err := Combine(sub)
				if err != nil {
					t.Fatalf("Combine of %d shares: %v", len(sub), err)
				}
				if bytes.Equal(got, secret) {
					t.Errorf("m=%d n=%d: %d shares (below the threshold) reconstructed the secret", p.m, p.n, len(sub))
				}
			})
		}
		if got, _ := Combine(shares); !bytes.Equal(got, secret) {
			t.Errorf("m=%d n=%d: all shares did not reconstruct", p.m, p.n)
		}
	}
}

// M-1 shares carry no information, shown exhaustively for m = 2 on one
// byte: over every coefficient, share x=1 takes every value exactly once,
// whatever the secret, so seeing it says nothing about the secret. (The
// general case is the same argument on m-1 points.)
func TestBelowThresholdRevealsNothing(t *testing.T) {
	for _, secret := range []byte{0x00, 0x42, 0xff} {
		var count [256]int
		for a := range 256 {
			shares, err := split(fixedReader{byte(a)}, []byte{secret}, 3, 2)
			if err != nil {
				t.Fatal(err)
			}
			count[shares[0].Y[0]]++
		}
		for v, c := range count {
			if c != 1 {
				t.Fatalf("secret %#x: share value %#x occurs %d times over all polynomials, want 1", secret, v, c)
			}
		}
	}
	// And for m = 3: two shares (x=1, x=2) take every pair of values
	// exactly once over all (a1, a2), for any secret.
	for _, secret := range []byte{0x00, 0x9c} {
		seen := make(map[[2]byte]int, 65536)
		for a1 := range 256 {
			for a2 := range 256 {
				shares, _ := split(fixedReader{byte(a1), byte(a2)}, []byte{secret}, 3, 3)
				seen[[2]byte{shares[0].Y[0], shares[1].Y[0]}]++
			}
		}
		if len(seen) != 65536 {
			t.Fatalf("secret %#x: two of three shares take %d distinct value pairs, want 65536", secret, len(seen))
		}
	}
}

// The coefficients are random: two splits of one secret differ.
func TestCoefficientsAreRandom(t *testing.T) {
	secret := []byte("the same secret, split twice....")
	a, _ := Split(secret, 5, 3)
	b, _ := Split(secret, 5, 3)
	for i := range a {
		if bytes.Equal(a[i].Y, b[i].Y) {
			t.Errorf("share %d is the same in two splits", i+1)
		}
		if bytes.Equal(a[i].Y, secret) {
			t.Errorf("share %d is the secret", i+1)
		}
	}
}

func TestInvalid(t *testing.T) {
	for _, p := range []struct{ m, n int }{{1, 3}, {4, 3}, {2, 256}, {0, 0}} {
		if _, err := Split([]byte{1}, p.n, p.m); !errors.Is(err, ErrInvalidParams) {
			t.Errorf("Split(m=%d, n=%d) = %v, want ErrInvalidParams", p.m, p.n, err)
		}
	}
	if _, err := Split(nil, 3, 2); !errors.Is(err, ErrInvalidParams) {
		t.Errorf("Split(empty) = %v", err)
	}
	s, _ := Split([]byte{1, 2}, 3, 2)
	for name, bad := range map[string][]Share{
		"one":       s[:1],
		"duplicate": {s[0], s[0]},
		"zero":      {{X: 0, Y: []byte{1, 2}}, s[1]},
		"lengths":   {s[0], {X: 2, Y: []byte{1}}},
	} {
		if _, err := Combine(bad); !errors.Is(err, ErrInvalidShares) {
			t.Errorf("%s: Combine = %v, want ErrInvalidShares", name, err)
		}
	}
	Zero(s)
	for _, sh := range s {
		if !bytes.Equal(sh.Y, []byte{0, 0}) {
			t.Errorf("Zero left %x", sh.Y)
		}
	}
}

func BenchmarkSplit32Bytes3of5(b *testing.B) {
	secret := make([]byte, 32)
	for b.Loop() {
		_, _ = Split(secret, 5, 3)
	}
}

func BenchmarkCombine32Bytes3of5(b *testing.B) {
	secret := make([]byte, 32)
	shares, _ := Split(secret, 5, 3)
	for b.Loop() {
		_, _ = Combine(shares[:3])
	}
}

// BenchmarkRandom32Bytes is the baseline: drawing the 32 bytes of one
// ceremony key from crypto/rand.
func BenchmarkRandom32Bytes(b *testing.B) {
	buf := make([]byte, 32)
	for b.Loop() {
		rand.Read(buf)
	}
}
