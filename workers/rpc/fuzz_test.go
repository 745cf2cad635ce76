package rpc

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/internal/fuzzseed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// keyOps are the operations that authorization reads key references for
// (accessTargets), with the request each handler decodes.
var keyOps = []struct {
	op  string
	req func() any
}{
	{api.OpEncrypt, func() any { return new(api.EncryptRequest) }},
	{api.OpDecrypt, func() any { return new(api.DecryptRequest) }},
	{api.OpDataKey, func() any { return new(api.DataKeyRequest) }},
	{api.OpDataKeyPair, func() any { return new(api.DataKeyPairRequest) }},
	{api.OpReEncrypt, func() any { return new(api.ReEncryptRequest) }},
	{api.OpSign, func() any { return new(api.SignRequest) }},
	{api.OpVerify, func() any { return new(api.VerifyRequest) }},
	{api.OpGenerateMac, func() any { return new(api.MacRequest) }},
	{api.OpVerifyMac, func() any { return new(api.MacRequest) }},
	{api.OpGetPublicKey, func() any { return new(api.PublicKeyRequest) }},
	{api.OpBatchEncrypt, func() any { return new(api.BatchEncryptRequest) }},
	{api.OpBatchDecrypt, func() any { return new(api.BatchDecryptRequest) }},
	{api.OpBatchDataKey, func() any { return new(api.BatchDataKeyRequest) }},
	{api.OpSeal, func() any { return new(api.SealRequest) }},
	{api.OpOpen, func() any { return new(api.OpenRequest) }},
	{api.OpEncapsulate, func() any { return new(api.EncapsulateRequest) }},
	{api.OpDecapsulate, func() any { return new(api.DecapsulateRequest) }},
	{api.OpKeyDescribe, func() any { return new(api.KeyRequest) }},
	{api.OpKeyRotate, func() any { return new(api.RotateKeyRequest) }},
	{api.OpKeySetPolicy, func() any { return new(api.SetKeyPolicyRequest) }},
	{api.OpKeyGetPolicy, func() any { return new(api.KeyRequest) }},
	{api.OpGrantCreate, func() any { return new(api.CreateGrantRequest) }},
	{api.OpGrantList, func() any { return new(api.KeyRequest) }},
	{api.OpGrantRetire, func() any { return new(api.GrantRequest) }},
	{api.OpGrantRevoke, func() any { return new(api.GrantRequest) }},
	{api.OpKeyRewrapStatus, func() any { return new(api.KeyRequest) }},
}

// jsonField returns the field of struct value v whose JSON name is name
// (the zero Value if there is none).
func jsonField(v reflect.Value, name string) reflect.Value {
	for i := range v.NumField() {
		tag, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
		if tag == name {
			return v.Field(i)
		}
	}
	return reflect.Value{}
}

// handlerTargets lists the keys a strictly decoded request touches, read
// from the fields the handler uses, as authorization must see them.
func handlerTargets(op string, req any) []kms.AccessTarget {
	v := reflect.ValueOf(req).Elem()
	str := func(v reflect.Value, name string) string {
		if f := jsonField(v, name); f.IsValid() {
			return f.String()
		}
		return ""
	}
	blob := func(v reflect.Value, name string) []byte {
		if f := jsonField(v, name); f.IsValid() {
			return f.Bytes()
		}
		return nil
	}
	ctx := func(v reflect.Value, name string) map[string]string {
		if f := jsonField(v, name); f.IsValid() {
			return f.Interface().(map[string]string)
		}
		return nil
	}
	one := func(v reflect.Value) kms.AccessTarget {
		return kms.AccessTarget{KeyRef: str(v, "keyId"), Ciphertext: blob(v, "ciphertextBlob"), Context: ctx(v, "encryptionContext")}
	}
	switch op {
	case api.OpReEncrypt:
		src := kms.AccessTarget{KeyRef: str(v, "sourceKeyId"), Ciphertext: blob(v, "ciphertextBlob"), Context: ctx(v, "sourceEncryptionContext"), Action: keypolicy.ActionReEncryptFrom}
		dst := kms.AccessTarget{KeyRef: str(v, "destinationKeyId"), Context: ctx(v, "destinationEncryptionContext"), Action: keypolicy.ActionReEncryptTo}
		if dst.KeyRef == "" {
			dst.KeyRef, dst.Ciphertext = src.KeyRef, src.Ciphertext
		}
		return []kms.AccessTarget{src, dst}
	case api.OpBatchEncrypt, api.OpBatchDecrypt, api.OpBatchDataKey:
		items := jsonField(v, "items")
		out := make([]kms.AccessTarget, 0, items.Len())
		for i := range items.Len() {
			out = append(out, one(items.Index(i)))
		}
		return out
	}
	return []kms.AccessTarget{one(v)}
}

