package e2e

import (
	"bytes"
	"crypto/mlkem"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPQCLI drives the post-quantum commands through the real binary:
// seal (locally with the public key keyflow hands out, offline from a PEM
// file, and remotely), open, encapsulate and decapsulate, with their exit
// codes, and checks that the audit trail holds none of the secrets.
func TestPQCLI(t *testing.T) {
	dir := t.TempDir()
	st := startStack(t, dir, "127.0.0.1:0", "127.0.0.1:0")

	var xw, kem, dsa keyMetadata
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "create", "--alias", "pq-xwing", "--spec", "X_WING")), &xw)
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "create", "--alias", "pq-kem", "--spec", "ML_KEM_768")), &kem)
	decodeJSON(t, mustOK(t, st.kf(t, "", "key", "create", "--alias", "pq-dsa", "--spec", "ML_DSA_65")), &dsa)
	for spec, k := range map[string]keyMetadata{"X_WING": xw, "ML_KEM_768": kem, "ML_DSA_65": dsa} {
		if k.KeyState != "ACTIVE" || len(k.Versions) != 1 || k.Versions[0].Algorithm != spec {
			t.Fatalf("created %+v, want an ACTIVE %s key", k, spec)
		}
	}
	const plaintext = "e2e-pq-sealed-plaintext-4b7e"
	secrets := []secret{{"sealed plaintext", []byte(plaintext)}}

	// Seal locally (the default), remotely, and offline from the PEM that
	// get-public-key prints; keyflow opens all three.
	pemFile := filepath.Join(t.TempDir(), "xwing.pem")
	pemOut := mustOK(t, st.kf(t, "", "get-public-key", "pq-xwing")).stdout
	if !strings.HasPrefix(pemOut, "-----BEGIN PUBLIC KEY-----") {
		t.Fatalf("get-public-key printed %q", pemOut)
	}
	if err := os.WriteFile(pemFile, []byte(pemOut), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{
		"local":   {"seal", "--recipient", "pq-xwing", "--info", "e2e"},
		"remote":  {"seal", "--recipient", "pq-xwing", "--info", "e2e", "--remote"},
		"offline": {"seal", "--public-key", pemFile, "--info", "e2e", "--server", "nats://127.0.0.1:1"},
	} {
		sealed := strings.TrimSpace(mustOK(t, st.kf(t, plaintext, args...)).stdout)
		raw, err := base64.StdEncoding.DecodeString(sealed)
		if err != nil || bytes.Contains(raw, []byte(plaintext)) || len(raw) != 1120+len(plaintext)+16 {
			t.Fatalf("seal %s printed %q (%v)", name, sealed, err)
		}
		if got := mustOK(t, st.kf(t, sealed, "open", "--key", "pq-xwing", "--info", "e2e")).stdout; got != plaintext {
			t.Errorf("open of the %s seal: got %q", name, got)
		}
		expectFailure(t, st.kf(t, sealed, "open", "--key", "pq-xwing"), 1, "InvalidCiphertextException")
	}
	var sr struct {
		KeyID      string `json:"keyId"`
		KeyVersion uint32 `json:"keyVersion"`
		Sealed     []byte `json:"sealed"`
	}
	decodeJSON(t, mustOK(t, st.kf(t, plaintext, "seal", "--recipient", "pq-kem", "-o", "json")), &sr)
	if sr.KeyID != kem.KeyID || sr.KeyVersion != 1 || len(sr.Sealed) == 0 {
		t.Errorf("seal -o json: %+v", sr)
	}
	if got := mustOK(t, st.kf(t, b64(sr.Sealed), "open", "--key", "pq-kem")).stdout; got != plaintext {
		t.Errorf("open of an ML-KEM-768 seal: got %q", got)
	}
	expectFailure(t, st.kf(t, plaintext, "seal", "--recipient", "pq-dsa"), 1, "InvalidKeyUsageException")
	expectFailure(t, st.kf(t, plaintext, "seal", "--recipient", "pq-dsa", "--remote"), 1, "InvalidKeyUsageException")
	expectFailure(t, st.kf(t, plaintext, "seal", "--recipient", "pq-nope"), 1, "NotFoundException")
	expectFailure(t, st.kf(t, plaintext, "seal"), 2, "UsageError")
	expectFailure(t, st.kf(t, plaintext, "seal", "--recipient", "pq-xwing", "--public-key", pemFile), 2, "UsageError")
	expectFailure(t, st.kf(t, "", "seal", "--recipient", "pq-xwing"), 2, "UsageError")
	expectFailure(t, st.kf(t, "not base64!", "open", "--key", "pq-xwing"), 2, "UsageError")
	expectFailure(t, st.kf(t, "AQID", "open"), 2, "UsageError")

	// Encapsulate and decapsulate; the secret agrees with crypto/mlkem's.
	var enc struct {
		KeyID        string `json:"keyId"`
		KeyVersion   uint32 `json:"keyVersion"`
		Ciphertext   []byte `json:"ciphertext"`
		SharedSecret []byte `json:"sharedSecret"`
	}
	decodeJSON(t, mustOK(t, st.kf(t, "", "encapsulate", "--key", "pq-kem")), &enc)
	if enc.KeyID != kem.KeyID || len(enc.Ciphertext) != mlkem.CiphertextSize768 || len(enc.SharedSecret) != mlkem.SharedKeySize {
		t.Fatalf("encapsulate printed %+v", enc)
	}
	secrets = append(secrets, secret{"shared secret", []byte(b64(enc.SharedSecret))})
	got := strings.TrimSpace(mustOK(t, st.kf(t, b64(enc.Ciphertext), "decapsulate", "--key", "pq-kem")).stdout)
	if got != b64(enc.SharedSecret) {
		t.Errorf("decapsulate printed %q, want the encapsulated secret", got)
	}
	got = strings.TrimSpace(mustOK(t, st.kf(t, b64(enc.Ciphertext), "decapsulate", "--key", "pq-kem", "--version", "1")).stdout)
	if got != b64(enc.SharedSecret) {
		t.Errorf("decapsulate --version 1 printed %q", got)
	}
	// A ciphertext made with crypto/mlkem and the public key from the PEM.
	var pub struct {
		PublicKey []byte `json:"publicKey"`
	}
	decodeJSON(t, mustOK(t, st.kf(t, "", "get-public-key", "pq-kem", "-o", "json")), &pub)
	ek, err := mlkem.NewEncapsulationKey768(pub.PublicKey[len(pub.PublicKey)-mlkem.EncapsulationKeySize768:])
	if err != nil {
		t.Fatalf("crypto/mlkem refuses the public key: %v", err)
	}
	ss, ct := ek.Encapsulate()
	secrets = append(secrets, secret{"crypto/mlkem shared secret", []byte(b64(ss))})
	if got := strings.TrimSpace(mustOK(t, st.kf(t, b64(ct), "decapsulate", "--key", "pq-kem")).stdout); got != b64(ss) {
		t.Errorf("decapsulate of a crypto/mlkem ciphertext printed %q", got)
	}
	expectFailure(t, st.kf(t, b64(ct[1:]), "decapsulate", "--key", "pq-kem"), 1, "ValidationException")
	expectFailure(t, st.kf(t, b64(ct), "decapsulate", "--key", "pq-dsa"), 1, "InvalidKeyUsageException")
	expectFailure(t, st.kf(t, "", "encapsulate"), 2, "UsageError")

	// The trail has the operations and none of the secrets.
	raw, evs := auditTail(t, st)
	scanForSecrets(t, "the audit trail", []byte(raw), secrets)
	for _, typ := range []string{"io.keyflow.crypto.seal.v1", "io.keyflow.crypto.open.v1", "io.keyflow.crypto.encapsulate.v1", "io.keyflow.crypto.decapsulate.v1"} {
		if !hasEvent(evs, typ, "success", map[string]any{"keyVersion": 1}) {
			t.Errorf("no successful %s event", typ)
		}
	}
	if !hasEvent(evs, "io.keyflow.crypto.open.v1", "failure", nil) {
		t.Errorf("no failed open event")
	}
	for _, e := range evs {
		var data map[string]any
		if err := json.Unmarshal(e.Data, &data); err != nil {
			t.Errorf("event %s data: %v", e.ID, err)
		}
	}
}
