//go:build cgo

package pkcs11_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/hsm/pkcs11"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
)

func open(t *testing.T, cfg pkcs11.Config) *pkcs11.Token {
	t.Helper()
	tok, err := pkcs11.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	return tok
}

func TestOpenFindsTokenByLabel(t *testing.T) {
	cfg := pkcs11test.NewTokenConfig(t)
	pkcs11test.NewTokenConfig(t) // another token, in another slot
	tok := open(t, cfg)
	if tok.Label() != cfg.TokenLabel {
		t.Errorf("Label() = %q, want %q", tok.Label(), cfg.TokenLabel)
	}

	_, err := pkcs11.Open(t.Context(), pkcs11.Config{TokenLabel: "kf-no-such-token", PIN: cfg.PIN})
	if !errors.Is(err, hsm.ErrNotFound) {
		t.Errorf("Open of a missing label = %v, want ErrNotFound", err)
	}
	for _, label := range []string{"", "trailing space ", strings.Repeat("x", 33)} {
		_, err := pkcs11.Open(t.Context(), pkcs11.Config{TokenLabel: label, PIN: cfg.PIN})
		if !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("Open(label %q) = %v, want ErrInvalidInput", label, err)
		}
	}
	_, err = pkcs11.Open(t.Context(), pkcs11.Config{Module: "/nonexistent/libpkcs11.so", TokenLabel: cfg.TokenLabel, PIN: cfg.PIN})
	if err == nil {
		t.Error("Open with a missing module succeeded")
	}
}

func TestOpenWrongPIN(t *testing.T) {
	cfg := pkcs11test.NewTokenConfig(t)
	wrong := cfg
	wrong.PIN = "wrong-" + cfg.PIN

	check := func(what string, err error) {
		t.Helper()
		if !isCKR(err, p11.CKR_PIN_INCORRECT) {
			t.Errorf("%s: Open with a wrong PIN = %v, want CKR_PIN_INCORRECT", what, err)
		}
		if err != nil && (strings.Contains(err.Error(), wrong.PIN) || strings.Contains(err.Error(), cfg.PIN)) {
			t.Errorf("%s: error %q contains a PIN", what, err)
		}
	}
	_, err := pkcs11.Open(t.Context(), wrong)
	check("no other Token open", err)

	// With a Token already logged in, C_Login does not check the PIN;
	// Open must still refuse a wrong one.
	tok := open(t, cfg)
	_, err = pkcs11.Open(t.Context(), wrong)
	check("another Token open", err)
	if _, err := tok.GenerateRandom(t.Context(), 8); err != nil {
		t.Errorf("the open Token broke after a failed Open: %v", err)
	}
}

func isCKR(err error, rv uint) bool {
	var e p11.Error
	return errors.As(err, &e) && uint(e) == rv
}

func TestInitTokenExists(t *testing.T) {
	cfg := pkcs11test.NewTokenConfig(t)
	err := pkcs11.InitToken(t.Context(), "", cfg.TokenLabel, "so-pin-1234", "user-pin-1234")
	if !errors.Is(err, pkcs11.ErrTokenExists) {
		t.Errorf("InitToken of an existing label = %v, want ErrTokenExists", err)
	}
	// The existing token is untouched: its PIN still opens it.
	open(t, cfg)

	for _, label := range []string{"", strings.Repeat("y", 33)} {
		if err := pkcs11.InitToken(t.Context(), "", label, "so-pin-1234", "user-pin-1234"); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("InitToken(label %q) = %v, want ErrInvalidInput", label, err)
		}
	}
	if err := pkcs11.InitToken(t.Context(), "", "kf-empty-pin", "so-pin-1234", ""); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Errorf("InitToken with an empty user PIN = %v, want ErrInvalidInput", err)
	}
}

