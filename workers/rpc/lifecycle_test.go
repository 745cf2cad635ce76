package rpc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/schemas"
	"github.com/keyflow/keyflow/workers/rpc"
)

// recordingLifecycle stands in for the Temporal workflows (which package
// rpc must not import): it records what the handlers asked for. The real
// workflows are tested in package workflows and end to end in e2e.
type recordingLifecycle struct {
	mu        sync.Mutex
	changed   []string
	scheduled []time.Time
	cancelled []string
	retiring  []string // "<keyID>/v<N>" of every retirement window started
}

func (l *recordingLifecycle) KeyChanged(_ context.Context, _ kms.Caller, k *kms.Key) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changed = append(l.changed, k.ID)
	return nil
}

func (l *recordingLifecycle) ScheduleDeletion(_ context.Context, c kms.Caller, k *kms.Key) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.scheduled = append(l.scheduled, k.Lifecycle.DeletionDate)
	return "deletion/" + c.Tenant + "/" + k.ID, nil
}

func (l *recordingLifecycle) CancelDeletion(_ context.Context, _ kms.Caller, keyID string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cancelled = append(l.cancelled, keyID)
	return nil
}

func (l *recordingLifecycle) ScheduleRetirement(_ context.Context, c kms.Caller, keyID string, version uint32, _ time.Time) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.retiring = append(l.retiring, fmt.Sprintf("%s/v%d", keyID, version))
	return fmt.Sprintf("retire/%s/%s/v%d", c.Tenant, keyID, version), nil
}

func (l *recordingLifecycle) CancelRetirement(_ context.Context, _ kms.Caller, keyID string, version uint32) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cancelled = append(l.cancelled, fmt.Sprintf("%s/v%d", keyID, version))
	return nil
}

func (l *recordingLifecycle) RemediationWorkflowID(tenant, keyID string, version uint32) string {
	return "remediate/" + tenant + "/" + keyID
}

