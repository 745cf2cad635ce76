package e2e

import (
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenSSLInterop checks keyflow against an independent implementation:
// the openssl command. Signatures made by keyflow verify with openssl using
// the PEM from get-public-key, and data encrypted by openssl to a keyflow
// RSA key decrypts through keyflow.
func TestOpenSSLInterop(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl is not installed (apt-get install openssl); it is the independent verifier of this test")
	}
	dir := t.TempDir()
	st := startStack(t, dir, "127.0.0.1:0", "127.0.0.1:0")
	defer st.stop(t)
	work := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(work, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ossl := func(args ...string) (string, error) {
		out, err := exec.Command(openssl, args...).CombinedOutput()
		return string(out), err
	}
	const message = "release v1.2.3 — signed by keyflow"
	msgPath := write("msg", []byte(message))

	createKey := func(alias, spec, usage string) string {
		var meta struct {
			KeyID string `json:"keyId"`
		}
		decodeJSON(t, mustOK(t, st.kf(t, "", "key", "create", "--alias", alias, "--spec", spec, "--usage", usage)), &meta)
		pem := mustOK(t, st.kf(t, "", "get-public-key", alias)).stdout
		if !strings.HasPrefix(pem, "-----BEGIN PUBLIC KEY-----") {
			t.Fatalf("get-public-key %s: not a PEM public key: %q", alias, pem)
		}
		return write(alias+".pem", []byte(pem))
	}
	sign := func(alias, alg string) string {
		sig := strings.TrimSpace(mustOK(t, st.kf(t, message, "sign", "--key", alias, "--algorithm", alg)).stdout)
		der, err := base64.StdEncoding.DecodeString(sig)
		if err != nil {
			t.Fatalf("sign %s: output is not base64: %v", alias, err)
		}
		return write(alias+"-"+alg+".sig", der)
	}

	cases := []struct {
		alias, spec, alg string
		verify           func(pem, sig string) []string
	}{
		{"p256", "ECC_NIST_P256", "ECDSA_SHA_256", func(pem, sig string) []string {
			return []string{"dgst", "-sha256", "-verify", pem, "-signature", sig, msgPath}
		}},
		{"p384", "ECC_NIST_P384", "ECDSA_SHA_384", func(pem, sig string) []string {
			return []string{"dgst", "-sha384", "-verify", pem, "-signature", sig, msgPath}
		}},
		{"ed", "ECC_NIST_EDWARDS25519", "ED25519_SHA_512", func(pem, sig string) []string {
			return []string{"pkeyutl", "-verify", "-pubin", "-inkey", pem, "-rawin", "-in", msgPath, "-sigfile", sig}
		}},
		{"rsapss", "RSA_3072", "RSASSA_PSS_SHA_256", func(pem, sig string) []string {
			return []string{"dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:-1", "-verify", pem, "-signature", sig, msgPath}
		}},
		{"rsapkcs", "RSA_3072", "RSASSA_PKCS1_V1_5_SHA_512", func(pem, sig string) []string {
			return []string{"dgst", "-sha512", "-verify", pem, "-signature", sig, msgPath}
		}},
	}
	for _, tc := range cases {
		t.Run("sign/"+tc.alg, func(t *testing.T) {
			pem := createKey(tc.alias, tc.spec, "SIGN_VERIFY")
			sig := sign(tc.alias, tc.alg)
			if out, err := ossl(tc.verify(pem, sig)...); err != nil {
				t.Fatalf("openssl does not verify keyflow's %s signature: %v\n%s", tc.alg, err, out)
			}
			// And openssl must refuse it for another message: the check is real.
			bad := write(tc.alias+"-other", []byte(message+"!"))
			args := tc.verify(pem, sig)
			for i, a := range args {
				if a == msgPath {
					args[i] = bad
				}
			}
			if _, err := ossl(args...); err == nil {
				t.Fatalf("openssl verified a %s signature over the wrong message", tc.alg)
			}
			// keyflow verifies its own signature, and refuses a flipped one.
			sigB64 := base64.StdEncoding.EncodeToString(mustRead(t, sig))
			mustOK(t, st.kf(t, message, "verify", "--key", tc.alias, "--algorithm", tc.alg, "--signature", sigB64))
			flipped := mustRead(t, sig)
			flipped[len(flipped)/2] ^= 1
			expectFailure(t, st.kf(t, message, "verify", "--key", tc.alias, "--algorithm", tc.alg, "--signature", base64.StdEncoding.EncodeToString(flipped)), 1, "KMSInvalidSignatureException")
		})
	}

	t.Run("oaep/openssl-encrypts-keyflow-decrypts", func(t *testing.T) {
		pem := createKey("rsaenc", "RSA_3072", "ENCRYPT_DECRYPT")
		secret := "wrapped by openssl, opened by keyflow"
		in := write("oaep-in", []byte(secret))
		ctPath := filepath.Join(work, "oaep.ct")
		if out, err := ossl("pkeyutl", "-encrypt", "-pubin", "-inkey", pem, "-pkeyopt", "rsa_padding_mode:oaep",
			"-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256", "-in", in, "-out", ctPath); err != nil {
			t.Fatalf("openssl pkeyutl -encrypt: %v\n%s", err, out)
		}
		ct := base64.StdEncoding.EncodeToString(mustRead(t, ctPath))
		got := mustOK(t, st.kf(t, ct, "decrypt", "--key", "rsaenc", "--algorithm", "RSAES_OAEP_SHA_256")).stdout
		if got != secret {
			t.Fatalf("keyflow decrypted %q, want %q", got, secret)
		}
		// The other way: keyflow encrypts, openssl cannot decrypt (no private
		// key), but keyflow round-trips, and SHA-1 OAEP works too.
		ct1 := strings.TrimSpace(mustOK(t, st.kf(t, secret, "encrypt", "--key", "rsaenc", "--algorithm", "RSAES_OAEP_SHA_1")).stdout)
		if got := mustOK(t, st.kf(t, ct1, "decrypt", "--key", "rsaenc", "--algorithm", "RSAES_OAEP_SHA_1")).stdout; got != secret {
			t.Fatalf("SHA-1 OAEP round trip gave %q", got)
		}
	})
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
