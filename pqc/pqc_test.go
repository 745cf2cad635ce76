package pqc_test

import (
	"bytes"
	"crypto/rand"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/keyflow/keyflow/pqc"
)

// want lists every algorithm with its sizes and OID taken from the standards,
// not from the implementation, so the test catches a wrong registry entry.
var want = map[string]struct {
	pub, priv, seed, ct, sig int
	oid                      asn1.ObjectIdentifier
}{
	"ML_KEM_512":        {pub: 800, priv: 64, seed: 64, ct: 768, oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 4, 1}},
	"ML_KEM_768":        {pub: 1184, priv: 64, seed: 64, ct: 1088, oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 4, 2}},
	"ML_KEM_1024":       {pub: 1568, priv: 64, seed: 64, ct: 1568, oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 4, 3}},
	"X_WING":            {pub: 1216, priv: 32, seed: 32, ct: 1120, oid: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62253, 25722}},
	"ML_DSA_44":         {pub: 1312, priv: 32, seed: 32, sig: 2420, oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 17}},
	"ML_DSA_65":         {pub: 1952, priv: 32, seed: 32, sig: 3309, oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 18}},
	"ML_DSA_87":         {pub: 2592, priv: 32, seed: 32, sig: 4627, oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 19}},
	"SLH_DSA_SHA2_128S": {pub: 32, priv: 64, seed: 48, sig: 7856, oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 20}},
	"SLH_DSA_SHA2_128F": {pub: 32, priv: 64, seed: 48, sig: 17088, oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 21}},
}

// TestAlgorithms is the one table test over the whole registry.
func TestAlgorithms(t *testing.T) {
	var names []string
	for _, k := range pqc.KEMs() {
		names = append(names, k.Name())
		t.Run(k.Name(), func(t *testing.T) {
			t.Parallel()
			testKEM(t, k)
		})
	}
	for _, s := range pqc.Signers() {
		names = append(names, s.Name())
		t.Run(s.Name(), func(t *testing.T) {
			t.Parallel()
			testSigner(t, s)
		})
	}
	t.Run("registry", func(t *testing.T) {
		wantOrder := []string{
			"ML_KEM_512", "ML_KEM_768", "ML_KEM_1024", "X_WING",
			"ML_DSA_44", "ML_DSA_65", "ML_DSA_87", "SLH_DSA_SHA2_128S", "SLH_DSA_SHA2_128F",
		}
		if !slices.Equal(names, wantOrder) {
			t.Errorf("registry order %v, want %v", names, wantOrder)
		}
		// The registry is closed: editing what KEMs returns changes nothing.
		ks := pqc.KEMs()
		ks[0] = nil
		if pqc.KEMs()[0] == nil {
			t.Error("KEMs returned the registry itself")
		}
	})
	t.Run("unknown", func(t *testing.T) {
		for _, name := range []string{"NOPE", "", "ml_kem_768", "ML-KEM-768", "ML_DSA_65"} {
			_, err := pqc.KEMByName(name)
			checkErr(t, err, pqc.ErrUnknownAlgorithm, "KEMByName("+name+")")
			if err != nil && !strings.Contains(err.Error(), `"`+name+`"`) {
				t.Errorf("KEMByName(%q): error %q does not name the algorithm", name, err)
			}
		}
		for _, name := range []string{"NOPE", "ml_dsa_65", "ML_KEM_768"} {
			_, err := pqc.SignerByName(name)
			checkErr(t, err, pqc.ErrUnknownAlgorithm, "SignerByName("+name+")")
		}
		_, err := pqc.PublicKeyDER("NOPE", make([]byte, 32))
		checkErr(t, err, pqc.ErrUnknownAlgorithm, "PublicKeyDER")
	})
}

