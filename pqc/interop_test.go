package pqc_test

import (
	"bytes"
	"crypto"
	"crypto/hpke"
	"crypto/mlkem"
	"testing"

	"github.com/keyflow/keyflow/pqc"
)

// Go's standard library implements ML-KEM-768/1024 and X-Wing independently
// of circl. These tests check keys and ciphertexts cross over both ways, so
// keyflow's stored key formats are the ones the rest of the Go world reads.

func TestInteropStdlibMLKEM(t *testing.T) {
	for _, c := range []struct {
		name string
		std  func(seed []byte) (crypto.Decapsulator, error)
	}{
		{pqc.MLKEM768, func(seed []byte) (crypto.Decapsulator, error) { return mlkem.NewDecapsulationKey768(seed) }},
		{pqc.MLKEM1024, func(seed []byte) (crypto.Decapsulator, error) { return mlkem.NewDecapsulationKey1024(seed) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			k, err := pqc.KEMByName(c.name)
			if err != nil {
				t.Fatal(err)
			}
			pub, priv, err := k.GenerateKey(nil)
			if err != nil {
				t.Fatal(err)
			}
			// keyflow's private key is the seed crypto/mlkem takes.
			dk, err := c.std(priv)
			if err != nil {
				t.Fatalf("crypto/mlkem rejects the private key: %v", err)
			}
			if !bytes.Equal(dk.Encapsulator().Bytes(), pub) {
				t.Fatal("crypto/mlkem derives a different public key")
			}
			ss, ct := dk.Encapsulator().Encapsulate()
			if got, err := k.Decapsulate(priv, ct); err != nil || !bytes.Equal(got, ss) {
				t.Errorf("Decapsulate of a crypto/mlkem ciphertext: err %v, match %v", err, bytes.Equal(got, ss))
			}
			ct, ss, err = k.Encapsulate(nil, pub)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := dk.Decapsulate(ct); err != nil || !bytes.Equal(got, ss) {
				t.Errorf("crypto/mlkem Decapsulate of our ciphertext: err %v, match %v", err, bytes.Equal(got, ss))
			}
		})
	}
}

// TestInteropStdlibXWing uses crypto/hpke's MLKEM768-X25519, which is X-Wing.
// HPKE does not expose the raw shared secret, so this checks that both key
// encodings are accepted and agree, and that an HPKE round trip works with
// keys keyflow generated.
func TestInteropStdlibXWing(t *testing.T) {
	k, err := pqc.KEMByName(pqc.XWing)
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, err := k.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	kem := hpke.MLKEM768X25519()
	sk, err := kem.NewPrivateKey(priv)
	if err != nil {
		t.Fatalf("crypto/hpke rejects the private key: %v", err)
	}
	if !bytes.Equal(sk.PublicKey().Bytes(), pub) {
		t.Fatal("crypto/hpke derives a different public key")
	}
	pk, err := kem.NewPublicKey(pub)
	if err != nil {
		t.Fatalf("crypto/hpke rejects the public key: %v", err)
	}
	msg := []byte("wrapped data key")
	ct, err := hpke.Seal(pk, hpke.HKDFSHA256(), hpke.AES256GCM(), []byte("keyflow"), msg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := hpke.Open(sk, hpke.HKDFSHA256(), hpke.AES256GCM(), []byte("keyflow"), ct)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("HPKE round trip: %v", err)
	}
}