// The lifecycle API over NATS: every request and reply matches its schema,
// refusals carry the stable code, and the handlers drive the timers.
func TestLifecycleWire(t *testing.T) {
	b := testbed.New(t)
	life := &recordingLifecycle{}
	send := wireSender(t, b, rpc.Config{Lifecycle: life})
	var meta api.KeyMetadata
	_ = json.Unmarshal(send(api.OpKeyCreate, "CreateKeyRequest", `{"alias":"life","activationDate":"2099-01-01T00:00:00Z","rotationPeriodInDays":90,"cryptoperiodInDays":365}`, "KeyMetadata", ""), &meta)
	if meta.KeyState != "PRE_ACTIVE" || meta.RotationPeriodInDays != 90 || meta.CryptoperiodInDays != 365 || meta.ActivationDate == nil {
		t.Fatalf("created: %+v", meta)
	}
	send(api.OpEncrypt, "EncryptRequest", `{"keyId":"life","plaintext":"aGVsbG8="}`, "EncryptReply", "KMSInvalidStateException")
	send(api.OpKeySetState, "SetKeyStateRequest", `{"keyId":"life","state":"SUSPENDED"}`, "SetKeyStateReply", "KMSInvalidStateException")
	var st api.SetKeyStateReply
	_ = json.Unmarshal(send(api.OpKeySetState, "SetKeyStateRequest", `{"keyId":"life","state":"ACTIVE","reason":"go live"}`, "SetKeyStateReply", ""), &st)
	if st.Transition != "T4" || st.PreviousState != "PRE_ACTIVE" || st.Key.KeyState != "ACTIVE" || st.Key.Versions[0].DeactivationDate == nil {
		t.Fatalf("activate: %+v", st)
	}
	var enc api.EncryptReply
	_ = json.Unmarshal(send(api.OpEncrypt, "EncryptRequest", `{"keyId":"life","plaintext":"aGVsbG8="}`, "EncryptReply", ""), &enc)
	send(api.OpKeySetRotation, "SetRotationRequest", `{"keyId":"life","rotationPeriodInDays":0}`, "KeyMetadata", "")
	send(api.OpKeySetRotation, "", `{"keyId":"life","rotationPeriodInDays":2556}`, "KeyMetadata", "ValidationException")
	var sd api.ScheduleDeletionReply
	_ = json.Unmarshal(send(api.OpKeyScheduleDeletion, "ScheduleDeletionRequest", `{"keyId":"life","pendingWindowInDays":7,"cancelOnUse":false}`, "ScheduleDeletionReply", ""), &sd)
	if sd.WorkflowID == "" || sd.DeletionDate.Before(time.Now().Add(6*24*time.Hour)) {
		t.Fatalf("schedule: %+v", sd)
	}
	send(api.OpKeyScheduleDeletion, "", `{"keyId":"life","pendingWindowInDays":6}`, "ScheduleDeletionReply", "ValidationException")
	send(api.OpDecrypt, "DecryptRequest", `{"ciphertextBlob":"`+b64s(enc.CiphertextBlob)+`"}`, "DecryptReply", "KMSInvalidStateException")
	send(api.OpKeyDescribe, "KeyRequest", `{"keyId":"life"}`, "KeyMetadata", "")
	send(api.OpKeyCancelDeletion, "KeyRequest", `{"keyId":"life"}`, "KeyMetadata", "")
	send(api.OpKeyCancelDeletion, "KeyRequest", `{"keyId":"life"}`, "KeyMetadata", "KMSInvalidStateException")
	var cr api.CompromiseReply
	_ = json.Unmarshal(send(api.OpKeyCompromise, "CompromiseRequest", `{"keyId":"life","reason":"found in a paste"}`, "CompromiseReply", ""), &cr)
	if cr.Version != 1 || cr.Transition != "T6" || cr.RemediationWorkflowID == "" {
		t.Fatalf("compromise: %+v", cr)
	}
	send(api.OpDecrypt, "DecryptRequest", `{"ciphertextBlob":"`+b64s(enc.CiphertextBlob)+`"}`, "DecryptReply", "KMSInvalidStateException")
	send(api.OpDecrypt, "DecryptRequest", `{"ciphertextBlob":"`+b64s(enc.CiphertextBlob)+`","allowCompromised":true}`, "DecryptReply", "")

	life.mu.Lock()
	defer life.mu.Unlock()
	if len(life.changed) != 2 || len(life.scheduled) != 1 || !life.scheduled[0].Equal(sd.DeletionDate) || len(life.cancelled) != 1 {
		t.Fatalf("lifecycle calls: %+v", life)
	}
}

func b64s(b []byte) string {
	out, _ := json.Marshal(b)
	return string(out[1 : len(out)-1])
}

