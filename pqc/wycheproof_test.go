package pqc

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
)

// Wycheproof vectors: testvectors_v1/mlkem_*.json and mldsa_*.json in the
// C2SP Wycheproof module. See doc/mlkem.md and doc/mldsa.md there for how the
// files are meant to be applied.

type wycheproofFile[V any] struct {
	Algorithm     string `json:"algorithm"`
	NumberOfTests int    `json:"numberOfTests"`
	TestGroups    []struct {
		Type         string   `json:"type"`
		ParameterSet string   `json:"parameterSet"`
		PrivateSeed  hexBytes `json:"privateSeed"`
		PrivateKey   hexBytes `json:"privateKey"`
		PublicKey    hexBytes `json:"publicKey"`
		PublicKeyDer hexBytes `json:"publicKeyDer"`
		Tests        []V      `json:"tests"`
	} `json:"testGroups"`
}

type mlkemVector struct {
	TcID    int      `json:"tcId"`
	Comment string   `json:"comment"`
	Flags   []string `json:"flags"`
	Result  string   `json:"result"`
	Seed    hexBytes `json:"seed"`
	EK      hexBytes `json:"ek"`
	DK      hexBytes `json:"dk"`
	M       hexBytes `json:"m"`
	C       hexBytes `json:"c"`
	K       hexBytes `json:"K"`
}

func (v mlkemVector) String() string { return fmt.Sprintf("tcId %d (%s)", v.TcID, v.Comment) }

type mldsaVector struct {
	TcID    int       `json:"tcId"`
	Comment string    `json:"comment"`
	Flags   []string  `json:"flags"`
	Result  string    `json:"result"`
	Msg     *hexBytes `json:"msg"` // absent for vectors that only give μ
	Ctx     hexBytes  `json:"ctx"`
	Rnd     *hexBytes `json:"rnd"` // present for hedged signatures
	Mu      hexBytes  `json:"mu"`
	Sig     hexBytes  `json:"sig"`
}

func (v mldsaVector) String() string { return fmt.Sprintf("tcId %d (%s)", v.TcID, v.Comment) }

func wycheproofPath(t *testing.T, file string) string {
	return filepath.Join(moduleDir(t, wycheproofModule), "testvectors_v1", file)
}

var wycheproofMLKEM = []struct {
	file   string // the parameter set as it appears in file names
	set    string // as it appears in parameterSet
	scheme *circlKEM
}{
	{"512", "ML-KEM-512", kemMLKEM512},
	{"768", "ML-KEM-768", kemMLKEM768},
	{"1024", "ML-KEM-1024", kemMLKEM1024},
}

// TestWycheproofMLKEMKeyGen: DeriveKey(d‖z) gives ek, and the private key
// circl expands from the seed is the FIPS 203 dk.
func TestWycheproofMLKEMKeyGen(t *testing.T) {
	for _, p := range wycheproofMLKEM {
		file := "mlkem_" + p.file + "_keygen_seed_test.json"
		t.Run(file, func(t *testing.T) {
			var f wycheproofFile[mlkemVector]
			readJSON(t, wycheproofPath(t, file), &f)
			var n vectorCount
			for _, g := range f.TestGroups {
				if g.ParameterSet != p.set {
					t.Fatalf("parameterSet %q, want %q", g.ParameterSet, p.set)
				}
				for _, v := range g.Tests {
					n.run++
					pub, priv, err := p.scheme.DeriveKey(v.Seed)
					if v.Result == "invalid" {
						if err == nil {
							t.Errorf("%v: DeriveKey accepted an invalid seed", v)
						}
						continue
					}
					if err != nil {
						t.Errorf("%v: DeriveKey: %v", v, err)
						continue
					}
					if !bytes.Equal(pub, v.EK) {
						t.Errorf("%v: public key mismatch", v)
					}
					if !bytes.Equal(priv, v.Seed) {
						t.Errorf("%v: private key is not the seed", v)
					}
					_, sk := p.scheme.scheme.DeriveKeyPair(v.Seed)
					if dk, _ := sk.MarshalBinary(); !bytes.Equal(dk, v.DK) {
						t.Errorf("%v: expanded decapsulation key mismatch", v)
					}
				}
			}
			n.report(t, file)
		})
	}
}

// TestWycheproofMLKEMEncaps: EncapsulateDeterministic(ek, m), including
// encapsulation keys that fail the FIPS 203 modulus check.
func TestWycheproofMLKEMEncaps(t *testing.T) {
	for _, p := range wycheproofMLKEM {
		file := "mlkem_" + p.file + "_encaps_test.json"
		t.Run(file, func(t *testing.T) {
			var f wycheproofFile[mlkemVector]
			readJSON(t, wycheproofPath(t, file), &f)
			var n vectorCount
			for _, g := range f.TestGroups {
				for _, v := range g.Tests {
					n.run++
					ct, ss, err := p.scheme.EncapsulateDeterministic(v.EK, v.M)
					if v.Result == "invalid" {
						if !errors.Is(err, ErrInvalidInput) {
							t.Errorf("%v: got %v, want ErrInvalidInput", v, err)
						}
						continue
					}
					if err != nil {
						t.Errorf("%v: %v", v, err)
						continue
					}
					if !bytes.Equal(ct, v.C) || !bytes.Equal(ss, v.K) {
						t.Errorf("%v: ciphertext or shared secret mismatch", v)
					}
				}
			}
			n.report(t, file)
		})
	}
}

