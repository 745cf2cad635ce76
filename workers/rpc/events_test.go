package rpc_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/schemas"
	"github.com/keyflow/keyflow/workers/rpc"
)

// evtCall is one API call made by TestEventsAuditTrail and what it should
// have left in the audit trail.
type evtCall struct {
	name      string
	tenant    string   // the tenant its events must name
	principal string   // "" when the call had no identity
	types     []string // the event types it must produce, in order
	code      string   // the error code the caller got; "" on success
	reqID     string   // known for failures (and raw calls); "" otherwise
	// batch: the call succeeded as a whole and its items were audited one
	// by one; itemFailures of them failed.
	batch        bool
	itemFailures int
	seqs         [2]uint64
	events       []testbed.AuditEvent
}

// evtSecrets collects everything that must never appear in an event, in the
// forms it could leak in.
type evtSecrets struct {
	names []string
	forms [][]byte
}

func (s *evtSecrets) add(name string, secret []byte) {
	for _, f := range []struct {
		how string
		b   []byte
	}{
		{"raw", secret},
		{"base64", []byte(base64.StdEncoding.EncodeToString(secret))},
		{"base64 unpadded", []byte(base64.RawStdEncoding.EncodeToString(secret))},
		{"base64url", []byte(base64.RawURLEncoding.EncodeToString(secret))},
		{"hex", []byte(hex.EncodeToString(secret))},
		{"HEX", []byte(strings.ToUpper(hex.EncodeToString(secret)))},
	} {
		s.names = append(s.names, name+" ("+f.how+")")
		s.forms = append(s.forms, f.b)
	}
}

// find returns the names of the secrets found in b.
func (s *evtSecrets) find(b []byte) []string {
	var out []string
	for i, f := range s.forms {
		if bytes.Contains(b, f) {
			out = append(out, s.names[i])
		}
	}
	return out
}

// scan reports every secret found in b.
func (s *evtSecrets) scan(t *testing.T, where string, b []byte) {
	t.Helper()
	for _, name := range s.find(b) {
		t.Errorf("SECRET LEAK: %s found in %s: %s", name, where, b)
	}
}

