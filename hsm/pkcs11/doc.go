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
// nothing else; [Token.EnsureRootKey] finds it by label or creates it. It
// leaves the token only wrapped under a key the security officer marked
// trusted, in the root key ceremony ([Token.ExportRootKey],
// [Token.ImportRootKey]).
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
// used. [Token.WrapPrivateKey] (hsm.PrivateKeyWrapper) makes the same
// blob from an RSA or EC private key that keyflow generated in process
// memory, for an exportable key pair whose PKCS#8 must also be kept.
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
// Session objects (unwrapped and imported keys) belong to the session
// that created them and die with it. So that no pooled session has to
// be kept alive for their sake, every object that outlives a call is
// created on one more session, the owner session, which does nothing
// else and is never closed nor recycled before [Token.Close]: the
// Unwrap* and Import* methods borrow it, one at a time, and wait for it
// (honouring their context) while another load is in progress. Loads are
// rare (keyflow caches loaded keys), so serialising them costs little,
// and a pool that ran dry under load still loads keys. Pooled sessions
// create only temporary objects that a call destroys before it returns
// (the keys that GenerateWrapped* wraps), so a pooled session can be
// closed and replaced at any time. An owner session stuck with an
// operation it cannot end is set aside, still open, and replaced.
//
// # Failure handling
//
// A call that fails for a reason on the device's side is retried, on
// the same session or a fresh one; each of these recoveries is made at
// most once per call:
//   - session lost (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED): the
//     session is replaced by a fresh one (logged in again if the device
//     dropped the login) and the call retried. The lost handle is dropped,
//     never closed: a module may have given its number to another
//     session. If no session can be opened (the token is out), the call
//     fails with [hsm.ErrDevice] and the lost handle stays in the pool, to
//     be replaced by the next call that draws it. A lost pooled session
//     makes the Token check the owner session too.
//   - logged out (CKR_USER_NOT_LOGGED_IN, or a fresh session that is not
//     logged in): the Token logs in again with the PIN given to [Open],
//     which it keeps in memory for this. A PIN the token refuses is never
//     tried again, so that a changed PIN cannot lead the Token to lock the
//     user PIN; open a new Token with the new one.
//   - device error (CKR_DEVICE_ERROR, CKR_DEVICE_MEMORY,
//     CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, and CKR_GENERAL_ERROR
//     except where SoftHSM uses it to say that a GCM tag or KWP blob did
//     not authenticate): retried once, then [hsm.ErrDevice]. Every method
//     may run twice: each only reads and computes, or destroys what it
//     created before returning (GenerateWrapped*: a retry makes a new key,
//     and only its blob is returned), or keeps an object only when it
//     succeeds (Unwrap*, Import*; EnsureRootKey looks for the key again
//     before creating it).
//   - invalid key handle (CKR_KEY_HANDLE_INVALID, CKR_OBJECT_HANDLE_INVALID
//     and their wrapping-key forms): a session object that is gone is not
//     coming back, so this is returned as [hsm.ErrKeyHandleInvalid] (which
//     also matches [hsm.ErrNotFound]), and the caller loads the key again
//     from its blob. Root keys are the exception: a token reset changes
//     their object handles, so the Token looks them up again by label and
//     retries; the handle [Token.EnsureRootKey] returned stays valid.
//
// When the owner session is lost, or the Token has to log in again (a
// logout destroys every private session object), every key loaded
// before is gone. Key handles carry the generation of session objects
// they belong to, so their handles are then refused at once with
// [hsm.ErrKeyHandleInvalid], without asking the device: even a module
// that reuses object handle numbers cannot make a stale handle name
// another key. A Token assumes, as SoftHSM does, that session handle
// numbers are not reused while it holds them.
//
// Nothing here panics on a device failure, and every session borrowed is
// handed back, or replaced, before a method returns, so [Token.Close]
// never waits for a session that a failure lost. A token that comes back
// in another slot needs a new Token.
//
// SoftHSM 2.6.1 frees a session's objects when the session is closed
// without regard to operations that other threads are running with them.
// The Token never closes the owner session before Close, which waits for
// every operation; callers must likewise not destroy a key while it is in
// use (package kms counts its users).
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
// only [hsm.ErrAuthFailed], never which check failed. A device failure is
// [hsm.ErrDevice] and never [hsm.ErrAuthFailed] nor [hsm.ErrInvalidInput],
// so a caller never takes an HSM outage for a bad ciphertext or a bad
// request.
//
// # Without cgo
//
// The backend needs cgo. A binary built with CGO_ENABLED=0 still compiles,
// and [Open] then says why it cannot work.
package pkcs11
