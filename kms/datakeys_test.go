package kms_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// registerN registers n fresh data keys of key ref with a context each.
func registerN(t *testing.T, b *testbed.Bed, ref string, n int) ([]*kms.DataKey, [][]byte) {
	t.Helper()
	ctx := context.Background()
	var regs []*kms.DataKey
	var pts [][]byte
	for i := range n {
		ec := kms.EncryptionContext{"row": fmt.Sprint(i)}
		dk, err := b.KMS.GenerateDataKey(ctx, alice, kms.GenerateDataKeyParams{KeyRef: ref, Context: ec})
		if err != nil {
			t.Fatal(err)
		}
		d, err := b.KMS.RegisterDataKey(ctx, alice, kms.RegisterDataKeyParams{Ciphertext: dk.CiphertextBlob, Context: ec, Label: fmt.Sprint("row ", i)})
		if err != nil {
			t.Fatal(err)
		}
		regs, pts = append(regs, d), append(pts, dk.Plaintext)
	}
	return regs, pts
}

func rotate(t *testing.T, b *testbed.Bed, keyID string, v uint32) {
	t.Helper()
	ctx := context.Background()
	if _, err := b.KMS.CreateVersion(ctx, alice, kms.CreateVersionParams{KeyID: keyID, Version: v}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.SetPrimaryVersion(ctx, alice, kms.SetPrimaryParams{KeyID: keyID, Version: v}); err != nil {
		t.Fatal(err)
	}
}

// Registration opens the blob first: a wrong context, another tenant's
// blob or garbage is the one generic InvalidCiphertextException, and
// nothing is stored.
func TestRegisterDataKeyRefusals(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k, _ := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	dk, _ := b.KMS.GenerateDataKey(ctx, alice, kms.GenerateDataKeyParams{KeyRef: k.ID, Context: kms.EncryptionContext{"a": "b"}})
	bob := kms.Caller{Tenant: "beta", Principal: "bob"}
	for name, tc := range map[string]struct {
		c    kms.Caller
		p    kms.RegisterDataKeyParams
		code kms.Code
	}{
		"wrong context":   {alice, kms.RegisterDataKeyParams{Ciphertext: dk.CiphertextBlob, Context: kms.EncryptionContext{"a": "c"}}, kms.CodeInvalidCiphertext},
		"no context":      {alice, kms.RegisterDataKeyParams{Ciphertext: dk.CiphertextBlob}, kms.CodeInvalidCiphertext},
		"other tenant":    {bob, kms.RegisterDataKeyParams{Ciphertext: dk.CiphertextBlob, Context: kms.EncryptionContext{"a": "b"}}, kms.CodeInvalidCiphertext},
		"garbage":         {alice, kms.RegisterDataKeyParams{Ciphertext: []byte("not a ciphertext")}, kms.CodeInvalidCiphertext},
		"empty":           {alice, kms.RegisterDataKeyParams{}, kms.CodeValidation},
		"long label":      {alice, kms.RegisterDataKeyParams{Ciphertext: dk.CiphertextBlob, Label: string(bytes.Repeat([]byte("x"), 300))}, kms.CodeValidation},
		"RSA without key": {alice, kms.RegisterDataKeyParams{Ciphertext: dk.CiphertextBlob, Algorithm: kms.EncRSAOAEPSHA256}, kms.CodeValidation},
		"no tenant":       {kms.Caller{}, kms.RegisterDataKeyParams{Ciphertext: dk.CiphertextBlob}, kms.CodeAccessDenied},
	} {
		if _, err := b.KMS.RegisterDataKey(ctx, tc.c, tc.p); kms.CodeOf(err) != tc.code {
			t.Errorf("%s: %v, want %s", name, err, tc.code)
		}
	}
	if n, _ := b.KMS.CountDataKeys(ctx, alice, k.ID); len(n) != 0 {
		t.Fatalf("refused registrations were stored: %v", n)
	}
	if _, err := b.KMS.GetDataKey(ctx, alice, "6f1e2d3c-4b5a-4968-8776-655443322110"); !errors.Is(err, kms.ErrNotFound) {
		t.Fatalf("unknown registration: %v", err)
	}
	// Every refusal is audited as a failure.
	fails := 0
	for _, e := range b.EventsOfType("alpha", events.TypeDataKeyRegistered) {
		if e.Outcome != events.OutcomeSuccess {
			fails++
		}
	}
	if fails != 6 {
		t.Fatalf("%d failed registration records in alpha, want 6", fails)
	}
}

// The registry rewrap moves old-version registrations to the primary a
// page at a time, skips those already there, keeps contexts, and is
// idempotent: a second pass moves nothing and records nothing.
func TestRewrapRegistered(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k, _ := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	regs, pts := registerN(t, b, k.ID, 5)
	rotate(t, b, k.ID, 2)
	if err := b.KMS.CheckVersionUnused(ctx, alice, k.ID, 1); !errors.Is(err, kms.ErrInvalidState) {
		t.Fatalf("version 1 with 5 registrations: %v, want KMSInvalidStateException", err)
	}
	c := alice
	c.IdempotencyKey = "rewrap/test"
	var total kms.RewrapPage
	cursor := ""
	pages := 0
	for {
		page, err := b.KMS.RewrapRegistered(ctx, c, kms.RewrapRegisteredParams{KeyID: k.ID, After: cursor, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		total.Rewrapped += page.Rewrapped
		total.Skipped += page.Skipped
		if page.Done {
			break
		}
		cursor = page.NextCursor
	}
	if total.Rewrapped != 5 || total.Skipped != 0 || pages != 3 {
		t.Fatalf("rewrapped %d, skipped %d in %d pages", total.Rewrapped, total.Skipped, pages)
	}
	for i, r := range regs {
		d, err := b.KMS.GetDataKey(ctx, alice, r.ID)
		if err != nil || d.KeyVersion != 2 || d.Rewraps != 1 || d.Label != r.Label {
			t.Fatalf("registration %d: %+v %v", i, d, err)
		}
		pt, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: d.Ciphertext, Context: d.Context})
		if err != nil || !bytes.Equal(pt.Plaintext, pts[i]) {
			t.Fatalf("registration %d does not open to its data key: %v", i, err)
		}
	}
	if err := b.KMS.CheckVersionUnused(ctx, alice, k.ID, 1); err != nil {
		t.Fatalf("version 1 after the rewrap: %v", err)
	}
	// Again: everything is current, nothing moves, no new records.
	page, err := b.KMS.RewrapRegistered(ctx, c, kms.RewrapRegisteredParams{KeyID: k.ID})
	if err != nil || page.Rewrapped != 0 || !page.Done {
		t.Fatalf("second pass: %+v %v", page, err)
	}
	if n := len(b.EventsOfType("alpha", events.TypeDataKeyRewrapped)); n != 5 {
		t.Fatalf("%d rewrapped records, want 5", n)
	}
	// Only versions asked for: a rotation to 3, then a rewrap of version
	// 1 only finds nothing (all are under 2).
	rotate(t, b, k.ID, 3)
	page, err = b.KMS.RewrapRegistered(ctx, c, kms.RewrapRegisteredParams{KeyID: k.ID, FromVersions: []uint32{1}})
	if err != nil || page.Rewrapped != 0 || page.Skipped != 0 {
		t.Fatalf("rewrap of version 1 only: %+v %v", page, err)
	}
	if n, _ := b.KMS.RemainingDataKeys(ctx, alice, k.ID, nil, ""); n != 5 {
		t.Fatalf("remaining after rotation to 3: %d, want 5", n)
	}
}

// Rewrap (the batch API) moves each ciphertext on its own: good ones
// under the primary, bad ones with their own code, each audited.
func TestRewrapBatch(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	k, _ := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	dst, _ := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: kms.SpecXWing})
	ct, _ := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("v1 secret"), Context: kms.EncryptionContext{"a": "b"}})
	rsa, _ := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: kms.SpecRSA3072, Usage: kms.UsageEncryptDecrypt})
	rct, _ := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: rsa.ID, Plaintext: []byte("rsa secret"), Algorithm: kms.EncRSAOAEPSHA256})
	res, err := b.KMS.Rewrap(ctx, alice, kms.RewrapParams{DestinationKeyRef: dst.ID, Items: []kms.RewrapItem{
		{Ciphertext: ct.Ciphertext, Context: kms.EncryptionContext{"a": "b"}},
		{Ciphertext: ct.Ciphertext},
		{Ciphertext: rct.Ciphertext, KeyRef: rsa.ID, Algorithm: kms.EncRSAOAEPSHA256},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Err != nil || res[0].Result.KeyID != dst.ID || kms.CodeOf(res[1].Err) != kms.CodeInvalidCiphertext || res[2].Err != nil {
		t.Fatalf("results: %+v %v %v", res[0], res[1].Err, res[2].Err)
	}
	for i, want := range map[int]string{0: "v1 secret", 2: "rsa secret"} {
		ec := kms.EncryptionContext(nil)
		if i == 0 {
			ec = kms.EncryptionContext{"a": "b"}
		}
		pt, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: res[i].Result.Ciphertext, Context: ec})
		if err != nil || string(pt.Plaintext) != want {
			t.Fatalf("item %d after rewrap to X-Wing: %v", i, err)
		}
	}
	if _, err := b.KMS.Rewrap(ctx, alice, kms.RewrapParams{}); !errors.Is(err, kms.ErrValidation) {
		t.Fatalf("empty rewrap: %v", err)
	}
	if n := len(b.EventsOfType("alpha", events.TypeReEncrypt)); n != 3 {
		t.Fatalf("%d reencrypt records, want one per item", n)
	}
}