func testKEM(t *testing.T, k pqc.KEM) {
	w, ok := want[k.Name()]
	if !ok {
		t.Fatalf("no expected sizes for %s", k.Name())
	}
	if got, err := pqc.KEMByName(k.Name()); err != nil || got != k {
		t.Fatalf("KEMByName: %v, %v", got, err)
	}
	if k.PublicKeySize() != w.pub || k.PrivateKeySize() != w.priv || k.SeedSize() != w.seed ||
		k.CiphertextSize() != w.ct || k.SharedSecretSize() != 32 {
		t.Fatalf("advertised sizes pub %d priv %d seed %d ct %d ss %d, want %d %d %d %d 32",
			k.PublicKeySize(), k.PrivateKeySize(), k.SeedSize(), k.CiphertextSize(), k.SharedSecretSize(),
			w.pub, w.priv, w.seed, w.ct)
	}

	pub, priv, err := k.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pqc.Zero(priv)
	checkLen(t, "public key", pub, k.PublicKeySize())
	checkLen(t, "private key", priv, k.PrivateKeySize())

	// Key generation is a function of the seed it reads.
	seed := randBytes(k.SeedSize())
	pub1, priv1, err := k.GenerateKey(bytes.NewReader(seed))
	if err != nil {
		t.Fatal(err)
	}
	pub2, priv2, err := k.DeriveKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pub1, pub2) || !bytes.Equal(priv1, priv2) {
		t.Error("GenerateKey(seed reader) and DeriveKey(seed) differ")
	}
	_, _, err = k.GenerateKey(bytes.NewReader(seed[:1]))
	if err == nil {
		t.Error("GenerateKey with a short reader succeeded")
	}

	// Round trip.
	ct, ss, err := k.Encapsulate(nil, pub)
	if err != nil {
		t.Fatal(err)
	}
	checkLen(t, "ciphertext", ct, k.CiphertextSize())
	checkLen(t, "shared secret", ss, k.SharedSecretSize())
	got, err := k.Decapsulate(priv, ct)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, ss) {
		t.Fatal("Decapsulate returned a different shared secret")
	}
	ct2, ss2, err := k.Encapsulate(nil, pub)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(ct, ct2) || bytes.Equal(ss, ss2) {
		t.Error("two encapsulations gave the same output")
	}

	// Encapsulation is a function of the randomness it reads.
	eseed := randBytes(k.EncapsulationSeedSize())
	ctA, ssA, err := k.Encapsulate(bytes.NewReader(eseed), pub)
	if err != nil {
		t.Fatal(err)
	}
	ctB, ssB, err := k.EncapsulateDeterministic(pub, eseed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ctA, ctB) || !bytes.Equal(ssA, ssB) {
		t.Error("Encapsulate(seed reader) and EncapsulateDeterministic(seed) differ")
	}

	// Implicit rejection: a modified ciphertext, or the wrong key, gives an
	// unrelated secret and no error.
	for _, i := range []int{0, len(ct) / 2, len(ct) - 1} {
		bad := bytes.Clone(ct)
		bad[i] ^= 0x01
		rej, err := k.Decapsulate(priv, bad)
		if err != nil {
			t.Errorf("modified ciphertext (byte %d): %v", i, err)
			continue
		}
		checkLen(t, "rejection secret", rej, k.SharedSecretSize())
		if bytes.Equal(rej, ss) {
			t.Errorf("modified ciphertext (byte %d) decapsulated to the real secret", i)
		}
		rej2, _ := k.Decapsulate(priv, bad)
		if !bytes.Equal(rej, rej2) {
			t.Errorf("rejection secret (byte %d) is not deterministic", i)
		}
	}
	other, err := k.Decapsulate(priv2, ct)
	if err != nil || bytes.Equal(other, ss) {
		t.Errorf("decapsulating with the wrong key: err %v, same secret %v", err, bytes.Equal(other, ss))
	}

	// Wrong lengths are refused, and no error carries key bytes.
	for _, c := range []struct {
		name string
		err  error
	}{
		{"DeriveKey short seed", second(k.DeriveKey(seed[1:]))},
		{"DeriveKey long seed", second(k.DeriveKey(append(bytes.Clone(seed), 0)))},
		{"Encapsulate short key", second(k.Encapsulate(nil, pub[1:]))},
		{"Encapsulate long key", second(k.Encapsulate(nil, append(bytes.Clone(pub), 0)))},
		{"Encapsulate empty key", second(k.Encapsulate(nil, nil))},
		{"EncapsulateDeterministic short seed", second(k.EncapsulateDeterministic(pub, eseed[1:]))},
		{"Decapsulate short key", errOf(k.Decapsulate(priv[1:], ct))},
		{"Decapsulate long key", errOf(k.Decapsulate(append(bytes.Clone(priv), 0), ct))},
		{"Decapsulate short ciphertext", errOf(k.Decapsulate(priv, ct[1:]))},
		{"Decapsulate long ciphertext", errOf(k.Decapsulate(priv, append(bytes.Clone(ct), 0)))},
		{"Decapsulate empty ciphertext", errOf(k.Decapsulate(priv, nil))},
	} {
		checkErr(t, c.err, pqc.ErrInvalidInput, c.name)
		checkNoSecret(t, c.err, priv, seed)
	}

	testDER(t, k.Name(), pub, w.oid)
}

