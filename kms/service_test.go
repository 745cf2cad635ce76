package kms_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

var alice = kms.Caller{Tenant: "alpha", Principal: "alice", RequestID: "req-1"}

func mustCreate(t *testing.T, s *kms.Service, c kms.Caller, alias string) *kms.Key {
	t.Helper()
	k, err := s.CreateKey(context.Background(), c, kms.CreateKeyParams{Alias: alias})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestCreateEncryptDecrypt(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k := mustCreate(t, b.KMS, alice, "alias/app")
	if k.State != kms.StateActive || k.PrimaryVersion != 1 || len(k.Versions) != 1 || k.Alias != "app" || k.CreatedBy != "alice" {
		t.Fatalf("unexpected key: %+v", k)
	}
	ec := kms.EncryptionContext{"app": "billing", "env": "prod"}
	pt := []byte("attack at dawn")
	for _, ref := range []string{k.ID, "app", "alias/app"} {
		enc, err := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: ref, Plaintext: pt, Context: ec})
		if err != nil {
			t.Fatalf("encrypt by %q: %v", ref, err)
		}
		if enc.KeyID != k.ID || enc.KeyVersion != 1 || bytes.Contains(enc.Ciphertext, pt) {
			t.Fatalf("bad encrypt result: %+v", enc)
		}
		id, v, _ := kms.EnvelopeKeyID(enc.Ciphertext)
		if id != k.ID || v != 1 {
			t.Fatalf("header names %s v%d", id, v)
		}
		dec, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: enc.Ciphertext, Context: kms.EncryptionContext{"env": "prod", "app": "billing"}})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(dec.Plaintext, pt) || dec.KeyID != k.ID {
			t.Fatalf("decrypt = %q", dec.Plaintext)
		}
	}
	// Two encryptions of the same plaintext differ (fresh IVs).
	a, _ := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: pt})
	c, _ := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: pt})
	if bytes.Equal(a.Ciphertext, c.Ciphertext) {
		t.Fatal("two encryptions are identical")
	}
}

func TestDecryptFailuresAreOneGenericError(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k := mustCreate(t, b.KMS, alice, "")
	k2 := mustCreate(t, b.KMS, alice, "")
	enc, err := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("secret"), Context: kms.EncryptionContext{"a": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	ct := enc.Ciphertext
	flip := func(i int) []byte { c := bytes.Clone(ct); c[i] ^= 1; return c }
	relabel := bytes.Clone(ct)
	copy(relabel[3:3+36], k2.ID)
	cases := map[string]struct {
		ct     []byte
		ec     kms.EncryptionContext
		caller kms.Caller
	}{
		"wrong context":    {ct, kms.EncryptionContext{"a": "2"}, alice},
		"missing context":  {ct, nil, alice},
		"extra context":    {ct, kms.EncryptionContext{"a": "1", "b": "2"}, alice},
		"truncated":        {ct[:len(ct)-1], kms.EncryptionContext{"a": "1"}, alice},
		"header only":      {ct[:43], kms.EncryptionContext{"a": "1"}, alice},
		"flipped version":  {flip(3 + 36 + 3), kms.EncryptionContext{"a": "1"}, alice},
		"flipped iv":       {flip(3 + 36 + 4), kms.EncryptionContext{"a": "1"}, alice},
		"flipped body":     {flip(len(ct) - 20), kms.EncryptionContext{"a": "1"}, alice},
		"flipped tag":      {flip(len(ct) - 1), kms.EncryptionContext{"a": "1"}, alice},
		"relabelled key":   {relabel, kms.EncryptionContext{"a": "1"}, alice},
		"other tenant":     {ct, kms.EncryptionContext{"a": "1"}, kms.Caller{Tenant: "beta", Principal: "bob"}},
		"garbage":          {[]byte("not a ciphertext at all, not at all"), nil, alice},
		"empty":            {nil, nil, alice},
		"flipped alg byte": {flip(1), kms.EncryptionContext{"a": "1"}, alice},
	}
	var msg string
	for name, tc := range cases {
		_, err := b.KMS.Decrypt(ctx, tc.caller, kms.DecryptParams{Ciphertext: tc.ct, Context: tc.ec})
		if !errors.Is(err, kms.ErrInvalidCiphertext) {
			t.Errorf("%s: err = %v, want InvalidCiphertextException", name, err)
			continue
		}
		if msg == "" {
			msg = kms.PublicMessage(err)
		} else if kms.PublicMessage(err) != msg {
			t.Errorf("%s: message %q differs from %q (decryption oracle)", name, kms.PublicMessage(err), msg)
		}
	}
	// Decrypt with an explicit key that is not the ciphertext's.
	if _, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{KeyRef: k2.ID, Ciphertext: ct, Context: kms.EncryptionContext{"a": "1"}}); !errors.Is(err, kms.ErrInvalidCiphertext) {
		t.Errorf("wrong KeyRef: %v", err)
	}
	// Every failure was audited as a failure with the code.
	fails := 0
	for _, e := range b.EventsOfType("alpha", events.TypeDecrypt) {
		if e.Outcome == events.OutcomeFailure && e.ErrorCode == string(kms.CodeInvalidCiphertext) {
			fails++
		}
	}
	if want := len(cases) - 1 + 1; fails != want { // minus the beta case, plus the KeyRef case
		t.Errorf("%d failed decrypts audited for alpha, want %d", fails, want)
	}
	if n := len(b.EventsOfType("beta", events.TypeDecrypt)); n != 1 {
		t.Errorf("beta has %d decrypt events, want 1", n)
	}
}

