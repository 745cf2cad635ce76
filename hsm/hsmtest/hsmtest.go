// Package hsmtest is the conformance suite that every [hsm.Backend] must
// pass. A backend's own tests call [Run] with a constructor:
//
//	func TestConformance(t *testing.T) {
//		hsmtest.Run(t, func(t *testing.T) hsm.Backend { return newBackend(t) })
//	}
//
// The constructor returns a fresh, open backend for each subtest and
// arranges (with t.Cleanup) for it to be closed; the suite also closes
// some backends itself, so Close must be safe to call twice.
//
// Beyond the doc comments of package hsm, the suite holds a backend to
// these rules, which keyflow relies on:
//   - a GCM IV of any length but hsm.GCMIVSize is refused with
//     hsm.ErrInvalidInput, before anything is encrypted;
//   - every failed authentication, of a ciphertext or a wrapped blob,
//     returns hsm.ErrAuthFailed;
//   - using a destroyed key returns hsm.ErrNotFound;
//   - DestroyKey never destroys a root key;
//   - after Close every method returns hsm.ErrClosed;
//   - a context that is already done makes every method return its error.
//
// Backends that implement the optional abilities of package hsm
// (KeyPairs, Signer, RSAEncrypter, MACs) are also held to the rules
// listed in asym.go; the tests of abilities a backend lacks are skipped.
// A backend with a bounded session pool may implement [SessionBorrower]
// so that the suite can make the pool run dry, and a backend that talks
// to a device may implement [FaultInjector] so that the suite can make
// the device fail: lose sessions, report device errors and lost keys.
// The rules for failures are listed in faults.go.
package hsmtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"testing"

	"github.com/keyflow/keyflow/hsm"
)

// Run runs the conformance suite, each part as a subtest with a backend
// of its own from newBackend.
func Run(t *testing.T, newBackend func(t *testing.T) hsm.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b hsm.Backend)
	}{
		{"RootKeyIdempotent", testRootKeyIdempotent},
		{"RootKeyOnlyWraps", testRootKeyOnlyWraps},
		{"WrapUnwrapRoundTrip", testWrapUnwrapRoundTrip},
		{"GenerateWrappedAESKeySizes", testGenerateSizes},
		{"GCMRoundTrip", testGCMRoundTrip},
		{"GCMRefusesIVLength", testGCMRefusesIVLength},
		{"GCMTampered", testGCMTampered},
		{"GCMTruncated", testGCMTruncated},
		{"UnwrapCorruptedBlob", testUnwrapCorrupted},
		{"GenerateRandom", testGenerateRandom},
		{"DestroyKeyIdempotent", testDestroyKey},
		{"CanceledContext", testCanceledContext},
		{"UseAfterClose", testUseAfterClose},
		{"PoolSurvivesFailures", testPoolSurvivesFailures},
		{"Concurrent", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newBackend(t))
		})
	}
	// The optional abilities; each test skips itself on a backend that
	// lacks what it needs.
	for _, tc := range asymTests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newBackend(t))
		})
	}
	// Failure handling, on backends that can fake device failures
	// (FaultInjector); see faults.go.
	for _, tc := range faultTests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newBackend(t))
		})
	}
}

// rootLabel is distinct from any label a deployment would use, in case a
// backend under test is a shared one.
const rootLabel = "keyflow-hsmtest-root"

func root(t *testing.T, b hsm.Backend, label string) hsm.KeyHandle {
	t.Helper()
	k, err := b.EnsureRootKey(t.Context(), label)
	if err != nil {
		t.Fatalf("EnsureRootKey(%q): %v", label, err)
	}
	return k
}

// dataKey generates a wrapped AES-256 key under wrap, unwraps it and
// destroys it when the test ends.
func dataKey(t *testing.T, b hsm.Backend, wrap hsm.KeyHandle) (hsm.KeyHandle, []byte) {
	t.Helper()
	blob, err := b.GenerateWrappedAESKey(t.Context(), wrap, 32)
	if err != nil {
		t.Fatalf("GenerateWrappedAESKey: %v", err)
	}
	k := unwrap(t, b, wrap, blob)
	return k, blob
}

func unwrap(t *testing.T, b hsm.Backend, wrap hsm.KeyHandle, blob []byte) hsm.KeyHandle {
	t.Helper()
	k, err := b.UnwrapAESKey(t.Context(), wrap, blob)
	if err != nil {
		t.Fatalf("UnwrapAESKey: %v", err)
	}
	t.Cleanup(func() { _ = b.DestroyKey(context.Background(), k) })
	return k
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	rand.Read(p)
	return p
}

