package kms_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// clock (imports_test.go) is the settable time source of the lifecycle's dates.

func clockedKMS(t *testing.T, b *testbed.Bed) (*kms.Service, *clock) {
	t.Helper()
	clk := &clock{t: time.Now()}
	s, err := kms.New(context.Background(), kms.Config{
		HSM: b.HSM, Store: b.Store, Audit: b.Audit, Source: "/keyflow/test", Now: clk.Now,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, clk
}

// The table is exactly SP 800-57's T1–T15 plus KMIP's two transitions into
// DESTROYED_COMPROMISED; every other pair is refused with a message that
// names the current state.
func TestTransitionTable(t *testing.T) {
	want := map[[2]kms.KeyState]string{
		{kms.StatePreActive, kms.StateDestroyed}:              "T2",
		{kms.StatePreActive, kms.StateCompromised}:            "T3",
		{kms.StatePreActive, kms.StateActive}:                 "T4",
		{kms.StateActive, kms.StateDestroyed}:                 "T5",
		{kms.StateActive, kms.StateCompromised}:               "T6",
		{kms.StateActive, kms.StateSuspended}:                 "T7",
		{kms.StateActive, kms.StateDeactivated}:               "T8",
		{kms.StateSuspended, kms.StateDestroyed}:              "T9",
		{kms.StateSuspended, kms.StateCompromised}:            "T10",
		{kms.StateSuspended, kms.StateActive}:                 "T11",
		{kms.StateSuspended, kms.StateDeactivated}:            "T12",
		{kms.StateDeactivated, kms.StateDestroyed}:            "T13",
		{kms.StateDeactivated, kms.StateCompromised}:          "T14",
		{kms.StateCompromised, kms.StateDestroyed}:            "K1", // kept compromised
		{kms.StateCompromised, kms.StateDestroyedCompromised}: "K1",
		{kms.StateDestroyed, kms.StateDestroyedCompromised}:   "K2",
		{kms.StateDestroyed, kms.StateCompromised}:            "K2",
	}
	for _, from := range kms.States {
		for _, to := range kms.States {
			if from == to {
				continue
			}
			tr, err := kms.FindTransition(from, to)
			name, ok := want[[2]kms.KeyState{from, to}]
			switch {
			case ok && err != nil:
				t.Errorf("%s -> %s refused (%v), want %s", from, to, err, name)
			case ok && tr.Name != name:
				t.Errorf("%s -> %s is %s, want %s", from, to, tr.Name, name)
			case !ok && err == nil:
				t.Errorf("%s -> %s allowed as %s, want refused", from, to, tr.Name)
			case !ok:
				if !errors.Is(err, kms.ErrInvalidState) || !strings.Contains(err.Error(), "the key is "+string(from)) {
					t.Errorf("%s -> %s: %v, want KMSInvalidStateException naming %s", from, to, err, from)
				}
			}
		}
	}
	// T15 is reachable in name through the table even though the domain
	// keeps the compromise (K1) when it destroys.
	found := map[string]bool{}
	for _, tr := range kms.Transitions {
		found[tr.Name] = true
	}
	for _, n := range []string{"T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12", "T13", "T14", "T15", "K1", "K2"} {
		if !found[n] {
			t.Errorf("transition %s missing from the table", n)
		}
	}
}

// What each state permits, through the real operations.
func TestStatePermitsOperations(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	s := b.KMS
	k := mustCreate(t, s, alice, "")
	ct, err := s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	sk, err := s.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: "ECC_NIST_P256", Usage: "SIGN_VERIFY"})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.Sign(ctx, alice, kms.SignParams{KeyRef: sk.ID, Message: []byte("m"), Algorithm: "ECDSA_SHA_256"})
	if err != nil {
		t.Fatal(err)
	}
	check := func(state kms.KeyState, encrypt, decrypt, decryptOverride bool) {
		t.Helper()
		for _, id := range []string{k.ID, sk.ID} {
			if _, err := s.SetState(ctx, alice, kms.SetStateParams{KeyRef: id, To: state, Reason: "test"}); err != nil {
				t.Fatalf("to %s: %v", state, err)
			}
		}
		_, err := s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("y")})
		expect(t, string(state)+" encrypt", err, encrypt)
		_, err = s.Sign(ctx, alice, kms.SignParams{KeyRef: sk.ID, Message: []byte("m"), Algorithm: "ECDSA_SHA_256"})
		expect(t, string(state)+" sign", err, encrypt)
		_, err = s.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: ct.Ciphertext})
		expect(t, string(state)+" decrypt", err, decrypt)
		_, err = s.Verify(ctx, alice, kms.VerifyParams{KeyRef: sk.ID, Message: []byte("m"), Algorithm: "ECDSA_SHA_256", Signature: sig.Signature})
		expect(t, string(state)+" verify", err, decrypt)
		_, err = s.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: ct.Ciphertext, AllowCompromised: true})
		expect(t, string(state)+" decrypt --allow-compromised", err, decryptOverride)
		_, err = s.Verify(ctx, alice, kms.VerifyParams{KeyRef: sk.ID, Message: []byte("m"), Algorithm: "ECDSA_SHA_256", Signature: sig.Signature, AllowCompromised: true})
		expect(t, string(state)+" verify --allow-compromised", err, decryptOverride)
		if _, err := s.DescribeKey(ctx, alice, k.ID); err != nil {
			t.Errorf("%s describe: %v", state, err)
		}
	}
	check(kms.StateActive, true, true, true)
	check(kms.StateSuspended, false, true, true)
	check(kms.StateActive, true, true, true) // T11
	check(kms.StateDeactivated, false, true, true)
	check(kms.StateCompromised, false, false, true)

	// A refused transition names the current state.
	_, err = s.SetState(ctx, alice, kms.SetStateParams{KeyRef: k.ID, To: kms.StateActive})
	if !errors.Is(err, kms.ErrInvalidState) || !strings.Contains(err.Error(), "the key is COMPROMISED") {
		t.Errorf("COMPROMISED -> ACTIVE: %v", err)
	}
	// The override is in the audit record.
	found := false
	for _, e := range b.EventsOfType("alpha", events.TypeDecrypt) {
		if e.Data["allowCompromised"] == true && e.Outcome == events.OutcomeSuccess {
			found = true
		}
	}
	if !found {
		t.Error("no decrypt record with allowCompromised=true")
	}
}