func TestEncryptValidation(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k := mustCreate(t, b.KMS, alice, "v")
	cases := map[string]struct {
		p    kms.EncryptParams
		c    kms.Caller
		want error
	}{
		"empty plaintext":    {kms.EncryptParams{KeyRef: k.ID}, alice, kms.ErrValidation},
		"oversize plaintext": {kms.EncryptParams{KeyRef: k.ID, Plaintext: make([]byte, kms.MaxPlaintext+1)}, alice, kms.ErrValidation},
		"unknown key":        {kms.EncryptParams{KeyRef: "6f1e2d3c-4b5a-4968-8776-655443322110", Plaintext: []byte("x")}, alice, kms.ErrNotFound},
		"unknown alias":      {kms.EncryptParams{KeyRef: "nope", Plaintext: []byte("x")}, alice, kms.ErrNotFound},
		"bad ref":            {kms.EncryptParams{KeyRef: "no spaces allowed", Plaintext: []byte("x")}, alice, kms.ErrValidation},
		"no key":             {kms.EncryptParams{Plaintext: []byte("x")}, alice, kms.ErrValidation},
		"other tenant's key": {kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")}, kms.Caller{Tenant: "beta"}, kms.ErrNotFound},
		"no tenant":          {kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")}, kms.Caller{}, kms.ErrAccessDenied},
	}
	for name, tc := range cases {
		res, err := b.KMS.Encrypt(ctx, tc.c, tc.p)
		if !errors.Is(err, tc.want) || res != nil {
			t.Errorf("%s: res=%v err=%v, want %v", name, res, err, tc.want)
		}
	}
	if _, err := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: make([]byte, kms.MaxPlaintext)}); err != nil {
		t.Errorf("exactly MaxPlaintext refused: %v", err)
	}
	if _, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Alias: "v"}); !errors.Is(err, kms.ErrAlreadyExists) {
		t.Errorf("duplicate alias: %v", err)
	}
	if _, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: "RSA_2048"}); !errors.Is(err, kms.ErrValidation) {
		t.Errorf("unsupported spec: %v", err)
	}
	keys, _ := b.KMS.ListKeys(ctx, alice)
	if len(keys) != 1 {
		t.Errorf("refused creates changed state: %d keys", len(keys))
	}
}

func TestDataKey(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k := mustCreate(t, b.KMS, alice, "")
	ec := kms.EncryptionContext{"bucket": "x"}
	dk, err := b.KMS.GenerateDataKey(ctx, alice, kms.GenerateDataKeyParams{KeyRef: k.ID, Context: ec})
	if err != nil {
		t.Fatal(err)
	}
	if len(dk.Plaintext) != 32 || bytes.Equal(dk.Plaintext, make([]byte, 32)) {
		t.Fatalf("data key = %x", dk.Plaintext)
	}
	dec, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: dk.CiphertextBlob, Context: ec})
	if err != nil || !bytes.Equal(dec.Plaintext, dk.Plaintext) {
		t.Fatalf("blob does not decrypt to the data key: %v", err)
	}
	dk2, _ := b.KMS.GenerateDataKey(ctx, alice, kms.GenerateDataKeyParams{KeyRef: k.ID, NumberOfBytes: 1024})
	if len(dk2.Plaintext) != 1024 {
		t.Fatalf("len = %d", len(dk2.Plaintext))
	}
	for _, n := range []int{-1, 1025} {
		if _, err := b.KMS.GenerateDataKey(ctx, alice, kms.GenerateDataKeyParams{KeyRef: k.ID, NumberOfBytes: n}); !errors.Is(err, kms.ErrValidation) {
			t.Errorf("numberOfBytes %d: %v", n, err)
		}
	}
}