func iv(t testing.TB) []byte { return randomBytes(t, hsm.GCMIVSize) }

func encrypt(t *testing.T, b hsm.Backend, k hsm.KeyHandle, iv, pt, aad []byte) []byte {
	t.Helper()
	ct, err := b.EncryptGCM(t.Context(), k, iv, pt, aad)
	if err != nil {
		t.Fatalf("EncryptGCM: %v", err)
	}
	if len(ct) != len(pt)+hsm.GCMTagSize {
		t.Fatalf("EncryptGCM: ciphertext is %d bytes for %d bytes of plaintext, want %d", len(ct), len(pt), len(pt)+hsm.GCMTagSize)
	}
	return ct
}

func decrypt(t *testing.T, b hsm.Backend, k hsm.KeyHandle, iv, ct, aad, want []byte) {
	t.Helper()
	pt, err := b.DecryptGCM(t.Context(), k, iv, ct, aad)
	if err != nil {
		t.Fatalf("DecryptGCM: %v", err)
	}
	if !bytes.Equal(pt, want) {
		t.Fatalf("DecryptGCM returned %x, want %x", pt, want)
	}
}

// wantErr fails unless err wraps one of targets.
func wantErr(t *testing.T, what string, err error, targets ...error) {
	t.Helper()
	for _, target := range targets {
		if errors.Is(err, target) {
			return
		}
	}
	t.Errorf("%s: got error %v, want one wrapping %v", what, err, targets)
}

func testRootKeyIdempotent(t *testing.T, b hsm.Backend) {
	a1 := root(t, b, rootLabel+"-a")
	a2 := root(t, b, rootLabel+"-a")
	if a1 != a2 {
		t.Errorf("EnsureRootKey twice with one label returned %d and %d", a1, a2)
	}
	other := root(t, b, rootLabel+"-b")
	if other == a1 {
		t.Fatalf("EnsureRootKey with two labels returned the same handle %d", a1)
	}

	// They must be different keys, not only different handles.
	blob, err := b.GenerateWrappedAESKey(t.Context(), a1, 32)
	if err != nil {
		t.Fatal(err)
	}
	unwrap(t, b, a2, blob)
	_, err = b.UnwrapAESKey(t.Context(), other, blob)
	wantErr(t, "unwrap under another root key", err, hsm.ErrAuthFailed)

	_, err = b.EnsureRootKey(t.Context(), "")
	wantErr(t, "EnsureRootKey with an empty label", err, hsm.ErrInvalidInput)

	// Concurrent first calls must agree on one key.
	const n = 8
	got := make([]hsm.KeyHandle, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i], errs[i] = b.EnsureRootKey(t.Context(), rootLabel+"-c") })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("concurrent EnsureRootKey: %v", errs[i])
		}
		if got[i] != got[0] {
			t.Fatalf("concurrent EnsureRootKey returned %d and %d", got[0], got[i])
		}
	}
	blob, err = b.GenerateWrappedAESKey(t.Context(), got[0], 16)
	if err != nil {
		t.Fatal(err)
	}
	unwrap(t, b, root(t, b, rootLabel+"-c"), blob)
}

func testRootKeyOnlyWraps(t *testing.T, b hsm.Backend) {
	r := root(t, b, rootLabel)
	ct, err := b.EncryptGCM(t.Context(), r, iv(t), []byte("data for a data key"), nil)
	if err == nil || ct != nil {
		t.Errorf("EncryptGCM under the root key = %x, %v; want an error", ct, err)
	}
}

