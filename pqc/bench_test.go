package pqc_test

import (
	"testing"

	"github.com/keyflow/keyflow/pqc"
)

// Decapsulate and Sign include expanding the stored seed into the working
// key, since that is what every call pays; GenerateKey shows that share.

func BenchmarkKEM(b *testing.B) {
	for _, k := range pqc.KEMs() {
		b.Run(k.Name(), func(b *testing.B) {
			pub, priv, err := k.GenerateKey(nil)
			if err != nil {
				b.Fatal(err)
			}
			ct, _, err := k.Encapsulate(nil, pub)
			if err != nil {
				b.Fatal(err)
			}
			b.Run("GenerateKey", func(b *testing.B) {
				for b.Loop() {
					if _, _, err := k.GenerateKey(nil); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("Encapsulate", func(b *testing.B) {
				for b.Loop() {
					if _, _, err := k.Encapsulate(nil, pub); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("Decapsulate", func(b *testing.B) {
				for b.Loop() {
					if _, err := k.Decapsulate(priv, ct); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

func BenchmarkSign(b *testing.B) {
	msg := make([]byte, 32) // a digest, as the audit sealer signs
	for _, s := range pqc.Signers() {
		b.Run(s.Name(), func(b *testing.B) {
			pub, priv, err := s.GenerateKey(nil)
			if err != nil {
				b.Fatal(err)
			}
			sig, err := s.Sign(priv, msg, pqc.SignOptions{})
			if err != nil {
				b.Fatal(err)
			}
			b.Run("GenerateKey", func(b *testing.B) {
				for b.Loop() {
					if _, _, err := s.GenerateKey(nil); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("Sign", func(b *testing.B) {
				for b.Loop() {
					if _, err := s.Sign(priv, msg, pqc.SignOptions{Randomized: true}); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("Verify", func(b *testing.B) {
				for b.Loop() {
					if err := s.Verify(pub, msg, sig, pqc.SignOptions{}); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
