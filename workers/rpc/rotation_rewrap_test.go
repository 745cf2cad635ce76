package rpc_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/rpc"
)

// rewrapRotator rotates and rewraps in-process with the domain's own
// steps, as the rotation and rewrap workflows' activities do (package rpc
// must not import the workflows; they are tested in package workflows and
// end to end in e2e).
type rewrapRotator struct {
	evtRotator
	last *api.RewrapStatusReply
}

func (r *rewrapRotator) RotateAndRewrap(ctx context.Context, c kms.Caller, keyID string) (*rpc.RotateResult, error) {
	res, err := r.Rotate(ctx, c, keyID)
	if err != nil {
		return nil, err
	}
	counts := &api.RewrapCounts{WorkflowID: "rewrap/" + c.Tenant + "/" + keyID}
	c.IdempotencyKey = counts.WorkflowID
	for cursor := ""; ; {
		page, err := r.kms.RewrapRegistered(ctx, c, kms.RewrapRegisteredParams{KeyID: keyID, After: cursor})
		if err != nil {
			return nil, err
		}
		counts.Rewrapped, counts.Failed, counts.Skipped = counts.Rewrapped+page.Rewrapped, counts.Failed+page.Failed, counts.Skipped+page.Skipped
		if page.Done {
			break
		}
		cursor = page.NextCursor
	}
	n, err := r.kms.RemainingDataKeys(ctx, c, keyID, nil, "")
	if err != nil {
		return nil, err
	}
	counts.Remaining = n
	res.Rewrap = counts
	r.last = &api.RewrapStatusReply{KeyID: keyID, WorkflowID: counts.WorkflowID, Rewrapped: counts.Rewrapped, Failed: counts.Failed, Skipped: counts.Skipped, Done: true}
	return res, nil
}

func (r *rewrapRotator) RewrapProgress(_ context.Context, _ kms.Caller, keyID string) (*api.RewrapStatusReply, error) {
	if r.last == nil || r.last.KeyID != keyID {
		return nil, &kms.Error{Code: kms.CodeNotFound, Message: "key " + keyID + " has no rewrap workflow"}
	}
	return r.last, nil
}