func TestInitTokenConcurrent(t *testing.T) {
	const n = 6
	cfgs := make([]pkcs11.Config, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { cfgs[i] = pkcs11test.NewTokenConfig(t) })
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, cfg := range cfgs {
		if seen[cfg.TokenLabel] {
			t.Fatalf("label %q twice", cfg.TokenLabel)
		}
		seen[cfg.TokenLabel] = true
		tok := open(t, cfg)
		if _, err := tok.EnsureRootKey(t.Context(), "root"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRootKeyPersists closes every Token (so the library is finalised)
// and reopens: blobs wrapped before must open after.
func TestRootKeyPersists(t *testing.T) {
	cfg := pkcs11test.NewTokenConfig(t)
	ctx := t.Context()

	tok, err := pkcs11.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	root, err := tok.EnsureRootKey(ctx, "persist-root")
	if err != nil {
		t.Fatal(err)
	}
	blob, err := tok.GenerateWrappedAESKey(ctx, root, 32)
	if err != nil {
		t.Fatal(err)
	}
	k, err := tok.UnwrapAESKey(ctx, root, blob)
	if err != nil {
		t.Fatal(err)
	}
	nonce, pt := make([]byte, hsm.GCMIVSize), []byte("across restarts")
	ct, err := tok.EncryptGCM(ctx, k, nonce, pt, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Close(); err != nil {
		t.Fatal(err)
	}
	if n := pkcs11.ModuleRefsForTest(pkcs11.DefaultModule()); n != 0 {
		t.Fatalf("module still has %d users after every Token closed", n)
	}

	tok = open(t, cfg)
	root2, err := tok.EnsureRootKey(ctx, "persist-root")
	if err != nil {
		t.Fatal(err)
	}
	k2, err := tok.UnwrapAESKey(ctx, root2, blob)
	if err != nil {
		t.Fatalf("a blob wrapped before a restart does not unwrap after it: %v", err)
	}
	got, err := tok.DecryptGCM(ctx, k2, nonce, ct, nil)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("DecryptGCM after a restart = %q, %v", got, err)
	}
}

// TestTwoTokensOneToken opens one token twice, as two workers in one
// process would. They share the root key and the login; session objects
// die with the Token that made them.
func TestTwoTokensOneToken(t *testing.T) {
	cfg := pkcs11test.NewTokenConfig(t)
	ctx := t.Context()
	a := open(t, cfg)
	b := open(t, cfg)
	if n := pkcs11.ModuleRefsForTest(pkcs11.DefaultModule()); n < 2 {
		t.Errorf("two open Tokens hold the module %d times", n)
	}

	rootA, err := a.EnsureRootKey(ctx, "shared-root")
	if err != nil {
		t.Fatal(err)
	}
	rootB, err := b.EnsureRootKey(ctx, "shared-root")
	if err != nil {
		t.Fatal(err)
	}
	if rootA != rootB {
		t.Errorf("two Tokens on one token see root keys %d and %d", rootA, rootB)
	}
	blob, err := a.GenerateWrappedAESKey(ctx, rootA, 32)
	if err != nil {
		t.Fatal(err)
	}
	ka, err := a.UnwrapAESKey(ctx, rootA, blob)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := b.UnwrapAESKey(ctx, rootB, blob)
	if err != nil {
		t.Fatal(err)
	}
	nonce, pt := make([]byte, hsm.GCMIVSize), []byte("shared")
	ct, err := a.EncryptGCM(ctx, ka, nonce, pt, nil)
	if err != nil {
		t.Fatal(err)
	}

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := b.DecryptGCM(ctx, kb, nonce, ct, nil)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("after the other Token closed, DecryptGCM = %q, %v", got, err)
	}
	if _, err := b.EncryptGCM(ctx, ka, nonce, pt, nil); !errors.Is(err, hsm.ErrNotFound) {
		t.Errorf("a key unwrapped by a closed Token: EncryptGCM = %v, want ErrNotFound", err)
	}
}

func TestKeySeparation(t *testing.T) {
	tok := pkcs11test.NewToken(t)
	ctx := t.Context()
	root, err := tok.EnsureRootKey(ctx, "root")
	if err != nil {
		t.Fatal(err)
	}

	// A data key can neither leave the HSM nor wrap.
	blob, err := tok.GenerateWrappedAESKey(ctx, root, 32)
	if err != nil {
		t.Fatal(err)
	}
	dk, err := tok.UnwrapAESKey(ctx, root, blob)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tok.WrapKey(ctx, root, dk); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Errorf("WrapKey of an unwrapped data key = %v, want ErrInvalidInput", err)
	}
	if _, err := tok.GenerateWrappedAESKey(ctx, dk, 32); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Errorf("GenerateWrappedAESKey under a data key = %v, want ErrInvalidInput", err)
	}
	// Nor can the root key be exported.
	if _, err := tok.WrapKey(ctx, dk, root); err == nil {
		t.Error("WrapKey of the root key succeeded")
	}

	// A tenant KEK wraps and unwraps, and does nothing else.
	kekBlob, err := tok.GenerateWrappedAESKey(ctx, root, 32)
	if err != nil {
		t.Fatal(err)
	}
	kek, err := tok.UnwrapKEK(ctx, root, kekBlob)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, hsm.GCMIVSize)
	if _, err := tok.EncryptGCM(ctx, kek, nonce, []byte("x"), nil); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Errorf("EncryptGCM under a KEK = %v, want ErrInvalidInput", err)
	}
	tenantBlob, err := tok.GenerateWrappedAESKey(ctx, kek, 32)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := tok.UnwrapAESKey(ctx, kek, tenantBlob)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tok.EncryptGCM(ctx, tk, nonce, []byte("x"), nil); err != nil {
		t.Errorf("EncryptGCM under a key unwrapped by a KEK: %v", err)
	}
	if _, err := tok.UnwrapAESKey(ctx, root, tenantBlob); !errors.Is(err, hsm.ErrAuthFailed) {
		t.Errorf("a tenant blob unwrapped under the root = %v, want ErrAuthFailed", err)
	}

	// An extractable imported key round-trips through WrapKey.
	raw := bytes.Repeat([]byte{0x42}, 32)
	imp, err := tok.ImportAESKeyForTesting(ctx, raw, true)
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := tok.WrapKey(ctx, root, imp)
	if err != nil {
		t.Fatal(err)
	}
	back, err := tok.UnwrapAESKey(ctx, root, wrapped)
	if err != nil {
		t.Fatal(err)
	}
	c1, err := tok.EncryptGCM(ctx, imp, nonce, []byte("same key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := tok.EncryptGCM(ctx, back, nonce, []byte("same key"), nil)
	if err != nil || !bytes.Equal(c1, c2) {
		t.Errorf("the imported key and its wrapped copy disagree: %x vs %x (%v)", c1, c2, err)
	}
	for _, n := range []int{0, 15, 31, 64} {
		if _, err := tok.ImportAESKeyForTesting(ctx, make([]byte, n), false); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("ImportAESKeyForTesting of %d bytes = %v, want ErrInvalidInput", n, err)
		}
	}
}