func expect(t *testing.T, what string, err error, ok bool) {
	t.Helper()
	if ok && err != nil {
		t.Errorf("%s: %v, want success", what, err)
	}
	if !ok && !errors.Is(err, kms.ErrInvalidState) {
		t.Errorf("%s: %v, want KMSInvalidStateException", what, err)
	}
}

// A key with a future activation date is PRE_ACTIVE: describe only, until
// T4.
func TestPreActiveUntilActivated(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	s, clk := clockedKMS(t, b)
	k, err := s.CreateKey(ctx, alice, kms.CreateKeyParams{ActivationDate: clk.Now().Add(48 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if k.State != kms.StatePreActive || k.Versions[0].State != kms.StatePreActive {
		t.Fatalf("state %s/%s, want PRE_ACTIVE", k.State, k.Versions[0].State)
	}
	_, err = s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")})
	expect(t, "pre-active encrypt", err, false)
	if _, err := s.DescribeKey(ctx, alice, k.ID); err != nil {
		t.Fatal(err)
	}
	res, err := s.SetState(ctx, alice, kms.SetStateParams{KeyRef: k.ID, To: kms.StateActive})
	if err != nil || res.Transition != "T4" {
		t.Fatalf("activate: %v %+v", err, res)
	}
	if res.Key.Versions[0].State != kms.StateActive || res.Key.Versions[0].DeactivationDate.IsZero() {
		t.Fatalf("version after T4: %+v", res.Key.Versions[0])
	}
	if _, err := s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	// Idempotent: activating again changes nothing.
	if res, err := s.SetState(ctx, alice, kms.SetStateParams{KeyRef: k.ID, To: kms.StateActive}); err != nil || res.Transition != "" {
		t.Fatalf("second activate: %v %+v", err, res)
	}
}

// Deletion safety: while deletion is pending every use is refused and
// recorded; cancel-deletion restores the key; with the cancel-on-use
// policy an attempt cancels the deletion by itself.
func TestPendingDeletionRefusesUse(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	s := b.KMS
	k := mustCreate(t, s, alice, "")
	ct, _ := s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")})
	if _, err := s.ScheduleDeletion(ctx, alice, kms.ScheduleDeletionParams{KeyRef: k.ID, Window: 3 * kms.Day}); !errors.Is(err, kms.ErrValidation) {
		t.Fatalf("3-day window: %v", err)
	}
	pk, err := s.ScheduleDeletion(ctx, alice, kms.ScheduleDeletionParams{KeyRef: k.ID, Window: 7 * kms.Day})
	if err != nil || !pk.Lifecycle.PendingDeletion {
		t.Fatalf("schedule: %v", err)
	}
	if _, err := s.ScheduleDeletion(ctx, alice, kms.ScheduleDeletionParams{KeyRef: k.ID}); !errors.Is(err, kms.ErrInvalidState) {
		t.Fatalf("second schedule: %v", err)
	}
	_, err = s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")})
	if !errors.Is(err, kms.ErrInvalidState) || !strings.Contains(err.Error(), "pending deletion") {
		t.Fatalf("encrypt while pending deletion: %v", err)
	}
	_, err = s.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: ct.Ciphertext, AllowCompromised: true})
	expect(t, "decrypt while pending deletion", err, false)
	refused := b.EventsOfType("alpha", events.TypeKeyUseRefused)
	if len(refused) != 2 || refused[0].Subject != k.ResourceName() || refused[0].Data["operation"] != events.TypeEncrypt || refused[0].Outcome != events.OutcomeDenied && refused[0].Outcome != events.OutcomeFailure {
		t.Fatalf("use-refused records: %+v", refused)
	}
	if _, err := s.CancelDeletion(ctx, alice, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")}); err != nil {
		t.Fatalf("encrypt after cancel: %v", err)
	}
	if _, err := s.CancelDeletion(ctx, alice, k.ID); !errors.Is(err, kms.ErrInvalidState) {
		t.Fatalf("cancel without pending deletion: %v", err)
	}

	// Policy: an attempt cancels the deletion.
	if _, err := s.ScheduleDeletion(ctx, alice, kms.ScheduleDeletionParams{KeyRef: k.ID, CancelOnUse: true}); err != nil {
		t.Fatal(err)
	}
	_, err = s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")})
	expect(t, "encrypt while pending (cancel on use)", err, false)
	got, _ := s.DescribeKey(ctx, alice, k.ID)
	if got.Lifecycle.PendingDeletion {
		t.Fatal("the attempt did not cancel the deletion")
	}
	var reasons []string
	for _, e := range b.EventsOfType("alpha", events.TypeKeyDeletionCancelled) {
		if e.Outcome != events.OutcomeSuccess {
			continue
		}
		reasons = append(reasons, e.Data["reason"].(string))
	}
	if strings.Join(reasons, ",") != "requested,use-attempted" {
		t.Fatalf("cancel records: %v", reasons)
	}
}

// Destruction destroys the material and keeps the metadata; both steps
// are idempotent, and a cancelled deletion destroys nothing.
func TestDestruction(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	s, clk := clockedKMS(t, b)
	arch := &archive{}
	s.RegisterDestroyer(arch)
	k, _ := s.CreateKey(ctx, alice, kms.CreateKeyParams{})
	ct, _ := s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")})
	pk, err := s.ScheduleDeletion(ctx, alice, kms.ScheduleDeletionParams{KeyRef: k.ID, Window: 7 * kms.Day})
	if err != nil {
		t.Fatal(err)
	}
	p := kms.DestroyParams{KeyID: k.ID, DeletionDate: pk.Lifecycle.DeletionDate}
	if _, err := s.DestroyMaterial(ctx, alice, p); !errors.Is(err, kms.ErrInvalidState) {
		t.Fatalf("destroy before the date: %v", err)
	}
	clk.Add(8 * kms.Day)
	if _, err := s.CancelDeletion(ctx, alice, k.ID); !errors.Is(err, kms.ErrInvalidState) {
		t.Fatalf("cancel after the date: %v", err)
	}
	for range 2 {
		res, err := s.DestroyMaterial(ctx, alice, p)
		if err != nil || res.Cancelled || len(res.Versions) != 1 || strings.Join(res.Copies, ",") != "hsm-session-objects,store,archive" {
			t.Fatalf("destroy material: %v %+v", err, res)
		}
		if _, err := b.Store.GetMaterial(ctx, "alpha", k.ID, 1); !errors.Is(err, kms.ErrStoreNotFound) {
			t.Fatalf("material after destruction: %v", err)
		}
		res, err = s.MarkDestroyed(ctx, alice, p)
		if err != nil || res.State != kms.StateDestroyed {
			t.Fatalf("mark destroyed: %v %+v", err, res)
		}
	}
	if arch.calls != 2 || arch.last != k.ID+"/[1]" {
		t.Fatalf("archive destroyer: %d calls, last %q", arch.calls, arch.last)
	}
	got, err := s.DescribeKey(ctx, alice, k.ID)
	if err != nil || got.State != kms.StateDestroyed || got.Versions[0].State != kms.StateDestroyed || got.Lifecycle.PendingDeletion || got.Lifecycle.DestroyedAt.IsZero() {
		t.Fatalf("metadata after destruction: %v %+v", err, got)
	}
	_, err = s.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: ct.Ciphertext, AllowCompromised: true})
	expect(t, "decrypt after destruction", err, false)

	// A compromised key is destroyed as DESTROYED_COMPROMISED.
	k2, _ := s.CreateKey(ctx, alice, kms.CreateKeyParams{})
	if _, err := s.SetState(ctx, alice, kms.SetStateParams{KeyRef: k2.ID, To: kms.StateCompromised, Reason: "leaked"}); err != nil {
		t.Fatal(err)
	}
	pk2, _ := s.ScheduleDeletion(ctx, alice, kms.ScheduleDeletionParams{KeyRef: k2.ID, Window: 7 * kms.Day})
	clk.Add(8 * kms.Day)
	p2 := kms.DestroyParams{KeyID: k2.ID, DeletionDate: pk2.Lifecycle.DeletionDate}
	if _, err := s.DestroyMaterial(ctx, alice, p2); err != nil {
		t.Fatal(err)
	}
	if res, err := s.MarkDestroyed(ctx, alice, p2); err != nil || res.State != kms.StateDestroyedCompromised {
		t.Fatalf("compromised key destroyed as %v (%v)", res, err)
	}

	// A cancelled deletion: the step finds nothing to do.
	k3, _ := s.CreateKey(ctx, alice, kms.CreateKeyParams{})
	pk3, _ := s.ScheduleDeletion(ctx, alice, kms.ScheduleDeletionParams{KeyRef: k3.ID, Window: 7 * kms.Day})
	if _, err := s.CancelDeletion(ctx, alice, k3.ID); err != nil {
		t.Fatal(err)
	}
	clk.Add(8 * kms.Day)
	if res, err := s.DestroyMaterial(ctx, alice, kms.DestroyParams{KeyID: k3.ID, DeletionDate: pk3.Lifecycle.DeletionDate}); err != nil || !res.Cancelled {
		t.Fatalf("destroy after cancel: %v %+v", err, res)
	}
	if _, err := b.Store.GetMaterial(ctx, "alpha", k3.ID, 1); err != nil {
		t.Fatalf("material of a cancelled deletion: %v", err)
	}
}

