//go:build cgo

package pkcs11

import (
	"context"
	"errors"
	"fmt"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyflow/keyflow/hsm"
)

// This file is how a Token survives a device that fails: which failures
// it retries, on which session, and how key handles are checked. The
// package documentation ("Failure handling") is the summary.

// failure is what a PKCS#11 return value says about what to do next.
type failure int

const (
	failOther       failure = iota // the operation's own result: surface it
	failSessionLost                // the session is gone: replace it, retry
	failLoggedOut                  // the session is not logged in: log in, retry
	failDevice                     // the device failed: retry once
	failKeyHandle                  // the key object is gone: surface it (roots excepted)
)

// classify looks for a PKCS#11 return value in err. Errors that an
// operation has already turned into a verdict (hsm.ErrAuthFailed for a
// tag mismatch, which SoftHSM reports as CKR_GENERAL_ERROR) do not carry
// the return value, so they are never retried nor called device errors.
func classify(err error) failure {
	var rv p11.Error
	if !errors.As(err, &rv) {
		return failOther
	}
	return classifyRV(uint(rv))
}

func classifyRV(rv uint) failure {
	switch rv {
	case p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED:
		return failSessionLost
	case p11.CKR_USER_NOT_LOGGED_IN:
		return failLoggedOut
	case p11.CKR_DEVICE_ERROR, p11.CKR_DEVICE_MEMORY, p11.CKR_DEVICE_REMOVED,
		p11.CKR_TOKEN_NOT_PRESENT, p11.CKR_GENERAL_ERROR:
		return failDevice
	case p11.CKR_KEY_HANDLE_INVALID, p11.CKR_OBJECT_HANDLE_INVALID,
		p11.CKR_WRAPPING_KEY_HANDLE_INVALID, p11.CKR_UNWRAPPING_KEY_HANDLE_INVALID:
		return failKeyHandle
	default:
		return failOther
	}
}

// isLost reports whether err says the session no longer exists.
func isLost(err error) bool { return classify(err) == failSessionLost }

// deviceSide reports whether err is about the device, the session or the
// key object rather than the input, so that a check which failed for
// such a reason is not reported as bad input.
func deviceSide(err error) bool { return classify(err) != failOther }

// attempt is one run of an operation: the session it runs on, which the
// operation may swap for a fresh one (settle, run), and whether that is
// the owner session.
type attempt struct {
	s     p11.SessionHandle
	owner bool
}

// do runs fn on a pooled session, retrying once as the package
// documentation says, and puts back whichever session fn leaves in the
// attempt, also if fn panics.
func (t *Token) do(ctx context.Context, op string, fn func(a *attempt) error) (err error) {
	if t.trace != nil {
		var end func(error)
		ctx, end = t.trace(ctx, op)
		defer func() { end(err) }()
	}
	if t.observe != nil {
		defer t.observed(op, time.Now(), &err)
	}
	s, err := t.session(ctx, op)
	if err != nil {
		return err
	}
	a := &attempt{s: s}
	defer func() { t.put(a.s) }()
	return t.run(ctx, op, a, fn)
}

// doOwner runs fn on the owner session, the only one that creates
// objects which outlive the call (unwrapped and imported keys).
func (t *Token) doOwner(ctx context.Context, op string, fn func(a *attempt) error) (err error) {
	if t.trace != nil {
		var end func(error)
		ctx, end = t.trace(ctx, op)
		defer func() { end(err) }()
	}
	if t.observe != nil {
		defer t.observed(op, time.Now(), &err)
	}
	o, err := t.ownerSession(ctx, op)
	if err != nil {
		return err
	}
	a := &attempt{s: o.s, owner: true}
	defer func() { t.owner <- ownerSession{s: a.s} }()
	return t.run(ctx, op, a, fn)
}

// observed reports an operation to Config.Observe: its time, waiting for
// a session included, and its error.
func (t *Token) observed(op string, start time.Time, err *error) {
	t.observe(op, time.Since(start), *err)
}

