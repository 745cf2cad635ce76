//go:build cgo

package pkcs11_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/hsm/pkcs11"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
)

// The failure-handling rules that every backend follows are hsmtest's
// (SessionLossRecovery, DeviceFault, ...), run by TestConformance. The
// tests below are about how this backend gets there: which PKCS#11
// return values it retries, on which session, and how often.

// fixture is a Token with one key of each kind loaded, and the blobs to
// load them again, as package kms keeps them.
type fixture struct {
	tok      *pkcs11.Token
	root     hsm.KeyHandle
	aesBlob  []byte
	ecBlob   []byte
	ecPub    *ecdsa.PublicKey
	macBlob  []byte
	macData  []byte
	macWant  []byte
	aes, ec  hsm.KeyHandle
	mac      hsm.KeyHandle
	ecSpec   hsm.KeyPairSpec
	signWith hsm.SignParams
}

func newFixture(t *testing.T, sessions int) *fixture {
	t.Helper()
	cfg := pkcs11test.NewTokenConfig(t)
	cfg.Sessions = sessions
	tok := open(t, cfg)
	ctx := t.Context()
	f := &fixture{
		tok:      tok,
		root:     rootKey(t, tok),
		ecSpec:   hsm.KeyPairSpec{Algorithm: "EC", Curve: "P-256"},
		signWith: hsm.SignParams{Scheme: hsm.SchemeECDSA, Hash: crypto.SHA256},
		macData:  []byte("mac me"),
	}
	var err error
	if f.aesBlob, err = tok.GenerateWrappedAESKey(ctx, f.root, 32); err != nil {
		t.Fatal(err)
	}
	kp, err := tok.GenerateWrappedKeyPair(ctx, f.root, f.ecSpec)
	if err != nil {
		t.Fatal(err)
	}
	f.ecBlob = kp.WrappedPrivate
	pub, err := x509.ParsePKIXPublicKey(kp.PublicKeyDER)
	if err != nil {
		t.Fatal(err)
	}
	f.ecPub = pub.(*ecdsa.PublicKey)
	if f.macBlob, err = tok.GenerateWrappedSecret(ctx, f.root, 32); err != nil {
		t.Fatal(err)
	}
	if err := f.load(ctx); err != nil {
		t.Fatal(err)
	}
	if f.macWant, err = tok.HMACSHA256(ctx, f.mac, f.macData); err != nil {
		t.Fatal(err)
	}
	return f
}

// load (re)loads the three keys from their blobs.
func (f *fixture) load(ctx context.Context) error {
	var err error
	if f.aes, err = f.tok.UnwrapAESKey(ctx, f.root, f.aesBlob); err != nil {
		return err
	}
	if f.ec, err = f.tok.UnwrapPrivateKey(ctx, f.root, f.ecBlob, f.ecSpec); err != nil {
		return err
	}
	f.mac, err = f.tok.UnwrapHMACKey(ctx, f.root, f.macBlob)
	return err
}

// encrypt encrypts and decrypts with the AES key.
func (f *fixture) encrypt(ctx context.Context, aes hsm.KeyHandle) error {
	nonce := make([]byte, hsm.GCMIVSize)
	pt := []byte(fmt.Sprintf("plaintext %d", rand.Int()))
	ct, err := f.tok.EncryptGCM(ctx, aes, nonce, pt, nil)
	if err != nil {
		return err
	}
	out, err := f.tok.DecryptGCM(ctx, aes, nonce, ct, nil)
	if err != nil {
		return err
	}
	if !bytes.Equal(out, pt) {
		return fmt.Errorf("decrypted %q, want %q", out, pt)
	}
	return nil
}

func (f *fixture) sign(ctx context.Context, ec hsm.KeyHandle) error {
	d := sha256.Sum256([]byte("sign me"))
	sig, err := f.tok.Sign(ctx, ec, f.signWith, d[:])
	if err != nil {
		return err
	}
	der, err := hsm.ECDSASigToDER(sig)
	if err != nil {
		return err
	}
	if !ecdsa.VerifyASN1(f.ecPub, d[:], der) {
		return errors.New("the signature does not verify")
	}
	return nil
}

