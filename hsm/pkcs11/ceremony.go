//go:build cgo

package pkcs11

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyflow/keyflow/hsm"
)

// Root key ceremony (hsm.RootKeyCeremony).
//
// Root keys that EnsureRootKey creates are sensitive and extractable, but
// only under a wrapping key marked CKA_TRUSTED (CKA_WRAP_WITH_TRUSTED),
// and PKCS#11 lets only the security officer set CKA_TRUSTED (SoftHSM
// 2.6 enforces both: a user-made key gets CKR_ATTRIBUTE_READ_ONLY for
// CKA_TRUSTED, and wrapping the root under an untrusted key gets
// CKR_KEY_NOT_WRAPPABLE). So the user PIN alone, which every worker
// holds, can use the root key but never export it; an export needs the
// SO PIN, and happens in a ceremony.

var _ hsm.RootKeyCeremony = (*Token)(nil)

// rootKeyBlobSize is an AES-256 key wrapped with AES-KWP.
const rootKeyBlobSize = 40

// ExportRootKey implements hsm.RootKeyCeremony. It logs the user out,
// logs the security officer in to create kek as a short-lived trusted
// token object (the SO cannot create private objects), logs the user in
// again, wraps the root key under it and destroys it. Logging out
// destroys this application's private session objects on the token, so
// every loaded key handle goes stale (ErrKeyHandleInvalid); run it on a
// Token nobody else in the process uses, as the offline CLI does.
func (t *Token) ExportRootKey(ctx context.Context, label string, kek []byte, soPIN string) ([]byte, error) {
	const op = "export the root key"
	if len(kek) != hsm.CeremonyKEKSize || label == "" || soPIN == "" {
		return nil, fmt.Errorf("pkcs11: failed to %s: need a label, a %d-byte KEK and the SO PIN: %w", op, hsm.CeremonyKEKSize, hsm.ErrInvalidInput)
	}
	m := t.mod
	m.loginMu.Lock()
	defer m.loginMu.Unlock()
	if rec := m.logins[t.slot]; rec == nil || rec.tokens != 1 {
		return nil, fmt.Errorf("pkcs11: failed to %s: other Tokens in this process use token %q; the ceremony needs it alone", op, t.label)
	}
	rootMu.Lock()
	defer rootMu.Unlock()
	s, err := t.session(ctx, op)
	if err != nil {
		return nil, err
	}
	defer t.put(s)

	found, err := t.findObjects(s, rootTemplate(label))
	if err != nil {
		return nil, fmt.Errorf("pkcs11: failed to %s %q: %w", op, label, err)
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("pkcs11: failed to %s %q: %d keys have that label: %w", op, label, len(found), hsm.ErrNotFound)
	}
	root := found[0]
	attrs, err := t.ctx.GetAttributeValue(s, root, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_EXTRACTABLE, nil),
		p11.NewAttribute(p11.CKA_WRAP_WITH_TRUSTED, nil),
	})
	if err != nil {
		return nil, fmt.Errorf("pkcs11: failed to %s %q: failed to read its attributes: %w", op, label, ckr(err))
	}
	if !attrBool(attrs[0]) {
		return nil, fmt.Errorf("pkcs11: failed to %s %q: it was created non-extractable, so no one can ever take it out of this token, not even wrapped: %w", op, label, hsm.ErrNotExportable)
	}

	// From here on the user is logged out at times: whatever happens,
	// log the user back in before returning, and move the epoch on
	// because the private session objects are gone.
	t.epoch.Add(1)
	relogin := func() error {
		_ = t.ctx.Logout(s)
		if err := t.ctx.Login(s, p11.CKU_USER, t.pin); err != nil && !isCKR(err, p11.CKR_USER_ALREADY_LOGGED_IN) {
			return fmt.Errorf("failed to log the user in again: %w", ckr(err))
		}
		return nil
	}
	if err := t.ctx.Logout(s); err != nil {
		return nil, fmt.Errorf("pkcs11: failed to %s: failed to log the user out: %w", op, ckr(err))
	}
	var kekObj p11.ObjectHandle
	if err := t.ctx.Login(s, p11.CKU_SO, soPIN); err != nil {
		rerr := relogin()
		return nil, fmt.Errorf("pkcs11: failed to %s: the security officer's login failed: %w", op, errors.Join(ckr(err), rerr))
	}
	tmpLabel := "keyflow-ceremony-" + randomLabelSuffix()
	kekObj, err = t.ctx.CreateObject(s, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_VALUE, kek),
		p11.NewAttribute(p11.CKA_TOKEN, true), // the SO cannot make session objects outlive its login
		p11.NewAttribute(p11.CKA_PRIVATE, false),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_TRUSTED, true),
		p11.NewAttribute(p11.CKA_WRAP, true),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_LABEL, tmpLabel),
	})
	if err != nil {
		rerr := relogin()
		return nil, fmt.Errorf("pkcs11: failed to %s: failed to create the trusted ceremony key: %w", op, errors.Join(ckr(err), rerr))
	}
	if err := relogin(); err != nil {
		return nil, fmt.Errorf("pkcs11: failed to %s: %w (the temporary key %q is left on the token; delete it)", op, err, tmpLabel)
	}
	// SoftHSM hands out new object handles after a login change: find the
	// KEK (and the root) again by label.
	kekFound, err := t.findObjects(s, []*p11.Attribute{p11.NewAttribute(p11.CKA_LABEL, tmpLabel)})
	if err != nil || len(kekFound) != 1 {
		return nil, fmt.Errorf("pkcs11: failed to %s: failed to find the ceremony key again (%v); delete the key %q from the token", op, err, tmpLabel)
	}
	kekObj = kekFound[0]
	defer func() { _ = t.ctx.DestroyObject(s, kekObj) }()
	if found, err = t.findObjects(s, rootTemplate(label)); err != nil || len(found) != 1 {
		return nil, fmt.Errorf("pkcs11: failed to %s %q: failed to find it again after the ceremony login: %v", op, label, err)
	}
	root = found[0]
	blob, err := t.ctx.WrapKey(s, kwp, kekObj, root)
	if err != nil {
		return nil, keyErr(op, err)
	}
	return blob, nil
}

