//go:build cgo

package pkcs11

import (
	"context"
	"fmt"
	"sync"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyflow/keyflow/hsm"
)

// initMu serialises InitToken: two callers must not pick the same free
// slot, nor two tokens get one label.
var initMu sync.Mutex

// InitToken initialises a fresh token labelled label in a free slot of
// module (empty means DefaultModule()), sets its SO PIN and its user PIN.
// If a token with that label exists it returns an error wrapping
// ErrTokenExists and changes nothing.
func InitToken(ctx context.Context, module, label, soPIN, userPIN string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !validTokenLabel(label) {
		return fmt.Errorf("pkcs11: failed to initialize token: label must be 1 to %d bytes without trailing spaces: %w", maxLabelLen, hsm.ErrInvalidInput)
	}
	if soPIN == "" || userPIN == "" {
		return fmt.Errorf("pkcs11: failed to initialize token %q: empty PIN: %w", label, hsm.ErrInvalidInput)
	}
	if module == "" {
		module = DefaultModule()
	}
	initMu.Lock()
	defer initMu.Unlock()

	mod, err := acquireModule(module)
	if err != nil {
		return err
	}
	defer mod.release()
	c := mod.ctx

	if _, err := findSlot(c, label); err == nil {
		return fmt.Errorf("pkcs11: failed to initialize token %q: %w", label, ErrTokenExists)
	}
	slot, err := freeSlot(c)
	if err != nil {
		return fmt.Errorf("pkcs11: failed to initialize token %q: %w", label, err)
	}
	if err := c.InitToken(slot, soPIN, label); err != nil {
		return fmt.Errorf("pkcs11: failed to initialize token %q: %w", label, ckr(err))
	}
	// Slot numbers are not to be trusted past C_InitToken: SoftHSM keeps
	// this one until the library is next initialised and then numbers the
	// slot from the token's serial, and other modules may move it at once.
	slot, err = findSlot(c, label)
	if err != nil {
		return fmt.Errorf("pkcs11: failed to find token %q after initializing it: %w", label, err)
	}
	s, err := c.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("pkcs11: failed to open a session on new token %q: %w", label, ckr(err))
	}
	defer func() { _ = c.CloseSession(s) }()
	if err := c.Login(s, p11.CKU_SO, soPIN); err != nil {
		return fmt.Errorf("pkcs11: failed to log in as SO to new token %q: %w", label, ckr(err))
	}
	defer func() { _ = c.Logout(s) }()
	if err := c.InitPIN(s, userPIN); err != nil {
		return fmt.Errorf("pkcs11: failed to set the user PIN of new token %q: %w", label, ckr(err))
	}
	return nil
}

// freeSlot returns a slot whose token is not initialised yet.
func freeSlot(c *p11.Ctx) (uint, error) {
	slots, err := c.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("failed to list slots: %w", ckr(err))
	}
	for _, s := range slots {
		info, err := c.GetTokenInfo(s)
		if err != nil {
			continue
		}
		if info.Flags&p11.CKF_TOKEN_INITIALIZED == 0 {
			return s, nil
		}
	}
	return 0, fmt.Errorf("failed to find a slot with an uninitialized token: %w", hsm.ErrNotFound)
}