func TestDestroyKeyRefusesTokenObject(t *testing.T) {
	tok := pkcs11test.NewToken(t)
	ctx := t.Context()
	root, err := tok.EnsureRootKey(ctx, "root")
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.DestroyKey(ctx, root); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Errorf("DestroyKey(root) = %v, want ErrInvalidInput", err)
	}
	if _, err := tok.GenerateWrappedAESKey(ctx, root, 32); err != nil {
		t.Errorf("root key unusable after a refused DestroyKey: %v", err)
	}
}

func TestPoolWaitHonoursContext(t *testing.T) {
	cfg := pkcs11test.NewTokenConfig(t)
	cfg.Sessions = 1
	tok := open(t, cfg)
	release, err := tok.BorrowSessionForTest(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := tok.GenerateRandom(ctx, 8); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("GenerateRandom with the pool empty = %v, want DeadlineExceeded", err)
	}

	// A caller waiting for a session when Close starts gets ErrClosed;
	// Close itself waits for the borrowed session to come back.
	waiting := make(chan error)
	go func() {
		_, err := tok.GenerateRandom(context.Background(), 8)
		waiting <- err
	}()
	closed := make(chan error)
	go func() { closed <- tok.Close() }()
	if err := <-waiting; !errors.Is(err, hsm.ErrClosed) {
		t.Errorf("a caller waiting at Close got %v, want ErrClosed", err)
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a session was still borrowed", err)
	default:
	}
	release()
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestStaleOperationIsCleared leaves an AES-GCM operation active on every
// session, as a failure between C_*Init and C_* could, and checks that
// the next operations clear it instead of failing with
// CKR_OPERATION_ACTIVE.
func TestStaleOperationIsCleared(t *testing.T) {
	tok := pkcs11test.NewToken(t)
	ctx := t.Context()
	root, err := tok.EnsureRootKey(ctx, "root")
	if err != nil {
		t.Fatal(err)
	}
	blob, err := tok.GenerateWrappedAESKey(ctx, root, 32)
	if err != nil {
		t.Fatal(err)
	}
	k, err := tok.UnwrapAESKey(ctx, root, blob)
	if err != nil {
		t.Fatal(err)
	}
	nonce, pt := make([]byte, hsm.GCMIVSize), []byte("after a stale operation")
	for _, decrypt := range []bool{false, true} {
		if err := tok.LeaveOperationActiveForTest(ctx, k, decrypt); err != nil {
			t.Fatal(err)
		}
		for range 2 * 4 {
			ct, err := tok.EncryptGCM(ctx, k, nonce, pt, nil)
			if err != nil {
				t.Fatalf("EncryptGCM after a stale operation (decrypt=%v): %v", decrypt, err)
			}
			got, err := tok.DecryptGCM(ctx, k, nonce, ct, nil)
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("DecryptGCM after a stale operation (decrypt=%v) = %q, %v", decrypt, got, err)
			}
		}
	}
}

func TestDefaultModule(t *testing.T) {
	t.Setenv(pkcs11.ModuleEnv, "/opt/hsm/libvendor.so")
	if got := pkcs11.DefaultModule(); got != "/opt/hsm/libvendor.so" {
		t.Errorf("DefaultModule() with %s set = %q", pkcs11.ModuleEnv, got)
	}
	t.Setenv(pkcs11.ModuleEnv, "")
	if got := pkcs11.DefaultModule(); !strings.HasSuffix(got, "libsofthsm2.so") {
		t.Errorf("DefaultModule() = %q, want the SoftHSM2 library", got)
	}
}
