//go:build cgo

package pkcs11

import (
	"context"
	"fmt"
	"slices"
	"sync"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/hsm/hsmtest"
)

// BorrowSessionForTest takes one session out of the pool until release
// is called, to make the pool run dry.
func (t *Token) BorrowSessionForTest(ctx context.Context) (release func(), err error) {
	s, err := t.session(ctx, "borrow a session")
	if err != nil {
		return nil, err
	}
	return func() { t.put(s) }, nil
}

// LeaveOperationActiveForTest starts an AES-GCM encryption or decryption
// with key on every pooled session and leaves it unfinished, as a crash
// between C_*Init and C_* would.
func (t *Token) LeaveOperationActiveForTest(ctx context.Context, key hsm.KeyHandle, decrypt bool) error {
	var borrowed []p11.SessionHandle
	defer func() {
		for _, s := range borrowed {
			t.put(s)
		}
	}()
	for range t.size {
		s, err := t.session(ctx, "borrow a session")
		if err != nil {
			return err
		}
		borrowed = append(borrowed, s)
		k, err := t.object("leave an operation active", key)
		if err != nil {
			return err
		}
		params := p11.NewGCMParams(make([]byte, hsm.GCMIVSize), nil, 128)
		mech := []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}
		if decrypt {
			err = t.ctx.Ctx.DecryptInit(s, mech, k)
		} else {
			err = t.ctx.Ctx.EncryptInit(s, mech, k)
		}
		params.Free()
		if err != nil {
			return err
		}
	}
	return nil
}

// ModuleRefsForTest reports how many users hold the module at path.
func ModuleRefsForTest(path string) int {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	if m := modules[moduleKey(path)]; m != nil {
		return m.refs
	}
	return 0
}

// MarkTrustedForTest tries to set CKA_TRUSTED on key as the logged-in
// user, which PKCS#11 reserves for the SO.
func (t *Token) MarkTrustedForTest(ctx context.Context, key hsm.KeyHandle) error {
	s, err := t.session(ctx, "mark a key trusted")
	if err != nil {
		return err
	}
	defer t.put(s)
	k, err := t.object("mark a key trusted", key)
	if err != nil {
		return err
	}
	return t.ctx.SetAttributeValue(s, k, []*p11.Attribute{p11.NewAttribute(p11.CKA_TRUSTED, true)})
}

// BoolAttributesForTest reads boolean attributes of key.
func (t *Token) BoolAttributesForTest(ctx context.Context, key hsm.KeyHandle, types ...uint) (map[uint]bool, error) {
	s, err := t.session(ctx, "read attributes")
	if err != nil {
		return nil, err
	}
	defer t.put(s)
	tmpl := make([]*p11.Attribute, len(types))
	for i, typ := range types {
		tmpl[i] = p11.NewAttribute(typ, nil)
	}
	k, err := t.object("read attributes", key)
	if err != nil {
		return nil, err
	}
	attrs, err := t.ctx.Ctx.GetAttributeValue(s, k, tmpl)
	if err != nil {
		return nil, err
	}
	out := map[uint]bool{}
	for _, a := range attrs {
		out[a.Type] = attrBool(a)
	}
	return out, nil
}

// CountObjectsForTest counts the objects the user can see on the token,
// session objects of every session included.
func (t *Token) CountObjectsForTest(ctx context.Context) (int, error) {
	s, err := t.session(ctx, "count objects")
	if err != nil {
		return 0, err
	}
	defer t.put(s)
	if err := t.ctx.Ctx.FindObjectsInit(s, nil); err != nil {
		return 0, err
	}
	defer t.ctx.FindObjectsFinal(s)
	n := 0
	for {
		found, _, err := t.ctx.FindObjects(s, 100)
		if err != nil {
			return 0, err
		}
		if len(found) == 0 {
			return n, nil
		}
		n += len(found)
	}
}

