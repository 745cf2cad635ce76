//go:build cgo

package pkcs11

import (
	"sync/atomic"

	p11 "github.com/miekg/pkcs11"
)

// cryptoki is the PKCS#11 library as a Token calls it: the shared
// *p11.Ctx, with a fault hook in front of the calls that operations
// make, so that tests can make the device fail on purpose. The hook is
// nil outside tests, and then each call costs one atomic load more.
//
// Calls made through the embedded Ctx directly (t.ctx.Ctx.Decrypt) skip
// the hook: settle and clearOperation probe sessions that way, so that a
// fault meant for an operation is not used up by the clean-up after it.
type cryptoki struct {
	*p11.Ctx
	fault atomic.Pointer[faultFunc]
}

// faultFunc decides whether the call of the PKCS#11 function fn (named
// as in the standard, "C_EncryptInit") on session s fails, and how. It
// returns nil to let the call through.
type faultFunc func(fn string, s p11.SessionHandle) error

func (c *cryptoki) inject(fn string, s p11.SessionHandle) error {
	if f := c.fault.Load(); f != nil {
		return (*f)(fn, s)
	}
	return nil
}

func (c *cryptoki) OpenSession(slot uint, flags uint) (p11.SessionHandle, error) {
	if err := c.inject("C_OpenSession", 0); err != nil {
		return 0, err
	}
	return c.Ctx.OpenSession(slot, flags)
}

func (c *cryptoki) Login(s p11.SessionHandle, userType uint, pin string) error {
	if err := c.inject("C_Login", s); err != nil {
		return err
	}
	return c.Ctx.Login(s, userType, pin)
}

func (c *cryptoki) EncryptInit(s p11.SessionHandle, m []*p11.Mechanism, o p11.ObjectHandle) error {
	if err := c.inject("C_EncryptInit", s); err != nil {
		return err
	}
	return c.Ctx.EncryptInit(s, m, o)
}

func (c *cryptoki) Encrypt(s p11.SessionHandle, data []byte) ([]byte, error) {
	if err := c.inject("C_Encrypt", s); err != nil {
		return nil, err
	}
	return c.Ctx.Encrypt(s, data)
}

func (c *cryptoki) DecryptInit(s p11.SessionHandle, m []*p11.Mechanism, o p11.ObjectHandle) error {
	if err := c.inject("C_DecryptInit", s); err != nil {
		return err
	}
	return c.Ctx.DecryptInit(s, m, o)
}

func (c *cryptoki) Decrypt(s p11.SessionHandle, data []byte) ([]byte, error) {
	if err := c.inject("C_Decrypt", s); err != nil {
		return nil, err
	}
	return c.Ctx.Decrypt(s, data)
}

func (c *cryptoki) SignInit(s p11.SessionHandle, m []*p11.Mechanism, o p11.ObjectHandle) error {
	if err := c.inject("C_SignInit", s); err != nil {
		return err
	}
	return c.Ctx.SignInit(s, m, o)
}

func (c *cryptoki) Sign(s p11.SessionHandle, data []byte) ([]byte, error) {
	if err := c.inject("C_Sign", s); err != nil {
		return nil, err
	}
	return c.Ctx.Sign(s, data)
}

func (c *cryptoki) VerifyInit(s p11.SessionHandle, m []*p11.Mechanism, o p11.ObjectHandle) error {
	if err := c.inject("C_VerifyInit", s); err != nil {
		return err
	}
	return c.Ctx.VerifyInit(s, m, o)
}

func (c *cryptoki) Verify(s p11.SessionHandle, data, sig []byte) error {
	if err := c.inject("C_Verify", s); err != nil {
		return err
	}
	return c.Ctx.Verify(s, data, sig)
}

func (c *cryptoki) GenerateKey(s p11.SessionHandle, m []*p11.Mechanism, tmpl []*p11.Attribute) (p11.ObjectHandle, error) {
	if err := c.inject("C_GenerateKey", s); err != nil {
		return 0, err
	}
	return c.Ctx.GenerateKey(s, m, tmpl)
}

func (c *cryptoki) GenerateKeyPair(s p11.SessionHandle, m []*p11.Mechanism, pub, priv []*p11.Attribute) (p11.ObjectHandle, p11.ObjectHandle, error) {
	if err := c.inject("C_GenerateKeyPair", s); err != nil {
		return 0, 0, err
	}
	return c.Ctx.GenerateKeyPair(s, m, pub, priv)
}

func (c *cryptoki) WrapKey(s p11.SessionHandle, m []*p11.Mechanism, wrapping, key p11.ObjectHandle) ([]byte, error) {
	if err := c.inject("C_WrapKey", s); err != nil {
		return nil, err
	}
	return c.Ctx.WrapKey(s, m, wrapping, key)
}

func (c *cryptoki) UnwrapKey(s p11.SessionHandle, m []*p11.Mechanism, unwrapping p11.ObjectHandle, blob []byte, tmpl []*p11.Attribute) (p11.ObjectHandle, error) {
	if err := c.inject("C_UnwrapKey", s); err != nil {
		return 0, err
	}
	return c.Ctx.UnwrapKey(s, m, unwrapping, blob, tmpl)
}

func (c *cryptoki) CreateObject(s p11.SessionHandle, tmpl []*p11.Attribute) (p11.ObjectHandle, error) {
	if err := c.inject("C_CreateObject", s); err != nil {
		return 0, err
	}
	return c.Ctx.CreateObject(s, tmpl)
}

func (c *cryptoki) DestroyObject(s p11.SessionHandle, o p11.ObjectHandle) error {
	if err := c.inject("C_DestroyObject", s); err != nil {
		return err
	}
	return c.Ctx.DestroyObject(s, o)
}

func (c *cryptoki) GetAttributeValue(s p11.SessionHandle, o p11.ObjectHandle, tmpl []*p11.Attribute) ([]*p11.Attribute, error) {
	if err := c.inject("C_GetAttributeValue", s); err != nil {
		return nil, err
	}
	return c.Ctx.GetAttributeValue(s, o, tmpl)
}

func (c *cryptoki) GenerateRandom(s p11.SessionHandle, n int) ([]byte, error) {
	if err := c.inject("C_GenerateRandom", s); err != nil {
		return nil, err
	}
	return c.Ctx.GenerateRandom(s, n)
}

func (c *cryptoki) FindObjectsInit(s p11.SessionHandle, tmpl []*p11.Attribute) error {
	if err := c.inject("C_FindObjectsInit", s); err != nil {
		return err
	}
	return c.Ctx.FindObjectsInit(s, tmpl)
}
