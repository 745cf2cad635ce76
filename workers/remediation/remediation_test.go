package remediation_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/remediation"
)

// starter records the remediations asked for. The Temporal side (one
// workflow per tenant, key and version) is workflows.Client's, tested in
// package workflows and end to end; here the question is which records
// lead to a start, and that a failed start is retried.
type starter struct {
	mu    sync.Mutex
	calls []string
	fail  int // fail this many starts first
}

func (s *starter) StartRemediation(_ context.Context, c kms.Caller, keyID string, version uint32, reason string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail > 0 {
		s.fail--
		return "", errors.New("temporal unavailable")
	}
	call := fmt.Sprintf("%s/%s/v%d %s by %s", c.Tenant, keyID, version, reason, c.Principal)
	s.calls = append(s.calls, call)
	return call, nil
}

func (s *starter) snapshot() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTriggerStartsOneRemediationPerCompromise(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	alice := kms.Caller{Tenant: "alpha", Principal: "alice", RequestID: "r1"}
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	if err != nil {
		t.Fatal(err)
	}
	// Recorded before the worker runs: the durable consumer starts from
	// the first record, so nothing recorded while it was down is missed.
	if _, err := b.KMS.Compromise(ctx, alice, kms.CompromiseParams{KeyRef: k.ID, Reason: "leaked"}); err != nil {
		t.Fatal(err)
	}
	// Not remediated: a refused compromise, and a repeat (no transition).
	if _, err := b.KMS.Compromise(ctx, alice, kms.CompromiseParams{KeyRef: k.ID}); err == nil {
		t.Fatal("compromise without a reason succeeded")
	}
	if _, err := b.KMS.Compromise(ctx, alice, kms.CompromiseParams{KeyRef: k.ID, Reason: "again"}); err != nil {
		t.Fatal(err)
	}
	st := &starter{fail: 1}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 1}))
	w, err := remediation.Start(ctx, remediation.Config{JS: b.JS, Starter: st, Logger: logger, RetryDelay: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	want := "alpha/" + k.ID + "/v1 leaked by alice"
	waitFor(t, "the first remediation", func() bool { return len(st.snapshot()) == 1 })
	if got := st.snapshot(); got[0] != want {
		t.Fatalf("started %q, want %q", got[0], want)
	}
	// A key-level compromise is remediated too (version 0).
	if _, err := b.KMS.SetState(ctx, alice, kms.SetStateParams{KeyRef: k.ID, To: kms.StateCompromised, Reason: "whole key"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the key-level remediation", func() bool { return len(st.snapshot()) == 2 })
	if got := st.snapshot()[1]; got != "alpha/"+k.ID+"/v0 whole key by alice" {
		t.Fatalf("second start %q", got)
	}
	// A restarted worker resumes after the acked records: no second start.
	w.Stop()
	w2, err := remediation.Start(ctx, remediation.Config{JS: b.JS, Starter: st, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Stop()
	k2, _ := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	if _, err := b.KMS.Compromise(ctx, alice, kms.CompromiseParams{KeyRef: k2.ID, Reason: "third"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the third remediation", func() bool { return len(st.snapshot()) == 3 })
	if got := st.snapshot(); got[2] != "alpha/"+k2.ID+"/v1 third by alice" {
		t.Fatalf("starts after the restart: %v", got)
	}
}
