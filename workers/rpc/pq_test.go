package rpc_test

import (
	"bytes"
	"crypto/hpke"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/pqc"
	"github.com/keyflow/keyflow/schemas"
)

// The post-quantum operations over real NATS and SoftHSM: seal, open,
// encapsulate, decapsulate, and ML-DSA / SLH-DSA signatures with a context.
// Every request and reply is checked against its schema, and the audit
// trail is checked for schema conformance and for secrets.

// pqSend sends a raw body as alice, checks the request against reqSchema
// (when given) and the reply against replySchema (ErrorReply for an error),
// and returns the reply.
func pqSend(t *testing.T, nc *nats.Conn, op, reqSchema, body, replySchema string) *nats.Msg {
	t.Helper()
	if reqSchema != "" {
		if err := schemas.ValidateAPI(reqSchema, []byte(body)); err != nil {
			t.Errorf("request %.200s: %v", body, err)
		}
	}
	msg := nats.NewMsg(api.Subject("alpha", op))
	msg.Data = []byte(body)
	reply, err := signedRequest(nc, msg, 20*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
	if reply.Header.Get(api.HeaderErrorCode) != "" {
		replySchema = "ErrorReply"
	}
	if err := schemas.ValidateAPI(replySchema, reply.Data); err != nil {
		t.Errorf("%s reply %.300s: %v", op, reply.Data, err)
	}
	return reply
}

// pqOK sends and decodes a successful reply into out.
func pqOK(t *testing.T, nc *nats.Conn, op, reqSchema, body, replySchema string, out any) {
	t.Helper()
	r := pqSend(t, nc, op, reqSchema, body, replySchema)
	if r.Header.Get(api.HeaderErrorCode) != "" {
		t.Fatalf("%s %.200s: %s", op, body, r.Data)
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		t.Fatal(err)
	}
}

// pqRefused sends and wants an error reply with code.
func pqRefused(t *testing.T, nc *nats.Conn, op, body string, code kms.Code) {
	t.Helper()
	r := pqSend(t, nc, op, "", body, "ErrorReply")
	if got := r.Header.Get(api.HeaderErrorCode); got != string(code) {
		t.Errorf("%s %.200s: got %s %s, want %s", op, body, got, r.Data, code)
	}
}

func pqB64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestPQOverNATS(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	c := b.Client("alpha", "alice")
	nc := rawConn(t, b, "alpha", "alice", "pq-raw")
	ctx := t.Context()
	var secrets evtSecrets

	xw := coreKey(t, c, "pq-xwing", "X_WING", "")
	kem := coreKey(t, c, "pq-kem", "ML_KEM_768", "KEY_ENCAPSULATION")
	kem1024 := coreKey(t, c, "pq-kem1024", "ML_KEM_1024", "")
	dsa := coreKey(t, c, "pq-dsa", "ML_DSA_65", "SIGN_VERIFY")
	slh := coreKey(t, c, "pq-slh", "SLH_DSA_SHA2_128F", "")
	coreKey(t, c, "pq-sym", "", "")
	for _, k := range []*api.KeyMetadata{xw, kem, kem1024, dsa, slh} {
		if k.KeyState != "ACTIVE" || k.Versions[0].Algorithm != k.KeySpec {
			t.Errorf("created %+v", k)
		}
	}

	t.Run("SealOpen", func(t *testing.T) {
		for _, k := range []*api.KeyMetadata{xw, kem, kem1024} {
			pt := []byte("sealed over NATS to " + k.KeySpec)
			secrets.add("seal plaintext "+k.KeySpec, pt)
			var s api.SealReply
			pqOK(t, nc, api.OpSeal, "SealRequest", `{"keyId":"alias/`+k.Alias+`","plaintext":"`+pqB64(pt)+`","info":"`+pqB64([]byte("app/v1"))+`"}`, "SealReply", &s)
			if s.KeyID != k.KeyID || s.KeyVersion != 1 {
				t.Errorf("seal reply %+v", s)
			}
			var o api.OpenReply
			pqOK(t, nc, api.OpOpen, "OpenRequest", `{"keyId":"`+k.KeyID+`","sealed":"`+pqB64(s.Sealed)+`","info":"`+pqB64([]byte("app/v1"))+`"}`, "OpenReply", &o)
			if !bytes.Equal(o.Plaintext, pt) || o.KeyID != k.KeyID || o.KeyVersion != 1 {
				t.Errorf("open reply %+v", o)
			}
			// Without info, with another info, tampered: one generic error.
			pqRefused(t, nc, api.OpOpen, `{"keyId":"`+k.KeyID+`","sealed":"`+pqB64(s.Sealed)+`"}`, kms.CodeInvalidCiphertext)
			pqRefused(t, nc, api.OpOpen, `{"keyId":"`+k.KeyID+`","sealed":"`+pqB64(s.Sealed)+`","info":"`+pqB64([]byte("app/v2"))+`"}`, kms.CodeInvalidCiphertext)
			bad := bytes.Clone(s.Sealed)
			bad[len(bad)-1] ^= 1
			pqRefused(t, nc, api.OpOpen, `{"keyId":"`+k.KeyID+`","sealed":"`+pqB64(bad)+`","info":"`+pqB64([]byte("app/v1"))+`"}`, kms.CodeInvalidCiphertext)
		}
		// Sealed by a third party with crypto/hpke and the public key from
		// crypto.publickey, opened by keyflow.
		pub, err := c.GetPublicKey(ctx, api.PublicKeyRequest{KeyID: xw.KeyID})
		if err != nil {
			t.Fatal(err)
		}
		var spki struct {
			Algorithm struct{ Algorithm asn1.ObjectIdentifier }
			PublicKey asn1.BitString
		}
		if _, err := asn1.Unmarshal(pub.PublicKey, &spki); err != nil {
			t.Fatalf("public key is not an SPKI: %v", err)
		}
		if !spki.Algorithm.Algorithm.Equal(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62253, 25722}) || pub.KeyUsage != "KEY_ENCAPSULATION" ||
			len(pub.EncryptionAlgorithms) != 1 || pub.EncryptionAlgorithms[0] != string(kms.EncHPKE) {
			t.Errorf("X-Wing public key reply: OID %v, %+v", spki.Algorithm.Algorithm, pub.EncryptionAlgorithms)
		}
		pk, err := hpke.MLKEM768X25519().NewPublicKey(spki.PublicKey.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := hpke.Seal(pk, hpke.HKDFSHA256(), hpke.AES256GCM(), []byte("third party"), []byte("from outside"))
		if err != nil {
			t.Fatal(err)
		}
		o, err := c.Open(ctx, api.OpenRequest{KeyID: "pq-xwing", Sealed: sealed, Info: []byte("third party")})
		if err != nil || string(o.Plaintext) != "from outside" {
			t.Errorf("Open of a crypto/hpke payload: %v", err)
		}
		// Refusals.
		pqRefused(t, nc, api.OpSeal, `{"keyId":"pq-sym","plaintext":"aGVsbG8="}`, kms.CodeInvalidKeyUsage)
		pqRefused(t, nc, api.OpSeal, `{"keyId":"pq-dsa","plaintext":"aGVsbG8="}`, kms.CodeInvalidKeyUsage)
		pqRefused(t, nc, api.OpSeal, `{"keyId":"pq-nope","plaintext":"aGVsbG8="}`, kms.CodeNotFound)
		pqRefused(t, nc, api.OpSeal, `{"keyId":"pq-xwing","plaintext":""}`, kms.CodeValidation)
		pqRefused(t, nc, api.OpSeal, `{"keyId":"pq-xwing"}`, kms.CodeValidation)
		pqRefused(t, nc, api.OpSeal, `{"keyId":"pq-xwing","plaintext":"`+pqB64(make([]byte, kms.MaxPlaintext+1))+`"}`, kms.CodeValidation)
		pqRefused(t, nc, api.OpOpen, `{"keyId":"pq-sym","sealed":"AQID"}`, kms.CodeInvalidKeyUsage)
		pqRefused(t, nc, api.OpOpen, `{"keyId":"pq-xwing","sealed":"AQID"}`, kms.CodeInvalidCiphertext)
		pqRefused(t, nc, api.OpOpen, `{"sealed":"AQID"}`, kms.CodeValidation)
	})

	t.Run("EncapsulateDecapsulate", func(t *testing.T) {
		for _, k := range []*api.KeyMetadata{xw, kem, kem1024} {
			var e api.EncapsulateReply
			pqOK(t, nc, api.OpEncapsulate, "EncapsulateRequest", `{"keyId":"`+k.Alias+`"}`, "EncapsulateReply", &e)
			secrets.add("encapsulated secret "+k.KeySpec, e.SharedSecret)
			var d api.DecapsulateReply
			pqOK(t, nc, api.OpDecapsulate, "DecapsulateRequest", `{"keyId":"`+k.KeyID+`","ciphertext":"`+pqB64(e.Ciphertext)+`"}`, "DecapsulateReply", &d)
			if !bytes.Equal(d.SharedSecret, e.SharedSecret) || len(d.SharedSecret) != 32 || d.KeyVersion != 1 || e.KeyVersion != 1 {
				t.Errorf("%s: decapsulated another secret", k.KeySpec)
			}
			pqOK(t, nc, api.OpDecapsulate, "DecapsulateRequest", `{"keyId":"`+k.KeyID+`","keyVersion":1,"ciphertext":"`+pqB64(e.Ciphertext)+`"}`, "DecapsulateReply", &d)
			if !bytes.Equal(d.SharedSecret, e.SharedSecret) {
				t.Errorf("%s: decapsulated another secret with keyVersion 1", k.KeySpec)
			}
			// Implicit rejection: a modified ciphertext succeeds with
			// another secret.
			bad := bytes.Clone(e.Ciphertext)
			bad[10] ^= 0x40
			var rej api.DecapsulateReply
			pqOK(t, nc, api.OpDecapsulate, "DecapsulateRequest", `{"keyId":"`+k.KeyID+`","ciphertext":"`+pqB64(bad)+`"}`, "DecapsulateReply", &rej)
			if bytes.Equal(rej.SharedSecret, e.SharedSecret) {
				t.Errorf("%s: a modified ciphertext gave the real secret", k.KeySpec)
			}
			secrets.add("rejection secret "+k.KeySpec, rej.SharedSecret)
			pqRefused(t, nc, api.OpDecapsulate, `{"keyId":"`+k.KeyID+`","ciphertext":"`+pqB64(e.Ciphertext[1:])+`"}`, kms.CodeValidation)
			pqRefused(t, nc, api.OpDecapsulate, `{"keyId":"`+k.KeyID+`","keyVersion":2,"ciphertext":"`+pqB64(e.Ciphertext)+`"}`, kms.CodeNotFound)
		}
		pqRefused(t, nc, api.OpEncapsulate, `{"keyId":"pq-dsa"}`, kms.CodeInvalidKeyUsage)
		pqRefused(t, nc, api.OpEncapsulate, `{"keyId":""}`, kms.CodeValidation)
		pqRefused(t, nc, api.OpDecapsulate, `{"keyId":"pq-sym","ciphertext":"AQID"}`, kms.CodeInvalidKeyUsage)
		// The Go client.
		e, err := c.Encapsulate(ctx, "pq-kem")
		if err != nil {
			t.Fatal(err)
		}
		secrets.add("client encapsulated secret", e.SharedSecret)
		d, err := c.Decapsulate(ctx, api.DecapsulateRequest{KeyID: "pq-kem", Ciphertext: e.Ciphertext})
		if err != nil || !bytes.Equal(d.SharedSecret, e.SharedSecret) {
			t.Errorf("client Decapsulate: %v", err)
		}
		_, err = c.Decapsulate(ctx, api.DecapsulateRequest{KeyID: "pq-kem", Ciphertext: []byte{1, 2, 3}})
		coreWant(t, "client Decapsulate of 3 bytes", err, kms.CodeValidation)
	})

	t.Run("SignWithContext", func(t *testing.T) {
		msg := []byte("signed over NATS")
		for _, k := range []struct {
			meta *api.KeyMetadata
			alg  string
		}{{dsa, "ML_DSA_SHAKE_256"}, {slh, "SLH_DSA_SHA2_128F"}} {
			var s api.SignReply
			pqOK(t, nc, api.OpSign, "SignRequest", `{"keyId":"`+k.meta.KeyID+`","message":"`+pqB64(msg)+`","signingAlgorithm":"`+k.alg+`","signatureContext":"`+pqB64([]byte("ctx-1"))+`"}`, "SignReply", &s)
			if s.KeyVersion != 1 || s.SigningAlgorithm != k.alg {
				t.Errorf("sign reply %+v", s)
			}
			verify := func(sigCtx []byte) string {
				body := `{"keyId":"` + k.meta.KeyID + `","message":"` + pqB64(msg) + `","signingAlgorithm":"` + k.alg + `","signature":"` + pqB64(s.Signature) + `"`
				if sigCtx != nil {
					body += `,"signatureContext":"` + pqB64(sigCtx) + `"`
				}
				r := pqSend(t, nc, api.OpVerify, "VerifyRequest", body+"}", "VerifyReply")
				return r.Header.Get(api.HeaderErrorCode)
			}
			if code := verify([]byte("ctx-1")); code != "" {
				t.Errorf("%s: verify with the context: %s", k.alg, code)
			}
			if code := verify([]byte("ctx-2")); code != string(kms.CodeInvalidSignature) {
				t.Errorf("%s: verify with another context: %q", k.alg, code)
			}
			if code := verify(nil); code != string(kms.CodeInvalidSignature) {
				t.Errorf("%s: verify without the context: %q", k.alg, code)
			}
			// The signature checks out with package pqc and the public key.
			pub, err := c.GetPublicKey(ctx, api.PublicKeyRequest{KeyID: k.meta.KeyID})
			if err != nil {
				t.Fatal(err)
			}
			var spki struct {
				Algorithm struct{ Algorithm asn1.ObjectIdentifier }
				PublicKey asn1.BitString
			}
			if _, err := asn1.Unmarshal(pub.PublicKey, &spki); err != nil {
				t.Fatal(err)
			}
			signer, _ := pqc.SignerByName(k.meta.KeySpec)
			if err := signer.Verify(spki.PublicKey.Bytes, msg, s.Signature, pqc.SignOptions{Context: []byte("ctx-1")}); err != nil {
				t.Errorf("%s: pqc.Verify: %v", k.alg, err)
			}
			pqRefused(t, nc, api.OpSign, `{"keyId":"`+k.meta.KeyID+`","message":"`+pqB64(msg)+`","signingAlgorithm":"`+k.alg+`","signatureContext":"`+pqB64(make([]byte, 256))+`"}`, kms.CodeValidation)
			pqRefused(t, nc, api.OpSign, `{"keyId":"`+k.meta.KeyID+`","message":"`+pqB64(make([]byte, 32))+`","messageType":"DIGEST","signingAlgorithm":"`+k.alg+`"}`, kms.CodeValidation)
		}
		// Through the Go client, and a context on a classical key.
		s, err := c.Sign(ctx, api.SignRequest{KeyID: "pq-dsa", Message: msg, SigningAlgorithm: "ML_DSA_SHAKE_256", SignatureContext: []byte("client")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Verify(ctx, api.VerifyRequest{KeyID: "pq-dsa", Message: msg, SigningAlgorithm: "ML_DSA_SHAKE_256", Signature: s.Signature, SignatureContext: []byte("client")}); err != nil {
			t.Errorf("client Verify with the context: %v", err)
		}
		_, err = c.Verify(ctx, api.VerifyRequest{KeyID: "pq-dsa", Message: msg, SigningAlgorithm: "ML_DSA_SHAKE_256", Signature: s.Signature})
		coreWant(t, "client Verify without the context", err, kms.CodeInvalidSignature)
		ec := coreKey(t, c, "pq-ec", "ECC_NIST_P256", "SIGN_VERIFY")
		_, err = c.Sign(ctx, api.SignRequest{KeyID: ec.KeyID, Message: msg, SigningAlgorithm: "ECDSA_SHA_256", SignatureContext: []byte("x")})
		coreWant(t, "ECDSA Sign with a context", err, kms.CodeValidation)
	})

	t.Run("MalformedRequests", func(t *testing.T) {
		for _, c := range []struct{ op, body string }{
			{api.OpSeal, `{"keyId":`},
			{api.OpSeal, `{"keyId":"pq-xwing","plaintext":"aGVsbG8=","aad":"AQID"}`},
			{api.OpSeal, `{"keyId":"pq-xwing","plaintext":"aGVsbG8=","Info":"AQID"}`},
			{api.OpSeal, `{"keyId":"pq-xwing","plaintext":"not base64!"}`},
			{api.OpOpen, `{"keyId":"pq-xwing","sealed":123}`},
			{api.OpOpen, `{"keyId":"pq-xwing","sealed":"AQID"} {}`},
			{api.OpEncapsulate, `{"keyId":"pq-kem","keyVersion":1}`},
			{api.OpEncapsulate, `["pq-kem"]`},
			{api.OpDecapsulate, `{"keyId":"pq-kem","ciphertext":"AQID","keyVersion":-1}`},
			{api.OpDecapsulate, `{"keyId":"pq-kem","ciphertext":"AQID","ciphertext":"AQID"}`},
			{api.OpSign, `{"keyId":"pq-dsa","message":"AA==","signingAlgorithm":"ML_DSA_SHAKE_256","signatureContext":"ctx"}`},
		} {
			pqRefused(t, nc, c.op, c.body, kms.CodeValidation)
		}
	})

	// The audit trail: every event matches its schema, each operation left
	// successes and failures, and no secret is in any event.
	evs := b.Events("alpha")
	counts := map[string]map[string]int{}
	rejected := map[string]bool{}
	for _, e := range evs {
		if err := schemas.ValidateEvent(e.Raw); err != nil {
			t.Errorf("event %d (%s): %v", e.Seq, e.Type, err)
		}
		secrets.scan(t, fmt.Sprintf("event %d (%s)", e.Seq, e.Type), e.Raw)
		if counts[e.Type] == nil {
			counts[e.Type] = map[string]int{}
		}
		counts[e.Type][e.Outcome]++
		if e.Type == events.TypeRequestRejected {
			rejected[fmt.Sprint(e.Data["operation"])] = true
		}
		switch e.Type {
		case events.TypeSeal, events.TypeOpen, events.TypeEncapsulate, events.TypeDecapsulate:
			if e.Outcome == events.OutcomeSuccess {
				if !strings.HasPrefix(e.Subject, "kf:alpha:key/") || e.Data["keyVersion"] == nil || e.Principal != "alice" || e.RequestID == "" {
					t.Errorf("event %d (%s) does not say who used which key version: %s", e.Seq, e.Type, e.Raw)
				}
			}
		}
	}
	for _, typ := range []string{events.TypeSeal, events.TypeOpen, events.TypeEncapsulate, events.TypeDecapsulate, events.TypeSign, events.TypeVerify} {
		if counts[typ][events.OutcomeSuccess] == 0 || counts[typ][events.OutcomeFailure] == 0 {
			t.Errorf("%s: outcomes %v, want successes and failures", typ, counts[typ])
		}
	}
	for _, op := range []string{api.OpSeal, api.OpOpen, api.OpEncapsulate, api.OpDecapsulate} {
		if !rejected[op] {
			t.Errorf("no request.rejected event for a malformed %s", op)
		}
	}
	t.Logf("checked %d events", len(evs))
}

// TestPQOverNATSTenantIsolation: another tenant can neither use nor open
// with a tenant's KEM key.
func TestPQOverNATSTenantIsolation(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	alice := b.Client("alpha", "alice")
	bob := b.Client("beta", "bob")
	ctx := t.Context()
	k := coreKey(t, alice, "iso-xwing", "X_WING", "")
	s, err := alice.Seal(ctx, api.SealRequest{KeyID: k.KeyID, Plaintext: []byte("alpha only")})
	if err != nil {
		t.Fatal(err)
	}
	e, err := alice.Encapsulate(ctx, k.KeyID)
	if err != nil {
		t.Fatal(err)
	}
	_, err = bob.Open(ctx, api.OpenRequest{KeyID: k.KeyID, Sealed: s.Sealed})
	coreWant(t, "Open from another tenant", err, kms.CodeNotFound)
	_, err = bob.Decapsulate(ctx, api.DecapsulateRequest{KeyID: k.KeyID, Ciphertext: e.Ciphertext})
	coreWant(t, "Decapsulate from another tenant", err, kms.CodeNotFound)
	_, err = bob.Seal(ctx, api.SealRequest{KeyID: k.KeyID, Plaintext: []byte("x")})
	coreWant(t, "Seal from another tenant", err, kms.CodeNotFound)
	_, err = bob.Encapsulate(ctx, k.KeyID)
	coreWant(t, "Encapsulate from another tenant", err, kms.CodeNotFound)
	// Bob's own key of the same alias opens nothing of alice's.
	coreKey(t, bob, "iso-xwing", "X_WING", "")
	_, err = bob.Open(ctx, api.OpenRequest{KeyID: "iso-xwing", Sealed: s.Sealed})
	coreWant(t, "Open with another tenant's namesake key", err, kms.CodeInvalidCiphertext)
}
