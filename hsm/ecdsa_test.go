package hsm_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"math/big"
	"testing"

	"github.com/keyflow/keyflow/hsm"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestECDSASigRoundTrip checks both directions against Go's own DER
// signatures, which crypto/ecdsa produces and verifies.
func TestECDSASigRoundTrip(t *testing.T) {
	for _, c := range []struct {
		curve elliptic.Curve
		size  int
	}{{elliptic.P256(), 32}, {elliptic.P384(), 48}, {elliptic.P521(), 66}} {
		key, err := ecdsa.GenerateKey(c.curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		d := sha256.Sum256([]byte("message"))
		for range 50 {
			der, err := ecdsa.SignASN1(rand.Reader, key, d[:])
			if err != nil {
				t.Fatal(err)
			}
			p1363, err := hsm.ECDSASigFromDER(der, c.size)
			if err != nil {
				t.Fatalf("%s: ECDSASigFromDER(%x): %v", c.curve.Params().Name, der, err)
			}
			if len(p1363) != 2*c.size {
				t.Fatalf("%s: r||s is %d bytes, want %d", c.curve.Params().Name, len(p1363), 2*c.size)
			}
			back, err := hsm.ECDSASigToDER(p1363)
			if err != nil || !bytes.Equal(back, der) {
				t.Fatalf("%s: ECDSASigToDER = %x, %v; want %x", c.curve.Params().Name, back, err, der)
			}
			r, s := new(big.Int).SetBytes(p1363[:c.size]), new(big.Int).SetBytes(p1363[c.size:])
			if !ecdsa.Verify(&key.PublicKey, d[:], r, s) {
				t.Fatal("the decoded r and s do not verify")
			}
		}
	}
}

// TestECDSASigToDERMatchesASN1 checks the encoder against encoding/asn1
// on edge values: top bits set (a zero byte is needed), leading zero
// bytes (they must go), one-byte values.
func TestECDSASigToDERMatchesASN1(t *testing.T) {
	vals := [][]byte{
		bytes.Repeat([]byte{0xff}, 32),
		append(make([]byte, 31), 1),
		append(make([]byte, 31), 0x80),
		append([]byte{0x00, 0x7f}, bytes.Repeat([]byte{0xab}, 30)...),
		append([]byte{0x00, 0x80}, bytes.Repeat([]byte{0x01}, 30)...),
	}
	for _, r := range vals {
		for _, s := range vals {
			got, err := hsm.ECDSASigToDER(append(bytes.Clone(r), s...))
			if err != nil {
				t.Fatal(err)
			}
			want, _ := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(r), new(big.Int).SetBytes(s)})
			if !bytes.Equal(got, want) {
				t.Errorf("ECDSASigToDER(%x||%x) = %x, want %x", r, s, got, want)
			}
			back, err := hsm.ECDSASigFromDER(got, 32)
			if err != nil || !bytes.Equal(back, append(bytes.Clone(r), s...)) {
				t.Errorf("round trip of %x: %x, %v", got, back, err)
			}
		}
	}
	// P-521 signatures are long enough to need a long-form length.
	big66 := bytes.Repeat([]byte{0xff}, 66)
	der, err := hsm.ECDSASigToDER(append(bytes.Clone(big66), big66...))
	if err != nil {
		t.Fatal(err)
	}
	if der[1] != 0x81 {
		t.Errorf("a 138-byte body has length bytes %x, want 81 8a", der[1:3])
	}
	if back, err := hsm.ECDSASigFromDER(der, 66); err != nil || !bytes.Equal(back[:66], big66) {
		t.Errorf("P-521 round trip: %v", err)
	}

	for _, bad := range [][]byte{nil, {1}, {1, 2, 3}, make([]byte, 64), append(make([]byte, 32), append(make([]byte, 31), 1)...), make([]byte, 2*67)} {
		if _, err := hsm.ECDSASigToDER(bad); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("ECDSASigToDER(%x) = %v, want ErrInvalidInput", bad, err)
		}
	}
}

// TestECDSASigFromDERStrict feeds encodings that BER allows and DER
// does not, and other malformations; every one must be refused.
func TestECDSASigFromDERStrict(t *testing.T) {
	good := "3006020101020102" // r = 1, s = 2
	if _, err := hsm.ECDSASigFromDER(unhex(t, good), 32); err != nil {
		t.Fatalf("the well-formed signature was refused: %v", err)
	}
	for name, h := range map[string]string{
		"empty":                          "",
		"wrong outer tag":                "3106020101020102",
		"long-form sequence length":      "308106020101020102",
		"indefinite length":              "3080020101020102" + "0000",
		"length too long":                "3007020101020102",
		"length too short":               "3005020101020102",
		"trailing data":                  good + "00",
		"extra element":                  "3009020101020102020103",
		"one integer":                    "3003020101",
		"integer with leading zero":      "300702020001020102",
		"integer with leading 0xff":      "30070202ff81020102",
		"negative r":                     "3006020181020102",
		"negative s":                     "3006020101020181",
		"zero r":                         "3006020100020102",
		"zero s":                         "3006020101020100",
		"empty integer":                  "30050200020102",
		"long-form integer length":       "300702810101020102",
		"wrong integer tag":              "3006030101020102",
		"r longer than the scalar":       "302502210101" + "0000000000000000000000000000000000000000000000000000000000000000" + "020101",
		"three-byte length form":         "3083000006020101020102",
		"long form 0x82 with small size": "3082000602010102010102",
	} {
		b, err := hex.DecodeString(h)
		if err != nil {
			t.Fatalf("%s: bad test hex: %v", name, err)
		}
		if _, err := hsm.ECDSASigFromDER(b, 32); !errors.Is(err, hsm.ErrAuthFailed) {
			t.Errorf("%s (%s): ECDSASigFromDER = %v, want ErrAuthFailed", name, h, err)
		}
	}
	for _, size := range []int{-1, 0, 67} {
		if _, err := hsm.ECDSASigFromDER(unhex(t, good), size); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("ECDSASigFromDER with size %d = %v, want ErrInvalidInput", size, err)
		}
	}
}
