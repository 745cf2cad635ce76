package rpc

import (
	"strings"
	"testing"

	"github.com/keyflow/keyflow/client/api"
)

// The single-pass decoder refuses what the two-pass one refused, with the
// same words, and decodes what it accepted to the same values.
func TestDecodeSinglePass(t *testing.T) {
	for _, tc := range []struct {
		body, wantErr string
	}{
		{`{"keyId":"k","plaintext":"AAEC","encryptionContext":{"a":"b"}}`, ""},
		{` {"keyId":"k"} `, ""},
		{`{"KEYID":"k"}`, `unknown field "KEYID" (field names are case-sensitive)`},
		{`{"keyId":"k","keyId":"j"}`, `field "keyId" appears twice`},
		{`{"keyId":5}`, `field "keyId" has the wrong type`},
		{`{"encryptionContext":{"a":1}}`, `field "encryptionContext`},
		{`{"plaintext":"!!!!"}`, "base64"},
		{`{"keyId":"k"}{}`, "trailing data"},
		{`{"keyId":"k"}}`, "trailing data"},
		{`{"keyId":`, "invalid JSON"},
		{`{"nope":1}`, `unknown field "nope"`},
	} {
		var req api.EncryptRequest
		handled, err := decodeSinglePass([]byte(tc.body), &req)
		if !handled {
			t.Errorf("%s: not handled", tc.body)
			continue
		}
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.body, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: got %v, want %q", tc.body, err, tc.wantErr)
		}
	}
	var req api.EncryptRequest
	if _, err := decodeSinglePass([]byte(`{"keyId":"k","plaintext":"AAEC","encryptionContext":{"a":"b"}}`), &req); err != nil ||
		req.KeyID != "k" || string(req.Plaintext) != "\x00\x01\x02" || req.EncryptionContext["a"] != "b" {
		t.Fatalf("decoded %+v, %v", req, err)
	}
	// Not an object, or not a plain struct: the two-pass path decides.
	for _, body := range []string{`[1,2]`, `hello`, `null`} {
		if handled, _ := decodeSinglePass([]byte(body), &req); handled {
			t.Errorf("%s was handled by the fast path", body)
		}
	}
}

// BenchmarkDecode measures one strict decode of a decapsulate request.
func BenchmarkDecode(b *testing.B) {
	body := []byte(`{"keyId":"0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b","keyVersion":1,"ciphertext":"` + strings.Repeat("QUFB", 363) + `"}`)
	b.ReportAllocs()
	for range b.N {
		var req api.DecapsulateRequest
		if err := decode(body, &req); err != nil {
			b.Fatal(err)
		}
	}
}
