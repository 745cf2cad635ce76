//go:build cgo

package pkcs11

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyflow/keyflow/hsm"
)

// Token is an open, logged-in PKCS#11 token. It implements [hsm.Backend]
// and is safe for concurrent use.
type Token struct {
	mod   *module
	ctx   *cryptoki
	slot  uint
	label string
	size  int
	// pin is kept to log in again after the device dropped every session
	// of the application (a token removed and reinserted). It is never
	// logged nor put in an error.
	pin string

	// pool holds the idle sessions. Exactly size sessions are in
	// circulation (idle here or borrowed by an operation) until Close.
	pool chan p11.SessionHandle
	// owner holds the owner session when it is idle: the one session
	// that creates objects which outlive an operation (unwrapped and
	// imported keys). It is never closed nor recycled before Close, so
	// those objects live until they are destroyed.
	owner chan ownerSession
	done  chan struct{}
	// epoch is the generation of session objects; it moves on when they
	// are all destroyed (the owner session lost, or a logout), which
	// makes every handle tagged with an older one stale. See tag and
	// object.
	epoch atomic.Uint32
	// ownerHandle is the owner session's handle, for tests and
	// debugging; it changes only when the owner session is replaced.
	ownerHandle atomic.Uint64
	// loginRefused is set once the token refused the PIN on a login
	// again, which is then never attempted again.
	loginRefused atomic.Bool

	closeOnce sync.Once
	observe   func(op string, d time.Duration, err error)                  // Config.Observe
	trace     func(context.Context, string) (context.Context, func(error)) // Config.Trace

	mu sync.Mutex
	// retired owner sessions were left in a state that could not be
	// cleared. They stay open, unused, because closing them would
	// destroy the session objects (unwrapped keys) they created.
	retired []p11.SessionHandle

	stats struct {
		retries   atomic.Uint64 // operations run a second time
		replaced  atomic.Uint64 // sessions replaced, lost or stuck
		ownerLost atomic.Uint64 // owner sessions lost (with their objects)
		relogins  atomic.Uint64 // logins after the first
	}
}

// ownerSession is the owner session, as it waits in Token.owner.
type ownerSession struct {
	s p11.SessionHandle
}

var _ hsm.Backend = (*Token)(nil)

// Open finds the token labelled cfg.TokenLabel, logs in as its user and
// opens cfg.Sessions pooled sessions and the owner session. The caller
// must Close the Token.
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
		ctx:   &cryptoki{Ctx: mod.ctx},
		label: cfg.TokenLabel,
		size:  size,
		pin:   cfg.PIN,
		pool:  make(chan p11.SessionHandle, size),
		owner: make(chan ownerSession, 1),
		done:  make(chan struct{}),

		observe: cfg.Observe,
		trace:   cfg.Trace,
	}
	if err := t.open(cfg.PIN); err != nil {
		mod.release()
		return nil, err
	}
	return t, nil
}