// ImportRootKey implements hsm.RootKeyCeremony: kek enters as a temporary
// session object that can only unwrap, and the root key comes out as a
// token object with the protection EnsureRootKey gives it.
func (t *Token) ImportRootKey(ctx context.Context, label string, kek, blob []byte) error {
	const op = "import the root key"
	if len(kek) != hsm.CeremonyKEKSize || label == "" {
		return fmt.Errorf("pkcs11: failed to %s: need a label and a %d-byte KEK: %w", op, hsm.CeremonyKEKSize, hsm.ErrInvalidInput)
	}
	if len(blob) != rootKeyBlobSize {
		return fmt.Errorf("pkcs11: failed to %s: a wrapped root key is %d bytes, not %d: %w", op, rootKeyBlobSize, len(blob), hsm.ErrInvalidInput)
	}
	rootMu.Lock()
	defer rootMu.Unlock()
	return t.do(ctx, op, func(a *attempt) error {
		found, err := t.findObjects(a.s, rootTemplate(label))
		if err != nil {
			return fmt.Errorf("pkcs11: failed to %s %q: %w", op, label, err)
		}
		if len(found) > 0 {
			return fmt.Errorf("pkcs11: failed to %s %q: the token already has a key with that label: %w", op, label, hsm.ErrExists)
		}
		k, err := t.ctx.CreateObject(a.s, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
			p11.NewAttribute(p11.CKA_VALUE, kek),
			p11.NewAttribute(p11.CKA_TOKEN, false),
			p11.NewAttribute(p11.CKA_PRIVATE, true),
			p11.NewAttribute(p11.CKA_SENSITIVE, true),
			p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
			p11.NewAttribute(p11.CKA_WRAP, false),
			p11.NewAttribute(p11.CKA_UNWRAP, true),
			p11.NewAttribute(p11.CKA_ENCRYPT, false),
			p11.NewAttribute(p11.CKA_DECRYPT, false),
		})
		if err != nil {
			return fmt.Errorf("pkcs11: failed to %s: failed to load the ceremony key: %w", op, ckr(err))
		}
		defer func() { _ = t.ctx.DestroyObject(a.s, k) }()
		if _, err := t.ctx.UnwrapKey(a.s, kwp, k, blob, rootKeyTemplate(label)); err != nil {
			if isAuthFailure(err) {
				return fmt.Errorf("pkcs11: failed to %s: the ceremony key does not open the wrapped root key: %w", op, hsm.ErrAuthFailed)
			}
			return keyErr(op, err)
		}
		return nil
	})
}

// rootKeyTemplate is every root key's protection: an AES-256 token key,
// private and sensitive, that wraps and unwraps and does nothing else, and
// leaves the token only wrapped under a trusted key (see ExportRootKey).
func rootKeyTemplate(label string) []*p11.Attribute {
	return []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
		p11.NewAttribute(p11.CKA_WRAP_WITH_TRUSTED, true),
		p11.NewAttribute(p11.CKA_WRAP, true),
		p11.NewAttribute(p11.CKA_UNWRAP, true),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_LABEL, label),
	}
}

func randomLabelSuffix() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
