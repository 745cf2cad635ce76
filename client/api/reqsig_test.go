package api_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/keyflow/keyflow/client/api"
)

func testSigner(t testing.TB) (*api.RequestSigner, []byte) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	s, err := api.NewRequestSigner(seed)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	if s.PublicKey() != pub {
		t.Fatalf("signer key %s, want %s", s.PublicKey(), pub)
	}
	key, err := api.ParseUserKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return s, key
}

// FuzzVerifyRequestSignature: a request signed by the signer verifies, and
// changing any signed field breaks it; whatever the headers, the verifier
// answers with one of its four errors, never anything else.
func FuzzVerifyRequestSignature(f *testing.F) {
	f.Add("kf.v1.alpha.crypto.encrypt", "req-1", []byte(`{"keyId":"alias/a","plaintext":"aGk="}`), "1764974025000", "nonce", "AAAA")
	f.Add("", "", []byte{}, "", "", "")
	f.Add("kf.v1.a.b", "r\nx", []byte("\x00"), "-1", "n", "!!")
	s, key := testSigner(f)
	now := time.UnixMilli(1764974025000)
	f.Fuzz(func(t *testing.T, subject, reqID string, body []byte, date, nonce, sig string) {
		r := api.SignedRequest{Subject: subject, RequestID: reqID, Date: date, Nonce: nonce, Body: body}
		_, err := api.VerifyRequestSignature(key, r, sig, now)
		if err == nil {
			t.Fatalf("made-up headers verified: %+v %q", r, sig)
		}
		if !errors.Is(err, api.ErrSignatureMissing) && !errors.Is(err, api.ErrSignatureMalformed) && !errors.Is(err, api.ErrSignatureExpired) && !errors.Is(err, api.ErrSignatureInvalid) {
			t.Fatalf("unexpected error %v", err)
		}
		h := s.Sign(subject, reqID, body, now)
		good := api.SignedRequest{Subject: subject, RequestID: reqID, Date: h[api.HeaderDate], Nonce: h[api.HeaderNonce], Body: body}
		_, err = api.VerifyRequestSignature(key, good, h[api.HeaderSignature], now)
		newline := false
		for _, c := range subject + reqID {
			newline = newline || c == '\n'
		}
		if newline {
			if !errors.Is(err, api.ErrSignatureMalformed) {
				t.Fatalf("a field with a newline: %v", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("a genuine signature does not verify: %v", err)
		}
		bad := good
		bad.Body = append(append([]byte{}, body...), 'x')
		if _, err := api.VerifyRequestSignature(key, bad, h[api.HeaderSignature], now); !errors.Is(err, api.ErrSignatureInvalid) {
			t.Fatalf("another body: %v", err)
		}
		bad = good
		bad.Subject += ".x"
		if _, err := api.VerifyRequestSignature(key, bad, h[api.HeaderSignature], now); !errors.Is(err, api.ErrSignatureInvalid) {
			t.Fatalf("another subject: %v", err)
		}
		if _, err := api.VerifyRequestSignature(key, good, h[api.HeaderSignature], now.Add(api.RequestSignatureWindow+time.Second)); !errors.Is(err, api.ErrSignatureExpired) {
			t.Fatalf("late: %v", err)
		}
	})
}

// BenchmarkRequestSignature is the cost of a request signature on each
// side, for a 60-byte encrypt body: sign (the client) and verify (the
// worker, which also looks the key up and remembers the nonce; both are
// map operations).
func BenchmarkRequestSignature(b *testing.B) {
	s, key := testSigner(b)
	body := []byte(`{"keyId":"alias/bench","plaintext":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`)
	subject := "kf.v1.alpha.crypto.encrypt"
	b.Run("sign", func(b *testing.B) {
		for b.Loop() {
			s.Sign(subject, "req", body, time.Now())
		}
	})
	h := s.Sign(subject, "req", body, time.Now())
	r := api.SignedRequest{Subject: subject, RequestID: "req", Date: h[api.HeaderDate], Nonce: h[api.HeaderNonce], Body: body}
	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			if _, err := api.VerifyRequestSignature(key, r, h[api.HeaderSignature], time.Now()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