func testWrapUnwrapRoundTrip(t *testing.T, b hsm.Backend) {
	r := root(t, b, rootLabel)
	for _, size := range []int{16, 24, 32} {
		t.Run(fmt.Sprint(size*8), func(t *testing.T) {
			blob, err := b.GenerateWrappedAESKey(t.Context(), r, size)
			if err != nil {
				t.Fatal(err)
			}
			// RFC 5649: 8 bytes of integrity block, no padding for
			// lengths that are multiples of 8.
			if len(blob) != size+8 {
				t.Errorf("wrapped %d-byte key is %d bytes, want %d", size, len(blob), size+8)
			}
			a := unwrap(t, b, r, blob)
			nonce, pt, aad := iv(t), []byte("round trip through a wrapped key"), []byte("aad")
			ct := encrypt(t, b, a, nonce, pt, aad)

			// The same blob unwrapped again is the same key, in an
			// object of its own: destroying the first leaves it.
			bk := unwrap(t, b, r, blob)
			if err := b.DestroyKey(t.Context(), a); err != nil {
				t.Fatal(err)
			}
			decrypt(t, b, bk, nonce, ct, aad, pt)

			// A second generated key is a different key.
			blob2, err := b.GenerateWrappedAESKey(t.Context(), r, size)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(blob, blob2) {
				t.Fatal("two GenerateWrappedAESKey calls returned the same blob")
			}
			c := unwrap(t, b, r, blob2)
			_, err = b.DecryptGCM(t.Context(), c, nonce, ct, aad)
			wantErr(t, "decrypt under another generated key", err, hsm.ErrAuthFailed)
		})
	}
}

func testGenerateSizes(t *testing.T, b hsm.Backend) {
	r := root(t, b, rootLabel)
	for _, size := range []int{-1, 0, 1, 8, 15, 17, 31, 33, 48, 64} {
		blob, err := b.GenerateWrappedAESKey(t.Context(), r, size)
		if blob != nil {
			t.Errorf("GenerateWrappedAESKey(%d) returned a blob", size)
		}
		wantErr(t, fmt.Sprintf("GenerateWrappedAESKey(%d)", size), err, hsm.ErrInvalidInput)
	}
}

func testGCMRoundTrip(t *testing.T, b hsm.Backend) {
	k, _ := dataKey(t, b, root(t, b, rootLabel))
	for _, n := range []int{0, 1, 15, 16, 17, 32, 1000, 64 << 10} {
		for _, aad := range [][]byte{nil, []byte("tenant=a;key=k1;v=3")} {
			t.Run(fmt.Sprintf("pt=%d/aad=%d", n, len(aad)), func(t *testing.T) {
				pt := randomBytes(t, n)
				nonce := iv(t)
				ct := encrypt(t, b, k, nonce, pt, aad)
				if n >= 8 && bytes.Contains(ct, pt[:8]) {
					t.Fatal("ciphertext contains the plaintext")
				}
				decrypt(t, b, k, nonce, ct, aad, pt)

				// GCM is deterministic in (key, IV, plaintext, AAD), and
				// the IV must count.
				if again := encrypt(t, b, k, nonce, pt, aad); !bytes.Equal(again, ct) {
					t.Fatal("same key, IV, plaintext and AAD gave two ciphertexts")
				}
				if other := encrypt(t, b, k, iv(t), pt, aad); bytes.Equal(other, ct) {
					t.Fatal("a different IV gave the same ciphertext")
				}
			})
		}
	}
	// Empty and missing AAD are the same AAD.
	nonce, pt := iv(t), []byte("x")
	ct := encrypt(t, b, k, nonce, pt, nil)
	decrypt(t, b, k, nonce, ct, []byte{}, pt)
}

func testGCMRefusesIVLength(t *testing.T, b hsm.Backend) {
	k, _ := dataKey(t, b, root(t, b, rootLabel))
	nonce, pt := iv(t), []byte("secret")
	ct := encrypt(t, b, k, nonce, pt, nil)
	for _, n := range []int{0, 1, 8, 11, 13, 16, 32} {
		bad := make([]byte, n)
		copy(bad, nonce)
		out, err := b.EncryptGCM(t.Context(), k, bad, pt, nil)
		if out != nil {
			t.Errorf("EncryptGCM with a %d-byte IV returned output", n)
		}
		wantErr(t, fmt.Sprintf("EncryptGCM with a %d-byte IV", n), err, hsm.ErrInvalidInput)
		out, err = b.DecryptGCM(t.Context(), k, bad, ct, nil)
		if out != nil {
			t.Errorf("DecryptGCM with a %d-byte IV returned output", n)
		}
		wantErr(t, fmt.Sprintf("DecryptGCM with a %d-byte IV", n), err, hsm.ErrInvalidInput)
	}
	_, err := b.EncryptGCM(t.Context(), k, nil, pt, nil)
	wantErr(t, "EncryptGCM with a nil IV", err, hsm.ErrInvalidInput)
}