// LeaveSignActiveForTest starts a signature (or a verification) with key
// and mech on every pooled session and leaves it unfinished.
func (t *Token) LeaveSignActiveForTest(ctx context.Context, key hsm.KeyHandle, mech uint, verify bool) error {
	var borrowed []p11.SessionHandle
	defer func() {
		for _, s := range borrowed {
			t.put(s)
		}
	}()
	for range t.size {
		s, err := t.session(ctx, "borrow a session")
		if err != nil {
			return err
		}
		borrowed = append(borrowed, s)
		k, err := t.object("leave an operation active", key)
		if err != nil {
			return err
		}
		m := []*p11.Mechanism{p11.NewMechanism(mech, nil)}
		if verify {
			err = t.ctx.Ctx.VerifyInit(s, m, k)
		} else {
			err = t.ctx.Ctx.SignInit(s, m, k)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// ClosePooledSessionsForTest closes every pooled session behind the
// pool's back (C_CloseSession on the borrowed handle, which then goes
// back into the pool), as a device that dropped its sessions would. The
// owner session, and so every loaded key, is left alone.
func (t *Token) ClosePooledSessionsForTest(ctx context.Context) error {
	var borrowed []p11.SessionHandle
	defer func() {
		for _, s := range borrowed {
			t.put(s)
		}
	}()
	for range t.size {
		s, err := t.session(ctx, "borrow a session")
		if err != nil {
			return err
		}
		borrowed = append(borrowed, s)
		if err := t.ctx.Ctx.CloseSession(s); err != nil && !isLost(err) {
			return err
		}
	}
	return nil
}

// CloseOwnerSessionForTest closes the owner session behind the Token's
// back, which destroys every key it loaded. No operation may be using
// those keys meanwhile: SoftHSM frees them under its feet (see
// FailNextCallsForTest).
func (t *Token) CloseOwnerSessionForTest(ctx context.Context) error {
	o, err := t.ownerSession(ctx, "borrow the owner session")
	if err != nil {
		return err
	}
	defer func() { t.owner <- o }()
	if err := t.ctx.Ctx.CloseSession(o.s); err != nil && !isLost(err) {
		return err
	}
	return nil
}

// FailNextCallsForTest makes the next n calls of any of the PKCS#11
// functions fns ("C_EncryptInit", "C_Sign", "C_UnwrapKey", ...) return
// rv instead of reaching the module. Rules add up; the newest is
// consulted first.
//
// For CKR_SESSION_HANDLE_INVALID and CKR_SESSION_CLOSED a pooled session
// really is closed first, as a device that dropped it would have done.
// The owner session is not: closing it destroys the keys it loaded, and
// SoftHSM 2.6.1 frees a session's objects without regard to operations
// that other threads are running with them (a use-after-free that shows
// up as another key's attributes). The Token cannot tell, and treats the
// owner session as lost with all its keys either way. To close the
// owner session for real, use CloseOwnerSessionForTest with no operation
// in flight.
func (t *Token) FailNextCallsForTest(rv uint, n int, fns ...string) {
	if n <= 0 {
		return
	}
	var mu sync.Mutex
	left := n
	var prev faultFunc
	if p := t.ctx.fault.Load(); p != nil {
		prev = *p
	}
	f := faultFunc(func(fn string, s p11.SessionHandle) error {
		if slices.Contains(fns, fn) {
			mu.Lock()
			hit := left > 0
			if hit {
				left--
			}
			mu.Unlock()
			if hit {
				if classifyRV(rv) == failSessionLost && s != 0 && uint64(s) != t.ownerHandle.Load() {
					_ = t.ctx.Ctx.CloseSession(s)
				}
				return p11.Error(rv)
			}
		}
		if prev != nil {
			return prev(fn, s)
		}
		return nil
	})
	t.ctx.fault.Store(&f)
}

// ClearFaultsForTest removes every fault injected.
func (t *Token) ClearFaultsForTest() { t.ctx.fault.Store(nil) }

// Stats counts what the Token did to recover from failures.
type Stats struct {
	Retries   uint64 // operations run a second time
	Replaced  uint64 // sessions replaced because they were lost or stuck
	OwnerLost uint64 // owner sessions found lost
	Relogins  uint64 // logins after Open's
}

// StatsForTest returns the recovery counters.
func (t *Token) StatsForTest() Stats {
	return Stats{
		Retries:   t.stats.retries.Load(),
		Replaced:  t.stats.replaced.Load(),
		OwnerLost: t.stats.ownerLost.Load(),
		Relogins:  t.stats.relogins.Load(),
	}
}

var _ hsmtest.FaultInjector = (*Token)(nil)

// opInitFunctions start every operation with a key.
var opInitFunctions = []string{"C_EncryptInit", "C_DecryptInit", "C_SignInit", "C_VerifyInit"}

// InjectFaultForTest implements hsmtest.FaultInjector: the next n calls
// that start an operation with a key fail with f's return value.
func (t *Token) InjectFaultForTest(f hsmtest.Fault, n int) {
	if n <= 0 {
		t.ClearFaultsForTest()
		return
	}
	var rv uint
	switch f {
	case hsmtest.FaultSessionLost:
		rv = p11.CKR_SESSION_HANDLE_INVALID
	case hsmtest.FaultDevice:
		rv = p11.CKR_DEVICE_ERROR
	case hsmtest.FaultKeyHandleInvalid:
		rv = p11.CKR_KEY_HANDLE_INVALID
	default:
		panic(fmt.Sprintf("unknown fault %d", f))
	}
	t.FailNextCallsForTest(rv, n, opInitFunctions...)
}

// LoseSessionsForTest implements hsmtest.FaultInjector.
func (t *Token) LoseSessionsForTest(ctx context.Context) error {
	return t.ClosePooledSessionsForTest(ctx)
}

// BorrowOwnerSessionForTest takes the owner session until release is
// called, so that operations that load keys must wait.
func (t *Token) BorrowOwnerSessionForTest(ctx context.Context) (release func(), err error) {
	o, err := t.ownerSession(ctx, "borrow the owner session")
	if err != nil {
		return nil, err
	}
	return func() { t.owner <- o }, nil
}

// CreateNonExtractableRootForTest creates a root key the way keyflow did
// before the root key ceremony: non-extractable, so never exportable.
func (t *Token) CreateNonExtractableRootForTest(ctx context.Context, label string) error {
	return t.do(ctx, "create a legacy root key", func(a *attempt) error {
		_, err := t.ctx.GenerateKey(a.s, aesKeyGen, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
			p11.NewAttribute(p11.CKA_VALUE_LEN, 32),
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_PRIVATE, true),
			p11.NewAttribute(p11.CKA_SENSITIVE, true),
			p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
			p11.NewAttribute(p11.CKA_WRAP, true),
			p11.NewAttribute(p11.CKA_UNWRAP, true),
			p11.NewAttribute(p11.CKA_LABEL, label),
		})
		return err
	})
}
