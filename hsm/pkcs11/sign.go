//go:build cgo

package pkcs11

import (
	"bytes"
	"context"
	"crypto"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyflow/keyflow/hsm"
)

var _ hsm.Signer = (*Token)(nil)

// digestInfoPrefix is the DER DigestInfo of each hash up to the digest
// (RFC 8017 section 9.2, note 1). CKM_RSA_PKCS signs whatever it is
// given, so the prefix is added here: the HSM's SHA*_RSA_PKCS mechanisms
// would hash again, and keyflow's callers pass digests.
var digestInfoPrefix = map[crypto.Hash][]byte{
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

// hashMechs maps a hash to its PKCS#11 digest mechanism and MGF1 type.
var hashMechs = map[crypto.Hash]struct{ hash, mgf uint }{
	crypto.SHA1:   {p11.CKM_SHA_1, p11.CKG_MGF1_SHA1},
	crypto.SHA256: {p11.CKM_SHA256, p11.CKG_MGF1_SHA256},
	crypto.SHA384: {p11.CKM_SHA384, p11.CKG_MGF1_SHA384},
	crypto.SHA512: {p11.CKM_SHA512, p11.CKG_MGF1_SHA512},
}

// maxEd25519Message bounds what pure Ed25519 signs in one call: the
// message crosses into the HSM whole. keyflow's API limits messages far
// below this.
const maxEd25519Message = 16 << 20

// signMechanism checks p and input and returns the mechanism and the
// bytes to hand to C_Sign or C_Verify. Every failure is the caller's
// mistake, found before the device is touched.
func signMechanism(p hsm.SignParams, input []byte) ([]*p11.Mechanism, []byte, error) {
	if p.Scheme == hsm.SchemeEd25519 {
		if p.Hash != 0 {
			return nil, nil, fmt.Errorf("Ed25519 signs the message itself, with no hash (got %v)", p.Hash)
		}
		if len(input) > maxEd25519Message {
			return nil, nil, fmt.Errorf("message of %d bytes is over the %d-byte limit", len(input), maxEd25519Message)
		}
		return []*p11.Mechanism{p11.NewMechanism(ckmEdDSA, nil)}, input, nil
	}
	if p.Hash != crypto.SHA256 && p.Hash != crypto.SHA384 && p.Hash != crypto.SHA512 {
		return nil, nil, fmt.Errorf("scheme %q takes SHA-256, SHA-384 or SHA-512, not %v", p.Scheme, p.Hash)
	}
	if len(input) != p.Hash.Size() {
		return nil, nil, fmt.Errorf("a %v digest is %d bytes, not %d", p.Hash, p.Hash.Size(), len(input))
	}
	switch p.Scheme {
	case hsm.SchemeECDSA:
		return []*p11.Mechanism{p11.NewMechanism(p11.CKM_ECDSA, nil)}, input, nil
	case hsm.SchemeRSAPKCS1:
		prefix := digestInfoPrefix[p.Hash]
		return []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS, nil)}, append(bytes.Clone(prefix), input...), nil
	case hsm.SchemeRSAPSS:
		m := hashMechs[p.Hash]
		params := p11.NewPSSParams(m.hash, m.mgf, uint(p.Hash.Size()))
		return []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_PSS, params)}, input, nil
	default:
		return nil, nil, fmt.Errorf("unknown signature scheme %q", p.Scheme)
	}
}

// Sign signs input with a private key inside the HSM. For ECDSA, RSA
// PKCS#1 v1.5 and RSA-PSS, input is the digest of the message under
// p.Hash, and must be exactly that long; ECDSA signatures are r||s
// (IEEE P1363), see hsm.ECDSASigToDER for DER. For Ed25519, input is the
// message. Bad parameters and a digest of the wrong length return
// hsm.ErrInvalidInput before the HSM is asked, and so does a key that
// cannot sign with p.Scheme.
func (t *Token) Sign(ctx context.Context, key hsm.KeyHandle, p hsm.SignParams, input []byte) ([]byte, error) {
	const op = "sign"
	mech, data, err := signMechanism(p, input)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: failed to %s: %v: %w", op, err, hsm.ErrInvalidInput)
	}
	var sig []byte
	err = t.do(ctx, op, func(a *attempt) error {
		k, err := t.object(op, key)
		if err != nil {
			return err
		}
		if err := t.signInit(a.s, mech, k); err != nil {
			t.afterInitFailure(a, err)
			return keyErr(op, err)
		}
		if sig, err = t.ctx.Sign(a.s, data); err != nil {
			t.settle(a)
			return fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sig, nil
}

// Verify checks signature over input with a public key inside the HSM.
// Parameters and input are as for Sign. It returns nil for a valid
// signature and hsm.ErrAuthFailed for any other, malformed ones (wrong
// length, values out of range) included.
func (t *Token) Verify(ctx context.Context, publicKey hsm.KeyHandle, p hsm.SignParams, input, signature []byte) error {
	const op = "verify a signature"
	mech, data, err := signMechanism(p, input)
	if err != nil {
		return fmt.Errorf("pkcs11: failed to %s: %v: %w", op, err, hsm.ErrInvalidInput)
	}
	if len(signature) == 0 {
		// PKCS#11 takes no empty signature (SoftHSM: CKR_ARGUMENTS_BAD);
		// a one-byte one ends the operation with a length error.
		signature = []byte{0}
	}
	return t.do(ctx, op, func(a *attempt) error {
		k, err := t.object(op, publicKey)
		if err != nil {
			return err
		}
		if err := t.verifyInit(a.s, mech, k); err != nil {
			t.afterInitFailure(a, err)
			return keyErr(op, err)
		}
		err = t.ctx.Verify(a.s, data, signature)
		switch {
		case err == nil:
			return nil
		case isCKR(err, p11.CKR_SIGNATURE_INVALID), isCKR(err, p11.CKR_SIGNATURE_LEN_RANGE):
			// C_Verify always ends the operation.
			return fmt.Errorf("pkcs11: failed to %s: %w", op, hsm.ErrAuthFailed)
		default:
			t.settle(a)
			return fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
		}
	})
}

// signInit and verifyInit start an operation, clearing one that a
// previous failure left active, as encryptInit does.
func (t *Token) signInit(s p11.SessionHandle, mech []*p11.Mechanism, key p11.ObjectHandle) error {
	err := t.ctx.SignInit(s, mech, key)
	if isCKR(err, p11.CKR_OPERATION_ACTIVE) {
		t.clearOperation(s)
		err = t.ctx.SignInit(s, mech, key)
	}
	return err
}

func (t *Token) verifyInit(s p11.SessionHandle, mech []*p11.Mechanism, key p11.ObjectHandle) error {
	err := t.ctx.VerifyInit(s, mech, key)
	if isCKR(err, p11.CKR_OPERATION_ACTIVE) {
		t.clearOperation(s)
		err = t.ctx.VerifyInit(s, mech, key)
	}
	return err
}