func testGCMTampered(t *testing.T, b hsm.Backend) {
	r := root(t, b, rootLabel)
	k, _ := dataKey(t, b, r)
	nonce, pt, aad := iv(t), []byte("thirty-two bytes of plaintext!!!"), []byte("context")
	ct := encrypt(t, b, k, nonce, pt, aad)

	fail := func(what string, key hsm.KeyHandle, nonce, ct, aad []byte) {
		t.Helper()
		out, err := b.DecryptGCM(t.Context(), key, nonce, ct, aad)
		if out != nil {
			t.Errorf("%s: returned plaintext %q", what, out)
		}
		wantErr(t, what, err, hsm.ErrAuthFailed)
	}
	for i := range ct {
		bad := bytes.Clone(ct)
		bad[i] ^= 0x01 << (i % 8)
		part := "ciphertext"
		if i >= len(pt) {
			part = "tag"
		}
		fail(fmt.Sprintf("%s byte %d flipped", part, i), k, nonce, bad, aad)
	}
	fail("AAD changed", k, nonce, ct, []byte("Context"))
	fail("AAD dropped", k, nonce, ct, nil)
	fail("AAD extended", k, nonce, ct, append(bytes.Clone(aad), 0))
	otherIV := bytes.Clone(nonce)
	otherIV[0] ^= 0x80
	fail("IV changed", k, otherIV, ct, aad)
	fail("byte appended", k, nonce, append(bytes.Clone(ct), 0), aad)
	other, _ := dataKey(t, b, r)
	fail("other key", other, nonce, ct, aad)

	// The original still opens: nothing above disturbed the key.
	decrypt(t, b, k, nonce, ct, aad, pt)
}

func testGCMTruncated(t *testing.T, b hsm.Backend) {
	k, _ := dataKey(t, b, root(t, b, rootLabel))
	nonce, pt := iv(t), []byte("a plaintext longer than one tag..")
	ct := encrypt(t, b, k, nonce, pt, nil)
	for _, n := range []int{0, 1, hsm.GCMTagSize - 1, hsm.GCMTagSize, len(ct) - hsm.GCMTagSize, len(ct) - 1} {
		out, err := b.DecryptGCM(t.Context(), k, nonce, ct[:n], nil)
		if out != nil {
			t.Errorf("ciphertext truncated to %d bytes: returned plaintext", n)
		}
		wantErr(t, fmt.Sprintf("ciphertext truncated to %d bytes", n), err, hsm.ErrAuthFailed)
	}
	out, err := b.DecryptGCM(t.Context(), k, nonce, nil, nil)
	if out != nil {
		t.Error("nil ciphertext: returned plaintext")
	}
	wantErr(t, "nil ciphertext", err, hsm.ErrAuthFailed)
}

func testUnwrapCorrupted(t *testing.T, b hsm.Backend) {
	r := root(t, b, rootLabel)
	blob, err := b.GenerateWrappedAESKey(t.Context(), r, 32)
	if err != nil {
		t.Fatal(err)
	}
	for i := range blob {
		bad := bytes.Clone(blob)
		bad[i] ^= 0x01 << (i % 8)
		k, err := b.UnwrapAESKey(t.Context(), r, bad)
		if err == nil {
			_ = b.DestroyKey(t.Context(), k)
		}
		wantErr(t, fmt.Sprintf("blob byte %d flipped", i), err, hsm.ErrAuthFailed)
	}
	// Lengths are public, so a backend may refuse impossible ones as
	// invalid input instead.
	for _, n := range []int{0, 1, 8, 16, len(blob) - 8, len(blob) - 1} {
		k, err := b.UnwrapAESKey(t.Context(), r, blob[:n])
		if err == nil {
			_ = b.DestroyKey(t.Context(), k)
		}
		wantErr(t, fmt.Sprintf("blob truncated to %d bytes", n), err, hsm.ErrAuthFailed, hsm.ErrInvalidInput)
	}
	k, err := b.UnwrapAESKey(t.Context(), r, append(bytes.Clone(blob), make([]byte, 8)...))
	if err == nil {
		_ = b.DestroyKey(t.Context(), k)
	}
	wantErr(t, "blob extended by 8 bytes", err, hsm.ErrAuthFailed, hsm.ErrInvalidInput)

	// The intact blob still unwraps.
	unwrap(t, b, r, blob)
}

