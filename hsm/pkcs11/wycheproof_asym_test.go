//go:build cgo

package pkcs11_test

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/hsm/pkcs11"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
)

// The vectors below run THROUGH THE HSM: keys are imported into a SoftHSM
// test token and every decryption, verification and MAC is computed by
// the token with the key inside it. Go does only what keyflow's callers
// do: hash messages, and convert DER ECDSA signatures to r||s.

// tally counts the vectors of one file, and reports them in one line.
type tally struct {
	valid, invalid, acceptable, skipped int
}

func (c *tally) report(t *testing.T, file string) {
	t.Helper()
	t.Logf("%s: %d valid ok, %d invalid refused, %d acceptable, %d skipped", file, c.valid, c.invalid, c.acceptable, c.skipped)
	// rsa_oaep_misc_test.json holds only valid and acceptable vectors.
	if c.valid == 0 || c.invalid == 0 && file != "rsa_oaep_misc_test.json" {
		t.Errorf("%s: ran %d valid and %d invalid vectors; want some of each", file, c.valid, c.invalid)
	}
}

// wycheproofHash maps a Wycheproof hash name to the hashes keyflow's HSM
// operations take, or 0.
func wycheproofHash(name string) crypto.Hash {
	switch name {
	case "SHA-1":
		return crypto.SHA1
	case "SHA-256":
		return crypto.SHA256
	case "SHA-384":
		return crypto.SHA384
	case "SHA-512":
		return crypto.SHA512
	}
	return 0
}

func digest(h crypto.Hash, msg []byte) []byte {
	d := h.New()
	d.Write(msg)
	return d.Sum(nil)
}

type oaepFile struct {
	TestGroups []struct {
		KeySize         int      `json:"keySize"`
		SHA             string   `json:"sha"`
		MGF             string   `json:"mgf"`
		MGFSHA          string   `json:"mgfSha"`
		PrivateKeyPkcs8 hexBytes `json:"privateKeyPkcs8"`
		Tests           []struct {
			TcID   int `json:"tcId"`
			Msg    hexBytes
			CT     hexBytes
			Label  hexBytes
			Result string
			Flags  []string
		}
	}
}

