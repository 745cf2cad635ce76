package hsmtest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyflow/keyflow/hsm"
)

// Failure handling. A backend that talks to a device may implement
// [FaultInjector] so that the suite can make the device fail on purpose;
// the tests that need it are skipped on backends that do not. Beyond the
// doc comments of package hsm, the suite holds those backends to these
// rules:
//   - after the device dropped every session the backend runs operations
//     on (LoseSessionsForTest), every operation succeeds, with the keys
//     loaded before;
//   - a session lost once, under any one operation, is invisible to the
//     caller;
//   - a device failure that persists returns hsm.ErrDevice, from every
//     operation, and never hsm.ErrAuthFailed (a decryption or
//     verification that could not run did not fail to authenticate);
//     once it clears the backend serves again;
//   - a key that the device says is gone returns hsm.ErrKeyHandleInvalid,
//     which also matches hsm.ErrNotFound;
//   - an operation waiting for a session when none is free gives up with
//     its context's error, and the backend serves again once sessions
//     come back (with SessionBorrower);
//   - under concurrent load while faults come and go, no call panics or
//     hangs, every error is one of those above, and the backend serves
//     again when the faults stop.

// Fault is a failure that a FaultInjector makes the device report.
type Fault int

// Faults.
const (
	// FaultSessionLost: the device session the call runs on is gone, and
	// really is (PKCS#11: CKR_SESSION_HANDLE_INVALID).
	FaultSessionLost Fault = iota + 1
	// FaultDevice: the device failed (PKCS#11: CKR_DEVICE_ERROR).
	FaultDevice
	// FaultKeyHandleInvalid: the key the call uses is not there (PKCS#11:
	// CKR_KEY_HANDLE_INVALID). The key itself is not harmed.
	FaultKeyHandleInvalid
)

func (f Fault) String() string {
	switch f {
	case FaultSessionLost:
		return "session lost"
	case FaultDevice:
		return "device error"
	case FaultKeyHandleInvalid:
		return "key handle invalid"
	default:
		return fmt.Sprintf("Fault(%d)", int(f))
	}
}

// FaultInjector is an optional test hook for backends that talk to a
// device, so that the suite can check that they survive it failing.
type FaultInjector interface {
	// InjectFaultForTest makes the next n device calls that start an
	// operation with a key (encrypt, decrypt, sign, verify, MAC) fail
	// with f. Faults add up; n <= 0 removes every fault injected.
	InjectFaultForTest(f Fault, n int)
	// LoseSessionsForTest makes the device drop every session that the
	// backend runs operations on, behind its back, as a device that
	// closed idle sessions would. Sessions that hold loaded keys are
	// spared, so those keys stay usable.
	LoseSessionsForTest(ctx context.Context) error
}

var faultTests = []asymRunner{
	{"SessionLossRecovery", testSessionLoss},
	{"TransientSessionFault", testTransientSessionFault},
	{"DeviceFault", testDeviceFault},
	{"KeyHandleFault", testKeyHandleFault},
	{"PoolExhaustion", testPoolExhaustion},
	{"FaultsUnderLoad", testFaultsUnderLoad},
}

func needFaults(t *testing.T, b hsm.Backend) FaultInjector {
	t.Helper()
	fi, ok := b.(FaultInjector)
	if !ok {
		t.Skipf("%T does not implement hsmtest.FaultInjector", b)
	}
	return fi
}

// workload is a set of loaded keys and one call of each operation on
// them, each checking its own result.
type workload struct {
	root hsm.KeyHandle
	ops  []workOp
}

type workOp struct {
	name string
	fn   func(ctx context.Context) error
}