func (f *fixture) hmac(ctx context.Context, mac hsm.KeyHandle) error {
	got, err := f.tok.HMACSHA256(ctx, mac, f.macData)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, f.macWant) {
		return fmt.Errorf("HMAC %x, want %x", got, f.macWant)
	}
	return nil
}

// all runs each operation once with the fixture's current keys.
func (f *fixture) all(ctx context.Context) error {
	if err := f.encrypt(ctx, f.aes); err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	if err := f.sign(ctx, f.ec); err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	if err := f.hmac(ctx, f.mac); err != nil {
		return fmt.Errorf("hmac: %w", err)
	}
	return nil
}

// TestClosedPooledSessionsRecovered closes every pooled session behind
// the pool's back. Each is found lost once, replaced and the operation
// retried; the keys live on the owner session and survive.
func TestClosedPooledSessionsRecovered(t *testing.T) {
	const sessions = 4
	f := newFixture(t, sessions)
	ctx := t.Context()
	if err := f.tok.ClosePooledSessionsForTest(ctx); err != nil {
		t.Fatal(err)
	}
	before := f.tok.StatsForTest()
	for i := range 100 {
		if err := f.all(ctx); err != nil {
			t.Fatalf("call %d after the sessions were closed: %v", i, err)
		}
	}
	st := f.tok.StatsForTest()
	if got := st.Replaced - before.Replaced; got != sessions {
		t.Errorf("%d sessions replaced, want %d", got, sessions)
	}
	if got := st.Retries - before.Retries; got != sessions {
		t.Errorf("%d operations retried, want %d (one per lost session)", got, sessions)
	}
	if st.OwnerLost != 0 {
		t.Errorf("the owner session was replaced %d times; it was never closed", st.OwnerLost)
	}
}

// TestLostSessionRetried injects a lost session into single calls: the
// caller sees success, and the Token one retry on one new session.
func TestLostSessionRetried(t *testing.T) {
	f := newFixture(t, 2)
	ctx := t.Context()
	calls := []struct {
		fn string
		do func() error
	}{
		{"C_EncryptInit", func() error { return f.encrypt(ctx, f.aes) }},
		{"C_Encrypt", func() error { return f.encrypt(ctx, f.aes) }},
		{"C_DecryptInit", func() error { return f.encrypt(ctx, f.aes) }},
		{"C_Decrypt", func() error { return f.encrypt(ctx, f.aes) }},
		{"C_SignInit", func() error { return f.sign(ctx, f.ec) }},
		{"C_Sign", func() error { return f.hmac(ctx, f.mac) }},
		{"C_GenerateRandom", func() error { _, err := f.tok.GenerateRandom(ctx, 16); return err }},
		{"C_GenerateKey", func() error { _, err := f.tok.GenerateWrappedAESKey(ctx, f.root, 32); return err }},
		{"C_WrapKey", func() error { _, err := f.tok.GenerateWrappedSecret(ctx, f.root, 32); return err }},
		{"C_GenerateKeyPair", func() error { _, err := f.tok.GenerateWrappedKeyPair(ctx, f.root, f.ecSpec); return err }},
		{"C_FindObjectsInit", func() error { _, err := f.tok.EnsureRootKey(ctx, "root"); return err }},
		{"C_GetAttributeValue", func() error { return f.tok.DestroyKey(ctx, hsm.KeyHandle(1<<40)) }},
	}
	for _, rv := range []uint{p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED} {
		for _, c := range calls {
			before := f.tok.StatsForTest()
			f.tok.FailNextCallsForTest(rv, 1, c.fn)
			err := c.do()
			f.tok.ClearFaultsForTest()
			if err != nil {
				t.Errorf("%s failing with %#x once: %v", c.fn, rv, err)
				continue
			}
			st := f.tok.StatsForTest()
			if r, n := st.Retries-before.Retries, st.Replaced-before.Replaced; r != 1 || n != 1 {
				t.Errorf("%s failing with %#x once: %d retries and %d sessions replaced, want 1 and 1", c.fn, rv, r, n)
			}
		}
	}
	if err := f.all(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestOwnerSessionLost loses the session that holds the loaded keys. The
// keys go with it; their handles become stale at once (even if the
// module were to reuse the numbers) and say so with ErrKeyHandleInvalid;
// loading them again from their blobs works.
func TestOwnerSessionLost(t *testing.T) {
	for _, how := range []string{"closed", "fault"} {
		t.Run(how, func(t *testing.T) {
			f := newFixture(t, 2)
			ctx := t.Context()
			old := *f
			switch how {
			case "closed":
				// Behind the Token's back: found out when a pooled
				// operation fails with the key gone, or when the owner
				// session is next used.
				if err := f.tok.CloseOwnerSessionForTest(ctx); err != nil {
					t.Fatal(err)
				}
			case "fault":
				// Lost under an unwrap, which is retried on a new owner
				// session.
				f.tok.FailNextCallsForTest(p11.CKR_SESSION_HANDLE_INVALID, 1, "C_UnwrapKey")
				k, err := f.tok.UnwrapAESKey(ctx, f.root, f.aesBlob)
				if err != nil {
					t.Fatalf("UnwrapAESKey with the owner session lost under it: %v", err)
				}
				if err := f.encrypt(ctx, k); err != nil {
					t.Fatalf("the key unwrapped on the new owner session: %v", err)
				}
			}
			checkStale := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, hsm.ErrKeyHandleInvalid) || !errors.Is(err, hsm.ErrNotFound) {
					t.Errorf("%s with a key of the lost owner session = %v, want ErrKeyHandleInvalid and ErrNotFound", what, err)
				}
			}
			checkStale("encrypt", old.encrypt(ctx, old.aes))
			checkStale("sign", old.sign(ctx, old.ec))
			checkStale("hmac", old.hmac(ctx, old.mac))
			if err := f.load(ctx); err != nil {
				t.Fatalf("loading the keys again: %v", err)
			}
			if err := f.all(ctx); err != nil {
				t.Fatalf("with the keys loaded again: %v", err)
			}
			checkStale("encrypt, after the reload", old.encrypt(ctx, old.aes))
			for _, k := range []hsm.KeyHandle{old.aes, old.ec, old.mac} {
				if err := f.tok.DestroyKey(ctx, k); err != nil {
					t.Errorf("DestroyKey of a stale handle: %v", err)
				}
			}
			if st := f.tok.StatsForTest(); st.OwnerLost != 1 {
				t.Errorf("owner session replaced %d times, want 1", st.OwnerLost)
			}
		})
	}
}

