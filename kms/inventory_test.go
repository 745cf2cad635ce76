package kms_test

import (
	"context"
	"testing"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

func TestInventory(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	create := func(alias string, spec kms.KeySpec, usage kms.KeyUsage) *kms.Key {
		t.Helper()
		k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Alias: alias, Spec: spec, Usage: usage})
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		return k
	}
	aes := create("inv-aes", kms.SpecSymmetricDefault, "")
	mac := create("inv-mac", kms.SpecHMAC256, "")
	rsaEnc := create("inv-rsa-enc", kms.SpecRSA3072, kms.UsageEncryptDecrypt)
	rsaSig := create("inv-rsa-sig", kms.SpecRSA3072, kms.UsageSignVerify)
	ec := create("inv-ec", kms.SpecECCP256, "")
	ed := create("inv-ed", kms.SpecEd25519, "")
	mlkem := create("inv-mlkem", kms.SpecMLKEM768, "")
	mldsa := create("inv-mldsa", kms.SpecMLDSA65, "")
	// Another tenant's key never shows.
	if _, err := b.KMS.CreateKey(ctx, kms.Caller{Tenant: "beta", Principal: "bob"}, kms.CreateKeyParams{Spec: kms.SpecRSA4096}); err != nil {
		t.Fatal(err)
	}

	type want struct {
		vulnerable bool
		target     kms.KeySpec
	}
	wants := map[string]want{
		aes.ID: {false, ""}, mac.ID: {false, ""}, mlkem.ID: {false, ""}, mldsa.ID: {false, ""},
		rsaEnc.ID: {true, kms.SpecXWing}, rsaSig.ID: {true, kms.SpecMLDSA65},
		ec.ID: {true, kms.SpecMLDSA65}, ed.ID: {true, kms.SpecMLDSA65},
	}
	inv, err := b.KMS.Inventory(ctx, alice, kms.InventoryParams{})
	if err != nil {
		t.Fatal(err)
	}
	if inv.Tenant != "alpha" || len(inv.Keys) != len(wants) || inv.GeneratedAt.IsZero() {
		t.Fatalf("inventory of %q has %d keys, want %d", inv.Tenant, len(inv.Keys), len(wants))
	}
	for _, k := range inv.Keys {
		w, ok := wants[k.ID]
		if !ok {
			t.Errorf("unexpected key %s (%s)", k.ID, k.Spec)
			continue
		}
		if k.QuantumVulnerable != w.vulnerable || k.Target != w.target {
			t.Errorf("%s %s: vulnerable %v target %q, want %v %q", k.Alias, k.Spec, k.QuantumVulnerable, k.Target, w.vulnerable, w.target)
		}
		if k.Versions != 1 || k.PrimaryVersion != 1 || k.State != kms.StateActive || k.CreatedAt.IsZero() || k.Alias == "" || k.Usage == "" {
			t.Errorf("%s: incomplete item %+v", k.ID, k)
		}
		if k.RecentPrincipals != nil {
			t.Errorf("%s: the domain filled RecentPrincipals: %v", k.ID, k.RecentPrincipals)
		}
	}

	// Filtered by spec, with an explicit target.
	inv, err = b.KMS.Inventory(ctx, alice, kms.InventoryParams{FromAlgorithms: []kms.KeySpec{kms.SpecRSA3072, kms.SpecEd25519}, To: kms.SpecMLDSA87})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]kms.KeySpec{}
	for _, k := range inv.Keys {
		got[k.ID] = k.Target
	}
	// ML_DSA_87 cannot take over RSA encryption.
	if len(got) != 3 || got[rsaEnc.ID] != "" || got[rsaSig.ID] != kms.SpecMLDSA87 || got[ed.ID] != kms.SpecMLDSA87 {
		t.Errorf("filtered inventory targets = %v", got)
	}
	inv, err = b.KMS.Inventory(ctx, alice, kms.InventoryParams{To: kms.SpecMLKEM1024})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range inv.Keys {
		if k.ID == rsaEnc.ID && k.Target != kms.SpecMLKEM1024 {
			t.Errorf("RSA encryption key target = %q, want ML_KEM_1024", k.Target)
		}
		if k.ID == ec.ID && k.Target != "" {
			t.Errorf("ECDSA key target = %q, want none for a KEM target", k.Target)
		}
	}

	// Refusals.
	for name, tc := range map[string]struct {
		c    kms.Caller
		p    kms.InventoryParams
		code kms.Code
	}{
		"no tenant":         {kms.Caller{Principal: "mallory"}, kms.InventoryParams{}, kms.CodeAccessDenied},
		"unknown spec":      {alice, kms.InventoryParams{FromAlgorithms: []kms.KeySpec{"RSA_1024"}}, kms.CodeValidation},
		"unknown target":    {alice, kms.InventoryParams{To: "ML_DSA_99"}, kms.CodeValidation},
		"vulnerable target": {alice, kms.InventoryParams{To: kms.SpecECCP384}, kms.CodeValidation},
	} {
		inv, err := b.KMS.Inventory(ctx, tc.c, tc.p)
		if kms.CodeOf(err) != tc.code || inv != nil {
			t.Errorf("%s: got %v (%v), want %s", name, err, inv, tc.code)
		}
	}

	// Audited: three successes and three refusals of alpha, one of "-".
	evs := b.EventsOfType("alpha", events.TypeKeyInventoryRead)
	var ok, failed int
	for _, e := range evs {
		if e.Outcome == events.OutcomeSuccess {
			ok++
		} else {
			failed++
		}
		if e.Principal != "alice" {
			t.Errorf("inventory event by %q", e.Principal)
		}
	}
	if ok != 3 || failed != 3 {
		t.Errorf("alpha inventory events: %d successes, %d failures; want 3 and 3", ok, failed)
	}
	if evs[0].Data["count"] != float64(8) {
		t.Errorf("first inventory event data = %v", evs[0].Data)
	}
	if denied := b.EventsOfType("-", events.TypeKeyInventoryRead); len(denied) != 1 || denied[0].Outcome != events.OutcomeDenied {
		t.Errorf("refusal without a tenant recorded as %+v", denied)
	}
}

func TestEverySpecHasAProfile(t *testing.T) {
	for _, s := range kms.Specs() {
		p, ok := kms.SpecProfile(s)
		if !ok || p.Algorithm == "" || len(p.Primitives) == 0 {
			t.Errorf("%s: profile %+v", s, p)
		}
		if p.QuantumVulnerable != (len(p.Targets) > 0) {
			t.Errorf("%s: vulnerable %v with targets %v", s, p.QuantumVulnerable, p.Targets)
		}
		for u, target := range p.Targets {
			if tp, _ := kms.SpecProfile(target); tp.QuantumVulnerable {
				t.Errorf("%s (%s): target %s is itself vulnerable", s, u, target)
			}
		}
	}
}