// TestWycheproofRSAOAEP decrypts every OAEP vector whose label hash and
// MGF1 hash are one and the same hash keyflow offers (SHA-1, SHA-256,
// SHA-384, SHA-512) with the private key imported into the HSM. Valid
// vectors must give exactly the message; invalid ones must all fail with
// one and the same error.
func TestWycheproofRSAOAEP(t *testing.T) {
	files := []string{
		"rsa_oaep_2048_sha256_mgf1sha256_test.json",
		"rsa_oaep_3072_sha256_mgf1sha256_test.json",
		"rsa_oaep_4096_sha256_mgf1sha256_test.json",
		"rsa_oaep_2048_sha384_mgf1sha384_test.json",
		"rsa_oaep_2048_sha512_mgf1sha512_test.json",
		"rsa_oaep_3072_sha512_mgf1sha512_test.json",
		"rsa_oaep_4096_sha512_mgf1sha512_test.json",
		"rsa_oaep_2048_sha1_mgf1sha1_test.json",
		"rsa_oaep_misc_test.json",
	}
	tok := pkcs11test.NewToken(t)
	ctx := t.Context()
	var firstErr error
	for _, name := range files {
		var file oaepFile
		loadJSON(t, wycheproofFile(t, name), &file)
		var c tally
		inHSM := 0
		for _, g := range file.TestGroups {
			h := wycheproofHash(g.SHA)
			if h == 0 || g.MGF != "MGF1" || g.MGFSHA != g.SHA || g.KeySize/8 < 2*h.Size()+2 {
				// keyflow's API takes one hash for both, as AWS KMS
				// and crypto/rsa do.
				c.skipped += len(g.Tests)
				continue
			}
			priv, err := x509.ParsePKCS8PrivateKey(g.PrivateKeyPkcs8)
			if err != nil {
				t.Fatalf("%s: %d-bit key: %v", name, g.KeySize, err)
			}
			k, err := tok.ImportPrivateKeyForTesting(ctx, priv)
			if err != nil {
				t.Fatalf("%s: ImportPrivateKeyForTesting: %v", name, err)
			}
			for _, tc := range g.Tests {
				if h == crypto.SHA1 && len(tc.Label) == 0 {
					inHSM++
				}
				pt, err := tok.DecryptOAEP(ctx, k, h, tc.CT, tc.Label)
				switch tc.Result {
				case "valid":
					if err != nil || !bytes.Equal(pt, tc.Msg) {
						t.Errorf("%s tcId %d (%v): DecryptOAEP = %x, %v; want %x", name, tc.TcID, tc.Flags, pt, err, tc.Msg)
						continue
					}
					c.valid++
				case "invalid":
					if !errors.Is(err, hsm.ErrAuthFailed) || pt != nil {
						t.Errorf("%s tcId %d (%v): DecryptOAEP = %x, %v; want ErrAuthFailed", name, tc.TcID, tc.Flags, pt, err)
						continue
					}
					if firstErr == nil {
						firstErr = err
					} else if err.Error() != firstErr.Error() {
						t.Errorf("%s tcId %d (%v): error %q differs from %q: a failed decryption must not say why", name, tc.TcID, tc.Flags, err, firstErr)
					}
					c.invalid++
				default:
					c.acceptable++
					t.Logf("%s tcId %d (%v): acceptable: DecryptOAEP returned %d bytes, error %v", name, tc.TcID, tc.Flags, len(pt), err)
				}
			}
			_ = tok.DestroyKey(ctx, k)
		}
		c.report(t, name)
		if inHSM > 0 {
			t.Logf("%s: %d SHA-1 vectors with an empty label ran in CKM_RSA_PKCS_OAEP, the rest in CKM_RSA_X_509 with OAEP decoded in Go", name, inHSM)
		}
	}
}

type sigFile struct {
	TestGroups []struct {
		Type         string   `json:"type"`
		SHA          string   `json:"sha"`
		MGF          string   `json:"mgf"`
		MGFSHA       string   `json:"mgfSha"`
		SLen         int      `json:"sLen"`
		PublicKeyDer hexBytes `json:"publicKeyDer"`
		PublicKey    struct {
			Curve string `json:"curve"`
		} `json:"publicKey"`
		Tests []struct {
			TcID    int `json:"tcId"`
			Comment string
			Msg     hexBytes
			Sig     hexBytes
			Result  string
			Flags   []string
		}
	}
}

// runVerifyFile verifies every vector of a signature file with the public
// key imported into the HSM. params returns how to verify a group (ok
// false skips it); toSig turns the vector's signature into what Verify
// takes, or fails, which counts as a refusal.
func runVerifyFile(t *testing.T, tok *pkcs11.Token, name string,
	params func(sha, mgf, mgfSHA string, sLen int) (hsm.SignParams, bool),
	toSig func(curve string, sig []byte) ([]byte, error)) {
	t.Helper()
	ctx := t.Context()
	var file sigFile
	loadJSON(t, wycheproofFile(t, name), &file)
	var c tally
	for _, g := range file.TestGroups {
		p, ok := params(g.SHA, g.MGF, g.MGFSHA, g.SLen)
		if !ok {
			c.skipped += len(g.Tests)
			continue
		}
		pub, err := tok.ImportPublicKey(ctx, g.PublicKeyDer)
		if err != nil {
			t.Fatalf("%s: ImportPublicKey: %v", name, err)
		}
		for _, tc := range g.Tests {
			in := tc.Msg
			if p.Scheme != hsm.SchemeEd25519 {
				in = digest(p.Hash, tc.Msg)
			}
			sig, err := toSig(g.PublicKey.Curve, tc.Sig)
			if err == nil {
				err = tok.Verify(ctx, pub, p, in, sig)
			}
			switch tc.Result {
			case "valid":
				if err != nil {
					t.Errorf("%s tcId %d (%s %v): Verify of a valid signature: %v", name, tc.TcID, tc.Comment, tc.Flags, err)
					continue
				}
				c.valid++
			case "invalid":
				if !errors.Is(err, hsm.ErrAuthFailed) {
					t.Errorf("%s tcId %d (%s %v): Verify of an invalid signature = %v, want ErrAuthFailed", name, tc.TcID, tc.Comment, tc.Flags, err)
					continue
				}
				c.invalid++
			default:
				c.acceptable++
				t.Logf("%s tcId %d (%s %v): acceptable: Verify = %v", name, tc.TcID, tc.Comment, tc.Flags, err)
			}
		}
		_ = tok.DestroyKey(ctx, pub)
	}
	c.report(t, name)
}