// newWorkload loads an AES key, and an EC key pair and an HMAC key if the
// backend has those abilities, and prepares the inputs of each operation.
func newWorkload(t *testing.T, b hsm.Backend) *workload {
	t.Helper()
	ctx := t.Context()
	r := root(t, b, rootLabel)
	aes, _ := dataKey(t, b, r)
	w := &workload{root: r}

	nonce, pt, aad := iv(t), []byte("loaded before the faults"), []byte("aad")
	ct := encrypt(t, b, aes, nonce, pt, aad)
	w.ops = append(w.ops,
		workOp{"EncryptGCM", func(ctx context.Context) error {
			pt := randomBytes(t, 40)
			nonce := iv(t)
			ct, err := b.EncryptGCM(ctx, aes, nonce, pt, aad)
			if err != nil {
				return fmt.Errorf("EncryptGCM: %w", err)
			}
			// Check with a decryption that no fault can reach: the
			// ciphertext must be right, not only returned.
			if err := checkGCM(b, aes, nonce, ct, aad, pt); err != nil {
				return fmt.Errorf("EncryptGCM produced a bad ciphertext: %v", err)
			}
			return nil
		}},
		workOp{"DecryptGCM", func(ctx context.Context) error {
			out, err := b.DecryptGCM(ctx, aes, nonce, ct, aad)
			if err != nil {
				return fmt.Errorf("DecryptGCM: %w", err)
			}
			if !bytes.Equal(out, pt) {
				return fmt.Errorf("DecryptGCM returned %x, want %x", out, pt)
			}
			return nil
		}},
	)

	if a, ok := b.(asymBackend); ok {
		kp := newKeyPair(t, a, r, hsm.KeyPairSpec{Algorithm: "EC", Curve: "P-256"})
		p := hsm.SignParams{Scheme: hsm.SchemeECDSA, Hash: crypto.SHA256}
		d := sha256.Sum256([]byte("signed before the faults"))
		sig, err := a.Sign(ctx, kp.priv, p, d[:])
		if err != nil {
			t.Fatalf("Sign: %v", err)
		}
		w.ops = append(w.ops,
			workOp{"Sign", func(ctx context.Context) error {
				sig, err := a.Sign(ctx, kp.priv, p, d[:])
				if err != nil {
					return fmt.Errorf("Sign: %w", err)
				}
				if err := goVerify(kp.pub, p, d[:], sig); err != nil {
					return fmt.Errorf("Sign produced a bad signature: %v", err)
				}
				return nil
			}},
			workOp{"Verify", func(ctx context.Context) error {
				if err := a.Verify(ctx, kp.pubKey, p, d[:], sig); err != nil {
					return fmt.Errorf("Verify: %w", err)
				}
				return nil
			}},
		)
	}

	if macs, ok := b.(hsm.MACs); ok {
		blob, err := macs.GenerateWrappedSecret(ctx, r, 32)
		if err != nil {
			t.Fatalf("GenerateWrappedSecret: %v", err)
		}
		k, err := macs.UnwrapHMACKey(ctx, r, blob)
		if err != nil {
			t.Fatalf("UnwrapHMACKey: %v", err)
		}
		t.Cleanup(func() { _ = b.DestroyKey(context.Background(), k) })
		data := []byte("authenticated before the faults")
		want, err := macs.HMACSHA256(ctx, k, data)
		if err != nil {
			t.Fatalf("HMACSHA256: %v", err)
		}
		w.ops = append(w.ops, workOp{"HMACSHA256", func(ctx context.Context) error {
			got, err := macs.HMACSHA256(ctx, k, data)
			if err != nil {
				return fmt.Errorf("HMACSHA256: %w", err)
			}
			if !bytes.Equal(got, want) {
				return fmt.Errorf("HMACSHA256 returned %x, want %x", got, want)
			}
			return nil
		}})
	}
	return w
}

// checkGCM decrypts ct and compares, on a context of its own.
func checkGCM(b hsm.Backend, k hsm.KeyHandle, nonce, ct, aad, want []byte) error {
	// A fault injected for someone else may land here: try until the
	// answer is about the ciphertext.
	var out []byte
	var err error
	for range 8 {
		if out, err = b.DecryptGCM(context.Background(), k, nonce, ct, aad); err == nil || errors.Is(err, hsm.ErrAuthFailed) {
			break
		}
	}
	if err != nil {
		return err
	}
	if !bytes.Equal(out, want) {
		return fmt.Errorf("decrypts to %x, want %x", out, want)
	}
	return nil
}

// all runs every operation once.
func (w *workload) all(ctx context.Context) error {
	for _, op := range w.ops {
		if err := op.fn(ctx); err != nil {
			return err
		}
	}
	return nil
}

func testSessionLoss(t *testing.T, b hsm.Backend) {
	fi := needFaults(t, b)
	w := newWorkload(t, b)
	ctx := t.Context()
	// Twice: the sessions that replaced the lost ones must be replaceable
	// too.
	for loss := range 2 {
		if err := fi.LoseSessionsForTest(ctx); err != nil {
			t.Fatalf("LoseSessionsForTest: %v", err)
		}
		for i := range 100 {
			if err := w.all(ctx); err != nil {
				t.Fatalf("after losing the sessions (%d), round %d: %v", loss+1, i, err)
			}
		}
	}
	// Keys still load and serve.
	k, _ := dataKey(t, b, w.root)
	nonce := iv(t)
	ct := encrypt(t, b, k, nonce, []byte("new key"), nil)
	decrypt(t, b, k, nonce, ct, nil, []byte("new key"))
}