// TestWycheproofMLKEMDecaps: Decapsulate(d‖z, c), including the implicit
// rejection vectors (random, bit-flipped and malleated ciphertexts, which
// must give the rejection secret) and wrong lengths.
func TestWycheproofMLKEMDecaps(t *testing.T) {
	for _, p := range wycheproofMLKEM {
		file := "mlkem_" + p.file + "_test.json"
		t.Run(file, func(t *testing.T) {
			var f wycheproofFile[mlkemVector]
			readJSON(t, wycheproofPath(t, file), &f)
			var n vectorCount
			for _, g := range f.TestGroups {
				for _, v := range g.Tests {
					n.run++
					if v.Result != "invalid" && len(v.EK) > 0 {
						if pub, _, err := p.scheme.DeriveKey(v.Seed); err != nil || !bytes.Equal(pub, v.EK) {
							t.Errorf("%v: DeriveKey: public key mismatch (err %v)", v, err)
						}
					}
					ss, err := p.scheme.Decapsulate(v.Seed, v.C)
					if v.Result == "invalid" {
						if !errors.Is(err, ErrInvalidInput) {
							t.Errorf("%v: got %v, want ErrInvalidInput", v, err)
						}
						continue
					}
					if err != nil {
						t.Errorf("%v: %v", v, err)
						continue
					}
					if !bytes.Equal(ss, v.K) {
						t.Errorf("%v: shared secret mismatch", v)
					}
				}
			}
			n.report(t, file)
		})
	}
}

// TestWycheproofMLKEMSemiExpandedDecaps runs the vectors that give the
// expanded FIPS 203 dk. keyflow never stores that form, so these go through
// circl's parser and then the same decapsulate path Decapsulate uses.
func TestWycheproofMLKEMSemiExpandedDecaps(t *testing.T) {
	for _, p := range wycheproofMLKEM {
		file := "mlkem_" + p.file + "_semi_expanded_decaps_test.json"
		t.Run(file, func(t *testing.T) {
			var f wycheproofFile[mlkemVector]
			readJSON(t, wycheproofPath(t, file), &f)
			var n vectorCount
			for _, g := range f.TestGroups {
				for _, v := range g.Tests {
					n.run++
					sk, err := p.scheme.scheme.UnmarshalBinaryPrivateKey(v.DK)
					var ss []byte
					if err == nil {
						ss, err = p.scheme.decapsulate(sk, v.C)
					}
					if v.Result == "invalid" {
						if err == nil {
							t.Errorf("%v: accepted", v)
						}
						continue
					}
					if err != nil {
						t.Errorf("%v: %v", v, err)
						continue
					}
					if !bytes.Equal(ss, v.K) {
						t.Errorf("%v: shared secret mismatch", v)
					}
				}
			}
			n.report(t, file)
		})
	}
}

var wycheproofMLDSA = []struct {
	file   string
	scheme *mldsaSigner
}{
	{"44", sigMLDSA44},
	{"65", sigMLDSA65},
	{"87", sigMLDSA87},
}

// TestWycheproofMLDSASignSeed signs with seed private keys, keyflow's form:
// key generation from the seed, deterministic signatures with and without
// contexts, and rejection of bad seeds and over-long contexts.
func TestWycheproofMLDSASignSeed(t *testing.T) {
	for _, p := range wycheproofMLDSA {
		file := "mldsa_" + p.file + "_sign_seed_test.json"
		t.Run(file, func(t *testing.T) {
			var f wycheproofFile[mldsaVector]
			readJSON(t, wycheproofPath(t, file), &f)
			var n vectorCount
			for _, g := range f.TestGroups {
				validSeed := len(g.PrivateSeed) == p.scheme.SeedSize()
				if validSeed {
					pub, _, err := p.scheme.DeriveKey(g.PrivateSeed)
					if err != nil || !bytes.Equal(pub, g.PublicKey) {
						t.Errorf("DeriveKey: public key mismatch (err %v)", err)
					}
				}
				for _, v := range g.Tests {
					runMLDSASignVector(t, &n, p.scheme, v, g.PublicKey, func(opts SignOptions) ([]byte, error) {
						return p.scheme.Sign(g.PrivateSeed, msgOrMu(v), opts)
					})
				}
			}
			n.report(t, file)
		})
	}
}