// run calls fn, and again after each recovery that a failure calls for:
// a fresh session for a lost one, a login for a logged-out one, a second
// try after a device error, a new lookup of the root keys after an
// invalid key handle. Each recovery is made at most once per operation,
// so an operation runs at most five times, and normally once or twice; a
// failure whose recovery was already made is returned. Chaining matters
// after a token reset: the retry on a fresh session is the one that
// finds the root key handle stale.
//
// Every operation of this package may run more than once: each either
// only reads and computes, or destroys what it created before it
// returns (the temporary keys of GenerateWrapped*), or keeps an object
// only when it succeeds.
func (t *Token) run(ctx context.Context, op string, a *attempt, fn func(a *attempt) error) error {
	var done [failKeyHandle + 1]bool
	for {
		err := fn(a)
		if err == nil {
			return nil
		}
		c := classify(err)
		if c == failOther || done[c] {
			return err
		}
		done[c] = true
		switch c {
		case failSessionLost:
			if oerr := t.replaceLost(a); oerr != nil {
				return fmt.Errorf("pkcs11: failed to %s: the session was lost (%v) and no new one could be opened: %w", op, returnValue(err), deviceErr(oerr))
			}
		case failLoggedOut:
			if lerr := t.login(a.s); lerr != nil {
				return fmt.Errorf("pkcs11: failed to %s: the session was logged out (%v) and logging in again failed: %w", op, returnValue(err), deviceErr(lerr))
			}
		case failDevice:
			// A device error may be transient; one more try costs little.
		case failKeyHandle:
			// A session object that is gone stays gone. But a logout
			// (SoftHSM reports private objects it no longer shows as
			// invalid handles) calls for a login, and a root key is a
			// token object, found again by its label when a token reset
			// changed its handle.
			relogged := false
			if !t.loggedIn(a.s) {
				if lerr := t.login(a.s); lerr != nil {
					return err
				}
				relogged = true
			}
			if !t.refreshRoots(a.s) && !relogged {
				return err
			}
		}
		if ctx.Err() != nil {
			return err
		}
		t.stats.retries.Add(1)
	}
}

// returnValue is the PKCS#11 return value in err, for messages.
func returnValue(err error) error {
	var rv p11.Error
	if errors.As(err, &rv) {
		return ckrError{rv}
	}
	return err
}

// deviceErr makes sure err wraps hsm.ErrDevice: it says why recovery
// failed, and recovery failing is a device failure whatever the code.
func deviceErr(err error) error {
	err = ckr(err)
	if errors.Is(err, hsm.ErrDevice) {
		return err
	}
	return fmt.Errorf("%w: %w", hsm.ErrDevice, err)
}

// replaceLost puts a fresh session in place of a lost one. The lost
// handle is dropped, never closed: the module says it no longer exists,
// and a module may give its number to the next session it opens. If no
// session can be opened (the token is still out), the lost handle stays
// in circulation so that the pool keeps its size, and the next operation
// that draws it tries again.
func (t *Token) replaceLost(a *attempt) error {
	n, err := t.openSession()
	if err != nil {
		return err
	}
	t.stats.replaced.Add(1)
	a.s = n
	if a.owner {
		// The session objects the lost owner session made died with it.
		t.ownerHandle.Store(uint64(n))
		t.nextEpoch()
		t.stats.ownerLost.Add(1)
		return nil
	}
	// A device that drops one session often drops them all: find out
	// now whether the owner session went too, so that handles of the
	// objects it held fail fast as stale instead of reaching the device.
	t.checkOwner()
	return nil
}

