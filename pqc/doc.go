// Package pqc gives keyflow its post-quantum and hybrid algorithms, behind two
// small interfaces and one closed registry keyed by keyflow's algorithm names.
//
// SoftHSM has no post-quantum mechanisms, so these algorithms run in software
// (Cloudflare's circl) and are the one place where keyflow holds private keys
// in plain process memory. The rest of this page is about using them safely.
//
// # Finding an algorithm
//
// Look algorithms up by the names keyflow stores in key metadata:
//
//	k, err := pqc.KEMByName("ML_KEM_768")     // or pqc.MLKEM768
//	s, err := pqc.SignerByName("ML_DSA_65")   // or pqc.MLDSA65
//
// An unknown name, or a signature algorithm asked for as a KEM, returns an
// error wrapping [ErrUnknownAlgorithm]. [KEMs] and [Signers] list everything,
// always in the same order, for inventories and table tests. The registry is
// closed: adding an algorithm means adding it here, with its vectors.
//
// Registered today:
//
//	KEM     ML_KEM_512, ML_KEM_768, ML_KEM_1024   FIPS 203
//	KEM     X_WING                                 X-Wing (ML-KEM-768 + X25519) hybrid
//	Signer  ML_DSA_44, ML_DSA_65, ML_DSA_87        FIPS 204, pure mode
//	Signer  SLH_DSA_SHA2_128S, SLH_DSA_SHA2_128F   FIPS 205, pure mode
//
// Which to pick: ML_KEM_768 for wrapping data keys; X_WING where a classical
// guarantee must survive a break of ML-KEM; ML_DSA_65 for signatures (the
// audit sealer's choice); SLH-DSA only where a hash-based scheme is required,
// since its signatures are 8–17 KB and SLH_DSA_SHA2_128S takes about a third
// of a second to sign.
//
// # Encapsulating a key
//
//	pub, priv, err := k.GenerateKey(nil) // nil means crypto/rand
//	defer pqc.Zero(priv)
//
//	ct, ss, err := k.Encapsulate(nil, pub) // sender: ss is the shared secret
//	ss2, err := k.Decapsulate(priv, ct)    // receiver: ss2 == ss
//
// Decapsulate never says a ciphertext was tampered with. A well-formed but
// wrong ciphertext decapsulates to an unrelated pseudo-random secret (FIPS 203
// implicit rejection), so the failure shows up later, when the AEAD keyed
// from the secret fails to open; only a key or ciphertext of the wrong length
// gives [ErrInvalidInput]. Use the shared secret through a KDF or AEAD, never
// compare it yourself.
//
// # Signing
//
//	sig, err := s.Sign(priv, msg, pqc.SignOptions{Context: []byte("kf.v1.audit")})
//	err = s.Verify(pub, msg, sig, pqc.SignOptions{Context: []byte("kf.v1.audit")})
//	if errors.Is(err, pqc.ErrVerification) { ... }
//
// [SignOptions] carries the FIPS 204/205 context string (up to 255 bytes;
// use it to separate the purposes one key signs for), the choice of hedged
// signing (Randomized) over deterministic, and ExternalMu, which no scheme
// supports yet. A signature of the wrong length fails with an error wrapping
// both [ErrVerification] and [ErrInvalidInput].
//
// # What the private key bytes are
//
// Every private key is a byte slice in the smallest standard form, which is
// what keyflow wraps and stores:
//
//	ML-KEM   64-byte seed d‖z (FIPS 203 KeyGen_internal; crypto/mlkem's form)
//	X-Wing   32-byte seed (the draft's decapsulation key)
//	ML-DSA   32-byte seed ξ (FIPS 204 KeyGen_internal)
//	SLH-DSA  SK.seed‖SK.prf‖PK.seed‖PK.root, 4n bytes (FIPS 205)
//
// Seeds are always valid keys, which expanded encodings are not, and they are
// 25–125 times smaller. The price is that Decapsulate and ML-DSA Sign expand
// the seed on every call: on the 2-core dev machine that roughly doubles
// ML-KEM-768 decapsulation (about 25 µs to 60 µs) and adds about half to
// ML-DSA-65 signing (about 300 µs to 450 µs).
// SLH-DSA keeps its full key because re-deriving PK.root costs tens of
// milliseconds. Expanded ML-KEM and ML-DSA keys from elsewhere cannot be
// imported; ask the peer for the seed.
//
// DeriveKey takes the same seed, so DeriveKey(priv) recovers the public key
// for the seed-based schemes. For SLH-DSA the DeriveKey seed is the 3n bytes
// SK.seed‖SK.prf‖PK.seed. Public keys are the standard encodings;
// [PublicKeyDER] wraps one in a SubjectPublicKeyInfo with its standard OID.
//
// # Keeping key material short-lived
//
// The caller owns every private key and shared secret this package returns,
// and wipes it with [Zero] (usually deferred) once done. The package wipes its
// own temporary seeds. It cannot wipe the expanded keys that circl builds
// inside a call: those are unexported structures left to the garbage
// collector. Never log, audit or wrap into an error the bytes of a key or
// secret; this package's errors give lengths and algorithm names only.
//
// # No context.Context
//
// The methods do pure CPU work and never block on I/O, so, unlike the rest of
// keyflow, they take no context.Context: there is nothing to cancel mid-way.
// Most finish in well under a millisecond; SLH_DSA_SHA2_128S signing is the
// slow exception. All values are stateless and safe for concurrent use.
//
// # Testing
//
// One table test runs every registered algorithm through the same checks.
// Known-answer tests use the C2SP Wycheproof ML-KEM and ML-DSA vectors and
// the NIST ACVP SLH-DSA vectors shipped in circl, both located with
// `go mod download -json` and skipped with a message when offline, plus the
// X-Wing draft's vectors in testdata/xwing. Interop tests cross keys and
// ciphertexts with Go's own crypto/mlkem and crypto/hpke.
package pqc
