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
