package e2e

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hpke"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// byokKey is the JSON the CLI prints for an EXTERNAL key.
type byokKey struct {
	KeyID           string       `json:"keyId"`
	KeyState        string       `json:"keyState"`
	Origin          string       `json:"origin"`
	ExpirationModel string       `json:"expirationModel"`
	ValidTo         *time.Time   `json:"validTo"`
	Versions        []keyVersion `json:"versions"`
}

type importParams struct {
	KeyID             string    `json:"keyId"`
	WrappingAlgorithm string    `json:"wrappingAlgorithm"`
	WrappingKeySpec   string    `json:"wrappingKeySpec"`
	ParametersValidTo time.Time `json:"parametersValidTo"`
	PublicKeyFile     string    `json:"publicKeyFile"`
	ImportTokenFile   string    `json:"importTokenFile"`
}

type importReply struct {
	KeyMetadata byokKey `json:"keyMetadata"`
	ImportID    string  `json:"importId"`
	Reimport    bool    `json:"reimport"`
	WorkflowID  string  `json:"workflowId"`
}

// decryptOutside opens a keyflow ciphertext (envelope format 1, AES-GCM)
// with the customer's material and Go's crypto only, rebuilding the AAD
// from its documented format.
func decryptOutside(t *testing.T, material, ct []byte, tenant string, ec map[string]string) string {
	t.Helper()
	if len(ct) < 3 || ct[0] != 1 || ct[1] != 1 {
		t.Fatalf("not an AES-GCM envelope")
	}
	h := 3 + int(ct[2]) + 4
	header, iv, body := ct[:h], ct[h:h+12], ct[h+12:]
	lp := func(dst, b []byte) []byte { return append(binary.BigEndian.AppendUint32(dst, uint32(len(b))), b...) }
	aad := lp(lp(lp(nil, []byte("keyflow/aad/v1")), header), []byte(tenant))
	keys := make([]string, 0, len(ec))
	for k := range ec {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	aad = binary.BigEndian.AppendUint32(aad, uint32(len(keys)))
	for _, k := range keys {
		aad = lp(lp(aad, []byte(k)), []byte(ec[k]))
	}
	blk, err := aes.NewCipher(material)
	if err != nil {
		t.Fatal(err)
	}
	g, _ := cipher.NewGCM(blk)
	pt, err := g.Open(nil, iv, body, aad)
	if err != nil {
		t.Fatalf("keyflow's ciphertext does not open with the customer's material outside keyflow: %v", err)
	}
	return string(pt)
}

// TestBYOKWithOpenSSL plays the customer with openssl: it generates the
// key material, wraps it to keyflow's wrapping public key (RSA-OAEP, and
// RSA + AES-KWP as AWS documents), imports it with the CLI, and decrypts
// keyflow's ciphertexts with the same material outside keyflow.
func TestBYOKWithOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl is not installed (apt-get install openssl); it plays the customer in this test")
	}
	st := startStack(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0")
	defer st.stop(t)
	work := t.TempDir()
	path := func(name string) string { return filepath.Join(work, name) }
	ossl := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	create := func(alias string) byokKey {
		var k byokKey
		decodeJSON(t, mustOK(t, st.kf(t, "", "key", "create", "--origin", "EXTERNAL", "--alias", alias)), &k)
		if k.KeyState != "PENDING_IMPORT" || k.Origin != "EXTERNAL" {
			t.Fatalf("new EXTERNAL key: %+v", k)
		}
		return k
	}
	params := func(alias, alg, dir string) importParams {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		var p importParams
		decodeJSON(t, mustOK(t, st.kf(t, "", "import-params", alias, "--wrapping-alg", alg, "--wrapping-spec", "RSA_3072", "--out", dir)), &p)
		if p.WrappingAlgorithm != alg || p.WrappingKeySpec != "RSA_3072" || time.Until(p.ParametersValidTo) < 23*time.Hour {
			t.Fatalf("import-params: %+v", p)
		}
		return p
	}
	oaep := func(pub, in, out string) {
		ossl("pkeyutl", "-encrypt", "-pubin", "-keyform", "DER", "-inkey", pub, "-pkeyopt", "rsa_padding_mode:oaep",
			"-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256", "-in", in, "-out", out)
	}
	ec := map[string]string{"app": "e2e"}

	// The customer's material, made by openssl.
	ossl("rand", "-out", path("material.bin"), "32")
	material := mustRead(t, path("material.bin"))

	// 1. RSAES_OAEP_SHA_256, with an expiry.
	k := create("byok")
	expectFailure(t, st.kf(t, "hello", "encrypt", "--key", "byok"), 1, "KMSInvalidStateException")
	p := params("byok", "RSAES_OAEP_SHA_256", path("p1"))
	oaep(p.PublicKeyFile, path("material.bin"), path("wrapped1.bin"))
	validTo := time.Now().Add(30 * 24 * time.Hour).UTC().Truncate(time.Second)
	var imp importReply
	decodeJSON(t, mustOK(t, st.kf(t, "", "import", "byok", "--material-file", path("wrapped1.bin"), "--token-file", p.ImportTokenFile,
		"--valid-to", validTo.Format(time.RFC3339))), &imp)
	if imp.KeyMetadata.KeyState != "ACTIVE" || imp.KeyMetadata.ExpirationModel != "KEY_MATERIAL_EXPIRES" ||
		imp.KeyMetadata.ValidTo == nil || !imp.KeyMetadata.ValidTo.Equal(validTo) || !strings.HasPrefix(imp.WorkflowID, "import-expiry/") {
		t.Fatalf("import: %+v", imp)
	}
	var desc byokKey
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "describe", "byok")), &desc)
	if desc.KeyState != "ACTIVE" || desc.Origin != "EXTERNAL" || desc.ExpirationModel != "KEY_MATERIAL_EXPIRES" {
		t.Fatalf("describe after import: %+v", desc)
	}
	ctB64 := strings.TrimSpace(mustOK(t, st.kf(t, "attack at dawn", "encrypt", "--key", "byok", "--context", "app=e2e")).stdout)
	ct, err := base64.StdEncoding.DecodeString(ctB64)
	if err != nil {
		t.Fatal(err)
	}
	if got := decryptOutside(t, material, ct, "default", ec); got != "attack at dawn" {
		t.Fatalf("decrypted outside keyflow: %q", got)
	}

	// 2. RSA_AES_KEY_WRAP_SHA_256, as AWS documents it with openssl: a
	// fresh AES key, the material under it with AES-KWP, the AES key
	// under the wrapping key with OAEP, concatenated.
	create("byok-kw")
	p2 := params("byok-kw", "RSA_AES_KEY_WRAP_SHA_256", path("p2"))
	ossl("rand", "-out", path("aes.bin"), "32")
	ossl("enc", "-id-aes256-wrap-pad", "-K", hex.EncodeToString(mustRead(t, path("aes.bin"))), "-iv", "A65959A6",
		"-in", path("material.bin"), "-out", path("material-kwp.bin"))
	oaep(p2.PublicKeyFile, path("aes.bin"), path("aes-wrapped.bin"))
	if err := os.WriteFile(path("wrapped2.bin"), append(mustRead(t, path("aes-wrapped.bin")), mustRead(t, path("material-kwp.bin"))...), 0o600); err != nil {
		t.Fatal(err)
	}
	mustOK(t, st.kf(t, "", "import", "byok-kw", "--material-file", path("wrapped2.bin"), "--token-file", p2.ImportTokenFile))
	ct2B64 := strings.TrimSpace(mustOK(t, st.kf(t, "second", "encrypt", "--key", "byok-kw")).stdout)
	ct2, _ := base64.StdEncoding.DecodeString(ct2B64)
	if got := decryptOutside(t, material, ct2, "default", nil); got != "second" {
		t.Fatalf("decrypted outside keyflow: %q", got)
	}

	// 3. XWING_HPKE: the customer wraps with Go's crypto/hpke.
	create("byok-pq")
	p3 := params3(t, st, "byok-pq", path("p3"))
	pk, err := hpke.MLKEM768X25519().NewPublicKey(mustRead(t, p3.PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	enc, sender, err := hpke.NewSender(pk, hpke.HKDFSHA256(), hpke.AES256GCM(), []byte("keyflow/import/v1"))
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := sender.Seal(nil, material)
	if err := os.WriteFile(path("wrapped3.bin"), append(enc, sealed...), 0o600); err != nil {
		t.Fatal(err)
	}
	mustOK(t, st.kf(t, "", "import", "byok-pq", "--material-file", path("wrapped3.bin"), "--token-file", p3.ImportTokenFile))
	ct3B64 := strings.TrimSpace(mustOK(t, st.kf(t, "post-quantum", "encrypt", "--key", "byok-pq")).stdout)
	ct3, _ := base64.StdEncoding.DecodeString(ct3B64)
	if got := decryptOutside(t, material, ct3, "default", nil); got != "post-quantum" {
		t.Fatalf("decrypted outside keyflow: %q", got)
	}

	// 4. The customer's own RSA signing key, made and wrapped by openssl:
	// keyflow's signature verifies with openssl under the customer's key.
	ossl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072", "-out", path("rsa.pem"))
	ossl("pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in", path("rsa.pem"), "-out", path("rsa.der"))
	ossl("pkey", "-in", path("rsa.pem"), "-pubout", "-out", path("rsa-pub.pem"))
	mustOK(t, st.kf(t, "", "key", "create", "--origin", "EXTERNAL", "--alias", "byok-rsa", "--spec", "RSA_3072", "--usage", "SIGN_VERIFY"))
	expectFailure(t, st.kf(t, "", "import-params", "byok-rsa", "--wrapping-alg", "RSAES_OAEP_SHA_256", "--out", work), 1, "ValidationException")
	p5 := params("byok-rsa", "RSA_AES_KEY_WRAP_SHA_256", path("p5"))
	ossl("rand", "-out", path("aes5.bin"), "32")
	ossl("enc", "-id-aes256-wrap-pad", "-K", hex.EncodeToString(mustRead(t, path("aes5.bin"))), "-iv", "A65959A6",
		"-in", path("rsa.der"), "-out", path("rsa-kwp.bin"))
	oaep(p5.PublicKeyFile, path("aes5.bin"), path("aes5-wrapped.bin"))
	if err := os.WriteFile(path("wrapped5.bin"), append(mustRead(t, path("aes5-wrapped.bin")), mustRead(t, path("rsa-kwp.bin"))...), 0o600); err != nil {
		t.Fatal(err)
	}
	mustOK(t, st.kf(t, "", "import", "byok-rsa", "--material-file", path("wrapped5.bin"), "--token-file", p5.ImportTokenFile))
	if got, want := mustOK(t, st.kf(t, "", "get-public-key", "byok-rsa")).stdout, string(mustRead(t, path("rsa-pub.pem"))); strings.TrimSpace(got) != strings.TrimSpace(want) {
		t.Fatalf("get-public-key is not the customer's public key:\n%s\nwant\n%s", got, want)
	}
	const release = "release v2 signed with the customer's own key"
	sig5, err := base64.StdEncoding.DecodeString(strings.TrimSpace(mustOK(t, st.kf(t, release, "sign", "--key", "byok-rsa", "--algorithm", "RSASSA_PKCS1_V1_5_SHA_256")).stdout))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path("sig5"), sig5, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path("release"), []byte(release), 0o600); err != nil {
		t.Fatal(err)
	}
	ossl("dgst", "-sha256", "-verify", path("rsa-pub.pem"), "-signature", path("sig5"), path("release"))

	// Refusals, each with its code.
	expectFailure(t, st.kf(t, "", "import", "byok-kw", "--material-file", path("wrapped1.bin"), "--token-file", p.ImportTokenFile), 1, "InvalidImportTokenException")
	ossl("rand", "-out", path("other.bin"), "32")
	p4 := params("byok", "RSAES_OAEP_SHA_256", path("p4"))
	oaep(p4.PublicKeyFile, path("other.bin"), path("wrapped-other.bin"))
	expectFailure(t, st.kf(t, "", "import", "byok", "--material-file", path("wrapped-other.bin"), "--token-file", p4.ImportTokenFile), 1, "IncorrectKeyMaterialException")
	ossl("rand", "-out", path("short.bin"), "16")
	oaep(p4.PublicKeyFile, path("short.bin"), path("wrapped-short.bin"))
	expectFailure(t, st.kf(t, "", "import", "byok", "--material-file", path("wrapped-short.bin"), "--token-file", p4.ImportTokenFile), 1, "IncorrectKeyMaterialException")
	expectFailure(t, st.kf(t, "", "import", "byok", "--material-file", path("wrapped1.bin"), "--token-file", p4.ImportTokenFile, "--wrapping-alg", "RSAES_OAEP_SHA_1"), 1, "ValidationException")

	// Deleting the material: the key is PENDING_IMPORT and the old
	// ciphertext does not decrypt; the same material re-imported brings
	// it back.
	var del byokKey
	decodeJSON(t, mustOK(t, st.kf(t, "", "delete-imported-material", "byok")), &del)
	if del.KeyState != "PENDING_IMPORT" || del.ExpirationModel != "" {
		t.Fatalf("after delete-imported-material: %+v", del)
	}
	expectFailure(t, st.kf(t, ctB64, "decrypt", "--context", "app=e2e"), 1, "KMSInvalidStateException")
	oaep(p4.PublicKeyFile, path("material.bin"), path("wrapped-again.bin"))
	decodeJSON(t, mustOK(t, st.kf(t, "", "import", "byok", "--material-file", path("wrapped-again.bin"), "--token-file", p4.ImportTokenFile)), &imp)
	if !imp.Reimport || imp.KeyMetadata.ExpirationModel != "KEY_MATERIAL_DOES_NOT_EXPIRE" {
		t.Fatalf("re-import: %+v", imp)
	}
	if got := mustOK(t, st.kf(t, ctB64, "decrypt", "--context", "app=e2e")).stdout; got != "attack at dawn" {
		t.Fatalf("decrypt after re-import: %q", got)
	}

	// The audit trail has every step, and never the material.
	raw, evs := auditTail(t, st)
	for _, c := range []struct{ typ, outcome string }{
		{"io.keyflow.key.created.v1", "success"},
		{"io.keyflow.key.import.parameters.v1", "success"},
		{"io.keyflow.key.import.completed.v1", "success"},
		{"io.keyflow.key.import.completed.v1", "failure"},
		{"io.keyflow.key.import.deleted.v1", "success"},
	} {
		if !hasEvent(evs, c.typ, c.outcome, map[string]any{"keyId": k.KeyID}) {
			t.Errorf("no %s %s event for %s", c.outcome, c.typ, k.KeyID)
		}
	}
	scanForSecrets(t, "the audit trail", []byte(raw), []secret{
		{"material (hex)", []byte(hex.EncodeToString(material))},
		{"material (base64)", []byte(base64.StdEncoding.EncodeToString(material))},
	})
}

// params3 gets XWING_HPKE parameters.
func params3(t *testing.T, st *stack, alias, dir string) importParams {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var p importParams
	decodeJSON(t, mustOK(t, st.kf(t, "", "import-params", alias, "--wrapping-alg", "XWING_HPKE", "--out", dir)), &p)
	if p.WrappingKeySpec != "X_WING" {
		t.Fatalf("import-params: %+v", p)
	}
	return p
}
