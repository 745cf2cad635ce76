//go:build cgo

package pkcs11

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha1" // OAEP hashes, by crypto.Hash
	_ "crypto/sha256"
	_ "crypto/sha512"
	"crypto/subtle"
	"fmt"
	"hash"
	"math/big"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyflow/keyflow/hsm"
)

var _ hsm.RSAEncrypter = (*Token)(nil)

// errOAEP is the one error every failed OAEP decryption returns, whatever
// failed: the length, the range of the integer, the padding or the
// label. Saying which would make a padding oracle (Manger's attack).
var errOAEP = fmt.Errorf("pkcs11: failed to decrypt with RSA-OAEP: %w", hsm.ErrAuthFailed)

func validOAEPHash(h crypto.Hash) bool {
	return h == crypto.SHA1 || h == crypto.SHA256 || h == crypto.SHA384 || h == crypto.SHA512
}

// EncryptOAEP encrypts plaintext to an RSA public key object (from
// ImportPublicKey) with RSA-OAEP, hash serving for both the label hash
// and MGF1 (SHA-1, SHA-256, SHA-384 or SHA-512).
//
// Encryption uses only the public key, so it is done in Go (crypto/rsa)
// with the modulus and exponent read from the object: SoftHSM 2.6.1 has
// OAEP with SHA-1 only, and its CKM_RSA_PKCS_OAEP ignores the label
// (pSourceData) altogether. The ciphertext is always as long as the
// modulus. A plaintext too long for the key returns hsm.ErrInvalidInput.
func (t *Token) EncryptOAEP(ctx context.Context, publicKey hsm.KeyHandle, hash crypto.Hash, plaintext, label []byte) ([]byte, error) {
	const op = "encrypt with RSA-OAEP"
	if !validOAEPHash(hash) {
		return nil, fmt.Errorf("pkcs11: failed to %s: hash must be SHA-1, SHA-256, SHA-384 or SHA-512, not %v: %w", op, hash, hsm.ErrInvalidInput)
	}
	pub, err := t.rsaPublicKey(ctx, op, publicKey)
	if err != nil {
		return nil, err
	}
	ct, err := rsa.EncryptOAEP(hash.New(), rand.Reader, pub, plaintext, label)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: failed to %s: %v: %w", op, err, hsm.ErrInvalidInput)
	}
	if len(ct) != pub.Size() {
		return nil, fmt.Errorf("pkcs11: failed to %s: ciphertext is %d bytes for a %d-byte modulus", op, len(ct), pub.Size())
	}
	return ct, nil
}

// rsaPublicKey reads an RSA public-key object that may encrypt.
func (t *Token) rsaPublicKey(ctx context.Context, op string, key hsm.KeyHandle) (*rsa.PublicKey, error) {
	var pub *rsa.PublicKey
	err := t.do(ctx, op, func(a *attempt) error {
		k, err := t.object(op, key)
		if err != nil {
			return err
		}
		attrs, err := t.ctx.GetAttributeValue(a.s, k, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, nil),
			p11.NewAttribute(p11.CKA_KEY_TYPE, nil),
		})
		if err != nil {
			return keyErr(op, err)
		}
		if attrUint(attrs[0]) != p11.CKO_PUBLIC_KEY || attrUint(attrs[1]) != p11.CKK_RSA {
			return fmt.Errorf("pkcs11: failed to %s: the key is not an RSA public key: %w", op, hsm.ErrInvalidInput)
		}
		attrs, err = t.ctx.GetAttributeValue(a.s, k, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_ENCRYPT, nil),
			p11.NewAttribute(p11.CKA_MODULUS, nil),
			p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, nil),
		})
		if err != nil {
			return keyErr(op, err)
		}
		if !attrBool(attrs[0]) {
			return fmt.Errorf("pkcs11: failed to %s: the key may not encrypt: %w", op, hsm.ErrInvalidInput)
		}
		n := new(big.Int).SetBytes(attrs[1].Value)
		e := new(big.Int).SetBytes(attrs[2].Value)
		if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
			return fmt.Errorf("pkcs11: failed to %s: unusable public exponent: %w", op, hsm.ErrInvalidInput)
		}
		pub = &rsa.PublicKey{N: n, E: int(e.Int64())}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return pub, nil
}