func (t *Token) open(pin string) error {
	slot, err := findSlot(t.ctx.Ctx, t.label)
	if err != nil {
		return err
	}
	t.slot = slot

	m := t.mod
	m.loginMu.Lock()
	defer m.loginMu.Unlock()

	opened := make([]p11.SessionHandle, 0, t.size+1)
	closeOpened := func() {
		for _, s := range opened {
			_ = t.ctx.CloseSession(s)
		}
	}
	for range t.size + 1 {
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
	t.epoch.Store(1)
	t.ownerHandle.Store(uint64(opened[t.size]))
	t.owner <- ownerSession{s: opened[t.size]}
	for _, s := range opened[:t.size] {
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
	sessions := make([]p11.SessionHandle, 0, t.size+1)
	for range t.size {
		sessions = append(sessions, <-t.pool)
	}
	sessions = append(sessions, (<-t.owner).s)
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

// ownerSession borrows the owner session, waiting while another
// operation holds it. The caller must give it back to t.owner.
func (t *Token) ownerSession(ctx context.Context, op string) (ownerSession, error) {
	if err := ctx.Err(); err != nil {
		return ownerSession{}, err
	}
	select {
	case <-t.done:
		return ownerSession{}, closedErr(op)
	default:
	}
	select {
	case o := <-t.owner:
		select {
		case <-t.done:
			t.owner <- o
			return ownerSession{}, closedErr(op)
		default:
			return o, nil
		}
	case <-t.done:
		return ownerSession{}, closedErr(op)
	case <-ctx.Done():
		return ownerSession{}, ctx.Err()
	}
}

// settle makes sure no operation is left active on a.s after one failed
// part way, replacing the session if it cannot be cleared.
//
// PKCS#11 says a failed C_Encrypt, C_Decrypt or C_Sign ends the
// operation, and SoftHSM does so, but miekg/pkcs11 makes two calls per
// operation (one to learn the output size) and not every module follows
// the rule. A call with no active operation returns
// CKR_OPERATION_NOT_INITIALIZED at once, so the check is cheap; a call
// that does find one finishes it on a throwaway input, whose output is
// discarded. A session that turns out to be lost is left as it is, for
// run to replace. The probes bypass the fault hook.
func (t *Token) settle(a *attempt) {
	raw := t.ctx.Ctx
	var probe [hsm.GCMTagSize]byte
	for range 3 {
		_, derr := raw.Decrypt(a.s, probe[:])
		_, eerr := raw.Encrypt(a.s, probe[:])
		_, serr := raw.Sign(a.s, probe[:])
		verr := raw.Verify(a.s, probe[:], probe[:])
		if isCKR(derr, p11.CKR_OPERATION_NOT_INITIALIZED) && isCKR(eerr, p11.CKR_OPERATION_NOT_INITIALIZED) &&
			isCKR(serr, p11.CKR_OPERATION_NOT_INITIALIZED) && isCKR(verr, p11.CKR_OPERATION_NOT_INITIALIZED) {
			return
		}
		if isLost(derr) || isLost(eerr) || isLost(serr) || isLost(verr) {
			return
		}
		_ = raw.FindObjectsFinal(a.s)
	}
	t.replaceStuck(a)
}

// clearOperation ends whatever operation is active on s, if any. Each
// call finishes an operation of its kind, or fails at once if none is
// active.
func (t *Token) clearOperation(s p11.SessionHandle) {
	raw := t.ctx.Ctx
	var probe [hsm.GCMTagSize]byte
	_, _ = raw.Encrypt(s, probe[:])
	_, _ = raw.Decrypt(s, probe[:])
	_, _ = raw.Sign(s, probe[:])
	_ = raw.Verify(s, probe[:], probe[:])
	_ = raw.FindObjectsFinal(s)
}

// replaceStuck opens a fresh session to stand in for a.s, which is alive
// but stuck. A pooled session holds no objects that outlive an operation
// and is closed; the owner session holds every loaded key and is set
// aside, still open, until Close. If no new session can be had, a.s goes
// back into service: a pool that shrank would make Close wait forever,
// and the next operation may still clear it.
func (t *Token) replaceStuck(a *attempt) {
	n, err := t.openSession()
	if err != nil {
		return
	}
	t.stats.replaced.Add(1)
	old := a.s
	a.s = n
	if a.owner {
		t.ownerHandle.Store(uint64(n))
		t.mu.Lock()
		t.retired = append(t.retired, old)
		t.mu.Unlock()
		return
	}
	_ = t.ctx.Ctx.CloseSession(old)
}

func closedErr(op string) error {
	return fmt.Errorf("pkcs11: failed to %s: %w", op, hsm.ErrClosed)
}

// ckrError presents a PKCS#11 return value without miekg's "pkcs11:"
// prefix, which would repeat ours, and still unwraps to the p11.Error.
//
// It also matches the hsm sentinels that the return value means, so
// that every error made with ckr carries them: hsm.ErrDevice for device
// and session failures, hsm.ErrKeyHandleInvalid and hsm.ErrNotFound for
// a key object that is gone. Return values that an operation turns into
// a verdict (CKR_GENERAL_ERROR for a GCM tag mismatch on SoftHSM) never
// get here.
type ckrError struct{ rv p11.Error }

func (e ckrError) Error() string {
	return strings.TrimPrefix(e.rv.Error(), "pkcs11: ")
}

func (e ckrError) Unwrap() error { return e.rv }

func (e ckrError) Is(target error) bool {
	switch target {
	case hsm.ErrDevice:
		switch classifyRV(uint(e.rv)) {
		case failDevice, failSessionLost, failLoggedOut:
			return true
		}
	case hsm.ErrKeyHandleInvalid, hsm.ErrNotFound:
		return classifyRV(uint(e.rv)) == failKeyHandle
	}
	return false
}

func ckr(err error) error {
	var rv p11.Error
	if errors.As(err, &rv) {
		return ckrError{rv}
	}
	return err
}