// checkOwner replaces the owner session if it is lost. It does not wait:
// if the owner session is busy, its own operation will find out.
func (t *Token) checkOwner() {
	var o ownerSession
	select {
	case o = <-t.owner:
	default:
		return
	}
	defer func() { t.owner <- o }()
	if _, err := t.ctx.GetSessionInfo(o.s); !isLost(err) {
		return
	}
	n, err := t.openSession()
	if err != nil {
		return
	}
	t.stats.replaced.Add(1)
	t.stats.ownerLost.Add(1)
	t.ownerHandle.Store(uint64(n))
	t.nextEpoch()
	o = ownerSession{s: n}
}

// nextEpoch starts a new generation of session objects: every handle
// tagged with an older one is stale from now on.
func (t *Token) nextEpoch() {
	for {
		old := t.epoch.Load()
		if t.epoch.CompareAndSwap(old, old%epochMask+1) { // 1 to epochMask; 0 means untagged
			return
		}
	}
}

// openSession opens a session and makes sure the user is logged in on
// it: if every session of the application was closed (a token removed
// and reinserted), the login went with them.
func (t *Token) openSession() (p11.SessionHandle, error) {
	s, err := t.ctx.OpenSession(t.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return 0, err
	}
	if t.loggedIn(s) {
		return s, nil
	}
	if err := t.login(s); err != nil {
		_ = t.ctx.Ctx.CloseSession(s)
		return 0, err
	}
	return s, nil
}

// loggedIn reports whether the user is logged in, as session s sees it.
// If the module cannot say, it assumes so.
func (t *Token) loggedIn(s p11.SessionHandle) bool {
	info, err := t.ctx.GetSessionInfo(s)
	if err != nil {
		return true
	}
	return info.State != p11.CKS_RO_PUBLIC_SESSION && info.State != p11.CKS_RW_PUBLIC_SESSION
}

// errLoginDisabled is returned instead of logging in again after a login
// was refused for its PIN.
var errLoginDisabled = errors.New("logging in again is disabled: the token refused the PIN before")

// login logs the user in again with the PIN given to Open. Login state
// belongs to the application, so one login serves every session.
//
// A login that was needed means the application had been logged out,
// which destroys every private session object (PKCS#11 C_Logout): every
// loaded key. The epoch moves on so that their handles are stale.
//
// A PIN that the token refuses is never tried again: each failure counts
// towards locking the user PIN, and a Token that retried on every
// operation would lock it within seconds.
func (t *Token) login(s p11.SessionHandle) error {
	if t.loginRefused.Load() {
		return errLoginDisabled
	}
	m := t.mod
	m.loginMu.Lock()
	defer m.loginMu.Unlock()
	if t.loginRefused.Load() {
		return errLoginDisabled
	}
	err := t.ctx.Login(s, p11.CKU_USER, t.pin)
	switch {
	case err == nil:
		t.stats.relogins.Add(1)
		t.nextEpoch()
		return nil
	case isCKR(err, p11.CKR_USER_ALREADY_LOGGED_IN):
		return nil
	case isCKR(err, p11.CKR_PIN_INCORRECT), isCKR(err, p11.CKR_PIN_LOCKED),
		isCKR(err, p11.CKR_PIN_EXPIRED), isCKR(err, p11.CKR_PIN_INVALID),
		isCKR(err, p11.CKR_PIN_LEN_RANGE):
		t.loginRefused.Store(true)
		return ckr(err)
	default:
		return ckr(err)
	}
}

// Key handles.
//
// A KeyHandle that this package returns is one of:
//   - a session object (unwrapped or imported key): the object handle in
//     the low 48 bits and the owner-session epoch that created it in the
//     15 bits above. When the owner session is lost the epoch moves on,
//     and handles of the old epoch are refused without asking the
//     device, so a module that reuses object handle numbers can never
//     give a stale handle another key;
//   - a root key: rootRef plus an index into the module's table of root
//     keys by token and label, so that the handle outlives a token reset
//     that changes the object handle (see refreshRoots);
//   - anything else a caller passes (epoch 0) goes to the device as is.
const (
	objectBits = 48
	objectMask = 1<<objectBits - 1
	epochMask  = 1<<15 - 1
	rootRef    = 1 << 63
)