// DecryptOAEP decrypts an RSA-OAEP ciphertext with a private key inside
// the HSM. hash serves for both the label hash and MGF1.
//
// SHA-1 with an empty label runs entirely in the HSM (CKM_RSA_PKCS_OAEP).
// Everything else — SHA-256, SHA-384, SHA-512, and any non-empty label,
// which SoftHSM 2.6.1 would silently ignore — runs the raw RSA private
// key operation in the HSM (CKM_RSA_X_509, the key stays inside) and
// decodes OAEP here in constant time, as crypto/rsa does.
//
// A ciphertext that is not exactly as long as the modulus, is not below
// it, or does not decode returns errOAEP, wrapping hsm.ErrAuthFailed: one
// error, the same value, whatever failed.
func (t *Token) DecryptOAEP(ctx context.Context, privateKey hsm.KeyHandle, hash crypto.Hash, ciphertext, label []byte) ([]byte, error) {
	const op = "decrypt with RSA-OAEP"
	if !validOAEPHash(hash) {
		return nil, fmt.Errorf("pkcs11: failed to %s: hash must be SHA-1, SHA-256, SHA-384 or SHA-512, not %v: %w", op, hash, hsm.ErrInvalidInput)
	}
	var msg []byte
	err := t.do(ctx, op, func(a *attempt) error {
		var err error
		msg, err = t.decryptOAEP(a, op, privateKey, hash, ciphertext, label)
		return err
	})
	if err != nil {
		return nil, err
	}
	return msg, nil
}

// decryptOAEP is one attempt of DecryptOAEP, on a.s.
func (t *Token) decryptOAEP(a *attempt, op string, privateKey hsm.KeyHandle, hash crypto.Hash, ciphertext, label []byte) ([]byte, error) {
	key, err := t.object(op, privateKey)
	if err != nil {
		return nil, err
	}
	attrs, err := t.ctx.GetAttributeValue(a.s, key, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, nil),
		p11.NewAttribute(p11.CKA_KEY_TYPE, nil),
	})
	if err != nil {
		return nil, keyErr(op, err)
	}
	if attrUint(attrs[0]) != p11.CKO_PRIVATE_KEY || attrUint(attrs[1]) != p11.CKK_RSA {
		return nil, fmt.Errorf("pkcs11: failed to %s: not an RSA private key: %w", op, hsm.ErrInvalidInput)
	}
	attrs, err = t.ctx.GetAttributeValue(a.s, key, []*p11.Attribute{p11.NewAttribute(p11.CKA_MODULUS, nil)})
	if err != nil {
		return nil, keyErr(op, err)
	}
	k := (new(big.Int).SetBytes(attrs[0].Value).BitLen() + 7) / 8
	if k < 2*hash.Size()+2 {
		return nil, fmt.Errorf("pkcs11: failed to %s: a %d-byte modulus is too small for OAEP with %v: %w", op, k, hash, hsm.ErrInvalidInput)
	}
	// The length is public: RFC 8017 7.1.2 step 1 refuses any other.
	if len(ciphertext) != k {
		return nil, errOAEP
	}

	if hash == crypto.SHA1 && len(label) == 0 {
		params := p11.NewOAEPParams(p11.CKM_SHA_1, p11.CKG_MGF1_SHA1, p11.CKZ_DATA_SPECIFIED, nil)
		mech := []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_OAEP, params)}
		if err := t.decryptInit(a.s, mech, key); err != nil {
			t.afterInitFailure(a, err)
			return nil, keyErr(op, err)
		}
		pt, err := t.ctx.Decrypt(a.s, ciphertext)
		if err != nil {
			t.settle(a)
			if isAuthFailure(err) {
				return nil, errOAEP
			}
			return nil, fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
		}
		return pt, nil
	}

	mech := []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_X_509, nil)}
	if err := t.decryptInit(a.s, mech, key); err != nil {
		t.afterInitFailure(a, err)
		return nil, keyErr(op, err)
	}
	out, err := t.ctx.Decrypt(a.s, ciphertext)
	if err != nil {
		t.settle(a)
		// SoftHSM refuses a ciphertext that is not below the modulus
		// with CKR_GENERAL_ERROR; that is a fact about public values.
		if isAuthFailure(err) {
			return nil, errOAEP
		}
		return nil, fmt.Errorf("pkcs11: failed to %s: %w", op, ckr(err))
	}
	defer clear(out)
	if len(out) > k {
		return nil, fmt.Errorf("pkcs11: failed to %s: raw RSA returned %d bytes for a %d-byte modulus", op, len(out), k)
	}
	// Raw RSA output is an integer; put it back to k bytes.
	em := make([]byte, k)
	defer clear(em)
	copy(em[k-len(out):], out)
	msg, ok := decodeOAEP(hash, em, label)
	if !ok {
		return nil, errOAEP
	}
	return append([]byte(nil), msg...), nil
}

