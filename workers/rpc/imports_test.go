package rpc_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/schemas"
	"github.com/keyflow/keyflow/workers/rpc"
)

// recordingExpirer stands in for the Temporal workflow client (tested with
// the workflow itself in package workflows) so the test can make the
// scheduling fail.
type recordingExpirer struct {
	mu    sync.Mutex
	fail  bool
	calls []string
}

func (e *recordingExpirer) ScheduleExpiry(_ context.Context, c kms.Caller, keyID, importID string, validTo time.Time) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fail {
		return "", errors.New("temporal is unreachable")
	}
	e.calls = append(e.calls, keyID+"/"+importID)
	return "import-expiry/" + c.Tenant + "/" + keyID + "/" + importID, nil
}

func (e *recordingExpirer) setFail(v bool) { e.mu.Lock(); e.fail = v; e.mu.Unlock() }

func startImportRPC(t *testing.T, b *testbed.Bed, exp rpc.ImportExpirer) {
	t.Helper()
	srv, err := rpc.Start(rpc.Config{Conn: b.Conn, KMS: b.KMS, Tenants: b.Identity, JS: b.JS, Imports: exp, Workers: 8,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 4}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
}

// TestImportOverNATS runs BYOK through the wire protocol, every request
// and reply checked against its schema.
func TestImportOverNATS(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	exp := &recordingExpirer{}
	startImportRPC(t, b, exp)
	creds, err := b.Identity.UserCreds("alpha", "alice")
	if err != nil {
		t.Fatal(err)
	}
	nc, err := connectSigned(b.NATS, creds, "alice")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	send := func(op, reqSchema string, req any, replySchema string, out any) string {
		t.Helper()
		body, _ := json.Marshal(req)
		if reqSchema != "" {
			if err := schemas.ValidateAPI(reqSchema, body); err != nil {
				t.Fatalf("request %s: %v", body, err)
			}
		}
		msg := nats.NewMsg(api.Subject("alpha", op))
		msg.Data = body
		reply, err := signedRequest(nc, msg, 20*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		code := reply.Header.Get(api.HeaderErrorCode)
		if code != "" {
			replySchema = "ErrorReply"
		}
		if err := schemas.ValidateAPI(replySchema, reply.Data); err != nil {
			t.Fatalf("%s reply %s: %v", op, reply.Data, err)
		}
		if code == "" && out != nil {
			if err := json.Unmarshal(reply.Data, out); err != nil {
				t.Fatal(err)
			}
		}
		return code
	}
	var meta api.KeyMetadata
	send(api.OpKeyCreate, "CreateKeyRequest", api.CreateKeyRequest{Alias: "byok", Origin: "EXTERNAL"}, "KeyMetadata", &meta)
	if meta.Origin != "EXTERNAL" || meta.KeyState != "PENDING_IMPORT" {
		t.Fatalf("created: %+v", meta)
	}
	var params api.ImportParamsReply
	send(api.OpKeyImportParams, "ImportParamsRequest", api.ImportParamsRequest{KeyID: "alias/byok", WrappingAlgorithm: "RSAES_OAEP_SHA_256"}, "ImportParamsReply", &params)
	pub, err := x509.ParsePKIXPublicKey(params.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	material := make([]byte, 32)
	rand.Read(material)
	wrapped, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub.(*rsa.PublicKey), material, nil)
	validTo := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	var imp api.ImportReply
	send(api.OpKeyImport, "ImportRequest", api.ImportRequest{KeyID: "byok", EncryptedKeyMaterial: wrapped, ImportToken: params.ImportToken, ValidTo: &validTo}, "ImportReply", &imp)
	if imp.KeyMetadata.KeyState != "ACTIVE" || imp.KeyMetadata.ExpirationModel != "KEY_MATERIAL_EXPIRES" || !imp.KeyMetadata.ValidTo.Equal(validTo) ||
		imp.WorkflowID == "" || len(exp.calls) != 1 || exp.calls[0] != meta.KeyID+"/"+imp.ImportID {
		t.Fatalf("import: %+v, expiries %v", imp, exp.calls)
	}
	var described api.KeyMetadata
	send(api.OpKeyDescribe, "KeyRequest", api.KeyRequest{KeyID: "byok"}, "KeyMetadata", &described)
	if described.Origin != "EXTERNAL" || described.ValidTo == nil {
		t.Fatalf("describe: %+v", described)
	}

	// When the expiry cannot be scheduled the import is undone: no
	// material lives past its validTo without a timer.
	exp.setFail(true)
	if code := send(api.OpKeyImport, "ImportRequest", api.ImportRequest{KeyID: "byok", EncryptedKeyMaterial: wrapped, ImportToken: params.ImportToken, ValidTo: &validTo}, "ImportReply", nil); code != string(kms.CodeInternal) {
		t.Fatalf("import with a failing scheduler: %q", code)
	}
	k, err := b.KMS.DescribeKey(ctx, kms.Caller{Tenant: "alpha"}, meta.KeyID)
	if err != nil || k.State != kms.StatePendingImport {
		t.Fatalf("after an undone import: %v %+v", err, k)
	}
	undone := b.EventsOfType("alpha", events.TypeKeyImportExpired)
	if len(undone) != 1 || undone[0].Data["deleted"] != true {
		t.Fatalf("undo events: %+v", undone)
	}

	exp.setFail(false)
	var deleted api.KeyMetadata
	send(api.OpKeyDeleteImport, "KeyRequest", api.KeyRequest{KeyID: "byok"}, "KeyMetadata", &deleted)
	if deleted.KeyState != "PENDING_IMPORT" {
		t.Fatalf("delete: %+v", deleted)
	}
	if code := send(api.OpKeyImportParams, "", api.ImportParamsRequest{KeyID: "byok", WrappingAlgorithm: "RSAES_PKCS1_V1_5"}, "", nil); code != string(kms.CodeValidation) {
		t.Fatalf("unknown algorithm: %q", code)
	}
	// A malformed token (not base64 of a token at all) is one code.
	if code := send(api.OpKeyImport, "", api.ImportRequest{KeyID: "byok", EncryptedKeyMaterial: wrapped, ImportToken: []byte("nope")}, "", nil); code != string(kms.CodeInvalidImportToken) {
		t.Fatalf("malformed token: %q", code)
	}
}

// TestImportWithoutWorkflows: a worker without the lifecycle workflows
// refuses an expiring import up front, before any material is stored.
func TestImportWithoutWorkflows(t *testing.T) {
	b := testbed.New(t)
	startImportRPC(t, b, nil)
	c := b.Client("alpha", "alice")
	ctx := context.Background()
	k, err := c.CreateKey(ctx, api.CreateKeyRequest{Origin: "EXTERNAL"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.GetParametersForImport(ctx, api.ImportParamsRequest{KeyID: k.KeyID, WrappingAlgorithm: "RSAES_OAEP_SHA_1"})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.ParsePKIXPublicKey(p.PublicKey)
	wrapped, _ := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub.(*rsa.PublicKey), make([]byte, 32), nil)
	validTo := time.Now().Add(time.Hour)
	_, err = c.ImportKeyMaterial(ctx, api.ImportRequest{KeyID: k.KeyID, EncryptedKeyMaterial: wrapped, ImportToken: p.ImportToken, ValidTo: &validTo})
	wantErr(t, err, kms.CodeUnsupportedOperation)
	got, _ := c.DescribeKey(ctx, k.KeyID)
	if got.KeyState != "PENDING_IMPORT" {
		t.Fatalf("state after a refused import: %s", got.KeyState)
	}
}

// importWireMessages is TestSchemaWireMessages' BYOK part: every import
// operation through the wire with raw JSON, and an expiry, so every import
// event type is emitted and checked against its schema there.
func importWireMessages(t *testing.T, b *testbed.Bed, send func(op, reqSchema, body, replySchema string) []byte) {
	t.Helper()
	var meta api.KeyMetadata
	if err := json.Unmarshal(send(api.OpKeyCreate, "CreateKeyRequest", `{"alias":"wire-byok","origin":"EXTERNAL"}`, "KeyMetadata"), &meta); err != nil || meta.KeyID == "" {
		t.Fatalf("create EXTERNAL: %v", err)
	}
	var params api.ImportParamsReply
	if err := json.Unmarshal(send(api.OpKeyImportParams, "ImportParamsRequest", `{"keyId":"alias/wire-byok","wrappingAlgorithm":"RSA_AES_KEY_WRAP_SHA_1","wrappingKeySpec":"RSA_3072"}`, "ImportParamsReply"), &params); err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(params.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	wrapped, _ := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub.(*rsa.PublicKey), make([]byte, 32), nil)
	tok, _ := json.Marshal(params.ImportToken)
	mat, _ := json.Marshal(wrapped)
	// RSA-OAEP material under an RSA+AES token: refused, and recorded.
	send(api.OpKeyImport, "ImportRequest", `{"keyId":"wire-byok","encryptedKeyMaterial":`+string(mat)+`,"importToken":`+string(tok)+`}`, "ImportReply")
	send(api.OpKeyImportParams, "ImportParamsRequest", `{"keyId":"wire-byok","wrappingAlgorithm":"RSAES_OAEP_SHA_1"}`, "ImportParamsReply")
	if err := json.Unmarshal(send(api.OpKeyImportParams, "ImportParamsRequest", `{"keyId":"wire-byok","wrappingAlgorithm":"RSAES_OAEP_SHA_1"}`, "ImportParamsReply"), &params); err != nil {
		t.Fatal(err)
	}
	pub, _ = x509.ParsePKIXPublicKey(params.PublicKey)
	wrapped, _ = rsa.EncryptOAEP(sha1.New(), rand.Reader, pub.(*rsa.PublicKey), make([]byte, 32), nil)
	tok, _ = json.Marshal(params.ImportToken)
	mat, _ = json.Marshal(wrapped)
	var imp api.ImportReply
	if err := json.Unmarshal(send(api.OpKeyImport, "ImportRequest", `{"keyId":"wire-byok","encryptedKeyMaterial":`+string(mat)+`,"importToken":`+string(tok)+`,"wrappingAlgorithm":"RSAES_OAEP_SHA_1"}`, "ImportReply"), &imp); err != nil || imp.ImportID == "" {
		t.Fatalf("import: %v %+v", err, imp)
	}
	send(api.OpKeyDescribe, "KeyRequest", `{"keyId":"wire-byok"}`, "KeyMetadata")
	if _, err := b.KMS.ExpireImportedKeyMaterial(context.Background(), kms.Caller{Tenant: "alpha", Principal: "lifecycle", RequestID: "wire"}, kms.ExpireImportParams{KeyID: meta.KeyID, ImportID: imp.ImportID}); err != nil {
		t.Fatal(err)
	}
	send(api.OpKeyDeleteImport, "KeyRequest", `{"keyId":"wire-byok"}`, "KeyMetadata")
}