// Rotation with rewrap and retirement over NATS: every request and reply
// matches its schema; an old version is refused retirement (with the
// count) while registered data keys use it, and retires once they are
// rewrapped; the primary never retires.
func TestRotationRewrapWire(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	rot := &rewrapRotator{evtRotator: evtRotator{kms: b.KMS}}
	life := &recordingLifecycle{}
	send := wireSender(t, b, rpc.Config{Rotator: rot, Lifecycle: life})

	var meta api.KeyMetadata
	_ = json.Unmarshal(send(api.OpKeyCreate, "CreateKeyRequest", `{"alias":"rw","rewrapOnRotation":true}`, "KeyMetadata", ""), &meta)
	if !meta.RewrapOnRotation {
		t.Fatalf("created: %+v", meta)
	}
	alice := kms.Caller{Tenant: "alpha", Principal: "alice", RequestID: "r"}
	for range 2 {
		dk, err := b.KMS.GenerateDataKey(ctx, alice, kms.GenerateDataKeyParams{KeyRef: meta.KeyID})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.KMS.RegisterDataKey(ctx, alice, kms.RegisterDataKeyParams{Ciphertext: dk.CiphertextBlob}); err != nil {
			t.Fatal(err)
		}
	}
	send(api.OpKeyRetireVersion, "RetireVersionRequest", `{"keyId":"rw","version":1,"now":true}`, "RetireVersionReply", "KMSInvalidStateException")
	send(api.OpKeyRewrapStatus, "KeyRequest", `{"keyId":"rw"}`, "RewrapStatusReply", "NotFoundException")
	send(api.OpKeyRotate, "RotateKeyRequest", `{"keyId":"rw"}`, "RotateKeyReply", "")
	body := send(api.OpKeyRetireVersion, "RetireVersionRequest", `{"keyId":"rw","version":1,"now":true}`, "RetireVersionReply", "KMSInvalidStateException")
	if !strings.Contains(string(body), "2 registered data keys still use version 1") {
		t.Fatalf("refusal does not name the count: %s", body)
	}

	var rr api.RotateKeyReply
	_ = json.Unmarshal(send(api.OpKeyRotate, "RotateKeyRequest", `{"keyId":"alias/rw","rewrap":true}`, "RotateKeyReply", ""), &rr)
	if rr.NewVersion != 3 || rr.Rewrap == nil || rr.Rewrap.Rewrapped != 2 || rr.Rewrap.Remaining != 0 {
		t.Fatalf("rotate with rewrap: %+v %+v", rr, rr.Rewrap)
	}
	var st api.RewrapStatusReply
	_ = json.Unmarshal(send(api.OpKeyRewrapStatus, "KeyRequest", `{"keyId":"alias/rw"}`, "RewrapStatusReply", ""), &st)
	if !st.Done || st.Rewrapped != 2 || st.KeyID != meta.KeyID {
		t.Fatalf("rewrap status: %+v", st)
	}

	// The default is a pending window: the version stays ACTIVE, its
	// timer starts, and a cancellation ends it.
	var ret api.RetireVersionReply
	_ = json.Unmarshal(send(api.OpKeyRetireVersion, "RetireVersionRequest", `{"keyId":"rw","version":1,"pendingWindowInDays":7}`, "RetireVersionReply", ""), &ret)
	if ret.State != "ACTIVE" || ret.Transition != "" || ret.RetirementDate == nil || ret.Key.Versions[0].RetirementDate == nil || ret.WorkflowID != "retire/alpha/"+meta.KeyID+"/v1" {
		t.Fatalf("retire with a window: %+v", ret)
	}
	if len(life.retiring) != 1 || life.retiring[0] != meta.KeyID+"/v1" {
		t.Fatalf("retirement timers started: %v", life.retiring)
	}
	send(api.OpKeyRetireVersion, "", `{"keyId":"rw","version":1,"now":true,"cancel":true}`, "RetireVersionReply", "ValidationException")
	ret = api.RetireVersionReply{}
	_ = json.Unmarshal(send(api.OpKeyRetireVersion, "RetireVersionRequest", `{"keyId":"rw","version":1,"cancel":true}`, "RetireVersionReply", ""), &ret)
	if ret.State != "ACTIVE" || ret.RetirementDate != nil || ret.Key.Versions[0].RetirementDate != nil || len(life.cancelled) != 1 {
		t.Fatalf("cancel: %+v, cancelled timers %v", ret, life.cancelled)
	}
	ret = api.RetireVersionReply{}
	_ = json.Unmarshal(send(api.OpKeyRetireVersion, "RetireVersionRequest", `{"keyId":"rw","version":1,"now":true}`, "RetireVersionReply", ""), &ret)
	if ret.State != "DESTROYED" || ret.PreviousState != "ACTIVE" || ret.Transition != "T5" || ret.Key.Versions[0].State != "DESTROYED" {
		t.Fatalf("retire: %+v", ret)
	}
	// Again: idempotent, no transition.
	ret = api.RetireVersionReply{}
	_ = json.Unmarshal(send(api.OpKeyRetireVersion, "RetireVersionRequest", `{"keyId":"rw","version":1,"now":true}`, "RetireVersionReply", ""), &ret)
	if ret.State != "DESTROYED" || ret.Transition != "" {
		t.Fatalf("retire again: %+v", ret)
	}
	send(api.OpKeyRetireVersion, "RetireVersionRequest", `{"keyId":"rw","version":3,"now":true}`, "RetireVersionReply", "KMSInvalidStateException")
	send(api.OpKeyRetireVersion, "RetireVersionRequest", `{"keyId":"rw","version":9,"now":true}`, "RetireVersionReply", "NotFoundException")
	send(api.OpKeyRetireVersion, "", `{"keyId":"rw","now":true}`, "RetireVersionReply", "ValidationException")

	// The refusals and the retirement are on the record, once each.
	var ok, refused int
	for _, e := range b.EventsOfType("alpha", "io.keyflow.key.version.retired.v1") {
		if e.Outcome == "success" {
			ok++
		} else {
			refused++
		}
	}
	if ok != 2 || refused != 5 {
		t.Fatalf("retired records: %d success, %d refused; want 2 and 5", ok, refused)
	}
}