// The cryptoperiod ends a version's protection at once and the timer's
// step records the deactivation; old ciphertexts still decrypt.
func TestCryptoperiod(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	s, clk := clockedKMS(t, b)
	k, err := s.CreateKey(ctx, alice, kms.CreateKeyParams{Cryptoperiod: kms.Day})
	if err != nil {
		t.Fatal(err)
	}
	ct, _ := s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")})
	clk.Add(kms.Day + time.Second)
	_, err = s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")})
	if !errors.Is(err, kms.ErrInvalidState) || !strings.Contains(err.Error(), "originator-usage period") {
		t.Fatalf("encrypt after the cryptoperiod: %v", err)
	}
	chk, err := s.DeactivateExpiredVersions(ctx, alice, k.ID)
	if err != nil || len(chk.Deactivated) != 1 || !chk.Next.IsZero() {
		t.Fatalf("deactivate: %v %+v", err, chk)
	}
	if _, err := s.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: ct.Ciphertext}); err != nil {
		t.Fatalf("decrypt under a deactivated version: %v", err)
	}
	if _, err := s.CreateKey(ctx, alice, kms.CreateKeyParams{RotationPeriod: 12 * time.Hour}); !errors.Is(err, kms.ErrValidation) {
		t.Fatalf("12h rotation period: %v", err)
	}
	if _, err := s.CreateKey(ctx, alice, kms.CreateKeyParams{RotationPeriod: 8 * 365 * kms.Day}); !errors.Is(err, kms.ErrValidation) {
		t.Fatalf("8y rotation period: %v", err)
	}
}