func testSigner(t *testing.T, s pqc.Signer) {
	w, ok := want[s.Name()]
	if !ok {
		t.Fatalf("no expected sizes for %s", s.Name())
	}
	if got, err := pqc.SignerByName(s.Name()); err != nil || got != s {
		t.Fatalf("SignerByName: %v, %v", got, err)
	}
	if s.PublicKeySize() != w.pub || s.PrivateKeySize() != w.priv || s.SeedSize() != w.seed || s.SignatureSize() != w.sig {
		t.Fatalf("advertised sizes pub %d priv %d seed %d sig %d, want %d %d %d %d",
			s.PublicKeySize(), s.PrivateKeySize(), s.SeedSize(), s.SignatureSize(), w.pub, w.priv, w.seed, w.sig)
	}

	pub, priv, err := s.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pqc.Zero(priv)
	checkLen(t, "public key", pub, s.PublicKeySize())
	checkLen(t, "private key", priv, s.PrivateKeySize())

	seed := randBytes(s.SeedSize())
	pub1, priv1, err := s.GenerateKey(bytes.NewReader(seed))
	if err != nil {
		t.Fatal(err)
	}
	pub2, priv2, err := s.DeriveKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pub1, pub2) || !bytes.Equal(priv1, priv2) {
		t.Error("GenerateKey(seed reader) and DeriveKey(seed) differ")
	}

	if _, _, err := s.GenerateKey(bytes.NewReader(seed[:1])); err == nil {
		t.Error("GenerateKey with a short reader succeeded")
	}

	msg := []byte("keyflow audit digest")
	sig, err := s.Sign(priv, msg, pqc.SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sig) == 0 || len(sig) > s.SignatureSize() {
		t.Fatalf("signature is %d bytes, max %d", len(sig), s.SignatureSize())
	}
	if err := s.Verify(pub, msg, sig, pqc.SignOptions{}); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	// The zero options sign deterministically.
	if again, err := s.Sign(priv, msg, pqc.SignOptions{}); err != nil || !bytes.Equal(again, sig) {
		t.Errorf("deterministic signing is not deterministic (err %v)", err)
	}

	// Hedged signatures differ each time and verify.
	h1, err := s.Sign(priv, msg, pqc.SignOptions{Randomized: true})
	if err != nil {
		t.Fatal(err)
	}
	h2, err := s.Sign(priv, msg, pqc.SignOptions{Randomized: true})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(h1, h2) || bytes.Equal(h1, sig) {
		t.Error("randomized signatures repeat")
	}
	for _, h := range [][]byte{h1, h2} {
		if err := s.Verify(pub, msg, h, pqc.SignOptions{}); err != nil {
			t.Errorf("Verify(randomized): %v", err)
		}
	}

	// Contexts bind: the same context verifies, any other does not.
	ctx := []byte("kf.v1.tenant-a")
	csig, err := s.Sign(priv, msg, pqc.SignOptions{Context: ctx})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(pub, msg, csig, pqc.SignOptions{Context: ctx}); err != nil {
		t.Errorf("Verify with context: %v", err)
	}
	checkErr(t, s.Verify(pub, msg, csig, pqc.SignOptions{}), pqc.ErrVerification, "Verify without the context")
	checkErr(t, s.Verify(pub, msg, sig, pqc.SignOptions{Context: ctx}), pqc.ErrVerification, "Verify with a context never signed")
	checkErr(t, s.Verify(pub, msg, sig, pqc.SignOptions{Context: make([]byte, 255)}), pqc.ErrVerification, "Verify with a 255-byte context")

	// Tampering fails with ErrVerification.
	for _, i := range []int{0, len(sig) / 2, len(sig) - 1} {
		bad := bytes.Clone(sig)
		bad[i] ^= 0x01
		checkErr(t, s.Verify(pub, msg, bad, pqc.SignOptions{}), pqc.ErrVerification, "Verify(tampered signature)")
	}
	checkErr(t, s.Verify(pub, []byte("keyflow audit digesT"), sig, pqc.SignOptions{}), pqc.ErrVerification, "Verify(other message)")
	checkErr(t, s.Verify(pub2, msg, sig, pqc.SignOptions{}), pqc.ErrVerification, "Verify(other key)")

	// A signature of the wrong length is both a failed verification and
	// invalid input.
	for _, bad := range [][]byte{sig[1:], append(bytes.Clone(sig), 0), nil} {
		err := s.Verify(pub, msg, bad, pqc.SignOptions{})
		checkErr(t, err, pqc.ErrVerification, "Verify(wrong-length signature)")
		checkErr(t, err, pqc.ErrInvalidInput, "Verify(wrong-length signature)")
	}

	// Other bad inputs.
	long := pqc.SignOptions{Context: make([]byte, 256)}
	mu := pqc.SignOptions{ExternalMu: true}
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"DeriveKey short seed", second(s.DeriveKey(seed[1:])), pqc.ErrInvalidInput},
		{"DeriveKey long seed", second(s.DeriveKey(append(bytes.Clone(seed), 0))), pqc.ErrInvalidInput},
		{"Sign short key", errOf(s.Sign(priv[1:], msg, pqc.SignOptions{})), pqc.ErrInvalidInput},
		{"Sign long key", errOf(s.Sign(append(bytes.Clone(priv), 0), msg, pqc.SignOptions{})), pqc.ErrInvalidInput},
		{"Sign 256-byte context", errOf(s.Sign(priv, msg, long)), pqc.ErrInvalidInput},
		{"Sign external mu", errOf(s.Sign(priv, make([]byte, 64), mu)), pqc.ErrUnsupported},
		{"Verify short key", s.Verify(pub[1:], msg, sig, pqc.SignOptions{}), pqc.ErrInvalidInput},
		{"Verify long key", s.Verify(append(bytes.Clone(pub), 0), msg, sig, pqc.SignOptions{}), pqc.ErrInvalidInput},
		{"Verify 256-byte context", s.Verify(pub, msg, sig, long), pqc.ErrInvalidInput},
		{"Verify external mu", s.Verify(pub, make([]byte, 64), sig, mu), pqc.ErrUnsupported},
	} {
		checkErr(t, c.err, c.want, c.name)
		checkNoSecret(t, c.err, priv, seed)
	}

	testDER(t, s.Name(), pub, w.oid)
}

