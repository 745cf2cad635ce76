//go:build cgo

package pkcs11

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"strings"
	"sync"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyflow/keyflow/hsm"
)

// Token is an open, logged-in PKCS#11 token. It implements [hsm.Backend]
// and is safe for concurrent use.
type Token struct {
	mod   *module
	ctx   *p11.Ctx
	slot  uint
	label string
	size  int

	// pool holds the idle sessions. Exactly size sessions are in
	// circulation (idle here or borrowed by an operation) until Close.
	pool chan p11.SessionHandle
	done chan struct{}

	closeOnce sync.Once

	mu sync.Mutex
	// retired sessions were left in a state that could not be cleared.
	// They stay open, unused, because closing them would destroy the
	// session objects (unwrapped keys) they created.
	retired []p11.SessionHandle
}

var _ hsm.Backend = (*Token)(nil)

// Open finds the token labelled cfg.TokenLabel, logs in as its user and
// opens cfg.Sessions sessions. The caller must Close the Token.
func Open(ctx context.Context, cfg Config) (*Token, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !validTokenLabel(cfg.TokenLabel) {
		return nil, fmt.Errorf("pkcs11: failed to open token: label must be 1 to %d bytes without trailing spaces: %w", maxLabelLen, hsm.ErrInvalidInput)
	}
	if cfg.Sessions < 0 {
		return nil, fmt.Errorf("pkcs11: failed to open token %q: negative session count: %w", cfg.TokenLabel, hsm.ErrInvalidInput)
	}
	size := cfg.Sessions
	if size == 0 {
		size = defaultSessions
	}
	path := cfg.Module
	if path == "" {
		path = DefaultModule()
	}

	mod, err := acquireModule(path)
	if err != nil {
		return nil, err
	}
	t := &Token{
		mod:   mod,
		ctx:   mod.ctx,
		label: cfg.TokenLabel,
		size:  size,
		pool:  make(chan p11.SessionHandle, size),
		done:  make(chan struct{}),
	}
	if err := t.open(cfg.PIN); err != nil {
		mod.release()
		return nil, err
	}
	return t, nil
}

func (t *Token) open(pin string) error {
	slot, err := findSlot(t.ctx, t.label)
	if err != nil {
		return err
	}
	t.slot = slot

	m := t.mod
	m.loginMu.Lock()
	defer m.loginMu.Unlock()

	opened := make([]p11.SessionHandle, 0, t.size)
	closeOpened := func() {
		for _, s := range opened {
			_ = t.ctx.CloseSession(s)
		}
	}
	for range t.size {
		s, err := t.ctx.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
		if err != nil {
			closeOpened()
			return fmt.Errorf("pkcs11: failed to open a session on token %q: %w", t.label, ckr(err))
		}
		opened = append(opened, s)
	}

	digest := m.pinDigest(pin)
	if rec := m.logins[slot]; rec != nil {
		// Another Token here is logged in, so C_Login would not check
		// the PIN: check it against the one that logged in.
		if !hmac.Equal(rec.pinDigest, digest) {
			closeOpened()
			return fmt.Errorf("pkcs11: failed to log in to token %q: %w", t.label, ckr(p11.Error(p11.CKR_PIN_INCORRECT)))
		}
		rec.tokens++
	} else {
		switch err := t.ctx.Login(opened[0], p11.CKU_USER, pin); {
		case err == nil:
		case isCKR(err, p11.CKR_USER_ALREADY_LOGGED_IN):
			// Code outside this package logged in; the PIN cannot be
			// checked, and accepting it unchecked would let any PIN in.
			closeOpened()
			return fmt.Errorf("pkcs11: failed to log in to token %q: other code in this process is logged in to it, so the PIN cannot be verified", t.label)
		default:
			closeOpened()
			return fmt.Errorf("pkcs11: failed to log in to token %q: %w", t.label, ckr(err))
		}
		m.logins[slot] = &login{tokens: 1, pinDigest: digest}
	}
	for _, s := range opened {
		t.pool <- s
	}
	return nil
}

// findSlot returns the slot holding the one initialised token labelled
// label.
func findSlot(ctx *p11.Ctx, label string) (uint, error) {
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("pkcs11: failed to list slots: %w", ckr(err))
	}
	var found []uint
	for _, s := range slots {
		info, err := ctx.GetTokenInfo(s)
		if err != nil {
			// A slot can lose its token between the two calls.
			continue
		}
		if info.Flags&p11.CKF_TOKEN_INITIALIZED != 0 && info.Label == label {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		return 0, fmt.Errorf("pkcs11: failed to find token %q: %w", label, hsm.ErrNotFound)
	case 1:
		return found[0], nil
	default:
		return 0, fmt.Errorf("pkcs11: failed to find token %q: %d tokens have that label", label, len(found))
	}
}

// Label returns the token's label.
func (t *Token) Label() string { return t.label }