func testTransientSessionFault(t *testing.T, b hsm.Backend) {
	fi := needFaults(t, b)
	w := newWorkload(t, b)
	ctx := t.Context()
	for _, op := range w.ops {
		for i := range 3 {
			fi.InjectFaultForTest(FaultSessionLost, 1)
			if err := op.fn(ctx); err != nil {
				t.Errorf("%s with one lost session (#%d): %v", op.name, i+1, err)
			}
			fi.InjectFaultForTest(FaultSessionLost, 0)
		}
	}
	if err := w.all(ctx); err != nil {
		t.Fatalf("after the faults: %v", err)
	}
}

func testDeviceFault(t *testing.T, b hsm.Backend) {
	fi := needFaults(t, b)
	w := newWorkload(t, b)
	ctx := t.Context()
	for _, op := range w.ops {
		// Persistent: no number of retries gets past it.
		fi.InjectFaultForTest(FaultDevice, 1000)
		err := op.fn(ctx)
		fi.InjectFaultForTest(FaultDevice, 0)
		wantErr(t, op.name+" with the device failing", err, hsm.ErrDevice)
		if errors.Is(err, hsm.ErrAuthFailed) {
			t.Errorf("%s with the device failing: %v says the input did not authenticate", op.name, err)
		}
		if err := op.fn(ctx); err != nil {
			t.Errorf("%s after the device recovered: %v", op.name, err)
		}
	}
}

func testKeyHandleFault(t *testing.T, b hsm.Backend) {
	fi := needFaults(t, b)
	w := newWorkload(t, b)
	ctx := t.Context()
	for _, op := range w.ops {
		fi.InjectFaultForTest(FaultKeyHandleInvalid, 1)
		err := op.fn(ctx)
		fi.InjectFaultForTest(FaultKeyHandleInvalid, 0)
		wantErr(t, op.name+" with the key gone", err, hsm.ErrKeyHandleInvalid)
		wantErr(t, op.name+" with the key gone", err, hsm.ErrNotFound)
		if err := op.fn(ctx); err != nil {
			t.Errorf("%s after the fault: %v", op.name, err)
		}
	}
}

func testPoolExhaustion(t *testing.T, b hsm.Backend) {
	borrower, ok := b.(SessionBorrower)
	if !ok {
		t.Skipf("%T does not implement hsmtest.SessionBorrower", b)
	}
	w := newWorkload(t, b)
	var held []func()
	releaseAll := func() {
		for _, release := range held {
			release()
		}
		held = nil
	}
	defer releaseAll()
	for len(held) < 1024 {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		release, err := borrower.BorrowSessionForTest(ctx)
		cancel()
		if err != nil {
			wantErr(t, "borrowing from a dry pool", err, context.DeadlineExceeded)
			break
		}
		held = append(held, release)
	}
	for _, op := range w.ops {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		start := time.Now()
		err := op.fn(ctx)
		cancel()
		wantErr(t, op.name+" with every session taken", err, context.DeadlineExceeded)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s took %v to give up", op.name, d)
		}
	}
	releaseAll()
	for i := range 3 {
		if err := w.all(t.Context()); err != nil {
			t.Fatalf("after the sessions came back (%d): %v", i, err)
		}
	}
}

func testFaultsUnderLoad(t *testing.T, b hsm.Backend) {
	fi := needFaults(t, b)
	w := newWorkload(t, b)
	const (
		workers  = 16
		duration = time.Second
		deadline = 60 * time.Second
	)
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()

	stop := make(chan struct{})
	var calls, failures atomic.Int64
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				op := w.ops[(g+i)%len(w.ops)]
				err := op.fn(ctx)
				calls.Add(1)
				if err == nil {
					continue
				}
				failures.Add(1)
				if !errors.Is(err, hsm.ErrDevice) && !errors.Is(err, hsm.ErrKeyHandleInvalid) {
					t.Errorf("worker %d: %s under faults: %v", g, op.name, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		faults := []Fault{FaultSessionLost, FaultDevice, FaultKeyHandleInvalid}
		end := time.Now().Add(duration)
		for i := 0; time.Now().Before(end); i++ {
			fi.InjectFaultForTest(faults[i%len(faults)], 1+i%3)
			if i%50 == 49 {
				if err := fi.LoseSessionsForTest(ctx); err != nil {
					t.Errorf("LoseSessionsForTest under load: %v", err)
				}
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
		t.Fatalf("operations under faults did not finish in %v (deadlock?)\n%s", deadline, buf[:runtime.Stack(buf, true)])
	}
	fi.InjectFaultForTest(FaultDevice, 0)
	t.Logf("%d calls, %d failed", calls.Load(), failures.Load())

	for i := range 3 {
		if err := w.all(t.Context()); err != nil {
			t.Fatalf("after the faults stopped (%d): %v", i, err)
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close after the faults: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after the faults (a session was not handed back)")
	}
}
