package rpc

import (
	"strings"
	"testing"
	"time"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
)

// Input oddities found by the probe: each is refused as malformed (a
// ValidationException naming the problem), and the well-formed neighbours
// still decode.
func TestDecodeRefusesOddities(t *testing.T) {
	type tc struct {
		name, body, wantErr string
		v                   func() any
	}
	encrypt := func() any { return &api.EncryptRequest{} }
	batch := func() any { return &api.BatchEncryptRequest{} }
	createKey := func() any { return &api.CreateKeyRequest{} }
	grant := func() any { return &api.CreateGrantRequest{} }
	for _, c := range []tc{
		{"duplicate context key", `{"keyId":"k","encryptionContext":{"a":"1","a":"2"}}`, `field "encryptionContext.a" appears twice`, encrypt},
		{"case-distinct context keys", `{"keyId":"k","encryptionContext":{"Dept":"1","dept":"2"}}`, "", encrypt},
		{"duplicate key in a batch item", `{"items":[{"keyId":"k"},{"keyId":"k","keyId":"j"}]}`, `field "items[1].keyId" appears twice`, batch},
		{"case-folded field in a batch item", `{"items":[{"KEYID":"k"}]}`, `unknown field "items[0].KEYID"`, batch},
		{"duplicate context key in a batch item", `{"items":[{"keyId":"k","encryptionContext":{"x":"1","x":"1"}}]}`, `"items[0].encryptionContext.x" appears twice`, batch},
		{"case-folded nested constraint", `{"keyId":"k","grantee":"bob","operations":["Encrypt"],"constraints":{"NOTAFTER":"2030-01-01T00:00:00Z"}}`, `unknown field "constraints.NOTAFTER"`, grant},
		{"well-formed batch", `{"items":[{"keyId":"k","encryptionContext":{"x":"1"}},{"keyId":"j"}]}`, "", batch},
		{"null body", `null`, "must be a JSON object", encrypt},
		{"array body", `[]`, "must be a JSON object", encrypt},
		{"invalid UTF-8 in a context key", "{\"keyId\":\"k\",\"encryptionContext\":{\"a\xff\":\"1\"}}", "not valid UTF-8", encrypt},
		{"year 9999 activation", `{"activationDate":"9999-12-31T00:00:00Z"}`, "activationDate 9999-12-31T00:00:00Z is out of range", createKey},
		{"year 9999 grant expiry", `{"keyId":"k","grantee":"bob","operations":["Encrypt"],"constraints":{"notAfter":"9999-01-01T00:00:00Z"}}`, "constraints.notAfter", grant},
		{"a date next year", `{"activationDate":"` + time.Now().AddDate(1, 0, 0).UTC().Format(time.RFC3339) + `"}`, "", createKey},
	} {
		err := decode([]byte(c.body), c.v())
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr) || kms.CodeOf(err) != kms.CodeValidation):
			t.Errorf("%s: got %v, want a ValidationException with %q", c.name, err, c.wantErr)
		}
	}
}

// A waitMillis of 2^62 waits the maximum, not an overflowed zero; a
// negative one is refused.
func TestTailWaitBounds(t *testing.T) {
	if w, err := tailWait(1 << 62); err != nil || w != maxTailWait {
		t.Fatalf("2^62: %v, %v", w, err)
	}
	if w, err := tailWait(250); err != nil || w != 250*time.Millisecond {
		t.Fatalf("250: %v, %v", w, err)
	}
	if _, err := tailWait(-1); kms.CodeOf(err) != kms.CodeValidation {
		t.Fatalf("-1: %v", err)
	}
}