// decodeOAEP is EME-OAEP decoding (RFC 8017 7.1.2 step 3), in constant
// time with respect to em, ported from crypto/rsa's decryptOAEP. em is
// the k-byte output of the raw RSA operation; it is overwritten. It
// returns the message, a slice of em, and whether em decoded. The only
// branch on the outcome is the last one, which the caller cannot avoid;
// the message length it then reveals is what OAEP always reveals.
func decodeOAEP(hashAlg crypto.Hash, em, label []byte) ([]byte, bool) {
	h := hashAlg.New()
	hLen := h.Size()
	if len(em) < 2*hLen+2 {
		return nil, false
	}
	h.Write(label)
	lHash := h.Sum(nil)

	firstByteIsZero := subtle.ConstantTimeByteEq(em[0], 0)
	seed := em[1 : hLen+1]
	db := em[hLen+1:]
	mgf1XOR(seed, h, db)
	mgf1XOR(db, h, seed)

	lHash2Good := subtle.ConstantTimeCompare(lHash, db[:hLen])

	// The rest of DB is PS (zeros), 0x01, M. lookingForIndex is 1 until
	// the 0x01 is found, index is where it is, invalid is 1 if a byte
	// other than 0x00 came before it. Every byte is looked at.
	var lookingForIndex, index, invalid int
	lookingForIndex = 1
	rest := db[hLen:]
	for i := range rest {
		equals0 := subtle.ConstantTimeByteEq(rest[i], 0)
		equals1 := subtle.ConstantTimeByteEq(rest[i], 1)
		index = subtle.ConstantTimeSelect(lookingForIndex&equals1, i, index)
		lookingForIndex = subtle.ConstantTimeSelect(equals1, 0, lookingForIndex)
		invalid = subtle.ConstantTimeSelect(lookingForIndex&^equals0, 1, invalid)
	}
	if firstByteIsZero&lHash2Good&^invalid&^lookingForIndex != 1 {
		return nil, false
	}
	return rest[index+1:], true
}

// mgf1XOR XORs out with MGF1(seed) under h (RFC 8017 B.2.1).
func mgf1XOR(out []byte, h hash.Hash, seed []byte) {
	var counter [4]byte
	var digest []byte
	done := 0
	for done < len(out) {
		h.Reset()
		h.Write(seed)
		h.Write(counter[:])
		digest = h.Sum(digest[:0])
		for i := 0; i < len(digest) && done < len(out); i++ {
			out[done] ^= digest[i]
			done++
		}
		for i := len(counter) - 1; i >= 0; i-- {
			counter[i]++
			if counter[i] != 0 {
				break
			}
		}
	}
}