func curveSize(curve string) int {
	switch curve {
	case "secp256r1":
		return 32
	case "secp384r1":
		return 48
	}
	return 0
}

// TestWycheproofECDSA verifies the ECDSA vectors for P-256 and P-384 with
// SHA-2, DER signatures through hsm.ECDSASigFromDER (which must refuse
// every malformed encoding), P1363 ones as they are.
func TestWycheproofECDSA(t *testing.T) {
	tok := pkcs11test.NewToken(t)
	ecdsaParams := func(sha, _, _ string, _ int) (hsm.SignParams, bool) {
		h := wycheproofHash(sha)
		return hsm.SignParams{Scheme: hsm.SchemeECDSA, Hash: h}, h != 0 && h != crypto.SHA1
	}
	fromDER := func(curve string, sig []byte) ([]byte, error) { return hsm.ECDSASigFromDER(sig, curveSize(curve)) }
	asIs := func(_ string, sig []byte) ([]byte, error) { return sig, nil }
	for _, name := range []string{
		"ecdsa_secp256r1_sha256_test.json",
		"ecdsa_secp256r1_sha512_test.json",
		"ecdsa_secp384r1_sha256_test.json",
		"ecdsa_secp384r1_sha384_test.json",
		"ecdsa_secp384r1_sha512_test.json",
	} {
		runVerifyFile(t, tok, name, ecdsaParams, fromDER)
	}
	for _, name := range []string{
		"ecdsa_secp256r1_sha256_p1363_test.json",
		"ecdsa_secp256r1_sha512_p1363_test.json",
		"ecdsa_secp384r1_sha384_p1363_test.json",
		"ecdsa_secp384r1_sha512_p1363_test.json",
	} {
		runVerifyFile(t, tok, name, ecdsaParams, asIs)
	}
}

// TestWycheproofEd25519 verifies the Ed25519 vectors in the HSM. The file
// has no private keys, so signing is checked against RFC 8032 in
// TestEd25519SignKnownAnswers and, on the same messages, against Go in
// TestWycheproofEd25519SignCompare.
func TestWycheproofEd25519(t *testing.T) {
	tok := pkcs11test.NewToken(t)
	runVerifyFile(t, tok, "ed25519_test.json",
		func(string, string, string, int) (hsm.SignParams, bool) {
			return hsm.SignParams{Scheme: hsm.SchemeEd25519}, true
		},
		func(_ string, sig []byte) ([]byte, error) { return sig, nil })
}

