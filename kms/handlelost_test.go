package kms_test

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"

	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/hsm/pkcs11"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// loadRecorder is the HSM with a list of every key it loaded, so that a
// test can make them vanish behind the service's back, as a lost HSM
// session or a token reset does.
type loadRecorder struct {
	*pkcs11.Token
	mu     sync.Mutex
	loaded []hsm.KeyHandle
}

func (r *loadRecorder) record(h hsm.KeyHandle, err error) (hsm.KeyHandle, error) {
	if err == nil {
		r.mu.Lock()
		r.loaded = append(r.loaded, h)
		r.mu.Unlock()
	}
	return h, err
}

func (r *loadRecorder) UnwrapAESKey(ctx context.Context, w hsm.KeyHandle, blob []byte) (hsm.KeyHandle, error) {
	return r.record(r.Token.UnwrapAESKey(ctx, w, blob))
}

func (r *loadRecorder) UnwrapHMACKey(ctx context.Context, w hsm.KeyHandle, blob []byte) (hsm.KeyHandle, error) {
	return r.record(r.Token.UnwrapHMACKey(ctx, w, blob))
}

func (r *loadRecorder) UnwrapPrivateKey(ctx context.Context, w hsm.KeyHandle, blob []byte, spec hsm.KeyPairSpec) (hsm.KeyHandle, error) {
	return r.record(r.Token.UnwrapPrivateKey(ctx, w, blob, spec))
}

func (r *loadRecorder) ImportPublicKey(ctx context.Context, spki []byte) (hsm.KeyHandle, error) {
	return r.record(r.Token.ImportPublicKey(ctx, spki))
}

// vanish destroys every key loaded so far.
func (r *loadRecorder) vanish(t *testing.T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, h := range r.loaded {
		if err := r.Token.DestroyKey(context.Background(), h); err != nil {
			t.Fatal(err)
		}
	}
	r.loaded = nil
}

// TestCachedHandleLost: when the HSM loses the keys the service cached,
// the next calls load them again and succeed.
func TestCachedHandleLost(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	rec := &loadRecorder{Token: b.HSM}
	s, err := kms.New(ctx, kms.Config{HSM: rec, Store: b.Store, Audit: b.Audit, Source: "/keyflow/test",
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)

	aes, err := s.CreateKey(ctx, alice, kms.CreateKeyParams{})
	if err != nil {
		t.Fatal(err)
	}
	ec, err := s.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: kms.SpecECCP256, Usage: kms.UsageSignVerify})
	if err != nil {
		t.Fatal(err)
	}
	mac, err := s.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: kms.SpecHMAC256, Usage: kms.UsageGenerateVerifyMAC})
	if err != nil {
		t.Fatal(err)
	}
	round := func(what string) {
		t.Helper()
		enc, err := s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: aes.ID, Plaintext: []byte("x")})
		if err != nil {
			t.Fatalf("%s: Encrypt: %v", what, err)
		}
		if _, err := s.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: enc.Ciphertext}); err != nil {
			t.Fatalf("%s: Decrypt: %v", what, err)
		}
		sig, err := s.Sign(ctx, alice, kms.SignParams{KeyRef: ec.ID, Message: []byte("m"), Algorithm: kms.SignECDSASHA256})
		if err != nil {
			t.Fatalf("%s: Sign: %v", what, err)
		}
		if _, err := s.Verify(ctx, alice, kms.VerifyParams{KeyRef: ec.ID, Message: []byte("m"), Algorithm: kms.SignECDSASHA256, Signature: sig.Signature}); err != nil {
			t.Fatalf("%s: Verify: %v", what, err)
		}
		if _, err := s.GenerateMac(ctx, alice, kms.MACParams{KeyRef: mac.ID, Message: []byte("m"), Algorithm: kms.MACHMACSHA256}); err != nil {
			t.Fatalf("%s: GenerateMac: %v", what, err)
		}
	}
	round("warm")
	for i := range 3 {
		rec.vanish(t)
		round("after the HSM lost the cached keys #" + string(rune('1'+i)))
	}
}
