//go:build cgo

package pkcs11

import (
	"context"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyflow/keyflow/hsm"
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
		params := p11.NewGCMParams(make([]byte, hsm.GCMIVSize), nil, 128)
		mech := []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}
		if decrypt {
			err = t.ctx.DecryptInit(s, mech, p11.ObjectHandle(key))
		} else {
			err = t.ctx.EncryptInit(s, mech, p11.ObjectHandle(key))
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
	return t.ctx.SetAttributeValue(s, p11.ObjectHandle(key), []*p11.Attribute{p11.NewAttribute(p11.CKA_TRUSTED, true)})
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
	attrs, err := t.ctx.GetAttributeValue(s, p11.ObjectHandle(key), tmpl)
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
	if err := t.ctx.FindObjectsInit(s, nil); err != nil {
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
		m := []*p11.Mechanism{p11.NewMechanism(mech, nil)}
		if verify {
			err = t.ctx.VerifyInit(s, m, p11.ObjectHandle(key))
		} else {
			err = t.ctx.SignInit(s, m, p11.ObjectHandle(key))
		}
		if err != nil {
			return err
		}
	}
	return nil
}