// Close waits for operations in flight, closes every session (destroying
// every session object, so every unwrapped key) and releases the library.
// Calling Close again does nothing.
func (t *Token) Close() error {
	first := false
	t.closeOnce.Do(func() {
		first = true
		close(t.done)
	})
	if !first {
		return nil
	}
	// Wait for operations in flight to hand their sessions back.
	sessions := make([]p11.SessionHandle, 0, t.size)
	for range t.size {
		sessions = append(sessions, <-t.pool)
	}
	t.mu.Lock()
	sessions = append(sessions, t.retired...)
	t.retired = nil
	t.mu.Unlock()

	m := t.mod
	m.loginMu.Lock()
	var errs []error
	for _, s := range sessions {
		if err := t.ctx.CloseSession(s); err != nil && !isCKR(err, p11.CKR_SESSION_HANDLE_INVALID) && !isCKR(err, p11.CKR_SESSION_CLOSED) {
			errs = append(errs, ckr(err))
		}
	}
	// Closing the application's last session on a token logs it out.
	if rec := m.logins[t.slot]; rec != nil {
		if rec.tokens--; rec.tokens <= 0 {
			delete(m.logins, t.slot)
		}
	}
	m.loginMu.Unlock()
	t.mod.release()
	if len(errs) > 0 {
		return fmt.Errorf("pkcs11: failed to close sessions of token %q: %w", t.label, errors.Join(errs...))
	}
	return nil
}

// session borrows an idle session, waiting for one if all are busy. The
// caller must give it back with put.
func (t *Token) session(ctx context.Context, op string) (p11.SessionHandle, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	select {
	case <-t.done:
		return 0, closedErr(op)
	default:
	}
	select {
	case s := <-t.pool:
		select {
		case <-t.done:
			// Close is draining the pool; hand the session to it.
			t.pool <- s
			return 0, closedErr(op)
		default:
			return s, nil
		}
	case <-t.done:
		return 0, closedErr(op)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (t *Token) put(s p11.SessionHandle) { t.pool <- s }

// settle makes sure no operation is left active on s after one failed
// part way, and returns the session to put back in the pool: s itself, or
// a fresh session if s could not be cleared.
//
// PKCS#11 says a failed C_Encrypt, C_Decrypt or C_Sign ends the
// operation, and SoftHSM does so, but miekg/pkcs11 makes two calls per
// operation (one to learn the output size) and not every module follows
// the rule. A call with no active operation returns
// CKR_OPERATION_NOT_INITIALIZED at once, so the check is cheap; a call
// that does find one finishes it on a throwaway input, whose output is
// discarded.
func (t *Token) settle(s p11.SessionHandle) p11.SessionHandle {
	var probe [hsm.GCMTagSize]byte
	for range 3 {
		_, derr := t.ctx.Decrypt(s, probe[:])
		_, eerr := t.ctx.Encrypt(s, probe[:])
		_, serr := t.ctx.Sign(s, probe[:])
		verr := t.ctx.Verify(s, probe[:], probe[:])
		if isCKR(derr, p11.CKR_OPERATION_NOT_INITIALIZED) && isCKR(eerr, p11.CKR_OPERATION_NOT_INITIALIZED) &&
			isCKR(serr, p11.CKR_OPERATION_NOT_INITIALIZED) && isCKR(verr, p11.CKR_OPERATION_NOT_INITIALIZED) {
			return s
		}
		if isCKR(derr, p11.CKR_SESSION_HANDLE_INVALID) || isCKR(derr, p11.CKR_SESSION_CLOSED) {
			break
		}
		_ = t.ctx.FindObjectsFinal(s)
	}
	return t.replace(s)
}

// clearOperation ends whatever operation is active on s, if any. Each
// call finishes an operation of its kind, or fails at once if none is
// active.
func (t *Token) clearOperation(s p11.SessionHandle) {
	var probe [hsm.GCMTagSize]byte
	_, _ = t.ctx.Encrypt(s, probe[:])
	_, _ = t.ctx.Decrypt(s, probe[:])
	_, _ = t.ctx.Sign(s, probe[:])
	_ = t.ctx.Verify(s, probe[:], probe[:])
	_ = t.ctx.FindObjectsFinal(s)
}

// replace opens a fresh session to stand in for s and retires s. If no new
// session can be had, s goes back into service: a pool that shrank would
// make Close wait forever, and the next operation may still clear s.
func (t *Token) replace(s p11.SessionHandle) p11.SessionHandle {
	n, err := t.ctx.OpenSession(t.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return s
	}
	t.mu.Lock()
	t.retired = append(t.retired, s)
	t.mu.Unlock()
	return n
}

func closedErr(op string) error {
	return fmt.Errorf("pkcs11: failed to %s: %w", op, hsm.ErrClosed)
}

// ckrError presents a PKCS#11 return value without miekg's "pkcs11:"
// prefix, which would repeat ours, and still unwraps to the p11.Error.
type ckrError struct{ rv p11.Error }

func (e ckrError) Error() string {
	return strings.TrimPrefix(e.rv.Error(), "pkcs11: ")
}

func (e ckrError) Unwrap() error { return e.rv }

func ckr(err error) error {
	var rv p11.Error
	if errors.As(err, &rv) {
		return ckrError{rv}
	}
	return err
}