// A compromised version decrypts only with the override; the key's other
// versions are unaffected.
func TestCompromiseVersion(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	s := b.KMS
	k := mustCreate(t, s, alice, "")
	ct1, _ := s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")})
	if _, err := s.CreateVersion(ctx, alice, kms.CreateVersionParams{KeyID: k.ID, Version: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPrimaryVersion(ctx, alice, kms.SetPrimaryParams{KeyID: k.ID, Version: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Compromise(ctx, alice, kms.CompromiseParams{KeyRef: k.ID, Version: 1}); !errors.Is(err, kms.ErrValidation) {
		t.Fatalf("compromise without a reason: %v", err)
	}
	res, err := s.Compromise(ctx, alice, kms.CompromiseParams{KeyRef: k.ID, Version: 1, Reason: "found in a paste"})
	if err != nil || res.Transition != "T6" {
		t.Fatalf("compromise: %v %+v", err, res)
	}
	_, err = s.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: ct1.Ciphertext})
	if !errors.Is(err, kms.ErrInvalidState) || !strings.Contains(err.Error(), "allowCompromised") {
		t.Fatalf("decrypt under a compromised version: %v", err)
	}
	if _, err := s.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: ct1.Ciphertext, AllowCompromised: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	evs := b.EventsOfType("alpha", events.TypeKeyCompromised)
	last := evs[len(evs)-1]
	if last.Outcome != events.OutcomeSuccess || last.Data["version"] != float64(1) || last.Data["reason"] != "found in a paste" || last.Data["transition"] != "T6" {
		t.Fatalf("compromised record: %+v", last)
	}
}

// archive is a registered MaterialDestroyer (archives and backups are
// another change's; this checks the hook).
type archive struct {
	calls int
	last  string
}

func (a *archive) Name() string { return "archive" }

func (a *archive) DestroyMaterial(_ context.Context, tenant, keyID string, versions []uint32) error {
	a.calls++
	a.last = fmt.Sprintf("%s/%v", keyID, versions)
	return nil
}