func testGenerateRandom(t *testing.T, b hsm.Backend) {
	seen := map[string]bool{}
	for range 64 {
		p, err := b.GenerateRandom(t.Context(), 32)
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != 32 {
			t.Fatalf("GenerateRandom(32) returned %d bytes", len(p))
		}
		if seen[string(p)] {
			t.Fatalf("GenerateRandom repeated %x", p)
		}
		seen[string(p)] = true
	}
	for _, n := range []int{1, 12, 1000, 1 << 20} {
		p, err := b.GenerateRandom(t.Context(), n)
		if err != nil {
			t.Fatalf("GenerateRandom(%d): %v", n, err)
		}
		if len(p) != n {
			t.Fatalf("GenerateRandom(%d) returned %d bytes", n, len(p))
		}
		if n == 1<<20 {
			// A coarse monobit check: a stuck or constant generator
			// fails it, a working one passes with overwhelming odds.
			ones := 0
			for _, c := range p {
				ones += bits.OnesCount8(c)
			}
			if frac := float64(ones) / float64(8*n); frac < 0.49 || frac > 0.51 {
				t.Errorf("GenerateRandom(1 MiB) has %.4f ones", frac)
			}
		}
	}
	for _, n := range []int{-1, 0, 1<<20 + 1} {
		p, err := b.GenerateRandom(t.Context(), n)
		if p != nil {
			t.Errorf("GenerateRandom(%d) returned bytes", n)
		}
		wantErr(t, fmt.Sprintf("GenerateRandom(%d)", n), err, hsm.ErrInvalidInput)
	}
}

func testDestroyKey(t *testing.T, b hsm.Backend) {
	r := root(t, b, rootLabel)
	k, blob := dataKey(t, b, r)
	nonce := iv(t)
	encrypt(t, b, k, nonce, []byte("before"), nil)
	for i := range 2 {
		if err := b.DestroyKey(t.Context(), k); err != nil {
			t.Fatalf("DestroyKey #%d: %v", i+1, err)
		}
	}
	_, err := b.EncryptGCM(t.Context(), k, nonce, []byte("after"), nil)
	wantErr(t, "EncryptGCM with a destroyed key", err, hsm.ErrNotFound)
	if err := b.DestroyKey(t.Context(), hsm.KeyHandle(1<<40+7)); err != nil {
		t.Errorf("DestroyKey of a handle that never existed: %v", err)
	}

	// Whatever DestroyKey says about a root key, the key must survive.
	_ = b.DestroyKey(t.Context(), r)
	if again := root(t, b, rootLabel); again != r {
		t.Errorf("after DestroyKey(root), EnsureRootKey returned %d, was %d", again, r)
	}
	unwrap(t, b, r, blob)
}

func testCanceledContext(t *testing.T, b hsm.Backend) {
	r := root(t, b, rootLabel)
	k, blob := dataKey(t, b, r)
	nonce := iv(t)
	ct := encrypt(t, b, k, nonce, []byte("x"), nil)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	check := func(what string, err error) {
		t.Helper()
		wantErr(t, what+" with a canceled context", err, context.Canceled)
	}
	_, err := b.EncryptGCM(ctx, k, nonce, []byte("x"), nil)
	check("EncryptGCM", err)
	_, err = b.DecryptGCM(ctx, k, nonce, ct, nil)
	check("DecryptGCM", err)
	_, err = b.GenerateWrappedAESKey(ctx, r, 32)
	check("GenerateWrappedAESKey", err)
	_, err = b.UnwrapAESKey(ctx, r, blob)
	check("UnwrapAESKey", err)
	check("DestroyKey", b.DestroyKey(ctx, k))
	_, err = b.EnsureRootKey(ctx, rootLabel)
	check("EnsureRootKey", err)
	_, err = b.GenerateRandom(ctx, 16)
	check("GenerateRandom", err)

	// Nothing was done: the key is still there.
	decrypt(t, b, k, nonce, ct, nil, []byte("x"))
}