// Rotation steps are idempotent, old ciphertexts keep decrypting, and only
// the primary version encrypts.
func TestRotationSteps(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k := mustCreate(t, b.KMS, alice, "")
	old, _ := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("v1 data")})

	next, err := b.KMS.NextVersion(ctx, alice, k.ID)
	if err != nil || next != 2 {
		t.Fatalf("next = %d, %v", next, err)
	}
	retry := alice
	retry.IdempotencyKey = "wf/run/1"
	for range 2 { // the second call is a retried activity
		v, err := b.KMS.CreateVersion(ctx, retry, kms.CreateVersionParams{KeyID: k.ID, Version: 2})
		if err != nil || v.Number != 2 {
			t.Fatalf("create version: %v %v", v, err)
		}
	}
	if _, err := b.KMS.CreateVersion(ctx, alice, kms.CreateVersionParams{KeyID: k.ID, Version: 4}); !errors.Is(err, kms.ErrConflict) {
		t.Fatalf("skipping a version: %v", err)
	}
	// Not primary yet: encryption still uses v1.
	enc, _ := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")})
	if enc.KeyVersion != 1 {
		t.Fatalf("encrypted with v%d before cutover", enc.KeyVersion)
	}
	for range 2 {
		res, err := b.KMS.SetPrimaryVersion(ctx, retry, kms.SetPrimaryParams{KeyID: k.ID, Version: 2})
		if err != nil || res.Key.PrimaryVersion != 2 || res.PreviousPrimary != 1 {
			t.Fatalf("set primary: %+v %v", res, err)
		}
	}
	enc, _ = b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")})
	if enc.KeyVersion != 2 {
		t.Fatalf("encrypted with v%d after cutover", enc.KeyVersion)
	}
	dec, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: old.Ciphertext})
	if err != nil || string(dec.Plaintext) != "v1 data" || dec.KeyVersion != 1 {
		t.Fatalf("old ciphertext after rotation: %v", err)
	}
	// A retried step re-publishes the same event ID; the stream keeps one.
	if n := len(b.EventsOfType("alpha", events.TypeKeyVersionCreated)); n != 2 { // retry pair deduplicated + the conflict
		t.Errorf("%d version.created events, want 2", n)
	}
	if n := len(b.EventsOfType("alpha", events.TypeKeyRotated)); n != 1 {
		t.Errorf("%d rotated events, want 1 (the retry must be deduplicated)", n)
	}
}

// A second worker with its own caches sees a rotation made by the first once
// the change is propagated (Invalidate is what the KV watch calls).
func TestSecondWorkerSeesRotation(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	w2 := b.NewKMS(b.Audit)
	if err := b.Store.WatchKeys(t.Context(), w2); err != nil {
		t.Fatal(err)
	}
	k := mustCreate(t, b.KMS, alice, "")
	if _, err := w2.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")}); err != nil {
		t.Fatal(err) // warms w2's cache with v1
	}
	if _, err := b.KMS.CreateVersion(ctx, alice, kms.CreateVersionParams{KeyID: k.ID, Version: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.SetPrimaryVersion(ctx, alice, kms.SetPrimaryParams{KeyID: k.ID, Version: 2}); err != nil {
		t.Fatal(err)
	}
	checkFor(t, func() bool {
		enc, err := w2.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")})
		return err == nil && enc.KeyVersion == 2
	})
}

// No audit, no crypto: if the audit sink fails, the operation fails and
// returns nothing.
func TestAuditFailsClosed(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k := mustCreate(t, b.KMS, alice, "")
	var mu sync.Mutex
	broken := true
	sink := events.SinkFunc(func(ctx context.Context, r events.Record) error {
		mu.Lock()
		defer mu.Unlock()
		if broken {
			return errors.New("stream unavailable")
		}
		return b.Audit.Emit(ctx, r)
	})
	s := b.NewKMS(sink)
	res, err := s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")})
	if !errors.Is(err, kms.ErrAuditUnavailable) || res != nil {
		t.Fatalf("encrypt with broken audit: res=%v err=%v", res, err)
	}
	dk, err := s.GenerateDataKey(ctx, alice, kms.GenerateDataKeyParams{KeyRef: k.ID})
	if !errors.Is(err, kms.ErrAuditUnavailable) || dk != nil {
		t.Fatalf("datakey with broken audit: %v", err)
	}
	// A failed operation keeps its own error even when audit is down.
	if _, err := s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID}); !errors.Is(err, kms.ErrValidation) {
		t.Fatalf("validation error masked: %v", err)
	}
	mu.Lock()
	broken = false
	mu.Unlock()
	if _, err := s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")}); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
}

// Every event carries the AU-3 fields and the request ID, and never the
// plaintext.
func TestAuditRecordContent(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k := mustCreate(t, b.KMS, alice, "")
	secret := []byte("s3cr3t-value-do-not-log")
	enc, err := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: secret, Context: kms.EncryptionContext{"purpose": "test"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: enc.Ciphertext, Context: kms.EncryptionContext{"purpose": "test"}}); err != nil {
		t.Fatal(err)
	}
	evs := b.Events("alpha")
	if len(evs) != 3 {
		t.Fatalf("%d events, want 3 (create, encrypt, decrypt)", len(evs))
	}
	for _, e := range evs {
		if e.ID == "" || e.Source == "" || e.Time.IsZero() || e.Tenant != "alpha" || e.Principal != "alice" ||
			e.Outcome != events.OutcomeSuccess || e.RequestID != "req-1" || e.Subject != k.ResourceName() {
			t.Errorf("incomplete event: %s", e.Raw)
		}
		if bytes.Contains(e.Raw, secret) || bytes.Contains(e.Raw, enc.Ciphertext) {
			t.Errorf("event leaks data: %s", e.Raw)
		}
	}
	if evs[1].Type != events.TypeEncrypt || evs[2].Type != events.TypeDecrypt {
		t.Errorf("order: %s, %s", evs[1].Type, evs[2].Type)
	}
}

// checkFor polls cond until it holds or a deadline passes (nats-server
// test style: never a bare sleep).
func checkFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not met within 5s")
}