// Every operation that authorization reads keys for has a row in keyOps,
// and every field of its request that names a key or carries a
// ciphertext or an encryption context is one that authorization reads.
func TestKeyOpsComplete(t *testing.T) {
	have := map[string]bool{}
	for _, o := range keyOps {
		have[o.op] = true
	}
	for _, op := range keypolicy.Operations() {
		if strings.HasPrefix(op, "kmip.") {
			// KMIP requests are TTLV, not JSON: workers/kmip decodes them
			// and hands kms.Authorize the targets itself.
			continue
		}
		if p, _ := keypolicy.PermissionOf(op); (p.Action != "" || op == api.OpReEncrypt) && !have[op] {
			t.Errorf("%s: authorization reads its keys, but keyOps has no request for it", op)
		}
	}
	read := map[string]bool{}
	for i := range reflect.TypeFor[targetShape]().NumField() {
		name, _, _ := strings.Cut(reflect.TypeFor[targetShape]().Field(i).Tag.Get("json"), ",")
		read[name] = true
	}
	var check func(op string, t reflect.Type)
	check = func(op string, rt reflect.Type) {
		for i := range rt.NumField() {
			f := rt.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			lower := strings.ToLower(name)
			if (strings.HasSuffix(lower, "keyid") || lower == "ciphertextblob" || strings.HasSuffix(lower, "encryptioncontext")) && !read[name] {
				t.Errorf("%s: field %q names a key, a ciphertext or a context, and authorization does not read it", op, name)
			}
			if name == "items" && f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct {
				check(op+" items", f.Type.Elem())
			}
		}
	}
	for _, o := range keyOps {
		check(o.op, reflect.TypeOf(o.req()).Elem())
	}
}

