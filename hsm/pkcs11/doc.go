// Package pkcs11 is keyflow's reference [hsm.Backend]: a PKCS#11 token
// driven through github.com/miekg/pkcs11, and tested against SoftHSM2.
//
// # Opening a token
//
// A deployment names its token by label, never by slot number: SoftHSM
// numbers a slot from its token's serial number once the library is
// reinitialised, so numbers change as tokens come and go, and real HSMs
// reorder slots across reboots.
//
//	tok, err := pkcs11.Open(ctx, pkcs11.Config{TokenLabel: "keyflow", PIN: pin})
//	if err != nil { ... }
//	defer tok.Close()
//	root, err := tok.EnsureRootKey(ctx, "keyflow-root")
//
// Config.Module defaults to [DefaultModule]: $KEYFLOW_PKCS11_MODULE, or
// else the Debian path of SoftHSM2.
//
// # Keys
//
// The root key is an AES-256 token object that can wrap and unwrap and do
// nothing else; [Token.EnsureRootKey] finds it by label or creates it.
// Customer key versions live outside the HSM as AES-KWP blobs under it:
// [Token.GenerateWrappedAESKey] makes one, [Token.UnwrapAESKey] turns one
// back into a sensitive, non-extractable session object that can encrypt
// and decrypt and do nothing else. [Token.UnwrapKEK] does the same for a
// per-tenant key-encryption key, which can wrap and unwrap but not
// encrypt, so a data key can never be used to import keys nor a KEK to
// encrypt data.
//
// [Token.ImportAESKeyForTesting], [Token.ImportPrivateKeyForTesting] and
// [Token.ImportHMACKeyForTesting] are the ways raw key bytes enter the
// HSM. They exist for known-answer tests; key material that has been in
// process memory was never protected by the HSM.
//
// # Key pairs, signatures, RSA-OAEP and HMAC
//
// A Token also implements [hsm.KeyPairs], [hsm.Signer],
// [hsm.RSAEncrypter] and [hsm.MACs]. Key pairs (RSA 2048/3072/4096, EC
// P-256/P-384, Ed25519) and HMAC secrets follow the AES pattern: generated
// in the HSM as a temporary extractable session object, wrapped once
// (AES-KWP over PKCS#8, or over the raw secret) and destroyed; loaded
// again as sensitive, non-extractable session objects limited, with
// CKA_ALLOWED_MECHANISMS, to the mechanisms this package uses.
// [Token.GenerateWrappedKeyPair] says why CKA_WRAP_WITH_TRUSTED is not
// used.
//
// SoftHSM 2.6.1 can neither wrap nor unwrap Ed25519 private keys. For
// Ed25519 only, the seed therefore passes through process memory when a
// key is generated and each time it is loaded, and is zeroed after use;
// see [Token.UnwrapPrivateKey].
//
// SoftHSM's RSA-OAEP is SHA-1 only and ignores the label, so only SHA-1
// with an empty label is decrypted by CKM_RSA_PKCS_OAEP; everything else
// is raw RSA in the HSM and constant-time OAEP decoding in Go. Encryption
// needs only the public key and is done by crypto/rsa.
//
// # Sessions
//
// A PKCS#11 session runs one operation at a time, so a [Token] keeps a
// fixed pool of Config.Sessions sessions and every method borrows one for
// the length of one operation. A caller that cannot get a session waits,
// and gives up when its context is done.
//
// Session objects (unwrapped key versions) belong to the session that
// created them and die with it. The pool therefore never closes a session
// before [Token.Close]; a session that is left in a state it cannot be
// brought back from is set aside, still open, and replaced by a new one.
//
// # The library
//
// A PKCS#11 library is process-global: C_Initialize reads its
// configuration (SOFTHSM2_CONF for SoftHSM) once. Every Token in a process
// that uses the same module shares one initialised library, and the last
// Token to close finalises it.
//
// # Errors
//
// Errors read "pkcs11: failed to ...: ..." and wrap the sentinels of
// package hsm where one applies, so callers branch with errors.Is. They
// never contain a PIN or key material. A failed decryption or unwrap says
// only [hsm.ErrAuthFailed], never which check failed.
//
// # Without cgo
//
// The backend needs cgo. A binary built with CGO_ENABLED=0 still compiles,
// and [Open] then says why it cannot work.
package pkcs11
