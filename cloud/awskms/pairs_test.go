package awskms_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/keyflow/keyflow/cloud"
	"github.com/keyflow/keyflow/cloud/awskms"
)

// recordingAWS answers the AWS KMS JSON protocol just enough for one
// import and records each request body by operation. No endpoint here
// imports EC private keys (local-kms takes AES only, keyflow's own AWS
// API RSA only), so this pins down what the connector asks AWS for; the
// RSA path runs end to end in workflows (TestCloudDistributeKeyPairs-
// ToKeyflowsOwnAWSAPI).
func recordingAWS(t *testing.T, wrapPub []byte) (*httptest.Server, func() map[string]map[string]any) {
	var mu sync.Mutex
	got := map[string]map[string]any{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "TrentService.")
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		got[op] = body
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		md := map[string]any{"KeyId": "k-ec", "Arn": "arn:aws:kms:us-east-1:111122223333:key/k-ec", "KeyState": "PendingImport"}
		switch op {
		case "DescribeKey":
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]string{"__type": "NotFoundException", "message": "no such alias"})
		case "CreateKey":
			_ = json.NewEncoder(w).Encode(map[string]any{"KeyMetadata": md})
		case "GetParametersForImport":
			_ = json.NewEncoder(w).Encode(map[string]any{"KeyId": "k-ec", "PublicKey": wrapPub, "ImportToken": []byte("token")})
		default:
			_, _ = w.Write([]byte("{}"))
		}
	}))
	t.Cleanup(srv.Close)
	return srv, func() map[string]map[string]any { mu.Lock(); defer mu.Unlock(); return got }
}

// An EC key pair goes to AWS as an EXTERNAL ECC_NIST_P256 SIGN_VERIFY
// key, its material under RSA_AES_KEY_WRAP_SHA_256 on an RSA_3072
// wrapping key even when the destination's spec is RSA_2048.
func TestImportKeyPairAsksForRSAAESKeyWrap(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	srv, requests := recordingAWS(t, pub)
	wrapped := []byte("wrapped pkcs8")
	var asked cloud.WrappingKey
	res, err := awskms.New(sdk(srv.URL)).Import(context.Background(), cloud.ImportParams{KeyID: "k1", KeyVersion: 1, Spec: cloud.SpecECP256Sign,
		Wrap: func(_ context.Context, w cloud.WrappingKey) ([]byte, error) { asked = w; return wrapped, nil }})
	if err != nil {
		t.Fatal(err)
	}
	got := requests()
	if ck := got["CreateKey"]; ck["KeySpec"] != "ECC_NIST_P256" || ck["KeyUsage"] != "SIGN_VERIFY" || ck["Origin"] != "EXTERNAL" {
		t.Fatalf("CreateKey %v", ck)
	}
	if gp := got["GetParametersForImport"]; gp["WrappingAlgorithm"] != "RSA_AES_KEY_WRAP_SHA_256" || gp["WrappingKeySpec"] != "RSA_3072" {
		t.Fatalf("GetParametersForImport %v", gp)
	}
	if asked.Scheme != cloud.SchemeRSAAESKeyWrapSHA256 || !bytes.Equal(asked.PublicKey, pub) {
		t.Fatalf("wrapper asked for %s", asked.Scheme)
	}
	if ik := got["ImportKeyMaterial"]; ik["EncryptedKeyMaterial"] != "d3JhcHBlZCBwa2NzOA==" || ik["ExpirationModel"] != "KEY_MATERIAL_DOES_NOT_EXPIRE" {
		t.Fatalf("ImportKeyMaterial %v", ik)
	}
	if res.ProviderVersion != "arn:aws:kms:us-east-1:111122223333:key/k-ec" || res.Resource != awskms.PrimaryAlias("k1") {
		t.Fatalf("result %+v", res)
	}
}

// Each key pair spec maps to its AWS KeySpec and KeyUsage; the purpose
// comes from the keyflow key's usage.
func TestKeyPairSpecsMapToAWS(t *testing.T) {
	want := map[string][2]string{
		cloud.SpecRSA3072Sign: {"RSA_3072", "SIGN_VERIFY"}, cloud.SpecRSA3072Decrypt: {"RSA_3072", "ENCRYPT_DECRYPT"},
		cloud.SpecRSA4096Sign: {"RSA_4096", "SIGN_VERIFY"}, cloud.SpecRSA4096Decrypt: {"RSA_4096", "ENCRYPT_DECRYPT"},
		cloud.SpecECP256Sign: {"ECC_NIST_P256", "SIGN_VERIFY"}, cloud.SpecECP384Sign: {"ECC_NIST_P384", "SIGN_VERIFY"},
	}
	for _, spec := range cloud.KeyPairSpecs {
		if err := cloud.CheckSpec(cloud.ProviderAWS, spec); err != nil {
			t.Fatal(err)
		}
		srv, requests := recordingAWS(t, nil)
		_, _ = awskms.New(sdk(srv.URL)).Import(context.Background(), cloud.ImportParams{KeyID: "k1", KeyVersion: 1, Spec: spec,
			Wrap: func(context.Context, cloud.WrappingKey) ([]byte, error) { return []byte("w"), nil }})
		if ck := requests()["CreateKey"]; ck["KeySpec"] != want[spec][0] || ck["KeyUsage"] != want[spec][1] {
			t.Fatalf("%s: CreateKey %v", spec, ck)
		}
	}
	if _, err := awskms.New(sdk("http://127.0.0.1:1")).Import(context.Background(), cloud.ImportParams{KeyID: "k1", KeyVersion: 1, Spec: "HMAC_256"}); !errors.Is(err, cloud.ErrUnsupported) {
		t.Fatalf("an HMAC key to AWS: %v", err)
	}
}