// emitLifecycleEvents makes every lifecycle event type happen once through
// the domain, so TestSchemaWireMessages checks their schemas against the
// real records. The destruction steps run under a clock moved past the
// deletion date (they are the deletion workflow's activities).
func emitLifecycleEvents(t *testing.T, b *testbed.Bed) {
	t.Helper()
	ctx := context.Background()
	c := kms.Caller{Tenant: "alpha", Principal: "alice", RequestID: "life"}
	s := b.KMS
	k, err := s.CreateKey(ctx, c, kms.CreateKeyParams{})
	if err != nil {
		t.Fatal(err)
	}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.SetState(ctx, c, kms.SetStateParams{KeyRef: k.ID, To: kms.StateSuspended, Reason: "check"}))
	must(s.SetState(ctx, c, kms.SetStateParams{KeyRef: k.ID, To: kms.StateActive}))
	d := 90 * kms.Day
	must(s.SetLifecyclePolicy(ctx, c, kms.SetPolicyParams{KeyRef: k.ID, RotationPeriod: &d}))
	must(s.ScheduleDeletion(ctx, c, kms.ScheduleDeletionParams{KeyRef: k.ID, Window: 7 * kms.Day}))
	if _, err := s.Encrypt(ctx, c, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")}); err == nil {
		t.Fatal("encrypt while pending deletion succeeded")
	}
	must(s.CancelDeletion(ctx, c, k.ID))
	// A version's retirement window: scheduled, a use refused, cancelled,
	// scheduled again and destroyed by its timer's step.
	v1, err := s.Encrypt(ctx, c, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("v1")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateVersion(ctx, c, kms.CreateVersionParams{KeyID: k.ID, Version: 2}); err != nil {
		t.Fatal(err)
	}
	must(s.SetPrimaryVersion(ctx, c, kms.SetPrimaryParams{KeyID: k.ID, Version: 2}))
	must(s.RetireVersion(ctx, c, kms.RetireVersionParams{KeyRef: k.ID, Version: 1}))
	must(s.CancelRetirement(ctx, c, k.ID, 1))
	rv, err := s.RetireVersion(ctx, c, kms.RetireVersionParams{KeyRef: k.ID, Version: 1, Window: 7 * kms.Day})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Decrypt(ctx, c, kms.DecryptParams{Ciphertext: v1.Ciphertext}); kms.CodeOf(err) != kms.CodeInvalidState {
		t.Fatalf("decrypt under a version pending retirement: %v", err)
	}
	must(s.RetireVersion(ctx, c, kms.RetireVersionParams{KeyRef: k.ID, Version: 1, Due: rv.RetirementDate}))
	must(s.Compromise(ctx, c, kms.CompromiseParams{KeyRef: k.ID, Reason: "test"}))
	if err := s.RecordRemediation(ctx, c, kms.RemediationReport{KeyID: k.ID, Version: 1, NewVersion: 2, Remaining: -1, Problems: []string{"rewrap: not available"}}); err != nil {
		t.Fatal(err)
	}
	late, err := kms.New(ctx, kms.Config{HSM: b.HSM, Store: b.Store, Audit: b.Audit, Now: func() time.Time { return time.Now().Add(8 * kms.Day) },
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	pk, err := s.ScheduleDeletion(ctx, c, kms.ScheduleDeletionParams{KeyRef: k.ID, Window: 7 * kms.Day})
	if err != nil {
		t.Fatal(err)
	}
	p := kms.DestroyParams{KeyID: k.ID, DeletionDate: pk.Lifecycle.DeletionDate}
	must(late.DestroyMaterial(ctx, c, p))
	must(late.MarkDestroyed(ctx, c, p))
}

// wireSender starts the services with cfg on b's stack (connection, KMS,
// tenants and JetStream filled in) and returns a send that posts as
// alpha's alice, checks the request and the reply against their schemas,
// and checks the error code (wantCode "" for success).
func wireSender(t *testing.T, b *testbed.Bed, cfg rpc.Config) func(op, reqSchema, body, replySchema, wantCode string) []byte {
	t.Helper()
	cfg.Conn, cfg.KMS, cfg.Tenants, cfg.JS, cfg.Workers = b.Conn, b.KMS, b.Identity, b.JS, 8
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	srv, err := rpc.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	creds, err := b.Identity.UserCreds("alpha", "alice")
	if err != nil {
		t.Fatal(err)
	}
	nc, err := connectSigned(b.NATS, creds, "alice")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return func(op, reqSchema, body, replySchema, wantCode string) []byte {
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
		code := reply.Header.Get(api.HeaderErrorCode)
		if code != wantCode {
			t.Errorf("%s %s: code %q, want %q: %s", op, body, code, wantCode, reply.Data)
		}
		if code != "" {
			replySchema = "ErrorReply"
		}
		if err := schemas.ValidateAPI(replySchema, reply.Data); err != nil {
			t.Errorf("%s reply %s: %v", op, reply.Data, err)
		}
		return reply.Data
	}
}