// TestEventsAuditTrail drives every operation of the NATS API, with
// successes and failures, then reads the whole audit trail and checks that
// every event matches its schema, names a known type, carries no secret,
// and answers the AU-3 questions with the same request ID and error code
// the caller saw.
func TestEventsAuditTrail(t *testing.T) {
	b := testbed.New(t)
	rot := &evtFlakyRotator{evtRotator: evtRotator{b.KMS}}
	b.StartRPC(rot)
	c := b.Client("alpha", "alice")
	ctx := context.Background()
	stream, err := b.JS.Stream(ctx, jsaudit.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	lastSeq := func() uint64 {
		t.Helper()
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}

	const (
		plaintext = "s3cr3t-plaintext-7f3a"
		ctxValue  = "ctx-value-9b2e-private"
		alias     = "alias/evt-app"
	)
	var secrets evtSecrets
	secrets.add("plaintext", []byte(plaintext))
	secrets.add("encryption context value", []byte(ctxValue))
	ec := map[string]string{"purpose": ctxValue, "app": "evt"}

	var calls []*evtCall
	// do runs one call and records the stream sequences its events got.
	// Calls are sequential and a reply is sent only after its audit record
	// is stored, so a call's events lie between the two sequences.
	do := func(cl *evtCall, f func() error) error {
		t.Helper()
		before := lastSeq()
		err := f()
		cl.seqs = [2]uint64{before, lastSeq()}
		if err != nil {
			var ce *client.Error
			if !errors.As(err, &ce) {
				t.Fatalf("%s: transport error %v", cl.name, err)
			}
			cl.code, cl.reqID = ce.Code, ce.RequestID
			secrets.scan(t, cl.name+" error message", []byte(ce.Message))
		}
		if cl.tenant == "" {
			cl.tenant, cl.principal = "alpha", "alice"
		}
		calls = append(calls, cl)
		return err
	}
	want := func(cl *evtCall, code kms.Code) {
		t.Helper()
		if cl.code != string(code) {
			t.Errorf("%s: got code %q, want %q", cl.name, cl.code, code)
		}
	}

	// Keys.
	var key *api.KeyMetadata
	cl := &evtCall{name: "create with alias", types: []string{events.TypeKeyCreated}}
	if err := do(cl, func() (err error) {
		key, err = c.CreateKey(ctx, api.CreateKeyRequest{Alias: alias, Description: "events test"})
		return err
	}); err != nil {
		t.Fatalf("%s: %v", cl.name, err)
	}
	cl = &evtCall{name: "create with a duplicate alias", types: []string{events.TypeKeyCreated}}
	do(cl, func() error { _, err := c.CreateKey(ctx, api.CreateKeyRequest{Alias: alias}); return err })
	want(cl, kms.CodeAlreadyExists)
	cl = &evtCall{name: "create with a bad alias", types: []string{events.TypeKeyCreated}}
	do(cl, func() error { _, err := c.CreateKey(ctx, api.CreateKeyRequest{Alias: "bad alias!"}); return err })
	want(cl, kms.CodeValidation)
	for _, ref := range []string{key.KeyID, alias, "evt-app"} {
		cl = &evtCall{name: "describe " + ref, types: []string{events.TypeKeyDescribed}}
		if err := do(cl, func() error { _, err := c.DescribeKey(ctx, ref); return err }); err != nil {
			t.Errorf("%s: %v", cl.name, err)
		}
	}
	cl = &evtCall{name: "describe an unknown alias", types: []string{events.TypeKeyDescribed}}
	do(cl, func() error { _, err := c.DescribeKey(ctx, "alias/evt-nope"); return err })
	want(cl, kms.CodeNotFound)
	cl = &evtCall{name: "describe an unknown key ID", types: []string{events.TypeKeyDescribed}}
	do(cl, func() error { _, err := c.DescribeKey(ctx, "0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b"); return err })
	want(cl, kms.CodeNotFound)
	cl = &evtCall{name: "list", types: []string{events.TypeKeyListed}}
	if err := do(cl, func() error { _, err := c.ListKeys(ctx); return err }); err != nil {
		t.Errorf("%s: %v", cl.name, err)
	}

	// Data plane.
	var enc *api.EncryptReply
	cl = &evtCall{name: "encrypt with context", types: []string{events.TypeEncrypt}}
	if err := do(cl, func() (err error) {
		enc, err = c.Encrypt(ctx, api.EncryptRequest{KeyID: alias, Plaintext: []byte(plaintext), EncryptionContext: ec})
		return err
	}); err != nil {
		t.Fatalf("%s: %v", cl.name, err)
	}
	secrets.add("ciphertext", enc.CiphertextBlob)
	cl = &evtCall{name: "decrypt", types: []string{events.TypeDecrypt}}
	if err := do(cl, func() error {
		dec, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec})
		if err == nil && string(dec.Plaintext) != plaintext {
			t.Errorf("decrypt returned %q", dec.Plaintext)
		}
		return err
	}); err != nil {
		t.Errorf("%s: %v", cl.name, err)
	}
	cl = &evtCall{name: "decrypt with the wrong context", types: []string{events.TypeDecrypt}}
	do(cl, func() error {
		_, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: map[string]string{"purpose": "other"}})
		return err
	})
	want(cl, kms.CodeInvalidCiphertext)
	cl = &evtCall{name: "decrypt a truncated ciphertext", types: []string{events.TypeDecrypt}}
	do(cl, func() error {
		_, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob[:len(enc.CiphertextBlob)-5], EncryptionContext: ec})
		return err
	})
	want(cl, kms.CodeInvalidCiphertext)
	cl = &evtCall{name: "encrypt an empty plaintext", types: []string{events.TypeEncrypt}}
	do(cl, func() error { _, err := c.Encrypt(ctx, api.EncryptRequest{KeyID: alias}); return err })
	want(cl, kms.CodeValidation)
	cl = &evtCall{name: "encrypt under an unknown alias", types: []string{events.TypeEncrypt}}
	do(cl, func() error {
		_, err := c.Encrypt(ctx, api.EncryptRequest{KeyID: "alias/evt-nope", Plaintext: []byte(plaintext)})
		return err
	})
	want(cl, kms.CodeNotFound)
	var dk *api.DataKeyReply
	cl = &evtCall{name: "datakey", types: []string{events.TypeGenerateDataKey}}
	if err := do(cl, func() (err error) {
		dk, err = c.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: key.KeyID, EncryptionContext: ec})
		return err
	}); err != nil {
		t.Fatalf("%s: %v", cl.name, err)
	}
	if len(dk.Plaintext) != 32 {
		t.Fatalf("data key is %d bytes, want 32", len(dk.Plaintext))
	}
	secrets.add("data key", dk.Plaintext)
	secrets.add("data key ciphertext", dk.CiphertextBlob)
	// The scanner itself works: it finds the data key in the reply.
	if dkJSON, _ := json.Marshal(dk); !slices.Contains(secrets.find(dkJSON), "data key (base64)") {
		t.Fatalf("the secret scanner does not find the data key in %s", dkJSON)
	}
	cl = &evtCall{name: "decrypt the data key", types: []string{events.TypeDecrypt}}
	if err := do(cl, func() error {
		_, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: dk.CiphertextBlob, EncryptionContext: ec, KeyID: alias})
		return err
	}); err != nil {
		t.Errorf("%s: %v", cl.name, err)
	}
	cl = &evtCall{name: "datakey too long", types: []string{events.TypeGenerateDataKey}}
	do(cl, func() error {
		_, err := c.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: key.KeyID, NumberOfBytes: 5000})
		return err
	})
	want(cl, kms.CodeValidation)

	// Crypto core: signatures, MACs, public keys, random bytes,
	// re-encryption, data key pairs, RSA-OAEP and batches. Messages,
	// plaintexts, private keys and random bytes are secrets; signatures and
	// MACs are outputs, but no event has a field for them either.
	const (
		signMsg  = "sign-this-message-4c1e-private"
		macMsg   = "mac-this-message-77aa-private"
		rsaPlain = "rsa-plaintext-0d9f-private"
	)
	secrets.add("message to sign", []byte(signMsg))
	secrets.add("message to MAC", []byte(macMsg))
	secrets.add("RSA plaintext", []byte(rsaPlain))
	coreData := map[string]coreWantData{}
	newKey := func(name string, req api.CreateKeyRequest) *api.KeyMetadata {
		t.Helper()
		var k *api.KeyMetadata
		cl := &evtCall{name: name, types: []string{events.TypeKeyCreated}}
		if err := do(cl, func() (err error) { k, err = c.CreateKey(ctx, req); return err }); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return k
	}
	signer := newKey("create a signing key", api.CreateKeyRequest{Alias: "alias/evt-signer", KeySpec: "ECC_NIST_P256", KeyUsage: "SIGN_VERIFY"})
	signerRN := kms.ResourceName("alpha", signer.KeyID)
	coreData["create a signing key"] = coreWantData{signerRN, map[string]any{"alias": "evt-signer", "keySpec": "ECC_NIST_P256", "keyId": signer.KeyID, "version": 1.0}}
	var sig *api.SignReply
	cl = &evtCall{name: "sign", types: []string{events.TypeSign}}
	if err := do(cl, func() (err error) {
		sig, err = c.Sign(ctx, api.SignRequest{KeyID: "alias/evt-signer", Message: []byte(signMsg), SigningAlgorithm: "ECDSA_SHA_256"})
		return err
	}); err != nil {
		t.Fatalf("%s: %v", cl.name, err)
	}
	coreData["sign"] = coreWantData{signerRN, map[string]any{"algorithm": "ECDSA_SHA_256", "messageType": "", "messageBytes": float64(len(signMsg)), "keyVersion": 1.0}}
	cl = &evtCall{name: "verify", types: []string{events.TypeVerify}}
	if err := do(cl, func() error {
		_, err := c.Verify(ctx, api.VerifyRequest{KeyID: signer.KeyID, Message: []byte(signMsg), MessageType: "RAW", SigningAlgorithm: "ECDSA_SHA_256", Signature: sig.Signature})
		return err
	}); err != nil {
		t.Errorf("%s: %v", cl.name, err)
	}
	coreData["verify"] = coreWantData{signerRN, map[string]any{"algorithm": "ECDSA_SHA_256", "messageType": "RAW", "messageBytes": float64(len(signMsg)), "keyVersion": 1.0}}
	cl = &evtCall{name: "verify another message", types: []string{events.TypeVerify}}
	do(cl, func() error {
		_, err := c.Verify(ctx, api.VerifyRequest{KeyID: signer.KeyID, Message: []byte(macMsg), SigningAlgorithm: "ECDSA_SHA_256", Signature: sig.Signature})
		return err
	})
	want(cl, kms.CodeInvalidSignature)
	coreData["verify another message"] = coreWantData{signerRN, map[string]any{"algorithm": "ECDSA_SHA_256", "messageType": "", "messageBytes": float64(len(macMsg))}}
	cl = &evtCall{name: "sign a digest of the wrong length", types: []string{events.TypeSign}}
	do(cl, func() error {
		_, err := c.Sign(ctx, api.SignRequest{KeyID: signer.KeyID, Message: []byte(signMsg), MessageType: "DIGEST", SigningAlgorithm: "ECDSA_SHA_256"})
		return err
	})
	want(cl, kms.CodeValidation)
	cl = &evtCall{name: "sign with an algorithm of another key spec", types: []string{events.TypeSign}}
	do(cl, func() error {
		_, err := c.Sign(ctx, api.SignRequest{KeyID: signer.KeyID, Message: []byte(signMsg), SigningAlgorithm: "RSASSA_PSS_SHA_256"})
		return err
	})
	want(cl, kms.CodeInvalidKeyUsage)
	cl = &evtCall{name: "sign with the data key", types: []string{events.TypeSign}}
	do(cl, func() error {
		_, err := c.Sign(ctx, api.SignRequest{KeyID: alias, Message: []byte(signMsg), SigningAlgorithm: "ECDSA_SHA_256"})
		return err
	})
	want(cl, kms.CodeInvalidKeyUsage)
	cl = &evtCall{name: "public key", types: []string{events.TypeGetPublicKey}}
	if err := do(cl, func() error { _, err := c.GetPublicKey(ctx, api.PublicKeyRequest{KeyID: "evt-signer"}); return err }); err != nil {
		t.Errorf("%s: %v", cl.name, err)
	}
	coreData["public key"] = coreWantData{signerRN, map[string]any{"keyVersion": 1.0}}
	cl = &evtCall{name: "public key of a symmetric key", types: []string{events.TypeGetPublicKey}}
	do(cl, func() error { _, err := c.GetPublicKey(ctx, api.PublicKeyRequest{KeyID: alias}); return err })
	want(cl, kms.CodeInvalidKeyUsage)

	macKey := newKey("create a MAC key", api.CreateKeyRequest{KeySpec: "HMAC_256"})
	macRN := kms.ResourceName("alpha", macKey.KeyID)
	var mac *api.MacReply
	cl = &evtCall{name: "mac", types: []string{events.TypeGenerateMAC}}
	if err := do(cl, func() (err error) {
		mac, err = c.GenerateMac(ctx, api.MacRequest{KeyID: macKey.KeyID, Message: []byte(macMsg), MacAlgorithm: "HMAC_SHA_256"})
		return err
	}); err != nil {
		t.Fatalf("%s: %v", cl.name, err)
	}
	coreData["mac"] = coreWantData{macRN, map[string]any{"algorithm": "HMAC_SHA_256", "messageBytes": float64(len(macMsg))}}
	cl = &evtCall{name: "verifymac", types: []string{events.TypeVerifyMAC}}
	if err := do(cl, func() error {
		_, err := c.VerifyMac(ctx, api.MacRequest{KeyID: macKey.KeyID, Message: []byte(macMsg), MacAlgorithm: "HMAC_SHA_256", Mac: mac.Mac})
		return err
	}); err != nil {
		t.Errorf("%s: %v", cl.name, err)
	}
	cl = &evtCall{name: "verifymac a tampered MAC", types: []string{events.TypeVerifyMAC}}
	do(cl, func() error {
		bad := bytes.Clone(mac.Mac)
		bad[5] ^= 1
		_, err := c.VerifyMac(ctx, api.MacRequest{KeyID: macKey.KeyID, Message: []byte(macMsg), MacAlgorithm: "HMAC_SHA_256", Mac: bad})
		return err
	})
	want(cl, kms.CodeInvalidMAC)
	coreData["verifymac a tampered MAC"] = coreWantData{macRN, map[string]any{"algorithm": "HMAC_SHA_256", "messageBytes": float64(len(macMsg))}}

	for _, n := range []int{32, 64} {
		cl = &evtCall{name: fmt.Sprintf("random %d", n), types: []string{events.TypeGenerateRandom}}
		if err := do(cl, func() error {
			r, err := c.GenerateRandom(ctx, n)
			if err == nil {
				secrets.add(cl.name+" bytes", r.Plaintext)
			}
			return err
		}); err != nil {
			t.Errorf("%s: %v", cl.name, err)
		}
	}
	coreData["random 32"] = coreWantData{"", map[string]any{"numberOfBytes": 32.0}}
	cl = &evtCall{name: "random 1025", types: []string{events.TypeGenerateRandom}}
	do(cl, func() error { _, err := c.GenerateRandom(ctx, 1025); return err })
	want(cl, kms.CodeValidation)

	other := newKey("create another data key", api.CreateKeyRequest{Alias: "alias/evt-other"})
	otherRN := kms.ResourceName("alpha", other.KeyID)
	cl = &evtCall{name: "reencrypt", types: []string{events.TypeReEncrypt}}
	if err := do(cl, func() error {
		r, err := c.ReEncrypt(ctx, api.ReEncryptRequest{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ec,
			DestinationKeyID: "alias/evt-other", DestinationEncryptionContext: map[string]string{"moved": ctxValue}})
		if err == nil {
			secrets.add("re-encrypted ciphertext", r.CiphertextBlob)
		}
		return err
	}); err != nil {
		t.Errorf("%s: %v", cl.name, err)
	}
	coreData["reencrypt"] = coreWantData{otherRN, map[string]any{"ciphertextBytes": float64(len(enc.CiphertextBlob)),
		"sourceKey": kms.ResourceName("alpha", key.KeyID), "sourceKeyVersion": 1.0, "keyVersion": 1.0}}
	cl = &evtCall{name: "reencrypt with the wrong source context", types: []string{events.TypeReEncrypt}}
	do(cl, func() error {
		_, err := c.ReEncrypt(ctx, api.ReEncryptRequest{CiphertextBlob: enc.CiphertextBlob, DestinationKeyID: other.KeyID})
		return err
	})
	want(cl, kms.CodeInvalidCiphertext)
	coreData["reencrypt with the wrong source context"] = coreWantData{"", map[string]any{"ciphertextBytes": float64(len(enc.CiphertextBlob)),
		"sourceKey": kms.ResourceName("alpha", key.KeyID)}}

	cl = &evtCall{name: "datakeypair", types: []string{events.TypeGenerateDataKeyPair}}
	if err := do(cl, func() error {
		r, err := c.GenerateDataKeyPair(ctx, api.DataKeyPairRequest{KeyID: alias, KeyPairSpec: "ECC_NIST_P256", EncryptionContext: ec})
		if err == nil {
			secrets.add("data key pair private key", r.PrivateKeyPlaintext)
			secrets.add("data key pair encrypted private key", r.PrivateKeyCiphertextBlob)
		}
		return err
	}); err != nil {
		t.Errorf("%s: %v", cl.name, err)
	}
	coreData["datakeypair"] = coreWantData{kms.ResourceName("alpha", key.KeyID), map[string]any{"keyPairSpec": "ECC_NIST_P256", "withoutPlaintext": false, "keyVersion": 1.0}}
	var pairBlob []byte
	cl = &evtCall{name: "datakeypair without plaintext", types: []string{events.TypeGenerateDataKeyPair}}
	if err := do(cl, func() error {
		r, err := c.GenerateDataKeyPair(ctx, api.DataKeyPairRequest{KeyID: alias, KeyPairSpec: "RSA_3072", WithoutPlaintext: true})
		if err == nil {
			pairBlob = r.PrivateKeyCiphertextBlob
			secrets.add("RSA data key pair encrypted private key", r.PrivateKeyCiphertextBlob)
		}
		return err
	}); err != nil {
		t.Errorf("%s: %v", cl.name, err)
	}
	if pairBlob != nil {
		cl = &evtCall{name: "decrypt the private key", types: []string{events.TypeDecrypt}}
		if err := do(cl, func() error {
			r, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: pairBlob})
			if err == nil {
				secrets.add("RSA data key pair private key", r.Plaintext)
			}
			return err
		}); err != nil {
			t.Errorf("%s: %v", cl.name, err)
		}
	}
	cl = &evtCall{name: "datakeypair of an unsupported spec", types: []string{events.TypeGenerateDataKeyPair}}
	do(cl, func() error {
		_, err := c.GenerateDataKeyPair(ctx, api.DataKeyPairRequest{KeyID: alias, KeyPairSpec: "ECC_NIST_P384"})
		return err
	})
	want(cl, kms.CodeValidation)
	coreData["datakeypair of an unsupported spec"] = coreWantData{"", map[string]any{"keyPairSpec": "ECC_NIST_P384", "withoutPlaintext": false}}

	cl = &evtCall{name: "datakey without plaintext", types: []string{events.TypeGenerateDataKey}}
	var dkBlob []byte
	if err := do(cl, func() error {
		r, err := c.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: alias, NumberOfBytes: 48, WithoutPlaintext: true})
		if err == nil {
			if r.Plaintext != nil {
				t.Errorf("%s: the reply holds the data key", cl.name)
			}
			dkBlob = r.CiphertextBlob
			secrets.add("data key ciphertext (without plaintext)", r.CiphertextBlob)
		}
		return err
	}); err != nil {
		t.Errorf("%s: %v", cl.name, err)
	}
	if dkBlob != nil {
		cl = &evtCall{name: "decrypt the data key made without plaintext", types: []string{events.TypeDecrypt}}
		if err := do(cl, func() error {
			r, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: dkBlob})
			if err == nil {
				secrets.add("data key (without plaintext)", r.Plaintext)
			}
			return err
		}); err != nil {
			t.Errorf("%s: %v", cl.name, err)
		}
	}

	rsaKey := newKey("create an RSA key", api.CreateKeyRequest{KeySpec: "RSA_3072", KeyUsage: "ENCRYPT_DECRYPT"})
	var rsaCT []byte
	cl = &evtCall{name: "encrypt with RSA-OAEP", types: []string{events.TypeEncrypt}}
	if err := do(cl, func() error {
		r, err := c.Encrypt(ctx, api.EncryptRequest{KeyID: rsaKey.KeyID, Plaintext: []byte(rsaPlain), EncryptionAlgorithm: "RSAES_OAEP_SHA_256"})
		if err == nil {
			rsaCT = r.CiphertextBlob
			secrets.add("RSA ciphertext", r.CiphertextBlob)
		}
		return err
	}); err != nil {
		t.Errorf("%s: %v", cl.name, err)
	}
	coreData["encrypt with RSA-OAEP"] = coreWantData{kms.ResourceName("alpha", rsaKey.KeyID), map[string]any{"plaintextBytes": float64(len(rsaPlain)), "contextKeys": nil, "keyVersion": 1.0}}
	cl = &evtCall{name: "decrypt with RSA-OAEP", types: []string{events.TypeDecrypt}}
	if err := do(cl, func() error {
		_, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: rsaCT, KeyID: rsaKey.KeyID, EncryptionAlgorithm: "RSAES_OAEP_SHA_256"})
		return err
	}); err != nil {
		t.Errorf("%s: %v", cl.name, err)
	}
	cl = &evtCall{name: "decrypt with RSA-OAEP without the key", types: []string{events.TypeDecrypt}}
	do(cl, func() error {
		_, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: rsaCT, EncryptionAlgorithm: "RSAES_OAEP_SHA_256"})
		return err
	})
	want(cl, kms.CodeValidation)

	batchItems := []api.EncryptRequest{
		{KeyID: alias, Plaintext: []byte("batch-secret-0-b1f2"), EncryptionContext: ec},
		{KeyID: "alias/evt-nope", Plaintext: []byte("batch-secret-1-c3d4")},
		{KeyID: other.KeyID, Plaintext: []byte("batch-secret-2-e5f6")},
	}
	for i, it := range batchItems {
		secrets.add(fmt.Sprintf("batch plaintext %d", i), it.Plaintext)
	}
	cl = &evtCall{name: "batch encrypt", types: []string{events.TypeEncrypt, events.TypeEncrypt, events.TypeEncrypt}, batch: true, itemFailures: 1}
	if err := do(cl, func() error {
		r, err := c.BatchEncrypt(ctx, batchItems)
		if err == nil {
			for i, res := range r.Results {
				if (res.Error != nil) != (i == 1) {
					t.Errorf("batch item %d: %+v", i, res)
				}
				if res.Result != nil {
					secrets.add(fmt.Sprintf("batch ciphertext %d", i), res.Result.CiphertextBlob)
				}
			}
		}
		return err
	}); err != nil {
		t.Errorf("%s: %v", cl.name, err)
	}
	cl = &evtCall{name: "batch of 1001", types: []string{events.TypeRequestRejected}}
	do(cl, func() error {
		items := make([]api.EncryptRequest, api.MaxBatchItems+1)
		for i := range items {
			items[i] = api.EncryptRequest{KeyID: alias, Plaintext: []byte(plaintext)}
		}
		_, err := c.BatchEncrypt(ctx, items)
		return err
	})
	want(cl, kms.CodeValidation)
	coreData["batch of 1001"] = coreWantData{"", map[string]any{"operation": api.OpBatchEncrypt}}

	// Malformed requests: refused before any operation, and the body (here
	// holding the plaintext) is never echoed.
	b64 := base64.StdEncoding.EncodeToString([]byte(plaintext))
	for _, m := range []struct{ name, op, body string }{
		{"malformed JSON", api.OpEncrypt, `{"keyId":"` + alias + `","plaintext":"` + b64},
		{"unknown field", api.OpEncrypt, `{"keyId":"` + alias + `","plaintext":"` + b64 + `","plain":"` + plaintext + `"}`},
		{"plaintext not base64", api.OpEncrypt, `{"keyId":"` + alias + `","plaintext":"` + plaintext + `"}`},
		{"wrong type", api.OpDataKey, `{"keyId":"` + alias + `","numberOfBytes":"` + plaintext + `"}`},
		{"trailing data", api.OpKeyDescribe, `{"keyId":"` + alias + `"} {"x":"` + plaintext + `"}`},
		{"list with a body", api.OpKeyList, `{"filter":"` + plaintext + `"}`},
		{"sign with an unknown field", api.OpSign, `{"keyId":"alias/evt-signer","message":"` + b64 + `","signingAlgorithm":"ECDSA_SHA_256","hash":"` + plaintext + `"}`},
		{"random of a string", api.OpRandom, `{"numberOfBytes":"` + plaintext + `"}`},
		{"reencrypt with a bad ciphertext", api.OpReEncrypt, `{"ciphertextBlob":"` + plaintext + `"}`},
		{"batch with a bad item", api.OpBatchEncrypt, `{"items":[{"keyId":"` + alias + `","plaintext":"` + b64 + `","x":1}]}`},
	} {
		cl = &evtCall{name: m.name, types: []string{events.TypeRequestRejected}}
		do(cl, func() error { return c.CallRaw(ctx, m.op, []byte(m.body), nil) })
		want(cl, kms.CodeValidation)
	}

	// Audit.
	var tail *api.AuditTailReply
	cl = &evtCall{name: "audit tail", types: []string{events.TypeAuditRead}}
	if err := do(cl, func() (err error) { tail, err = c.AuditTail(ctx, api.AuditTailRequest{Limit: 1000}); return err }); err != nil {
		t.Fatalf("%s: %v", cl.name, err)
	}
	if len(tail.Events) == 0 {
		t.Errorf("audit tail returned no events")
	}
	tailJSON, err := json.Marshal(tail)
	if err != nil {
		t.Fatal(err)
	}
	if err := schemas.ValidateAPI("AuditTailReply", tailJSON); err != nil {
		t.Errorf("audit tail reply: %v", err)
	}
	secrets.scan(t, "the audit tail reply", tailJSON)
	// The next page holds only the first page's own audit-read record: a
	// follow waiting for news does not record its own records again.
	cl = &evtCall{name: "audit tail, next page", types: nil}
	if err := do(cl, func() error {
		_, err := c.AuditTail(ctx, api.AuditTailRequest{After: tail.Events[len(tail.Events)-1].Cursor, WaitMillis: 10})
		return err
	}); err != nil {
		t.Errorf("%s: %v", cl.name, err)
	}

	// Rotation: its steps are audited under the request's ID; a rotation
	// that fails after it was accepted is recorded as such.
	cl = &evtCall{name: "rotate", types: []string{events.TypeKeyRotationStart, events.TypeKeyVersionCreated, events.TypeKeyRotated}}
	if err := do(cl, func() error { _, err := c.RotateKey(ctx, alias); return err }); err != nil {
		t.Errorf("%s: %v", cl.name, err)
	}
	doomed := newKey("create a key whose rotation fails", api.CreateKeyRequest{Alias: "alias/evt-doomed"})
	rot.fail.Store(doomed.KeyID, true)
	cl = &evtCall{name: "rotate, the workflow fails", types: []string{events.TypeKeyRotationStart, events.TypeKeyRotationFailed}}
	do(cl, func() error { _, err := c.RotateKey(ctx, "alias/evt-doomed"); return err })
	want(cl, kms.CodeInternal)
	cl = &evtCall{name: "rotate an unknown key", types: []string{events.TypeKeyRotationStart}}
	do(cl, func() error { _, err := c.RotateKey(ctx, "alias/evt-nope"); return err })
	want(cl, kms.CodeNotFound)

	// Requests with no server-vouched identity (sent from inside the keyflow
	// account, not through a tenant's import): denied, and recorded under
	// the subject's tenant when it is a valid name, else under "-".
	raw := func(name, subject, tenant string) {
		cl := &evtCall{name: name, tenant: tenant, types: []string{events.TypeRequestRejected}, reqID: nuid.Next()}
		do(cl, func() error {
			msg := nats.NewMsg(subject)
			msg.Header.Set(api.HeaderRequestID, cl.reqID)
			msg.Data = []byte(`{"keyId":"` + alias + `","plaintext":"` + b64 + `"}`)
			reply, err := b.Conn.RequestMsg(msg, 20*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			var er api.ErrorReply
			if err := json.Unmarshal(reply.Data, &er); err != nil || er.Error.Code == "" {
				t.Fatalf("%s: not an error reply: %s", name, reply.Data)
			}
			secrets.scan(t, name+" reply", reply.Data)
			return &client.Error{Code: er.Error.Code, Message: er.Error.Message, RequestID: er.Error.RequestID}
		})
		want(cl, kms.CodeAccessDenied)
	}
	raw("no identity, valid tenant", api.Subject("alpha", api.OpEncrypt), "alpha")
	raw("no identity, invalid tenant", "kf.v1.NOT_A_TENANT.crypto.encrypt", "-")

	// Another tenant's principal.
	cb := b.Client("beta", "bob")
	cl = &evtCall{name: "beta list", tenant: "beta", principal: "bob", types: []string{events.TypeKeyListed}}
	if err := do(cl, func() error { _, err := cb.ListKeys(ctx); return err }); err != nil {
		t.Errorf("%s: %v", cl.name, err)
	}
	cl = &evtCall{name: "beta describes alpha's key", tenant: "beta", principal: "bob", types: []string{events.TypeKeyDescribed}}
	do(cl, func() error { _, err := cb.DescribeKey(ctx, key.KeyID); return err })
	want(cl, kms.CodeNotFound)

	// Read the whole trail back.
	all := map[uint64]testbed.AuditEvent{}
	for _, tenant := range []string{"alpha", "-", "beta"} {
		evs := b.Events(tenant)
		if len(evs) == 0 {
			t.Errorf("no events for tenant %q", tenant)
		}
		for _, e := range evs {
			if e.Tenant != tenant {
				t.Errorf("event %d read for tenant %q names tenant %q", e.Seq, tenant, e.Tenant)
			}
			all[e.Seq] = e
		}
	}
	if n := lastSeq(); uint64(len(all)) != n {
		t.Errorf("read %d events of tenants alpha, - and beta; the stream holds %d", len(all), n)
	}

	// (a) schemas, (b) known types, (c) secrets, and AU-3 for every event.
	known := map[string]bool{}
	for _, typ := range events.Types {
		known[typ] = true
	}
	ids := map[string]uint64{}
	for _, seq := range slices.Sorted(maps.Keys(all)) {
		e := all[seq]
		if err := schemas.ValidateEvent(e.Raw); err != nil {
			t.Errorf("event %d does not match its schema: %v\n%s", seq, err, e.Raw)
		}
		if !known[e.Type] {
			t.Errorf("event %d has type %q, which is not in events.Types", seq, e.Type)
		}
		secrets.scan(t, "event "+e.Type, e.Raw)
		if e.ID == "" || e.Type == "" || e.Source == "" || e.Time.IsZero() || e.Tenant == "" || e.Outcome == "" || e.RequestID == "" {
			t.Errorf("event %d misses an AU-3 attribute: %s", seq, e.Raw)
		}
		if prev, ok := ids[e.ID]; ok {
			t.Errorf("events %d and %d share the ID %s", prev, seq, e.ID)
		}
		ids[e.ID] = seq
		if d := time.Since(e.Time); d < 0 || d > 5*time.Minute {
			t.Errorf("event %d has time %v", seq, e.Time)
		}
	}

	t.Logf("checked %d events of %d calls against %d secret forms", len(all), len(calls), len(secrets.forms))

	// (d) every call's events: the right identity, request ID and outcome.
	reqIDs := map[string]string{}
	for _, cl := range calls {
		for seq := cl.seqs[0] + 1; seq <= cl.seqs[1]; seq++ {
			if e, ok := all[seq]; ok {
				cl.events = append(cl.events, e)
			}
		}
		var types []string
		for _, e := range cl.events {
			types = append(types, e.Type)
		}
		if !slices.Equal(types, cl.types) {
			t.Errorf("%s: events %v, want %v", cl.name, types, cl.types)
			continue
		}
		if len(cl.events) == 0 {
			continue
		}
		reqID := cl.events[0].RequestID
		if cl.reqID != "" && reqID != cl.reqID {
			t.Errorf("%s: event requestid %q, the caller got %q", cl.name, reqID, cl.reqID)
		}
		if other, ok := reqIDs[reqID]; ok {
			t.Errorf("%s: requestid %q was also used by %s", cl.name, reqID, other)
		}
		reqIDs[reqID] = cl.name
		for _, e := range cl.events {
			if e.RequestID != reqID || e.Tenant != cl.tenant || e.Principal != cl.principal {
				t.Errorf("%s: event %s has requestid %q tenant %q principal %q, want %q %q %q",
					cl.name, e.Type, e.RequestID, e.Tenant, e.Principal, reqID, cl.tenant, cl.principal)
			}
		}
		last := cl.events[len(cl.events)-1]
		switch {
		case cl.batch:
			failures := 0
			for _, e := range cl.events {
				if e.Outcome != events.OutcomeSuccess {
					failures++
				}
			}
			if cl.code != "" || failures != cl.itemFailures {
				t.Errorf("%s: the caller got %q, %d items failed; the trail says %d", cl.name, cl.code, cl.itemFailures, failures)
			}
		case cl.code == "":
			for _, e := range cl.events {
				if e.Outcome != events.OutcomeSuccess || e.ErrorCode != "" {
					t.Errorf("%s succeeded but its event %s says outcome %q errorcode %q", cl.name, e.Type, e.Outcome, e.ErrorCode)
				}
			}
		default:
			wantOutcome := events.OutcomeFailure
			if cl.code == string(kms.CodeAccessDenied) {
				wantOutcome = events.OutcomeDenied
			}
			if last.Outcome != wantOutcome || last.ErrorCode != cl.code {
				t.Errorf("%s: the caller got %s, the event says outcome %q errorcode %q", cl.name, cl.code, last.Outcome, last.ErrorCode)
			}
		}
	}

	// What the events say about the successful data-plane calls.
	subject := kms.ResourceName("alpha", key.KeyID)
	for _, cl := range calls {
		if len(cl.events) != 1 {
			continue
		}
		e := cl.events[0]
		switch cl.name {
		case "encrypt with context":
			evtWantData(t, cl.name, e, subject, map[string]any{"plaintextBytes": float64(len(plaintext)), "contextKeys": []any{"app", "purpose"}, "keyVersion": 1.0})
		case "decrypt":
			evtWantData(t, cl.name, e, subject, map[string]any{"ciphertextBytes": float64(len(enc.CiphertextBlob)), "contextKeys": []any{"app", "purpose"}, "keyVersion": 1.0})
		case "datakey":
			evtWantData(t, cl.name, e, subject, map[string]any{"numberOfBytes": 32.0, "contextKeys": []any{"app", "purpose"}, "keyVersion": 1.0})
		case "decrypt with the wrong context":
			evtWantData(t, cl.name, e, subject, map[string]any{"ciphertextBytes": float64(len(enc.CiphertextBlob)), "contextKeys": []any{"purpose"}})
		case "create with alias":
			evtWantData(t, cl.name, e, subject, map[string]any{"alias": "evt-app", "keySpec": "SYMMETRIC_DEFAULT", "keyId": key.KeyID, "version": 1.0})
		case "list":
			evtWantData(t, cl.name, e, "", map[string]any{"count": 1.0})
		case "malformed JSON":
			evtWantData(t, cl.name, e, "", map[string]any{"operation": api.OpEncrypt})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(coreData)) {
		w := coreData[name]
		cl := evtByName(calls, name)
		if cl == nil || len(cl.events) != 1 {
			t.Errorf("%s: no single event to check", name)
			continue
		}
		evtWantData(t, name, cl.events[0], w.subject, w.data)
	}
	if cl := evtByName(calls, "rotate, the workflow fails"); cl != nil && len(cl.events) == 2 {
		evtWantData(t, cl.name, cl.events[1], kms.ResourceName("alpha", doomed.KeyID), map[string]any{"keyId": doomed.KeyID})
	}
	// Every successful event whose schema says "present on success" has it.
	for _, e := range all {
		if e.Outcome != events.OutcomeSuccess {
			continue
		}
		switch e.Type {
		case events.TypeEncrypt, events.TypeDecrypt, events.TypeGenerateDataKey, events.TypeSign, events.TypeVerify,
			events.TypeReEncrypt, events.TypeGenerateDataKeyPair:
			if _, ok := e.Data["keyVersion"]; !ok || e.Subject == "" {
				t.Errorf("successful %s event without a key version or subject: %s", e.Type, e.Raw)
			}
		}
	}
}

// coreWantData is what one call's single event must say.
type coreWantData struct {
	subject string
	data    map[string]any
}

func evtByName(calls []*evtCall, name string) *evtCall {
	for _, cl := range calls {
		if cl.name == name {
			return cl
		}
	}
	return nil
}

func evtWantData(t *testing.T, name string, e testbed.AuditEvent, subject string, data map[string]any) {
	t.Helper()
	if e.Subject != subject {
		t.Errorf("%s: subject %q, want %q", name, e.Subject, subject)
	}
	got, _ := json.Marshal(e.Data)
	want, _ := json.Marshal(data)
	if !bytes.Equal(got, want) {
		t.Errorf("%s: data %s, want %s", name, got, want)
	}
}

// evtRotator rotates in-process with the domain's own steps, as the
// rotation workflow's activities do.
type evtRotator struct{ kms *kms.Service }

func (r evtRotator) Rotate(ctx context.Context, c kms.Caller, keyID string) (*rpc.RotateResult, error) {
	// The workflow records its own start (and failure, see evtFlakyRotator).
	if err := r.kms.RecordRotationStarted(ctx, c, keyID); err != nil {
		return nil, err
	}
	next, err := r.kms.NextVersion(ctx, c, keyID)
	if err != nil {
		return nil, err
	}
	if _, err := r.kms.CreateVersion(ctx, c, kms.CreateVersionParams{KeyID: keyID, Version: next}); err != nil {
		return nil, err
	}
	res, err := r.kms.SetPrimaryVersion(ctx, c, kms.SetPrimaryParams{KeyID: keyID, Version: next})
	if err != nil {
		return nil, err
	}
	return &rpc.RotateResult{KeyID: keyID, PreviousVersion: res.PreviousPrimary, NewVersion: next, WorkflowID: "evt-" + keyID}, nil
}

// evtFlakyRotator rotates like evtRotator, except the keys in fail, whose
// rotation fails as a broken workflow would.
type evtFlakyRotator struct {
	evtRotator
	fail sync.Map // key ID -> true
}

func (r *evtFlakyRotator) Rotate(ctx context.Context, c kms.Caller, keyID string) (*rpc.RotateResult, error) {
	if _, ok := r.fail.Load(keyID); ok {
		if err := r.kms.RecordRotationStarted(ctx, c, keyID); err != nil {
			return nil, err
		}
		failed := &kms.Error{Code: kms.CodeInternal, Message: "failed to run the rotation workflow"}
		if err := r.kms.RecordRotationFailed(ctx, c, keyID, failed); err != nil {
			return nil, err
		}
		return nil, failed
	}
	return r.evtRotator.Rotate(ctx, c, keyID)
}

// TestSchemaWireMessages sends each request as raw JSON from a tenant's
// principal, checks the request against its schema first, and checks every
// reply against the schema of its reply (or of ErrorReply), so the schemas
// describe what the server really exchanges.
func TestSchemaWireMessages(t *testing.T) {
	b := testbed.New(t)
	rot := &evtFlakyRotator{evtRotator: evtRotator{b.KMS}}
	startRPCWithMigrator(t, b, rot) // datakeys_test.go
	creds, err := b.Identity.UserCreds("alpha", "alice")
	if err != nil {
		t.Fatal(err)
	}
	nc, err := connectSigned(b.NATS, creds, "alice")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	// send validates req against reqSchema (if any), sends it, and
	// validates the reply; it returns the reply body.
	send := func(op, reqSchema, body, replySchema string) []byte {
		t.Helper()
		if reqSchema != "" {
			if err := schemas.ValidateAPI(reqSchema, []byte(body)); err != nil {
				t.Errorf("request %s: %v", body, err)
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
			t.Errorf("%s reply %s: %v", op, reply.Data, err)
		}
		return reply.Data
	}
	var meta api.KeyMetadata
	if err := json.Unmarshal(send(api.OpKeyCreate, "CreateKeyRequest", `{"alias":"alias/wire","description":"wire test","keySpec":"SYMMETRIC_DEFAULT","keyUsage":"ENCRYPT_DECRYPT"}`, "KeyMetadata"), &meta); err != nil || meta.KeyID == "" {
		t.Fatalf("create: %v", err)
	}
	send(api.OpKeyCreate, "CreateKeyRequest", `{"alias":"alias/wire"}`, "KeyMetadata")
	send(api.OpKeyDescribe, "KeyRequest", `{"keyId":"alias/wire"}`, "KeyMetadata")
	send(api.OpKeyDescribe, "KeyRequest", `{"keyId":"`+meta.KeyID+`"}`, "KeyMetadata")
	send(api.OpKeyList, "", `{}`, "ListKeysReply")
	var enc api.EncryptReply
	if err := json.Unmarshal(send(api.OpEncrypt, "EncryptRequest", `{"keyId":"alias/wire","plaintext":"aGVsbG8=","encryptionContext":{"a":"b"}}`, "EncryptReply"), &enc); err != nil {
		t.Fatal(err)
	}
	ct := base64.StdEncoding.EncodeToString(enc.CiphertextBlob)
	send(api.OpDecrypt, "DecryptRequest", `{"ciphertextBlob":"`+ct+`","encryptionContext":{"a":"b"}}`, "DecryptReply")
	send(api.OpDecrypt, "DecryptRequest", `{"ciphertextBlob":"`+ct+`"}`, "DecryptReply")
	send(api.OpDataKey, "DataKeyRequest", `{"keyId":"alias/wire","numberOfBytes":16}`, "DataKeyReply")
	send(api.OpDataKey, "DataKeyRequest", `{"keyId":"alias/wire"}`, "DataKeyReply")
	send(api.OpKeyRotate, "RotateKeyRequest", `{"keyId":"alias/wire"}`, "RotateKeyReply")
	send(api.OpAuditTail, "AuditTailRequest", `{"limit":1000}`, "AuditTailReply")
	send(api.OpAuditTail, "AuditTailRequest", `{"limit":2,"waitMillis":10}`, "AuditTailReply")
	// Refused requests get an ErrorReply, whatever the operation.
	send(api.OpEncrypt, "", `{"keyId":`, "ErrorReply")
	send(api.OpEncrypt, "", `{"keyId":"alias/wire","plaintext":"aGVsbG8=","extra":1}`, "ErrorReply")
	send(api.OpEncrypt, "", `{"keyId":"alias/wire"}`, "ErrorReply")

	// The crypto-core messages. ok wants a success, refused an error code.
	ok := func(op, reqSchema, body, replySchema string) []byte {
		t.Helper()
		out := send(op, reqSchema, body, replySchema)
		var er api.ErrorReply
		if json.Unmarshal(out, &er) == nil && er.Error.Code != "" {
			t.Errorf("%s %.200s: %s", op, body, out)
		}
		return out
	}
	refused := func(op, reqSchema, body string, code kms.Code) {
		t.Helper()
		out := send(op, reqSchema, body, "ErrorReply")
		var er api.ErrorReply
		if err := json.Unmarshal(out, &er); err != nil || er.Error.Code != string(code) {
			t.Errorf("%s %.200s: got %s, want %s", op, body, out, code)
		}
	}
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	ok(api.OpKeyCreate, "CreateKeyRequest", `{"alias":"wire-signer","keySpec":"ECC_NIST_P256","keyUsage":"SIGN_VERIFY"}`, "KeyMetadata")
	ok(api.OpKeyCreate, "CreateKeyRequest", `{"alias":"wire-ed","keySpec":"ECC_NIST_EDWARDS25519"}`, "KeyMetadata")
	ok(api.OpKeyCreate, "CreateKeyRequest", `{"alias":"wire-mac","keySpec":"HMAC_256"}`, "KeyMetadata")
	ok(api.OpKeyCreate, "CreateKeyRequest", `{"alias":"wire-rsa","keySpec":"RSA_3072","keyUsage":"ENCRYPT_DECRYPT"}`, "KeyMetadata")
	refused(api.OpKeyCreate, "CreateKeyRequest", `{"keySpec":"ECC_NIST_P256","keyUsage":"ENCRYPT_DECRYPT"}`, kms.CodeValidation)
	var sig api.SignReply
	if err := json.Unmarshal(ok(api.OpSign, "SignRequest", `{"keyId":"alias/wire-signer","message":"aGVsbG8=","signingAlgorithm":"ECDSA_SHA_256"}`, "SignReply"), &sig); err != nil {
		t.Fatal(err)
	}
	ok(api.OpSign, "SignRequest", `{"keyId":"wire-signer","message":"`+b64(make([]byte, 32))+`","messageType":"DIGEST","signingAlgorithm":"ECDSA_SHA_256"}`, "SignReply")
	ok(api.OpSign, "SignRequest", `{"keyId":"wire-ed","message":"aGVsbG8=","messageType":"RAW","signingAlgorithm":"ED25519_SHA_512"}`, "SignReply")
	ok(api.OpVerify, "VerifyRequest", `{"keyId":"wire-signer","message":"aGVsbG8=","signingAlgorithm":"ECDSA_SHA_256","signature":"`+b64(sig.Signature)+`"}`, "VerifyReply")
	ok(api.OpVerify, "VerifyRequest", `{"keyId":"wire-signer","keyVersion":1,"message":"aGVsbG8=","messageType":"RAW","signingAlgorithm":"ECDSA_SHA_256","signature":"`+b64(sig.Signature)+`"}`, "VerifyReply")
	refused(api.OpVerify, "VerifyRequest", `{"keyId":"wire-signer","message":"aGVsbG9v","signingAlgorithm":"ECDSA_SHA_256","signature":"`+b64(sig.Signature)+`"}`, kms.CodeInvalidSignature)
	refused(api.OpSign, "", `{"keyId":"wire-signer","message":"aGVsbG8="}`, kms.CodeInvalidKeyUsage)
	ok(api.OpGetPublicKey, "PublicKeyRequest", `{"keyId":"alias/wire-signer"}`, "PublicKeyReply")
	ok(api.OpGetPublicKey, "PublicKeyRequest", `{"keyId":"wire-rsa","keyVersion":1}`, "PublicKeyReply")
	refused(api.OpGetPublicKey, "PublicKeyRequest", `{"keyId":"wire"}`, kms.CodeInvalidKeyUsage)
	var mac api.MacReply
	if err := json.Unmarshal(ok(api.OpGenerateMac, "MacRequest", `{"keyId":"wire-mac","message":"aGVsbG8=","macAlgorithm":"HMAC_SHA_256"}`, "MacReply"), &mac); err != nil {
		t.Fatal(err)
	}
	ok(api.OpVerifyMac, "MacRequest", `{"keyId":"wire-mac","message":"aGVsbG8=","macAlgorithm":"HMAC_SHA_256","mac":"`+b64(mac.Mac)+`"}`, "MacReply")
	refused(api.OpVerifyMac, "MacRequest", `{"keyId":"wire-mac","message":"aGVsbG9v","macAlgorithm":"HMAC_SHA_256","mac":"`+b64(mac.Mac)+`"}`, kms.CodeInvalidMAC)
	ok(api.OpRandom, "RandomRequest", `{"numberOfBytes":1024}`, "RandomReply")
	ok(api.OpRandom, "RandomRequest", `{"numberOfBytes":1}`, "RandomReply")
	refused(api.OpRandom, "", `{"numberOfBytes":0}`, kms.CodeValidation)
	var re api.ReEncryptReply
	if err := json.Unmarshal(ok(api.OpReEncrypt, "ReEncryptRequest", `{"ciphertextBlob":"`+ct+`","sourceEncryptionContext":{"a":"b"},"sourceKeyId":"wire","destinationKeyId":"alias/wire","destinationEncryptionContext":{"c":"d"}}`, "ReEncryptReply"), &re); err != nil {
		t.Fatal(err)
	}
	ok(api.OpReEncrypt, "ReEncryptRequest", `{"ciphertextBlob":"`+b64(re.CiphertextBlob)+`","sourceEncryptionContext":{"c":"d"}}`, "ReEncryptReply")
	refused(api.OpReEncrypt, "ReEncryptRequest", `{"ciphertextBlob":"`+ct+`"}`, kms.CodeInvalidCiphertext)
	ok(api.OpDataKeyPair, "DataKeyPairRequest", `{"keyId":"wire","keyPairSpec":"ECC_NIST_P256","encryptionContext":{"a":"b"}}`, "DataKeyPairReply")
	ok(api.OpDataKeyPair, "DataKeyPairRequest", `{"keyId":"wire","keyPairSpec":"RSA_3072","withoutPlaintext":true}`, "DataKeyPairReply")
	refused(api.OpDataKeyPair, "DataKeyPairRequest", `{"keyId":"wire","keyPairSpec":"ECC_NIST_P521"}`, kms.CodeValidation)
	ok(api.OpDataKey, "DataKeyRequest", `{"keyId":"wire","withoutPlaintext":true}`, "DataKeyReply")
	var rsaEnc api.EncryptReply
	if err := json.Unmarshal(ok(api.OpEncrypt, "EncryptRequest", `{"keyId":"wire-rsa","plaintext":"aGVsbG8=","encryptionAlgorithm":"RSAES_OAEP_SHA_256"}`, "EncryptReply"), &rsaEnc); err != nil {
		t.Fatal(err)
	}
	ok(api.OpDecrypt, "DecryptRequest", `{"ciphertextBlob":"`+b64(rsaEnc.CiphertextBlob)+`","keyId":"wire-rsa","encryptionAlgorithm":"RSAES_OAEP_SHA_256"}`, "DecryptReply")
	refused(api.OpDecrypt, "", `{"ciphertextBlob":"`+b64(rsaEnc.CiphertextBlob)+`","encryptionAlgorithm":"RSAES_OAEP_SHA_256"}`, kms.CodeValidation)
	var be api.BatchReply[api.EncryptReply]
	if err := json.Unmarshal(ok(api.OpBatchEncrypt, "BatchEncryptRequest", `{"items":[{"keyId":"wire","plaintext":"aGVsbG8="},{"keyId":"wire-nope","plaintext":"aGVsbG8="},{"keyId":"wire-rsa","plaintext":"aGVsbG8=","encryptionAlgorithm":"RSAES_OAEP_SHA_1"}]}`, "BatchEncryptReply"), &be); err != nil || len(be.Results) != 3 || be.Results[0].Result == nil || be.Results[2].Result == nil {
		t.Fatalf("batchencrypt: %v %+v", err, be)
	}
	ok(api.OpBatchDecrypt, "BatchDecryptRequest", `{"items":[{"ciphertextBlob":"`+b64(be.Results[0].Result.CiphertextBlob)+`"},{"ciphertextBlob":"AQID"},{"ciphertextBlob":"`+b64(be.Results[2].Result.CiphertextBlob)+`","keyId":"wire-rsa","encryptionAlgorithm":"RSAES_OAEP_SHA_1"}]}`, "BatchDecryptReply")
	ok(api.OpBatchDataKey, "BatchDataKeyRequest", `{"items":[{"keyId":"wire"},{"keyId":"wire","numberOfBytes":16,"withoutPlaintext":true},{"keyId":"wire-mac"}]}`, "BatchDataKeyReply")
	refused(api.OpBatchDataKey, "", `{"items":[]}`, kms.CodeValidation)
	// The post-quantum messages.
	ok(api.OpKeyCreate, "CreateKeyRequest", `{"alias":"wire-xwing","keySpec":"X_WING"}`, "KeyMetadata")
	var sealed api.SealReply
	if err := json.Unmarshal(ok(api.OpSeal, "SealRequest", `{"keyId":"wire-xwing","plaintext":"aGVsbG8=","info":"AQID"}`, "SealReply"), &sealed); err != nil {
		t.Fatal(err)
	}
	ok(api.OpOpen, "OpenRequest", `{"keyId":"wire-xwing","sealed":"`+b64(sealed.Sealed)+`","info":"AQID"}`, "OpenReply")
	refused(api.OpOpen, "OpenRequest", `{"keyId":"wire-xwing","sealed":"`+b64(sealed.Sealed)+`"}`, kms.CodeInvalidCiphertext)
	var encap api.EncapsulateReply
	if err := json.Unmarshal(ok(api.OpEncapsulate, "EncapsulateRequest", `{"keyId":"wire-xwing"}`, "EncapsulateReply"), &encap); err != nil {
		t.Fatal(err)
	}
	ok(api.OpDecapsulate, "DecapsulateRequest", `{"keyId":"wire-xwing","keyVersion":1,"ciphertext":"`+b64(encap.Ciphertext)+`"}`, "DecapsulateReply")
	refused(api.OpDecapsulate, "DecapsulateRequest", `{"keyId":"wire-xwing","ciphertext":"AQID"}`, kms.CodeValidation)
	ok(api.OpGetPublicKey, "PublicKeyRequest", `{"keyId":"wire-xwing"}`, "PublicKeyReply")
	ok(api.OpKeyCreate, "CreateKeyRequest", `{"alias":"wire-mldsa","keySpec":"ML_DSA_65"}`, "KeyMetadata")
	var pqSig api.SignReply
	if err := json.Unmarshal(ok(api.OpSign, "SignRequest", `{"keyId":"wire-mldsa","message":"aGVsbG8=","signingAlgorithm":"ML_DSA_SHAKE_256","signatureContext":"AQID"}`, "SignReply"), &pqSig); err != nil {
		t.Fatal(err)
	}
	ok(api.OpVerify, "VerifyRequest", `{"keyId":"wire-mldsa","message":"aGVsbG8=","signingAlgorithm":"ML_DSA_SHAKE_256","signature":"`+b64(pqSig.Signature)+`","signatureContext":"AQID"}`, "VerifyReply")
	refused(api.OpVerify, "VerifyRequest", `{"keyId":"wire-mldsa","message":"aGVsbG8=","signingAlgorithm":"ML_DSA_SHAKE_256","signature":"`+b64(pqSig.Signature)+`"}`, kms.CodeInvalidSignature)
	// The crypto inventory, in both formats.
	ok(api.OpKeyInventory, "InventoryRequest", `{}`, "InventoryReply")
	ok(api.OpKeyInventory, "InventoryRequest", `{"fromAlgorithms":["RSA_3072"],"to":"ML_DSA_65","format":"cyclonedx"}`, "InventoryReply")
	refused(api.OpKeyInventory, "InventoryRequest", `{"to":"RSA_4096"}`, kms.CodeValidation)
	refused(api.OpKeyInventory, "", `{"format":"xml"}`, kms.CodeValidation)
	wireRegistryAndMigration(t, b.KMS, ok, refused) // datakeys_test.go
	// A rotation that fails after it was accepted.
	var doomed api.KeyMetadata
	if err := json.Unmarshal(ok(api.OpKeyCreate, "CreateKeyRequest", `{"alias":"wire-doomed"}`, "KeyMetadata"), &doomed); err != nil {
		t.Fatal(err)
	}
	rot.fail.Store(doomed.KeyID, true)
	refused(api.OpKeyRotate, "RotateKeyRequest", `{"keyId":"wire-doomed"}`, kms.CodeInternal)
	// The primary version never retires (rotation_rewrap_test.go has the rest).
	refused(api.OpKeyRetireVersion, "RetireVersionRequest", `{"keyId":"wire-doomed","version":1,"now":true}`, kms.CodeInvalidState)
	identityWireMessages(t, ok, refused)

	// Backups over the wire; archival and recovery through the domain
	// (their endpoints need an Archiver: backup_test.go).
	var bk api.BackupCreateReply
	if err := json.Unmarshal(ok(api.OpBackupCreate, "", `{}`, "BackupCreateReply"), &bk); err != nil {
		t.Fatal(err)
	}
	refused(api.OpBackupRestore, "BackupRestoreRequest", `{"backup":"`+b64(bk.Backup)+`"}`, kms.CodeAlreadyExists)
	emitArchiveEvents(t, b, doomed.KeyID)
	// Governance: the tenant policy, dual control (with the workflow's
	// steps run in-process) and quotas.
	governanceWireMessages(t, b, send, ok, refused)
	importWireMessages(t, b, send)
	// The key lifecycle's events (their wire messages: TestLifecycleWire).
	emitLifecycleEvents(t, b)
	// A workflow's refusal of a signal that carries no token (the
	// workflows' CheckOpToken activity; workflows/optoken_test.go replays
	// the attacks).
	if err := b.KMS.VerifyOpToken(context.Background(), kms.OpTokenCheck{WorkflowID: "approval-x", Operation: "approve", Tenant: "alpha", Principal: "mallory"}); kms.CodeOf(err) != kms.CodeAccessDenied {
		t.Errorf("a signal without a token: %v", err)
	}

	// The events stored match their schemas, and together they cover
	// every event type.
	seen := map[string]bool{}
	for _, e := range b.Events("alpha") {
		if err := schemas.ValidateEvent(e.Raw); err != nil {
			t.Errorf("event %d: %v", e.Seq, err)
		}
		seen[e.Type] = true
	}
	for _, typ := range events.Types {
		if typ == events.TypeAuditPolicyChanged {
			continue // deployment-wide (tenant "-"); TestAuditFailOpen checks the real one
		}
		if typ == events.TypeAuditStreamChanged {
			continue // deployment-wide (tenant "-"); jsaudit's TestStreamChangedValidates checks the real one
		}
		if strings.HasPrefix(typ, "io.keyflow.xks.") {
			continue // served over HTTPS, not NATS: workers/xks TestEveryXKSEventValidates checks the real ones
		}
		if strings.HasPrefix(typ, "io.keyflow.kmip.") || typ == events.TypeKeyExported {
			continue // served over KMIP, not NATS: workers/kmip TestEveryKMIPEventValidates checks the real ones
		}
		if strings.HasPrefix(typ, "io.keyflow.cloud.") {
			continue // emitted by the cloud workflows: workflows' TestCloud* tests validate the real ones
		}
		if strings.HasPrefix(typ, "io.keyflow.key.replica.") {
			continue // between two linked deployments: region's TestMultiRegion checks the real ones
		}
		if typ == events.TypePolicyWarning {
			continue // needs a clock past 2030; kms's TestCreateKeyUnderTenantPolicy validates the real one
		}
		if !seen[typ] {
			t.Errorf("no %s event was emitted, so its schema was not checked against the real thing", typ)
		}
	}
}