// TestWycheproofMLDSASignNoSeed signs with expanded private keys. keyflow
// never stores those, so the key goes through circl's parser and then the
// same signing path Sign uses; vectors about malformed expanded keys are not
// applicable.
func TestWycheproofMLDSASignNoSeed(t *testing.T) {
	for _, p := range wycheproofMLDSA {
		file := "mldsa_" + p.file + "_sign_noseed_test.json"
		t.Run(file, func(t *testing.T) {
			var f wycheproofFile[mldsaVector]
			readJSON(t, wycheproofPath(t, file), &f)
			var n vectorCount
			for _, g := range f.TestGroups {
				sk, parseErr := p.scheme.scheme.UnmarshalBinaryPrivateKey(g.PrivateKey)
				for _, v := range g.Tests {
					if hasFlag(v.Flags, "IncorrectPrivateKeyLength") || hasFlag(v.Flags, "InvalidPrivateKey") {
						n.skip("malformed expanded private key; keyflow keys are seeds")
						continue
					}
					if parseErr != nil {
						t.Errorf("%v: parsing the expanded key: %v", v, parseErr)
						continue
					}
					runMLDSASignVector(t, &n, p.scheme, v, g.PublicKey, func(opts SignOptions) ([]byte, error) {
						return p.scheme.signKey(sk, msgOrMu(v), opts)
					})
				}
			}
			n.report(t, file)
		})
	}
}

func msgOrMu(v mldsaVector) []byte {
	if v.Msg == nil {
		return v.Mu
	}
	return *v.Msg
}

// runMLDSASignVector applies one Wycheproof MlDsaSign vector through sign.
func runMLDSASignVector(t *testing.T, n *vectorCount, s *mldsaSigner, v mldsaVector, pub []byte, sign func(SignOptions) ([]byte, error)) {
	t.Helper()
	opts := SignOptions{Context: v.Ctx}
	switch {
	case v.Msg == nil:
		// Only μ is given: it needs external-μ signing, which circl lacks.
		if _, err := sign(SignOptions{ExternalMu: true}); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%v: external mu: got %v, want ErrUnsupported", v, err)
		}
		n.skip("external mu only")
		return
	case v.Rnd != nil:
		// circl draws the hedging randomness from crypto/rand itself, so
		// the vector's rnd cannot be fed in; check the expected signature
		// verifies instead.
		if err := s.Verify(pub, *v.Msg, v.Sig, opts); err != nil {
			t.Errorf("%v: verifying the hedged signature: %v", v, err)
		}
		n.skip("hedged with given rnd, verified only")
		return
	}
	n.run++
	sig, err := sign(opts)
	if v.Result == "invalid" {
		if !errors.Is(err, ErrInvalidInput) {
			t.Errorf("%v: got %v, want ErrInvalidInput", v, err)
		}
		return
	}
	if err != nil {
		t.Errorf("%v: %v", v, err)
		return
	}
	if !bytes.Equal(sig, v.Sig) {
		t.Errorf("%v: signature mismatch", v)
	}
	if err := s.Verify(pub, *v.Msg, sig, opts); err != nil {
		t.Errorf("%v: Verify: %v", v, err)
	}
}

// TestWycheproofMLDSAVerify checks Verify and the error it returns for each
// kind of bad input, and PublicKeyDER against the vectors' SPKI encodings.
func TestWycheproofMLDSAVerify(t *testing.T) {
	for _, p := range wycheproofMLDSA {
		file := "mldsa_" + p.file + "_verify_test.json"
		t.Run(file, func(t *testing.T) {
			var f wycheproofFile[mldsaVector]
			readJSON(t, wycheproofPath(t, file), &f)
			var n vectorCount
			ders := 0
			for _, g := range f.TestGroups {
				if len(g.PublicKeyDer) > 0 && len(g.PublicKey) == p.scheme.PublicKeySize() {
					ders++
					der, err := PublicKeyDER(p.scheme.Name(), g.PublicKey)
					if err != nil || !bytes.Equal(der, g.PublicKeyDer) {
						t.Errorf("PublicKeyDER mismatch (err %v)", err)
					}
				}
				for _, v := range g.Tests {
					if v.Msg == nil {
						n.skip("external mu only")
						continue
					}
					n.run++
					err := p.scheme.Verify(g.PublicKey, *v.Msg, v.Sig, SignOptions{Context: v.Ctx})
					if v.Result != "invalid" {
						if err != nil {
							t.Errorf("%v: %v", v, err)
						}
						continue
					}
					var want error
					switch {
					case hasFlag(v.Flags, "IncorrectPublicKeyLength"), hasFlag(v.Flags, "InvalidContext"):
						want = ErrInvalidInput
					default:
						want = ErrVerification
					}
					if !errors.Is(err, want) {
						t.Errorf("%v: got %v, want %v", v, err, want)
					}
				}
			}
			if ders == 0 {
				t.Errorf("no publicKeyDer checked")
			}
			n.report(t, file)
			t.Logf("%s: checked %d SubjectPublicKeyInfo encodings", file, ders)
		})
	}
}

func hasFlag(flags []string, f string) bool { return slices.Contains(flags, f) }