// TestDeviceErrors: every device return value is retried once; twice in
// a row surfaces hsm.ErrDevice, and the next call succeeds.
func TestDeviceErrors(t *testing.T) {
	// One session, so that the next call runs on the session the fault
	// hit, which must have been left clean.
	f := newFixture(t, 1)
	ctx := t.Context()
	calls := []struct {
		fn string
		do func() error
	}{
		{"C_EncryptInit", func() error { return f.encrypt(ctx, f.aes) }},
		{"C_Encrypt", func() error { return f.encrypt(ctx, f.aes) }},
		{"C_Decrypt", func() error { return f.encrypt(ctx, f.aes) }},
		{"C_Sign", func() error { return f.sign(ctx, f.ec) }},
		{"C_SignInit", func() error { return f.hmac(ctx, f.mac) }},
		{"C_GenerateRandom", func() error { _, err := f.tok.GenerateRandom(ctx, 16); return err }},
		{"C_UnwrapKey", func() error { return f.load(ctx) }},
		{"C_GenerateKey", func() error { _, err := f.tok.GenerateWrappedAESKey(ctx, f.root, 16); return err }},
	}
	codes := []uint{p11.CKR_DEVICE_ERROR, p11.CKR_DEVICE_MEMORY, p11.CKR_DEVICE_REMOVED, p11.CKR_TOKEN_NOT_PRESENT, p11.CKR_GENERAL_ERROR}
	for _, rv := range codes {
		for _, c := range calls {
			if rv == p11.CKR_GENERAL_ERROR && (c.fn == "C_Decrypt" || c.fn == "C_UnwrapKey") {
				continue // an authentication failure there; see below
			}
			name := fmt.Sprintf("%s failing with %s", c.fn, p11.Error(rv))

			before := f.tok.StatsForTest()
			f.tok.FailNextCallsForTest(rv, 2, c.fn)
			err := c.do()
			f.tok.ClearFaultsForTest()
			if !errors.Is(err, hsm.ErrDevice) {
				t.Errorf("%s twice = %v, want ErrDevice", name, err)
			}
			if errors.Is(err, hsm.ErrAuthFailed) || errors.Is(err, hsm.ErrInvalidInput) {
				t.Errorf("%s twice = %v: a device error is neither the input's fault nor an authentication failure", name, err)
			}
			if got := f.tok.StatsForTest().Retries - before.Retries; got != 1 {
				t.Errorf("%s twice: %d retries, want 1", name, got)
			}
			if err := c.do(); err != nil {
				t.Errorf("%s: the next call = %v", name, err)
			}

			f.tok.FailNextCallsForTest(rv, 1, c.fn)
			err = c.do()
			f.tok.ClearFaultsForTest()
			if err != nil {
				t.Errorf("%s once = %v, want it retried", name, err)
			}
		}
	}

	// SoftHSM says CKR_GENERAL_ERROR for a GCM tag or KWP check that
	// fails: there it means the input did not authenticate, and is
	// neither retried nor a device error.
	before := f.tok.StatsForTest()
	f.tok.FailNextCallsForTest(p11.CKR_GENERAL_ERROR, 1, "C_Decrypt", "C_UnwrapKey")
	err := f.encrypt(ctx, f.aes)
	if !errors.Is(err, hsm.ErrAuthFailed) || errors.Is(err, hsm.ErrDevice) {
		t.Errorf("C_Decrypt failing with CKR_GENERAL_ERROR = %v, want ErrAuthFailed only", err)
	}
	f.tok.FailNextCallsForTest(p11.CKR_GENERAL_ERROR, 1, "C_UnwrapKey")
	_, err = f.tok.UnwrapAESKey(ctx, f.root, f.aesBlob)
	if !errors.Is(err, hsm.ErrAuthFailed) || errors.Is(err, hsm.ErrDevice) {
		t.Errorf("C_UnwrapKey failing with CKR_GENERAL_ERROR = %v, want ErrAuthFailed only", err)
	}
	f.tok.ClearFaultsForTest()
	if got := f.tok.StatsForTest().Retries - before.Retries; got != 0 {
		t.Errorf("authentication failures were retried %d times", got)
	}
	if err := f.all(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestKeyHandleInvalidSurfaced: a key the device says is gone is
// reported, not retried.
func TestKeyHandleInvalidSurfaced(t *testing.T) {
	f := newFixture(t, 2)
	ctx := t.Context()
	for _, rv := range []uint{p11.CKR_KEY_HANDLE_INVALID, p11.CKR_OBJECT_HANDLE_INVALID} {
		for _, fn := range []string{"C_EncryptInit", "C_SignInit"} {
			before := f.tok.StatsForTest()
			f.tok.FailNextCallsForTest(rv, 1, fn)
			var err error
			if fn == "C_EncryptInit" {
				err = f.encrypt(ctx, f.aes)
			} else {
				err = f.sign(ctx, f.ec)
			}
			f.tok.ClearFaultsForTest()
			if !errors.Is(err, hsm.ErrKeyHandleInvalid) || !errors.Is(err, hsm.ErrNotFound) {
				t.Errorf("%s failing with %s = %v, want ErrKeyHandleInvalid and ErrNotFound", fn, p11.Error(rv), err)
			}
			if errors.Is(err, hsm.ErrDevice) {
				t.Errorf("%s failing with %s = %v: not a device error", fn, p11.Error(rv), err)
			}
			if got := f.tok.StatsForTest().Retries - before.Retries; got != 0 {
				t.Errorf("%s failing with %s: retried %d times", fn, p11.Error(rv), got)
			}
		}
	}
	// A handle of an owner-session generation that never existed is
	// refused before it reaches the device.
	_, err := f.tok.EncryptGCM(ctx, hsm.KeyHandle(0x7ffe<<48|1), make([]byte, hsm.GCMIVSize), nil, nil)
	if !errors.Is(err, hsm.ErrKeyHandleInvalid) {
		t.Errorf("EncryptGCM with a handle of another generation = %v, want ErrKeyHandleInvalid", err)
	}
	if err := f.all(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestTokenReset closes every session of the application on the token,
// as removing and reinserting it does: the login goes, every session
// object goes, and the root key's object handle changes. The Token logs
// in again, the root key handle keeps working, stale key handles say
// so, and keys load again from their blobs.
func TestTokenReset(t *testing.T) {
	f := newFixture(t, 3)
	ctx := t.Context()
	nonce, pt := make([]byte, hsm.GCMIVSize), []byte("before the reset")
	ct, err := f.tok.EncryptGCM(ctx, f.aes, nonce, pt, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := *f

	if err := f.tok.ClosePooledSessionsForTest(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.tok.CloseOwnerSessionForTest(ctx); err != nil {
		t.Fatal(err)
	}

	if err := old.encrypt(ctx, old.aes); !errors.Is(err, hsm.ErrKeyHandleInvalid) {
		t.Fatalf("encrypt with a key loaded before the reset = %v, want ErrKeyHandleInvalid", err)
	}
	if err := f.load(ctx); err != nil {
		t.Fatalf("loading the keys again under the same root key handle: %v", err)
	}
	if err := f.all(ctx); err != nil {
		t.Fatalf("after the reset: %v", err)
	}
	got, err := f.tok.DecryptGCM(ctx, f.aes, nonce, ct, nil)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("decrypting what was encrypted before the reset = %q, %v", got, err)
	}
	if r, err := f.tok.EnsureRootKey(ctx, "root"); err != nil || r != f.root {
		t.Errorf("EnsureRootKey after the reset = %d, %v; want the same handle %d", r, err, f.root)
	}
	if _, err := f.tok.GenerateWrappedAESKey(ctx, f.root, 32); err != nil {
		t.Errorf("GenerateWrappedAESKey after the reset: %v", err)
	}
	st := f.tok.StatsForTest()
	if st.Relogins == 0 {
		t.Error("the Token did not log in again after every session was closed")
	}
	if st.OwnerLost != 1 {
		t.Errorf("owner session replaced %d times, want 1", st.OwnerLost)
	}
	// Every session, replacements included, is handed back: Close does
	// not hang, and leaves no session open.
	if err := f.tok.Close(); err != nil {
		t.Errorf("Close after the reset: %v", err)
	}
}

// TestRelogin: a session found logged out is logged in again with the
// PIN given to Open. A PIN the token refuses is never tried again, so
// that the Token cannot lock the user PIN.
func TestRelogin(t *testing.T) {
	f := newFixture(t, 1)
	ctx := t.Context()
	before := f.tok.StatsForTest()
	f.tok.FailNextCallsForTest(p11.CKR_USER_NOT_LOGGED_IN, 1, "C_EncryptInit")
	if err := f.encrypt(ctx, f.aes); err != nil {
		t.Fatalf("encrypt with the session logged out once: %v", err)
	}
	if got := f.tok.StatsForTest().Retries - before.Retries; got != 1 {
		t.Errorf("%d retries, want 1", got)
	}

	f.tok.FailNextCallsForTest(p11.CKR_PIN_INCORRECT, 1, "C_Login")
	f.tok.FailNextCallsForTest(p11.CKR_USER_NOT_LOGGED_IN, 1, "C_EncryptInit")
	err := f.encrypt(ctx, f.aes)
	if !errors.Is(err, hsm.ErrDevice) || !isCKR(err, p11.CKR_PIN_INCORRECT) {
		t.Errorf("encrypt with the PIN refused = %v, want ErrDevice and CKR_PIN_INCORRECT", err)
	}
	f.tok.ClearFaultsForTest()
	// The refusal sticks: no further C_Login (it would fail the test by
	// reaching the fault below).
	f.tok.FailNextCallsForTest(p11.CKR_PIN_INCORRECT, 1000, "C_Login")
	f.tok.FailNextCallsForTest(p11.CKR_USER_NOT_LOGGED_IN, 1, "C_EncryptInit")
	err = f.encrypt(ctx, f.aes)
	if !errors.Is(err, hsm.ErrDevice) || isCKR(err, p11.CKR_PIN_INCORRECT) || !strings.Contains(err.Error(), "disabled") {
		t.Errorf("encrypt logged out after the PIN was refused = %v, want ErrDevice without a new login", err)
	}
	f.tok.ClearFaultsForTest()
	if err := f.all(ctx); err != nil {
		t.Fatalf("with the session logged in: %v", err)
	}
}

// TestNoNewSession: while no session can be opened (the token is out),
// operations on lost sessions fail with ErrDevice, the pool keeps its
// size, and everything works once sessions open again.
func TestNoNewSession(t *testing.T) {
	const sessions = 2
	f := newFixture(t, sessions)
	ctx := t.Context()
	if err := f.tok.ClosePooledSessionsForTest(ctx); err != nil {
		t.Fatal(err)
	}
	f.tok.FailNextCallsForTest(p11.CKR_TOKEN_NOT_PRESENT, 1000, "C_OpenSession")
	for i := range 2 * sessions {
		err := f.encrypt(ctx, f.aes)
		if !errors.Is(err, hsm.ErrDevice) {
			t.Errorf("encrypt %d with the token out = %v, want ErrDevice", i, err)
		}
	}
	f.tok.ClearFaultsForTest()
	for i := range 2 * sessions {
		if err := f.all(ctx); err != nil {
			t.Fatalf("call %d with the token back: %v", i, err)
		}
	}
}

// TestPoolExhaustedTimeout: with every pooled session borrowed, each
// operation gives up with its context's error; loading keys, on the
// owner session, still works; after release everything works.
func TestPoolExhaustedTimeout(t *testing.T) {
	const sessions = 2
	f := newFixture(t, sessions)
	var release []func()
	for range sessions {
		r, err := f.tok.BorrowSessionForTest(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		release = append(release, r)
	}
	short := func() context.Context {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	for what, err := range map[string]error{
		"encrypt": f.encrypt(short(), f.aes),
		"sign":    f.sign(short(), f.ec),
		"hmac":    f.hmac(short(), f.mac),
		"random":  func() error { _, err := f.tok.GenerateRandom(short(), 8); return err }(),
		"destroy": f.tok.DestroyKey(short(), hsm.KeyHandle(1<<40)),
	} {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s with every session borrowed = %v, want DeadlineExceeded", what, err)
		}
	}
	k, err := f.tok.UnwrapAESKey(t.Context(), f.root, f.aesBlob)
	if err != nil {
		t.Errorf("UnwrapAESKey with every pooled session borrowed: %v", err)
	}

	// The owner session, taken, makes loads wait in the same way.
	releaseOwner, err := f.tok.BorrowOwnerSessionForTest(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.tok.UnwrapAESKey(short(), f.root, f.aesBlob); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("UnwrapAESKey with the owner session taken = %v, want DeadlineExceeded", err)
	}
	releaseOwner()
	for _, r := range release {
		r()
	}
	if err := f.encrypt(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	if err := f.all(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestFaultStorm runs 16 workers that use and, when told a key is gone,
// reload their keys (as package kms does), while faults of every kind
// hit every kind of call and sessions, the owner session included, are
// closed behind the Token's back. Nothing may panic or hang, every
// error must be ErrDevice or ErrKeyHandleInvalid, and once the faults
// stop every worker must get going again.
func TestFaultStorm(t *testing.T) {
	f := newFixture(t, 4)
	const (
		workers  = 16
		duration = 1500 * time.Millisecond
		deadline = 90 * time.Second
	)
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()

	type keys struct{ aes, ec, mac hsm.KeyHandle }
	reload := func(ctx context.Context) (keys, error) {
		var k keys
		var err error
		if k.aes, err = f.tok.UnwrapAESKey(ctx, f.root, f.aesBlob); err != nil {
			return k, err
		}
		if k.ec, err = f.tok.UnwrapPrivateKey(ctx, f.root, f.ecBlob, f.ecSpec); err != nil {
			return k, err
		}
		k.mac, err = f.tok.UnwrapHMACKey(ctx, f.root, f.macBlob)
		return k, err
	}
	step := func(ctx context.Context, k keys, i int) error {
		switch i % 4 {
		case 0:
			return f.encrypt(ctx, k.aes)
		case 1:
			return f.sign(ctx, k.ec)
		case 2:
			return f.hmac(ctx, k.mac)
		default:
			_, err := f.tok.GenerateRandom(ctx, 32)
			return err
		}
	}
	allowed := func(err error) bool {
		return errors.Is(err, hsm.ErrDevice) || errors.Is(err, hsm.ErrKeyHandleInvalid)
	}

	stop := make(chan struct{})
	var pause sync.RWMutex // held by each call, taken to close the owner session
	var calls, failures, reloads atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			pause.RLock()
			k, err := reload(ctx)
			pause.RUnlock()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err == nil {
					pause.RLock()
					err = step(ctx, k, w+i)
					pause.RUnlock()
					calls.Add(1)
				}
				if err == nil {
					continue
				}
				failures.Add(1)
				if !allowed(err) {
					t.Errorf("worker %d: %v", w, err)
					return
				}
				if errors.Is(err, hsm.ErrKeyHandleInvalid) || k == (keys{}) {
					pause.RLock()
					k, err = reload(ctx)
					pause.RUnlock()
					reloads.Add(1)
				} else {
					err = nil
				}
			}
		})
	}

	codes := []uint{
		p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED, p11.CKR_DEVICE_ERROR,
		p11.CKR_DEVICE_MEMORY, p11.CKR_DEVICE_REMOVED, p11.CKR_TOKEN_NOT_PRESENT,
		p11.CKR_KEY_HANDLE_INVALID, p11.CKR_OBJECT_HANDLE_INVALID, p11.CKR_USER_NOT_LOGGED_IN,
	}
	functions := []string{
		"C_EncryptInit", "C_Encrypt", "C_DecryptInit", "C_Decrypt", "C_SignInit", "C_Sign",
		"C_UnwrapKey", "C_GenerateRandom", "C_GetAttributeValue", "C_DestroyObject", "C_OpenSession",
		"C_CreateObject",
	}
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(1, 2))
		end := time.Now().Add(duration)
		for i := 0; time.Now().Before(end); i++ {
			f.tok.FailNextCallsForTest(codes[rng.IntN(len(codes))], 1+rng.IntN(3), functions[rng.IntN(len(functions))])
			// CKR_GENERAL_ERROR is an authentication failure on the
			// decrypt and unwrap paths, so only elsewhere.
			if i%4 == 0 {
				f.tok.FailNextCallsForTest(p11.CKR_GENERAL_ERROR, 1, "C_Encrypt", "C_Sign", "C_GenerateRandom")
			}
			switch i % 100 {
			case 33:
				if err := f.tok.ClosePooledSessionsForTest(ctx); err != nil {
					t.Errorf("ClosePooledSessionsForTest: %v", err)
				}
			case 66:
				// Really closing the owner session destroys keys that
				// workers may be using, which SoftHSM does not survive
				// (see FailNextCallsForTest): wait for the calls in
				// flight.
				pause.Lock()
				if err := f.tok.CloseOwnerSessionForTest(ctx); err != nil {
					t.Errorf("CloseOwnerSessionForTest: %v", err)
				}
				pause.Unlock()
			case 99:
				f.tok.ClearFaultsForTest() // the rules pile up otherwise
			}
			time.Sleep(time.Millisecond)
		}
		close(stop)
	})

	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(deadline):
		buf := make([]byte, 1<<20)
		t.Fatalf("workers did not stop within %v (deadlock?)\n%s", deadline, buf[:runtime.Stack(buf, true)])
	}
	f.tok.ClearFaultsForTest()
	st := f.tok.StatsForTest()
	t.Logf("%d calls, %d failures, %d reloads; %d retries, %d sessions replaced, %d owner sessions lost, %d relogins",
		calls.Load(), failures.Load(), reloads.Load(), st.Retries, st.Replaced, st.OwnerLost, st.Relogins)
	if st.Retries == 0 || st.OwnerLost == 0 {
		t.Errorf("the storm did not exercise recovery: %+v", st)
	}

	// Every worker's way of recovering works once the faults stop.
	for w := range workers {
		k, err := reload(t.Context())
		if err != nil {
			t.Fatalf("worker %d: reload after the storm: %v", w, err)
		}
		for i := range 4 {
			if err := step(t.Context(), k, i); err != nil {
				t.Fatalf("worker %d: step %d after the storm: %v", w, i, err)
			}
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- f.tok.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close after the storm: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after the storm (a session was not handed back)")
	}
}