// testDER decodes PublicKeyDER's output independently.
func testDER(t *testing.T, name string, pub []byte, oid asn1.ObjectIdentifier) {
	t.Helper()
	der, err := pqc.PublicKeyDER(name, pub)
	if err != nil {
		t.Fatalf("PublicKeyDER: %v", err)
	}
	var spki struct {
		Algorithm struct {
			Algorithm  asn1.ObjectIdentifier
			Parameters asn1.RawValue `asn1:"optional"`
		}
		PublicKey asn1.BitString
	}
	rest, err := asn1.Unmarshal(der, &spki)
	if err != nil || len(rest) != 0 {
		t.Fatalf("PublicKeyDER output does not decode: %v, %d trailing bytes", err, len(rest))
	}
	if !spki.Algorithm.Algorithm.Equal(oid) {
		t.Errorf("OID %v, want %v", spki.Algorithm.Algorithm, oid)
	}
	if len(spki.Algorithm.Parameters.FullBytes) != 0 {
		t.Error("AlgorithmIdentifier parameters present, want absent")
	}
	if !bytes.Equal(spki.PublicKey.RightAlign(), pub) || spki.PublicKey.BitLength != 8*len(pub) {
		t.Error("SubjectPublicKey is not the public key")
	}
	_, err = pqc.PublicKeyDER(name, pub[1:])
	checkErr(t, err, pqc.ErrInvalidInput, "PublicKeyDER(short key)")
}

func TestZero(t *testing.T) {
	b := []byte{1, 2, 3}
	pqc.Zero(b)
	if !bytes.Equal(b, []byte{0, 0, 0}) {
		t.Errorf("Zero left %x", b)
	}
	pqc.Zero(nil)
}

func checkErr(t *testing.T, err, want error, what string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got error %v, want %v", what, err, want)
	}
	if err != nil && !strings.HasPrefix(err.Error(), "pqc: failed to ") {
		t.Errorf("%s: error %q does not start with \"pqc: failed to \"", what, err)
	}
}

// checkNoSecret fails if an error message carries private key or seed bytes,
// raw or in hex.
func checkNoSecret(t *testing.T, err error, secrets ...[]byte) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	for _, s := range secrets {
		probe := s[:8]
		if strings.Contains(msg, string(probe)) || strings.Contains(strings.ToLower(msg), hex.EncodeToString(probe)) {
			t.Errorf("error %q contains secret bytes", msg)
		}
	}
}

func checkLen(t *testing.T, what string, b []byte, n int) {
	t.Helper()
	if len(b) != n {
		t.Errorf("%s is %d bytes, advertised %d", what, len(b), n)
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func second[A, B any](_ A, _ B, err error) error { return err }

func errOf[A any](_ A, err error) error { return err }