// TestWycheproofEd25519SignCompare signs the message of every valid
// Ed25519 vector with a key imported into the HSM and checks that the
// signature is the one Go computes: Ed25519 is deterministic.
func TestWycheproofEd25519SignCompare(t *testing.T) {
	var file sigFile
	loadJSON(t, wycheproofFile(t, "ed25519_test.json"), &file)
	tok := pkcs11test.NewToken(t)
	ctx := t.Context()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := tok.ImportPrivateKeyForTesting(ctx, priv)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	seen := map[string]bool{}
	for _, g := range file.TestGroups {
		for _, tc := range g.Tests {
			if tc.Result != "valid" || seen[string(tc.Msg)] {
				continue
			}
			seen[string(tc.Msg)] = true
			sig, err := tok.Sign(ctx, k, hsm.SignParams{Scheme: hsm.SchemeEd25519}, tc.Msg)
			if err != nil {
				t.Fatalf("tcId %d: Sign: %v", tc.TcID, err)
			}
			if want := ed25519.Sign(priv, tc.Msg); !bytes.Equal(sig, want) {
				t.Errorf("tcId %d: the HSM signs %x, Go %x", tc.TcID, sig, want)
			}
			n++
		}
	}
	t.Logf("ed25519_test.json: signed the %d distinct messages of valid vectors; every signature equals Go's", n)
	if n == 0 {
		t.Fatal("no messages signed")
	}
}