// FuzzDecode: the strict request decoder refuses with one code and a
// "malformed request" message; what it accepts has each top-level field
// once, spelled exactly; it re-encodes to a body that decodes to the
// same request; and the keys, ciphertexts and contexts that authorization
// reads from the body (accessTargets, lenient) are exactly the ones the
// handler decodes (a request cannot show authorization one key and the
// handler another).
func FuzzDecode(f *testing.F) {
	const id = "0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b"
	ec := map[string]string{"app": "billing"}
	real := map[string]any{
		api.OpEncrypt:      api.EncryptRequest{KeyID: id, Plaintext: []byte("attack at dawn"), EncryptionContext: ec},
		api.OpDecrypt:      api.DecryptRequest{CiphertextBlob: []byte{1, 1, 36}, EncryptionContext: ec, KeyID: "alias/app"},
		api.OpReEncrypt:    api.ReEncryptRequest{CiphertextBlob: []byte{1}, SourceKeyID: id, DestinationKeyID: "alias/other"},
		api.OpBatchEncrypt: api.BatchEncryptRequest{Items: []api.EncryptRequest{{KeyID: id, Plaintext: []byte("a")}, {KeyID: "alias/b", EncryptionContext: ec}}},
		api.OpBatchDecrypt: api.BatchDecryptRequest{Items: []api.DecryptRequest{{CiphertextBlob: []byte{1}, EncryptionContext: ec}}},
		api.OpKeyDescribe:  api.KeyRequest{KeyID: id},
		api.OpGrantRetire:  api.GrantRequest{KeyID: id, GrantID: "g"},
	}
	for i, o := range keyOps {
		if r, ok := real[o.op]; ok {
			b, _ := json.Marshal(r)
			fuzzseed.Add(f, byte(i), b)
		}
	}
	for _, body := range []string{
		`{"keyId":"a","KeyId":"b"}`,
		`{"keyId":"a","keyId":"b"}`,
		`{"items":[{"keyId":"a","KEYID":"b"}]}`,
		`{"items":[{"keyId":"a","keyId":"b"}]}`,
		`{"encryptionContext":{"a":"1","a":"2"}}`,
		`{"encryptionContext":{"a\u0000":"1"}}`,
		"{\"encryptionContext\":{\"a\xff\":\"1\"}}",
		`{"sourceKeyId":"a","destinationKeyId":""}`,
		`{"keyId":"a"} {}`,
		`null`,
		`[]`,
		``,
		`{"keyId":1}`,
	} {
		for i := range keyOps {
			if i%5 == 0 || strings.Contains(body, "items") && strings.Contains(keyOps[i].op, "batch") || strings.Contains(body, "sourceKeyId") && keyOps[i].op == api.OpReEncrypt {
				fuzzseed.Add(f, byte(i), []byte(body))
			}
		}
	}
	f.Fuzz(func(t *testing.T, which byte, body []byte) {
		o := keyOps[int(which)%len(keyOps)]
		req := o.req()
		if err := decode(body, req); err != nil {
			if kms.CodeOf(err) != kms.CodeValidation || !strings.HasPrefix(kms.PublicMessage(err), "malformed request: ") {
				t.Fatalf("refusal %v is not the malformed-request validation error", err)
			}
			return
		}
		checkTopLevelKeys(t, body, reflect.TypeOf(req).Elem())
		if key, dup := duplicateKey(json.NewDecoder(bytes.NewReader(body))); dup {
			t.Fatalf("accepted %q, where an object holds key %q twice", body, key)
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		req2 := o.req()
		if err := decode(again, req2); err != nil {
			t.Fatalf("the re-encoded request %s is refused: %v", again, err)
		}
		if again2, _ := json.Marshal(req2); !bytes.Equal(again, again2) {
			t.Fatalf("decode after encode changed the request:\n %s\n %s", again, again2)
		}
		if got, want := accessTargets(o.op, body), handlerTargets(o.op, req); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s %q: authorization reads %+v, the handler decodes %+v", o.op, body, got, want)
		}
	})
}

// checkTopLevelKeys re-reads an accepted body's top level on its own:
// every key must be a JSON name of the request, exactly, and appear once.
func checkTopLevelKeys(t *testing.T, body []byte, rt reflect.Type) {
	names := map[string]bool{}
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		names[name] = true
	}
	var top map[string]json.RawMessage
	if len(bytes.TrimSpace(body)) == 0 {
		return
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		if json.Unmarshal(body, &top) == nil && top == nil {
			return // null
		}
		t.Fatalf("accepted a body that is not an object: %q", body)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("accepted invalid JSON %q: %v", body, err)
		}
		key := tok.(string)
		if !names[key] || seen[key] {
			t.Fatalf("accepted key %q (known %v, repeated %v) in %q", key, names[key], seen[key], body)
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("accepted invalid JSON %q: %v", body, err)
		}
	}
}

// duplicateKey walks one JSON value and reports a key that appears twice
// in one object, at any depth (the nested refusals of decode).
func duplicateKey(dec *json.Decoder) (string, bool) {
	tok, err := dec.Token()
	if err != nil {
		return "", false
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return "", false
			}
			key, _ := k.(string)
			if seen[key] {
				return key, true
			}
			seen[key] = true
			if key, dup := duplicateKey(dec); dup {
				return key, true
			}
		}
		dec.Token()
	case json.Delim('['):
		for dec.More() {
			if key, dup := duplicateKey(dec); dup {
				return key, true
			}
		}
		dec.Token()
	}
	return "", false
}
