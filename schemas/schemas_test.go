package schemas_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyflow/keyflow/schemas"
	"github.com/keyflow/keyflow/workers/api"
)

func TestSchemasCompile(t *testing.T) {
	if err := schemas.Compile(); err != nil {
		t.Fatal(err)
	}
	n := 0
	err := fs.WalkDir(schemas.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		doc := readSchema(t, p)
		if doc["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $schema is %v, want draft 2020-12", p, doc["$schema"])
		}
		if doc["$id"] != schemas.BaseURI+p {
			t.Errorf("%s: $id is %v, want %s", p, doc["$id"], schemas.BaseURI+p)
		}
		if s, _ := doc["description"].(string); s == "" {
			t.Errorf("%s: no description", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// defs.json, the envelope, one per event type and one per API message.
	if want := 2 + len(schemas.EventTypes()) + len(schemas.APIMessages()); n != want {
		t.Errorf("FS holds %d files, want %d: a file outside defs.json, api/ and events/?", n, want)
	}
}

// TestSchemaEnvelopeDispatchesEveryType checks that events/cloudevent.json
// checks the data of every type that has a schema, so that validating an
// event against the envelope alone (as an auditor's generic tool does)
// checks it completely.
func TestSchemaEnvelopeDispatchesEveryType(t *testing.T) {
	env := readSchema(t, schemas.EnvelopeFile)
	var dispatched []string
	for _, c := range env["allOf"].([]any) {
		c := c.(map[string]any)
		typ, ok := dig(c, "if", "properties", "type", "const").(string)
		if !ok {
			continue
		}
		if ref := dig(c, "then", "properties", "data", "$ref"); ref != typ+".json" {
			t.Errorf("type %s dispatches to %v, want %s.json", typ, ref, typ)
		}
		dispatched = append(dispatched, typ)
	}
	slices.Sort(dispatched)
	if got := schemas.EventTypes(); !slices.Equal(dispatched, got) {
		t.Errorf("cloudevent.json dispatches\n%v\nbut the event schemas are\n%v", dispatched, got)
	}
}

// TestSchemaAPIMirrorsGoTypes checks every API schema against its Go type
// in workers/api: the same JSON names, required exactly when Go always
// writes the field (no omitempty), closed objects.
func TestSchemaAPIMirrorsGoTypes(t *testing.T) {
	cases := []struct {
		v       any
		file    string
		pointer []string // inside the file
	}{
		{api.EncryptRequest{}, "api/EncryptRequest.json", nil},
		{api.EncryptReply{}, "api/EncryptReply.json", nil},
		{api.DecryptRequest{}, "api/DecryptRequest.json", nil},
		{api.DecryptReply{}, "api/DecryptReply.json", nil},
		{api.DataKeyRequest{}, "api/DataKeyRequest.json", nil},
		{api.DataKeyReply{}, "api/DataKeyReply.json", nil},
		{api.CreateKeyRequest{}, "api/CreateKeyRequest.json", nil},
		{api.KeyRequest{}, "api/KeyRequest.json", nil},
		{api.KeyMetadata{}, "api/KeyMetadata.json", nil},
		{api.KeyVersion{}, "api/KeyMetadata.json", []string{"$defs", "KeyVersion"}},
		{api.ListKeysReply{}, "api/ListKeysReply.json", nil},
		{api.RotateKeyReply{}, "api/RotateKeyReply.json", nil},
		{api.AuditTailRequest{}, "api/AuditTailRequest.json", nil},
		{api.AuditTailReply{}, "api/AuditTailReply.json", nil},
		{api.AuditEvent{}, "api/AuditTailReply.json", []string{"properties", "events", "items"}},
		{api.ErrorReply{}, "api/ErrorReply.json", nil},
		{api.ErrorBody{}, "api/ErrorReply.json", []string{"properties", "error"}},
	}
	var names []string
	for _, c := range cases {
		typ := reflect.TypeOf(c.v)
		t.Run(typ.Name(), func(t *testing.T) {
			node, _ := dig(readSchema(t, c.file), c.pointer...).(map[string]any)
			if node == nil {
				t.Fatalf("%s has nothing at %v", c.file, c.pointer)
			}
			props, _ := node["properties"].(map[string]any)
			var required []string
			if r, ok := node["required"].([]any); ok {
				for _, s := range r {
					required = append(required, s.(string))
				}
			}
			var fields, always []string
			for i := range typ.NumField() {
				f := typ.Field(i)
				name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
				fields = append(fields, name)
				if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") {
					always = append(always, name)
				}
			}
			var propNames []string
			for p := range props {
				propNames = append(propNames, p)
			}
			slices.Sort(fields)
			slices.Sort(propNames)
			slices.Sort(always)
			slices.Sort(required)
			if !slices.Equal(fields, propNames) {
				t.Errorf("properties %v, Go fields %v", propNames, fields)
			}
			if !slices.Equal(always, required) {
				t.Errorf("required %v, Go fields without omitempty %v", required, always)
			}
			if node["additionalProperties"] != false {
				t.Errorf("additionalProperties is %v, want false", node["additionalProperties"])
			}
		})
		if c.pointer == nil {
			names = append(names, typ.Name())
		}
	}
	slices.Sort(names)
	if got := schemas.APIMessages(); !slices.Equal(names, got) {
		t.Errorf("APIMessages() = %v, want %v", got, names)
	}
}

// TestSchemaAPIAcceptsGoValues marshals realistic values of the Go types
// and validates them, which catches a mismatch in how Go writes a field
// (base64, RFC 3339 times, null slices).
func TestSchemaAPIAcceptsGoValues(t *testing.T) {
	const id = "0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b"
	now := time.Now()
	meta := api.KeyMetadata{
		KeyID: id, Arn: "kf:alpha:key/" + id, Alias: "app", KeySpec: "SYMMETRIC_DEFAULT",
		KeyUsage: "ENCRYPT_DECRYPT", KeyState: "ACTIVE", CreationDate: now, CreatedBy: "alice",
		PrimaryVersion: 2, LastRotationDate: &now,
		Versions: []api.KeyVersion{
			{Version: 1, State: "ACTIVE", Algorithm: "AES_256_GCM", CreationDate: now},
			{Version: 2, State: "ACTIVE", Algorithm: "AES_256_GCM", CreationDate: now},
		},
	}
	event := json.RawMessage(`{"specversion":"1.0","id":"e1","source":"/keyflow","type":"io.keyflow.key.listed.v1","time":"2026-01-02T03:04:05.123456789Z","datacontenttype":"application/json","data":{"count":1},"tenant":"alpha","principal":"alice","outcome":"success","requestid":"r1"}`)
	cases := map[string]any{
		"EncryptRequest":   api.EncryptRequest{KeyID: "alias/app", Plaintext: []byte("hello"), EncryptionContext: map[string]string{"purpose": "test"}},
		"EncryptReply":     api.EncryptReply{KeyID: id, KeyVersion: 1, CiphertextBlob: []byte{1, 2, 3, 4, 5}},
		"DecryptRequest":   api.DecryptRequest{CiphertextBlob: []byte{1, 2, 3}},
		"DecryptReply":     api.DecryptReply{KeyID: id, KeyVersion: 1, Plaintext: []byte("hello")},
		"DataKeyRequest":   api.DataKeyRequest{KeyID: id, NumberOfBytes: 16},
		"DataKeyReply":     api.DataKeyReply{KeyID: id, KeyVersion: 1, Plaintext: make([]byte, 32), CiphertextBlob: make([]byte, 80)},
		"CreateKeyRequest": api.CreateKeyRequest{Alias: "alias/app", Description: "the app's key", KeySpec: "SYMMETRIC_DEFAULT", KeyUsage: "ENCRYPT_DECRYPT"},
		"KeyRequest":       api.KeyRequest{KeyID: id},
		"KeyMetadata":      meta,
		"ListKeysReply":    api.ListKeysReply{Keys: []api.KeyMetadata{meta}},
		"RotateKeyReply":   api.RotateKeyReply{KeyID: id, PreviousVersion: 1, NewVersion: 2, WorkflowID: "rotate-" + id},
		"AuditTailRequest": api.AuditTailRequest{AfterSeq: 1 << 40, Limit: 10, WaitMillis: 500},
		"AuditTailReply":   api.AuditTailReply{Events: []api.AuditEvent{{Seq: 7, Event: event}}},
		"ErrorReply":       api.ErrorReply{Error: api.ErrorBody{Code: "NotFoundException", Message: "key does not exist", RequestID: "r1"}},
	}
	for _, name := range schemas.APIMessages() {
		v, ok := cases[name]
		if !ok {
			t.Errorf("no sample for %s", name)
			continue
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := schemas.ValidateAPI(name, b); err != nil {
			t.Errorf("%s %s: %v", name, b, err)
		}
	}
	// Empty values: what the server accepts with every optional field left out.
	for name, body := range map[string]string{
		"CreateKeyRequest": `{}`,
		"AuditTailRequest": `{}`,
		"ListKeysReply":    `{"keys":[]}`,
		"AuditTailReply":   `{"events":[]}`,
	} {
		if err := schemas.ValidateAPI(name, []byte(body)); err != nil {
			t.Errorf("%s %s: %v", name, body, err)
		}
	}
}

func TestSchemaValidateAPI(t *testing.T) {
	const id = "0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b"
	good := []struct{ name, body string }{
		{"EncryptRequest", `{"keyId":"alias/app","plaintext":"aGVsbG8=","encryptionContext":{"a":"b","c":""}}`},
		{"EncryptRequest", `{"keyId":"` + id + `","plaintext":"AA=="}`},
		{"DecryptRequest", `{"ciphertextBlob":"AQID","keyId":""}`},
		{"DecryptRequest", `{"ciphertextBlob":"AQID","keyId":"app"}`},
		{"DataKeyRequest", `{"keyId":"app","numberOfBytes":1024}`},
		{"DataKeyRequest", `{"keyId":"app","numberOfBytes":0}`},
		{"CreateKeyRequest", `{"alias":"team/app_1-x","keySpec":"","keyUsage":""}`},
		{"KeyRequest", `{"keyId":"alias/app"}`},
		{"AuditTailRequest", `{"afterSeq":18446744073709551615,"limit":1000,"waitMillis":10000}`},
		{"ErrorReply", `{"error":{"code":"InvalidCiphertextException","message":"the ciphertext could not be decrypted"}}`},
	}
	for _, c := range good {
		if err := schemas.ValidateAPI(c.name, []byte(c.body)); err != nil {
			t.Errorf("%s %s: %v", c.name, c.body, err)
		}
	}
	bad := []struct{ why, name, body string }{
		{"missing plaintext", "EncryptRequest", `{"keyId":"app"}`},
		{"missing keyId", "EncryptRequest", `{"plaintext":"aGVsbG8="}`},
		{"empty keyId", "EncryptRequest", `{"keyId":"","plaintext":"aGVsbG8="}`},
		{"empty plaintext", "EncryptRequest", `{"keyId":"app","plaintext":""}`},
		{"null plaintext", "EncryptRequest", `{"keyId":"app","plaintext":null}`},
		{"plaintext not base64", "EncryptRequest", `{"keyId":"app","plaintext":"not base64!"}`},
		{"plaintext unpadded", "EncryptRequest", `{"keyId":"app","plaintext":"aGVsbG8"}`},
		{"plaintext over 64 KiB", "EncryptRequest", `{"keyId":"app","plaintext":"` + strings.Repeat("AAAA", 21847) + `"}`},
		{"misspelt field", "EncryptRequest", `{"keyId":"app","plainText":"aGVsbG8="}`},
		{"context value not a string", "EncryptRequest", `{"keyId":"app","plaintext":"aGVsbG8=","encryptionContext":{"n":1}}`},
		{"context with an empty key", "EncryptRequest", `{"keyId":"app","plaintext":"aGVsbG8=","encryptionContext":{"":"x"}}`},
		{"context of 65 pairs", "EncryptRequest", `{"keyId":"app","plaintext":"aGVsbG8=","encryptionContext":{` + pairs(65) + `}}`},
		{"key reference with a space", "KeyRequest", `{"keyId":"my key"}`},
		{"missing ciphertext", "DecryptRequest", `{"keyId":"app"}`},
		{"data key too long", "DataKeyRequest", `{"keyId":"app","numberOfBytes":1025}`},
		{"data key length negative", "DataKeyRequest", `{"keyId":"app","numberOfBytes":-1}`},
		{"data key length fractional", "DataKeyRequest", `{"keyId":"app","numberOfBytes":1.5}`},
		{"alias that is a key ID", "CreateKeyRequest", `{"alias":"alias/` + id + `"}`},
		{"alias too long", "CreateKeyRequest", `{"alias":"` + strings.Repeat("a", 251) + `"}`},
		{"unsupported key spec", "CreateKeyRequest", `{"keySpec":"RSA_2048"}`},
		{"limit negative", "AuditTailRequest", `{"limit":-1}`},
		{"afterSeq beyond uint64", "AuditTailRequest", `{"afterSeq":18446744073709551616}`},
		{"key version 0", "EncryptReply", `{"keyId":"` + id + `","keyVersion":0,"ciphertextBlob":"AQID"}`},
		{"key ID not a UUID", "EncryptReply", `{"keyId":"app","keyVersion":1,"ciphertextBlob":"AQID"}`},
		{"metadata with key material", "KeyMetadata", `{"keyId":"` + id + `","arn":"kf:alpha:key/` + id + `","keySpec":"SYMMETRIC_DEFAULT","keyUsage":"ENCRYPT_DECRYPT","keyState":"ACTIVE","creationDate":"2026-01-02T03:04:05Z","primaryVersion":1,"versions":[{"version":1,"state":"ACTIVE","algorithm":"AES_256_GCM","creationDate":"2026-01-02T03:04:05Z"}],"wrapped":"AQID"}`},
		{"metadata with a bad date", "KeyMetadata", `{"keyId":"` + id + `","arn":"kf:alpha:key/` + id + `","keySpec":"SYMMETRIC_DEFAULT","keyUsage":"ENCRYPT_DECRYPT","keyState":"ACTIVE","creationDate":"yesterday","primaryVersion":1,"versions":[{"version":1,"state":"ACTIVE","algorithm":"AES_256_GCM","creationDate":"2026-01-02T03:04:05Z"}]}`},
		{"metadata without versions", "KeyMetadata", `{"keyId":"` + id + `","arn":"kf:alpha:key/` + id + `","keySpec":"SYMMETRIC_DEFAULT","keyUsage":"ENCRYPT_DECRYPT","keyState":"ACTIVE","creationDate":"2026-01-02T03:04:05Z","primaryVersion":1,"versions":[]}`},
		{"tail reply with a bad event", "AuditTailReply", `{"events":[{"seq":1,"event":{"type":"io.keyflow.key.listed.v1"}}]}`},
		{"error without code", "ErrorReply", `{"error":{"message":"x"}}`},
		{"not JSON", "KeyRequest", `{"keyId":`},
		{"trailing data", "KeyRequest", `{"keyId":"app"} {}`},
		{"not an object", "KeyRequest", `["app"]`},
	}
	for _, c := range bad {
		err := schemas.ValidateAPI(c.name, []byte(c.body))
		if !errors.Is(err, schemas.ErrInvalid) {
			t.Errorf("%s: %s %.80s: got %v, want ErrInvalid", c.why, c.name, c.body, err)
		}
	}
	if err := schemas.ValidateAPI("EncryptRequestV2", []byte(`{}`)); !errors.Is(err, schemas.ErrUnknownMessage) {
		t.Errorf("unknown message: got %v, want ErrUnknownMessage", err)
	}
}

func TestSchemaValidateEvent(t *testing.T) {
	const id = "0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b"
	base := func() map[string]any {
		return map[string]any{
			"specversion": "1.0", "id": "6d0f7b0e-2f0a-4c55-9a8f-1f2e3d4c5b6a", "source": "/keyflow/worker/h1",
			"type": "io.keyflow.crypto.encrypt.v1", "time": "2026-01-02T03:04:05.123456789Z",
			"datacontenttype": "application/json", "subject": "kf:alpha:key/" + id,
			"tenant": "alpha", "principal": "alice", "outcome": "success", "requestid": "r-1",
			"data": map[string]any{"plaintextBytes": 21, "contextKeys": []string{"purpose"}, "keyVersion": 1},
		}
	}
	type edit func(e map[string]any)
	data := func(f func(d map[string]any)) edit {
		return func(e map[string]any) { f(e["data"].(map[string]any)) }
	}
	good := map[string]edit{
		"encrypt":             func(map[string]any) {},
		"no context":          data(func(d map[string]any) { d["contextKeys"] = nil }),
		"failure with a code": func(e map[string]any) { e["outcome"] = "failure"; e["errorcode"] = "ValidationException" },
		"denied, no principal": func(e map[string]any) {
			e["outcome"] = "denied"
			e["errorcode"] = "AccessDeniedException"
			delete(e, "principal")
		},
		"rejected before the tenant was known": func(e map[string]any) {
			e["tenant"] = "-"
			e["type"] = "io.keyflow.request.rejected.v1"
			e["outcome"], e["errorcode"] = "denied", "AccessDeniedException"
			delete(e, "subject")
			e["data"] = map[string]any{"operation": "crypto.encrypt"}
		},
		"audit read": func(e map[string]any) {
			e["type"] = "io.keyflow.audit.read.v1"
			delete(e, "subject")
			e["data"] = map[string]any{}
		},
		"created": func(e map[string]any) {
			e["type"] = "io.keyflow.key.created.v1"
			e["data"] = map[string]any{"alias": "app", "keySpec": "SYMMETRIC_DEFAULT", "keyId": id, "version": 1}
		},
	}
	for name, f := range good {
		e := base()
		f(e)
		if err := schemas.ValidateEvent(mustJSON(t, e)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := map[string]edit{
		"missing tenant":         func(e map[string]any) { delete(e, "tenant") },
		"empty tenant":           func(e map[string]any) { e["tenant"] = "" },
		"missing outcome":        func(e map[string]any) { delete(e, "outcome") },
		"bad outcome":            func(e map[string]any) { e["outcome"] = "ok" },
		"missing id":             func(e map[string]any) { delete(e, "id") },
		"empty id":               func(e map[string]any) { e["id"] = "" },
		"missing source":         func(e map[string]any) { delete(e, "source") },
		"missing time":           func(e map[string]any) { delete(e, "time") },
		"bad time":               func(e map[string]any) { e["time"] = "2026-13-45" },
		"missing data":           func(e map[string]any) { delete(e, "data") },
		"specversion 0.3":        func(e map[string]any) { e["specversion"] = "0.3" },
		"XML data":               func(e map[string]any) { e["datacontenttype"] = "application/xml" },
		"unknown extension":      func(e map[string]any) { e["plaintext"] = "aGVsbG8=" },
		"failure without a code": func(e map[string]any) { e["outcome"] = "failure" },
		"success with a code":    func(e map[string]any) { e["errorcode"] = "ValidationException" },
		"empty principal":        func(e map[string]any) { e["principal"] = "" },
		"plaintext in data":      data(func(d map[string]any) { d["plaintext"] = "aGVsbG8=" }),
		"data of another type":   func(e map[string]any) { e["data"] = map[string]any{"count": 1} },
		"negative size":          data(func(d map[string]any) { d["plaintextBytes"] = -1 }),
		"missing contextKeys":    data(func(d map[string]any) { delete(d, "contextKeys") }),
		"context values":         data(func(d map[string]any) { d["contextKeys"] = map[string]any{"purpose": "x"} }),
		"key version 0":          data(func(d map[string]any) { d["keyVersion"] = 0 }),
		"data on audit read":     func(e map[string]any) { e["type"] = "io.keyflow.audit.read.v1"; e["data"] = map[string]any{"x": 1} },
		"unknown operation": func(e map[string]any) {
			e["type"], e["outcome"], e["errorcode"] = "io.keyflow.request.rejected.v1", "failure", "ValidationException"
			e["data"] = map[string]any{"operation": "keys.destroy"}
		},
		"type not io.keyflow": func(e map[string]any) { e["type"] = "com.example.thing.v1" },
	}
	for name, f := range bad {
		e := base()
		f(e)
		err := schemas.ValidateEvent(mustJSON(t, e))
		if !errors.Is(err, schemas.ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
	e := base()
	e["type"] = "io.keyflow.key.exploded.v1"
	if err := schemas.ValidateEvent(mustJSON(t, e)); !errors.Is(err, schemas.ErrUnknownType) {
		t.Errorf("unknown type: got %v, want ErrUnknownType", err)
	}
	for _, raw := range []string{``, `null`, `[]`, `{"specversion":"1.0"`} {
		if err := schemas.ValidateEvent([]byte(raw)); !errors.Is(err, schemas.ErrInvalid) {
			t.Errorf("%q: got %v, want ErrInvalid", raw, err)
		}
	}
}

func TestSchemaValidateEventData(t *testing.T) {
	if err := schemas.ValidateEventData("io.keyflow.key.listed.v1", []byte(`{"count":3}`)); err != nil {
		t.Error(err)
	}
	if err := schemas.ValidateEventData("io.keyflow.key.listed.v1", []byte(`{"count":3,"keys":["a"]}`)); !errors.Is(err, schemas.ErrInvalid) {
		t.Errorf("extra field: got %v, want ErrInvalid", err)
	}
	if err := schemas.ValidateEventData("io.keyflow.key.exploded.v1", []byte(`{}`)); !errors.Is(err, schemas.ErrUnknownType) {
		t.Errorf("unknown type: got %v, want ErrUnknownType", err)
	}
}

func readSchema(t *testing.T, p string) map[string]any {
	t.Helper()
	b, err := schemas.FS.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	if path.Ext(p) != ".json" {
		t.Errorf("%s is not a .json file", p)
	}
	return doc
}

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func pairs(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"k` + strings.Repeat("x", i) + `":"v"`)
	}
	return b.String()
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