func testUseAfterClose(t *testing.T, b hsm.Backend) {
	r := root(t, b, rootLabel)
	blob, err := b.GenerateWrappedAESKey(t.Context(), r, 32)
	if err != nil {
		t.Fatal(err)
	}
	k, err := b.UnwrapAESKey(t.Context(), r, blob)
	if err != nil {
		t.Fatal(err)
	}
	nonce := iv(t)
	ct := encrypt(t, b, k, nonce, []byte("x"), nil)

	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	check := func(what string, err error) {
		t.Helper()
		wantErr(t, what+" after Close", err, hsm.ErrClosed)
	}
	_, err = b.EncryptGCM(t.Context(), k, nonce, []byte("x"), nil)
	check("EncryptGCM", err)
	_, err = b.DecryptGCM(t.Context(), k, nonce, ct, nil)
	check("DecryptGCM", err)
	_, err = b.GenerateWrappedAESKey(t.Context(), r, 32)
	check("GenerateWrappedAESKey", err)
	_, err = b.UnwrapAESKey(t.Context(), r, blob)
	check("UnwrapAESKey", err)
	check("DestroyKey", b.DestroyKey(t.Context(), k))
	_, err = b.EnsureRootKey(t.Context(), rootLabel)
	check("EnsureRootKey", err)
	_, err = b.GenerateRandom(t.Context(), 16)
	check("GenerateRandom", err)
}

func testPoolSurvivesFailures(t *testing.T, b hsm.Backend) {
	r := root(t, b, rootLabel)
	k, blob := dataKey(t, b, r)
	nonce, pt, aad := iv(t), []byte("still works"), []byte("aad")
	ct := encrypt(t, b, k, nonce, pt, aad)
	badTag := bytes.Clone(ct)
	badTag[len(badTag)-1] ^= 1
	badBlob := bytes.Clone(blob)
	badBlob[0] ^= 1

	for i := range 50 {
		_, err := b.DecryptGCM(t.Context(), k, nonce, badTag, aad)
		wantErr(t, fmt.Sprintf("failed decrypt #%d", i), err, hsm.ErrAuthFailed)
	}
	decrypt(t, b, k, nonce, ct, aad, pt)
	for i := range 20 {
		_, err := b.UnwrapAESKey(t.Context(), r, badBlob)
		wantErr(t, fmt.Sprintf("failed unwrap #%d", i), err, hsm.ErrAuthFailed)
		_, err = b.DecryptGCM(t.Context(), k, nonce, ct, []byte("wrong"))
		wantErr(t, fmt.Sprintf("failed decrypt with wrong AAD #%d", i), err, hsm.ErrAuthFailed)
	}

	// Every pooled session must be healthy, not only the one that served
	// the last call: keep several calls in flight at once.
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 8 {
				out, err := b.DecryptGCM(t.Context(), k, nonce, ct, aad)
				if err != nil || !bytes.Equal(out, pt) {
					t.Errorf("decrypt after failures = %q, %v", out, err)
					return
				}
				if _, err := b.EncryptGCM(t.Context(), k, iv(t), pt, aad); err != nil {
					t.Errorf("encrypt after failures: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func testConcurrent(t *testing.T, b hsm.Backend) {
	r := root(t, b, rootLabel)
	shared, _ := dataKey(t, b, r)
	const workers, rounds = 16, 40
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			ctx := t.Context()
			blob, err := b.GenerateWrappedAESKey(ctx, r, 32)
			if err != nil {
				t.Errorf("worker %d: GenerateWrappedAESKey: %v", w, err)
				return
			}
			for i := range rounds {
				key := shared
				if i%10 == 0 {
					if key, err = b.UnwrapAESKey(ctx, r, blob); err != nil {
						t.Errorf("worker %d: UnwrapAESKey: %v", w, err)
						return
					}
				}
				pt := randomBytes(t, 1+(w*rounds+i)%200)
				aad := []byte(fmt.Sprintf("worker=%d round=%d", w, i))
				nonce := iv(t)
				ct, err := b.EncryptGCM(ctx, key, nonce, pt, aad)
				if err != nil {
					t.Errorf("worker %d: EncryptGCM: %v", w, err)
					return
				}
				out, err := b.DecryptGCM(ctx, key, nonce, ct, aad)
				if err != nil || !bytes.Equal(out, pt) {
					t.Errorf("worker %d: DecryptGCM = %x, %v; want %x", w, out, err, pt)
					return
				}
				if i%10 == 0 {
					if err := b.DestroyKey(ctx, key); err != nil {
						t.Errorf("worker %d: DestroyKey: %v", w, err)
						return
					}
				}
				if i%8 == 0 {
					if p, err := b.GenerateRandom(ctx, 16); err != nil || len(p) != 16 {
						t.Errorf("worker %d: GenerateRandom = %d bytes, %v", w, len(p), err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}