// staleHandleError is a handle refused before it reached the device.
type staleHandleError struct{ op string }

func (e staleHandleError) Error() string {
	return "pkcs11: failed to " + e.op + ": " + hsm.ErrKeyHandleInvalid.Error() + " (its session is gone; load the key again)"
}

func (e staleHandleError) Is(target error) bool {
	return target == hsm.ErrKeyHandleInvalid || target == hsm.ErrNotFound
}

// tag makes the KeyHandle of a session object created in epoch. A module
// whose handles do not fit in 48 bits cannot be used; the caller must
// destroy the object.
func tag(o p11.ObjectHandle, epoch uint32) (hsm.KeyHandle, error) {
	if uint64(o) > objectMask {
		return 0, fmt.Errorf("the module returned object handle %#x, which does not fit in %d bits", uint64(o), objectBits)
	}
	return hsm.KeyHandle(uint64(epoch)<<objectBits | uint64(o)), nil
}

// object returns the object handle that h stands for, or a
// staleHandleError if h belongs to a lost owner session or is a root
// reference that does not exist.
func (t *Token) object(op string, h hsm.KeyHandle) (p11.ObjectHandle, error) {
	if h&rootRef != 0 {
		o, ok := t.mod.rootObject(uint64(h &^ rootRef))
		if !ok {
			return 0, staleHandleError{op}
		}
		return o, nil
	}
	if e := uint32(h>>objectBits) & epochMask; e != 0 && e != t.epoch.Load() {
		return 0, staleHandleError{op}
	}
	return p11.ObjectHandle(h & objectMask), nil
}

// rootKey is a root key known to the module: the token it is on, its
// label and its current object handle.
type rootKey struct {
	token, label string
	obj          p11.ObjectHandle
}

// rootHandle records the object handle of a root key and returns the
// KeyHandle that stands for it, the same for every Token of the module.
func (m *module) rootHandle(token, label string, obj p11.ObjectHandle) hsm.KeyHandle {
	m.rootsMu.Lock()
	defer m.rootsMu.Unlock()
	for i := range m.roots {
		if r := &m.roots[i]; r.token == token && r.label == label {
			r.obj = obj
			return hsm.KeyHandle(rootRef | uint64(i))
		}
	}
	m.roots = append(m.roots, rootKey{token: token, label: label, obj: obj})
	return hsm.KeyHandle(rootRef | uint64(len(m.roots)-1))
}

func (m *module) rootObject(i uint64) (p11.ObjectHandle, bool) {
	m.rootsMu.Lock()
	defer m.rootsMu.Unlock()
	if i >= uint64(len(m.roots)) {
		return 0, false
	}
	return m.roots[i].obj, true
}

// refreshRoots looks up every known root key of this token again by its
// label, on s, and reports whether any object handle changed: then an
// operation that failed with an invalid key handle may have used a stale
// root handle, and is worth one more try. Lookups that fail change
// nothing.
func (t *Token) refreshRoots(s p11.SessionHandle) bool {
	m := t.mod
	m.rootsMu.Lock()
	var mine []rootKey
	var idx []int
	for i, r := range m.roots {
		if r.token == t.label {
			mine = append(mine, r)
			idx = append(idx, i)
		}
	}
	m.rootsMu.Unlock()

	changed := false
	for j, r := range mine {
		found, err := t.findObjects(s, rootTemplate(r.label))
		if err != nil || len(found) != 1 || found[0] == r.obj {
			continue
		}
		if t.checkRootKey(s, found[0]) != nil {
			continue
		}
		m.rootsMu.Lock()
		if m.roots[idx[j]].obj == r.obj {
			m.roots[idx[j]].obj = found[0]
		}
		m.rootsMu.Unlock()
		changed = true
	}
	return changed
}

func rootTemplate(label string) []*p11.Attribute {
	return []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_LABEL, label),
	}
}
