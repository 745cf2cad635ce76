// Package shamir splits a secret into N shares of which any M reconstruct
// it, and fewer than M reveal nothing about it: Shamir's secret sharing over
// GF(2^8), byte by byte, as used by keyflow's root key ceremony.
//
// How it works: for every byte s of the secret, a random polynomial
//
//	f(x) = s + a1·x + a2·x² + … + a(M-1)·x^(M-1)
//
// over GF(2^8) (the AES field, reduction polynomial x⁸+x⁴+x³+x+1) is drawn,
// with a1…a(M-1) from crypto/rand, and share i holds f(i) for i = 1…N.
// Any M points fix the polynomial and so f(0) = s (Lagrange interpolation);
// M-1 points are consistent with every possible value of s, each with the
// same number of polynomials, so they carry no information about it.
//
// What this package does not do: it does not authenticate shares (a share
// altered on disk reconstructs a wrong secret). Callers frame shares with
// an integrity check and verify the reconstructed secret against a
// commitment, as keyflow's ceremony does (see cmd/keyflow root commands).
//
// Field arithmetic is written without table lookups or data-dependent
// branches, so its timing does not depend on the secret.
package shamir

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
)

// Share is one point of every byte's polynomial: X is the share's index
// (1…255, never 0, which is where the secret sits) and Y holds f(X) for each
// byte of the secret.
type Share struct {
	X byte
	Y []byte
}

// Limits.
const (
	MaxShares = 255 // x = 1…255
	MinShares = 2   // a threshold of 1 would be the secret itself
)

// Errors callers branch on.
var (
	// ErrInvalidParams is returned for thresholds and counts out of range.
	ErrInvalidParams = errors.New("shamir: invalid parameters")
	// ErrInvalidShares is returned by Combine for shares that cannot be
	// combined at all (too few, duplicate or zero indexes, unequal
	// lengths). Shares that combine into a wrong secret are not detected
	// here.
	ErrInvalidShares = errors.New("shamir: invalid shares")
)

// Split divides secret into n shares, any m of which reconstruct it. The
// polynomial coefficients come from crypto/rand and are zeroed afterwards.
// The caller owns secret (and should zero it when done).
func Split(secret []byte, n, m int) ([]Share, error) {
	return split(rand.Reader, secret, n, m)
}

func split(rnd io.Reader, secret []byte, n, m int) ([]Share, error) {
	if m < MinShares || n < m || n > MaxShares {
		return nil, fmt.Errorf("%w: need 2 <= m <= n <= 255, got m=%d n=%d", ErrInvalidParams, m, n)
	}
	if len(secret) == 0 {
		return nil, fmt.Errorf("%w: empty secret", ErrInvalidParams)
	}
	shares := make([]Share, n)
	for i := range shares {
		shares[i] = Share{X: byte(i + 1), Y: make([]byte, len(secret))}
	}
	coef := make([]byte, m) // coef[0] is the secret byte
	defer clear(coef)
	for b, s := range secret {
		coef[0] = s
		if _, err := io.ReadFull(rnd, coef[1:]); err != nil {
			return nil, fmt.Errorf("shamir: failed to draw coefficients: %w", err)
		}
		for i := range shares {
			shares[i].Y[b] = eval(coef, shares[i].X)
		}
	}
	return shares, nil
}

// eval computes the polynomial with coefficients coef (lowest first) at x,
// by Horner's rule.
func eval(coef []byte, x byte) byte {
	var y byte
	for i := len(coef) - 1; i >= 0; i-- {
		y = mul(y, x) ^ coef[i]
	}
	return y
}

// Combine reconstructs the secret from shares by Lagrange interpolation at
// x = 0. It uses every share it is given; with fewer than the threshold it
// returns a value unrelated to the secret (it cannot tell), so callers must
// check the result against a commitment.
func Combine(shares []Share) ([]byte, error) {
	if len(shares) < MinShares {
		return nil, fmt.Errorf("%w: at least %d shares are needed, got %d", ErrInvalidShares, MinShares, len(shares))
	}
	size := len(shares[0].Y)
	var seen [256]bool
	for _, s := range shares {
		if s.X == 0 {
			return nil, fmt.Errorf("%w: share index 0", ErrInvalidShares)
		}
		if seen[s.X] {
			return nil, fmt.Errorf("%w: share %d given twice", ErrInvalidShares, s.X)
		}
		seen[s.X] = true
		if len(s.Y) != size || size == 0 {
			return nil, fmt.Errorf("%w: shares have different lengths", ErrInvalidShares)
		}
	}
	// basis[j] = Π_{k≠j} x_k / (x_k - x_j); in GF(2^8) subtraction is XOR.
	basis := make([]byte, len(shares))
	for j := range shares {
		num, den := byte(1), byte(1)
		for k := range shares {
			if k == j {
				continue
			}
			num = mul(num, shares[k].X)
			den = mul(den, shares[k].X^shares[j].X)
		}
		basis[j] = mul(num, inv(den))
	}
	out := make([]byte, size)
	for b := range out {
		var acc byte
		for j, s := range shares {
			acc ^= mul(s.Y[b], basis[j])
		}
		out[b] = acc
	}
	return out, nil
}

// mul multiplies in GF(2^8) modulo x⁸+x⁴+x³+x+1, in constant time.
func mul(a, b byte) byte {
	var p byte
	for range 8 {
		p ^= a & -(b & 1)       // add a if the low bit of b is set
		a = a<<1 ^ 0x1b&-(a>>7) // multiply a by x, reducing
		b >>= 1
	}
	return p
}

// inv is the multiplicative inverse, a^254 (a^255 = 1 for a ≠ 0); inv(0)
// is 0, which Combine never asks for (indexes are distinct).
func inv(a byte) byte {
	r := a
	for range 6 { // r = a^(2^7-1) = a^127 after the loop
		r = mul(mul(r, r), a)
	}
	return mul(r, r) // a^254
}

// Zero overwrites the shares' values.
func Zero(shares []Share) {
	for i := range shares {
		clear(shares[i].Y)
	}
}
