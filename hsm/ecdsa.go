package hsm

import (
	"errors"
	"fmt"
)

// ECDSA signature encodings.
//
// [Signer] speaks IEEE P1363 for ECDSA: r||s, each left-padded to the byte
// length of the curve order (32 for P-256, 48 for P-384, 66 for P-521),
// which is what PKCS#11's CKM_ECDSA returns. X.509, TLS, JOSE-less APIs and
// AWS KMS use the DER encoding of
//
//	ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }
//
// instead. These two functions convert between them. ECDSASigFromDER is
// strict: it accepts only the one DER encoding of a signature and refuses
// BER variants (long-form or indefinite lengths where short ones fit,
// integers with superfluous leading bytes), negative or zero values,
// values longer than size bytes, and trailing data. It does not check
// that r and s are below the curve order; the verifier does.

// errBadECDSASig is the one error ECDSASigFromDER and ECDSASigToDER
// return, wrapped with the reason: callers treat every failure alike.
var errBadECDSASig = errors.New("malformed ECDSA signature")

// maxECDSAScalar is the byte length of the largest curve order keyflow
// could meet (P-521).
const maxECDSAScalar = 66

// ECDSASigToDER converts an r||s signature, the two halves of equal length,
// to DER. It refuses an empty or odd-length input and zero r or s, with an
// error wrapping ErrInvalidInput.
func ECDSASigToDER(p1363 []byte) ([]byte, error) {
	n := len(p1363)
	if n == 0 || n%2 != 0 || n/2 > maxECDSAScalar {
		return nil, fmt.Errorf("hsm: failed to encode an ECDSA signature: %w: length %d: %w", errBadECDSASig, n, ErrInvalidInput)
	}
	r, s := derInteger(p1363[:n/2]), derInteger(p1363[n/2:])
	if r == nil || s == nil {
		return nil, fmt.Errorf("hsm: failed to encode an ECDSA signature: %w: zero r or s: %w", errBadECDSASig, ErrInvalidInput)
	}
	body := len(r) + len(s)
	out := make([]byte, 0, 3+body)
	out = append(out, 0x30)
	out = appendDERLength(out, body)
	out = append(out, r...)
	out = append(out, s...)
	return out, nil
}

// derInteger returns the DER INTEGER (tag, length, content) of the
// unsigned big-endian value v, or nil if v is zero.
func derInteger(v []byte) []byte {
	for len(v) > 0 && v[0] == 0 {
		v = v[1:]
	}
	if len(v) == 0 {
		return nil
	}
	content := len(v)
	pad := v[0]&0x80 != 0 // a set top bit would read as negative
	if pad {
		content++
	}
	out := make([]byte, 0, 3+content)
	out = append(out, 0x02)
	out = appendDERLength(out, content)
	if pad {
		out = append(out, 0)
	}
	return append(out, v...)
}

// appendDERLength appends a DER length for n < 65536, in the shortest
// form.
func appendDERLength(b []byte, n int) []byte {
	switch {
	case n < 0x80:
		return append(b, byte(n))
	case n < 0x100:
		return append(b, 0x81, byte(n))
	default:
		return append(b, 0x82, byte(n>>8), byte(n))
	}
}

// ECDSASigFromDER converts a DER ECDSA-Sig-Value to r||s with each half
// size bytes long (the byte length of the curve order). Any departure
// from DER, and any r or s that is zero, negative or longer than size
// bytes, returns an error wrapping ErrAuthFailed: a signature that
// cannot be decoded is an invalid signature. A size that names no curve
// returns ErrInvalidInput.
func ECDSASigFromDER(der []byte, size int) ([]byte, error) {
	if size <= 0 || size > maxECDSAScalar {
		return nil, fmt.Errorf("hsm: failed to decode an ECDSA signature: scalar size %d: %w", size, ErrInvalidInput)
	}
	fail := func(why string) ([]byte, error) {
		return nil, fmt.Errorf("hsm: failed to decode an ECDSA signature: %w: %s: %w", errBadECDSASig, why, ErrAuthFailed)
	}
	body, rest, ok := readDER(der, 0x30)
	if !ok {
		return fail("not a DER SEQUENCE")
	}
	if len(rest) != 0 {
		return fail("trailing data")
	}
	out := make([]byte, 2*size)
	for i := range 2 {
		var v []byte
		v, body, ok = readDER(body, 0x02)
		if !ok {
			return fail("not a DER INTEGER")
		}
		switch {
		case len(v) == 0:
			return fail("empty INTEGER")
		case v[0]&0x80 != 0:
			return fail("negative INTEGER")
		case len(v) > 1 && v[0] == 0 && v[1]&0x80 == 0:
			return fail("INTEGER not minimally encoded")
		}
		if v[0] == 0 {
			v = v[1:]
		}
		if len(v) == 0 {
			return fail("zero INTEGER")
		}
		if len(v) > size {
			return fail("INTEGER too large")
		}
		copy(out[(i+1)*size-len(v):(i+1)*size], v)
	}
	if len(body) != 0 {
		return fail("extra data in SEQUENCE")
	}
	return out, nil
}

// readDER reads one DER element with the given single-byte tag from the
// front of b and returns its content and what follows. Lengths must be in
// their shortest form; indefinite lengths and lengths over 65535 are
// refused.
func readDER(b []byte, tag byte) (content, rest []byte, ok bool) {
	if len(b) < 2 || b[0] != tag {
		return nil, nil, false
	}
	n, hdr := int(b[1]), 2
	switch {
	case n < 0x80:
	case n == 0x81:
		if len(b) < 3 || b[2] < 0x80 {
			return nil, nil, false
		}
		n, hdr = int(b[2]), 3
	case n == 0x82:
		if len(b) < 4 || b[2] == 0 {
			return nil, nil, false
		}
		n, hdr = int(b[2])<<8|int(b[3]), 4
		if n < 0x100 {
			return nil, nil, false
		}
	default:
		// 0x80 (indefinite) and longer length forms.
		return nil, nil, false
	}
	if len(b)-hdr < n {
		return nil, nil, false
	}
	return b[hdr : hdr+n], b[hdr+n:], true
}