// The campaign's domain steps refuse what would break a key: a key held
// by another campaign, a target that cannot take over the role, a retired
// campaign's rollback, retirement while data keys still use the source.
func TestMigrationStepsRefusals(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	ec, _ := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: kms.SpecECCP256, Alias: "signer"})
	aes, _ := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	plan := func(id, spec string) []kms.MigrationKeyParams {
		return []kms.MigrationKeyParams{{SourceKeyID: id, TargetSpec: kms.KeySpec(spec)}}
	}
	for name, tc := range map[string]struct {
		campaign string
		plan     []kms.MigrationKeyParams
		code     kms.Code
	}{
		"signing to KEM":    {"c1", plan(ec.ID, "X_WING"), kms.CodeValidation},
		"to vulnerable":     {"c1", plan(ec.ID, "RSA_3072"), kms.CodeValidation},
		"safe source":       {"c1", plan(aes.ID, "X_WING"), kms.CodeValidation},
		"bad campaign":      {"C 1", plan(ec.ID, "ML_DSA_65"), kms.CodeValidation},
		"duplicate":         {"c1", append(plan(ec.ID, "ML_DSA_65"), plan(ec.ID, "ML_DSA_65")...), kms.CodeValidation},
		"unknown key":       {"c1", plan("6f1e2d3c-4b5a-4968-8776-655443322110", "ML_DSA_65"), kms.CodeNotFound},
		"empty":             {"c1", nil, kms.CodeValidation},
		"fine":              {"c1", plan(ec.ID, "ML_DSA_65"), ""},
		"fine (SLH target)": {"c1", plan(ec.ID, "SLH_DSA_SHA2_128F"), ""},
	} {
		if err := b.KMS.RequestMigration(ctx, alice, tc.campaign, tc.plan); kms.CodeOf(err) != tc.code && !(tc.code == "" && err == nil) {
			t.Errorf("%s: %v, want %q", name, err, tc.code)
		}
	}
	p := kms.MigrationKeyParams{CampaignID: "c1", SourceKeyID: ec.ID, TargetSpec: kms.SpecMLDSA65}
	tgt, err := b.KMS.CreateMigrationTarget(ctx, alice, p)
	if err != nil {
		t.Fatal(err)
	}
	again, err := b.KMS.CreateMigrationTarget(ctx, alice, p)
	if err != nil || again.ID != tgt.ID || tgt.ID != kms.TargetKeyID("alpha", "c1", ec.ID) {
		t.Fatalf("a second creation made another key: %s %s %v", tgt.ID, again.ID, err)
	}
	p.TargetKeyID, p.Phase = tgt.ID, kms.PhaseDualSigning
	if err := b.KMS.LinkMigration(ctx, alice, p); err != nil {
		t.Fatal(err)
	}
	// Another campaign cannot take the key.
	if err := b.KMS.RequestMigration(ctx, alice, "c2", plan(ec.ID, "ML_DSA_65")); !errors.Is(err, kms.ErrConflict) {
		t.Fatalf("second campaign on a linked key: %v", err)
	}
	// Dual signing over a digest is not possible with ML-DSA: the ECDSA
	// signature alone comes back.
	sig, err := b.KMS.Sign(ctx, alice, kms.SignParams{KeyRef: ec.ID, Message: make([]byte, 32), MessageType: kms.MessageDigest, Algorithm: kms.SignECDSASHA256})
	if err != nil || len(sig.Additional) != 0 {
		t.Fatalf("digest during dual signing: %+v %v", sig, err)
	}
	if err := b.KMS.CutoverMigration(ctx, alice, p); err != nil {
		t.Fatal(err)
	}
	if err := b.KMS.CutoverMigration(ctx, alice, p); err != nil { // idempotent
		t.Fatalf("second cutover: %v", err)
	}
	if k, _ := b.KMS.DescribeKey(ctx, alice, "alias/signer"); k.ID != tgt.ID {
		t.Fatalf("alias after cutover names %s", k.ID)
	}
	if err := b.KMS.RetireMigrationSource(ctx, alice, p); err != nil {
		t.Fatal(err)
	}
	if err := b.KMS.RollbackMigration(ctx, alice, p); !errors.Is(err, kms.ErrInvalidState) {
		t.Fatalf("rollback after retirement: %v, want KMSInvalidStateException", err)
	}
	// Retirement waits for the registry: an RSA key with a registered
	// data key cannot retire until it is rewrapped.
	rsa, _ := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Spec: kms.SpecRSA3072, Usage: kms.UsageEncryptDecrypt})
	ct, _ := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: rsa.ID, Plaintext: []byte("dk"), Algorithm: kms.EncRSAOAEPSHA256})
	if _, err := b.KMS.RegisterDataKey(ctx, alice, kms.RegisterDataKeyParams{Ciphertext: ct.Ciphertext, KeyRef: rsa.ID, Algorithm: kms.EncRSAOAEPSHA256}); err != nil {
		t.Fatal(err)
	}
	rp := kms.MigrationKeyParams{CampaignID: "c3", SourceKeyID: rsa.ID, TargetSpec: kms.SpecXWing}
	rt, err := b.KMS.CreateMigrationTarget(ctx, alice, rp)
	if err != nil {
		t.Fatal(err)
	}
	rp.TargetKeyID = rt.ID
	if err := b.KMS.RetireMigrationSource(ctx, alice, rp); !errors.Is(err, kms.ErrInvalidState) {
		t.Fatalf("retirement with a registered data key: %v", err)
	}
}