// TestEd25519SignKnownAnswers signs the RFC 8032 section 7.1 vectors with
// their secret keys imported into the HSM.
func TestEd25519SignKnownAnswers(t *testing.T) {
	tok := pkcs11test.NewToken(t)
	ctx := t.Context()
	for i, v := range []struct{ seed, pub, msg, sig string }{
		{
			"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
			"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
			"",
			"e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
		},
		{
			"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
			"3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
			"72",
			"92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
		},
	} {
		seed, pub, msg, want := unhex(t, v.seed), unhex(t, v.pub), unhex(t, v.msg), unhex(t, v.sig)
		priv := ed25519.NewKeyFromSeed(seed)
		if !bytes.Equal(priv.Public().(ed25519.PublicKey), pub) {
			t.Fatalf("vector %d: the seed does not give the public key", i+1)
		}
		k, err := tok.ImportPrivateKeyForTesting(ctx, priv)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := tok.Sign(ctx, k, hsm.SignParams{Scheme: hsm.SchemeEd25519}, msg)
		if err != nil || !bytes.Equal(sig, want) {
			t.Errorf("RFC 8032 TEST %d: Sign = %x, %v; want %x", i+1, sig, err, want)
		}
		spki, err := x509.MarshalPKIXPublicKey(ed25519.PublicKey(pub))
		if err != nil {
			t.Fatal(err)
		}
		pk, err := tok.ImportPublicKey(ctx, spki)
		if err != nil {
			t.Fatal(err)
		}
		if err := tok.Verify(ctx, pk, hsm.SignParams{Scheme: hsm.SchemeEd25519}, msg, want); err != nil {
			t.Errorf("RFC 8032 TEST %d: Verify: %v", i+1, err)
		}
	}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWycheproofRSASignatures verifies RSA PKCS#1 v1.5 and RSA-PSS
// vectors whose parameters keyflow offers (SHA-2, MGF1 with the same
// hash, salt as long as the hash) with the public key in the HSM: this
// checks the DigestInfo prefixes and the PSS parameters this package
// gives the token.
func TestWycheproofRSASignatures(t *testing.T) {
	tok := pkcs11test.NewToken(t)
	asIs := func(_ string, sig []byte) ([]byte, error) { return sig, nil }
	pkcs1 := func(sha, _, _ string, _ int) (hsm.SignParams, bool) {
		h := wycheproofHash(sha)
		return hsm.SignParams{Scheme: hsm.SchemeRSAPKCS1, Hash: h}, h != 0 && h != crypto.SHA1
	}
	pss := func(sha, mgf, mgfSHA string, sLen int) (hsm.SignParams, bool) {
		h := wycheproofHash(sha)
		ok := h != 0 && h != crypto.SHA1 && mgf == "MGF1" && mgfSHA == sha && sLen == h.Size()
		return hsm.SignParams{Scheme: hsm.SchemeRSAPSS, Hash: h}, ok
	}
	for _, bits := range []string{"2048", "3072", "4096"} {
		for _, sha := range []string{"sha256", "sha384", "sha512"} {
			runVerifyFile(t, tok, "rsa_signature_"+bits+"_"+sha+"_test.json", pkcs1, asIs)
		}
	}
	for _, name := range []string{
		"rsa_pss_2048_sha256_mgf1_32_test.json",
		"rsa_pss_3072_sha256_mgf1_32_test.json",
		"rsa_pss_4096_sha256_mgf1_32_test.json",
		"rsa_pss_2048_sha384_mgf1_48_test.json",
		"rsa_pss_4096_sha384_mgf1_48_test.json",
		"rsa_pss_4096_sha512_mgf1_64_test.json",
	} {
		runVerifyFile(t, tok, name, pss, asIs)
	}
}

type macFile struct {
	TestGroups []struct {
		KeySize int `json:"keySize"`
		TagSize int `json:"tagSize"`
		Tests   []struct {
			TcID   int `json:"tcId"`
			Key    hexBytes
			Msg    hexBytes
			Tag    hexBytes
			Result string
			Flags  []string
		}
	}
}

// TestWycheproofHMACSHA256 computes every HMAC-SHA256 vector in the HSM
// and compares the tag, or its prefix for truncated tags, in constant
// time. SoftHSM refuses HMAC-SHA256 keys shorter than 32 bytes
// (CKR_KEY_SIZE_RANGE), and so does ImportHMACKeyForTesting; those
// vectors are skipped, and their refusal is checked.
func TestWycheproofHMACSHA256(t *testing.T) {
	const name = "hmac_sha256_test.json"
	var file macFile
	loadJSON(t, wycheproofFile(t, name), &file)
	tok := pkcs11test.NewToken(t)
	ctx := t.Context()
	keys := map[string]hsm.KeyHandle{}
	var c tally
	shortKeys := map[int]int{}
	for _, g := range file.TestGroups {
		for _, tc := range g.Tests {
			k, ok := keys[string(tc.Key)]
			if !ok {
				var err error
				k, err = tok.ImportHMACKeyForTesting(ctx, tc.Key)
				if len(tc.Key) < 32 {
					if !errors.Is(err, hsm.ErrInvalidInput) {
						t.Errorf("tcId %d: ImportHMACKeyForTesting of a %d-byte key = %v, want ErrInvalidInput", tc.TcID, len(tc.Key), err)
					}
					c.skipped++
					shortKeys[len(tc.Key)]++
					continue
				}
				if err != nil {
					t.Fatalf("tcId %d: ImportHMACKeyForTesting: %v", tc.TcID, err)
				}
				keys[string(tc.Key)] = k
			}
			mac, err := tok.HMACSHA256(ctx, k, tc.Msg)
			if err != nil {
				t.Fatalf("tcId %d: HMACSHA256: %v", tc.TcID, err)
			}
			match := len(tc.Tag) <= len(mac) && subtle.ConstantTimeCompare(mac[:len(tc.Tag)], tc.Tag) == 1
			switch tc.Result {
			case "valid":
				if !match {
					t.Errorf("tcId %d: HMAC = %x, want %x", tc.TcID, mac, tc.Tag)
					continue
				}
				c.valid++
			case "invalid":
				if match {
					t.Errorf("tcId %d (%v): an invalid tag matched", tc.TcID, tc.Flags)
					continue
				}
				c.invalid++
			default:
				c.acceptable++
				t.Logf("tcId %d (%v): acceptable: match=%v", tc.TcID, tc.Flags, match)
			}
		}
	}
	c.report(t, name)
	for n, count := range shortKeys {
		t.Logf("%s: skipped %d vectors with %d-byte keys: SoftHSM's CKM_SHA256_HMAC takes keys of 32 to 512 bytes", name, count, n)
	}
}
