package kms_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"testing"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/cloudfake"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// WrapForCloud wraps exactly the key's material in each scheme (opened
// here with the private key, compared with ExportKey), and refuses what
// must not leave or cannot be wrapped, each refusal with a record.
func TestWrapForCloud(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	c := kms.Caller{Tenant: "alpha", Principal: "alice", RequestID: "r1"}
	k, err := b.KMS.CreateKey(ctx, c, kms.CreateKeyParams{Exportable: true})
	if err != nil {
		t.Fatal(err)
	}
	exp, err := b.KMS.ExportKey(ctx, c, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := rsa.GenerateKey(rand.Reader, 3072)
	der, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	for _, tc := range []struct {
		scheme kms.WrappingAlgorithm
		open   func([]byte) ([]byte, error)
	}{
		{kms.WrapRSAOAEPSHA256, func(w []byte) ([]byte, error) { return rsa.DecryptOAEP(crypto.SHA256.New(), nil, priv, w, nil) }},
		{kms.WrapRSAAESSHA256, func(w []byte) ([]byte, error) { return cloudfake.UnwrapRSAAES(priv, crypto.SHA256, w) }},
		{kms.WrapRSAAESSHA1, func(w []byte) ([]byte, error) { return cloudfake.UnwrapRSAAES(priv, crypto.SHA1, w) }},
	} {
		w, err := b.KMS.WrapForCloud(ctx, c, kms.WrapForCloudParams{KeyID: k.ID, Version: 1, Destination: "d", Scheme: tc.scheme, PublicKey: der})
		if err != nil {
			t.Fatalf("%s: %v", tc.scheme, err)
		}
		got, err := tc.open(w)
		if err != nil || subtle.ConstantTimeCompare(got, exp.Material) != 1 {
			t.Fatalf("%s: the wrapped material does not open to the key's material: %v", tc.scheme, err)
		}
	}

	plain, err := b.KMS.CreateKey(ctx, c, kms.CreateKeyParams{})
	if err != nil {
		t.Fatal(err)
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallDER, _ := x509.MarshalPKIXPublicKey(&small.PublicKey)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	for _, tc := range []struct {
		name string
		p    kms.WrapForCloudParams
		code kms.Code
	}{
		{"not exportable", kms.WrapForCloudParams{KeyID: plain.ID, Version: 1, Scheme: kms.WrapRSAOAEPSHA256, PublicKey: der}, kms.CodeAccessDenied},
		{"RSA-1024", kms.WrapForCloudParams{KeyID: k.ID, Version: 1, Scheme: kms.WrapRSAOAEPSHA256, PublicKey: smallDER}, kms.CodeValidation},
		{"EC key", kms.WrapForCloudParams{KeyID: k.ID, Version: 1, Scheme: kms.WrapRSAOAEPSHA256, PublicKey: ecDER}, kms.CodeValidation},
		{"no version", kms.WrapForCloudParams{KeyID: k.ID, Version: 9, Scheme: kms.WrapRSAOAEPSHA256, PublicKey: der}, kms.CodeNotFound},
		{"unknown scheme", kms.WrapForCloudParams{KeyID: k.ID, Version: 1, Scheme: kms.WrapXWingHPKE, PublicKey: der}, kms.CodeValidation},
	} {
		if _, err := b.KMS.WrapForCloud(ctx, c, tc.p); kms.CodeOf(err) != tc.code {
			t.Errorf("%s: got %v, want %s", tc.name, err, tc.code)
		}
	}
	recs := b.EventsOfType("alpha", events.TypeCloudMaterialWrapped)
	if len(recs) != 8 {
		t.Fatalf("%d material.wrapped records, want 8 (3 wraps, 5 refusals)", len(recs))
	}
}

func TestCloudDestinationSettings(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	c := kms.Caller{Tenant: "alpha", Principal: "alice", RequestID: "r1"}
	for _, tc := range []struct {
		d    kms.CloudDestination
		code kms.Code
	}{
		{kms.CloudDestination{Name: "prod", Provider: "aws", Settings: map[string]string{"region": "eu-west-1", "profile": "kf"}}, ""},
		{kms.CloudDestination{Name: "prod", Provider: "aws", Settings: map[string]string{"secretAccessKey": "x"}}, kms.CodeValidation},
		{kms.CloudDestination{Name: "prod", Provider: "ibm"}, kms.CodeValidation},
		{kms.CloudDestination{Name: "Prod.x", Provider: "gcp"}, kms.CodeValidation},
		{kms.CloudDestination{Name: "g", Provider: "gcp", Drift: "ignore"}, kms.CodeValidation},
	} {
		_, err := b.KMS.AddCloudDestination(ctx, c, tc.d)
		if (tc.code == "" && err != nil) || (tc.code != "" && kms.CodeOf(err) != tc.code) {
			t.Errorf("%+v: got %v, want %q", tc.d, err, tc.code)
		}
	}
	ds, err := b.KMS.ListCloudDestinations(ctx, c)
	if err != nil || len(ds) != 1 || ds[0].Drift != kms.DriftReport {
		t.Fatalf("destinations %v %+v", err, ds)
	}
	if other, _ := b.KMS.ListCloudDestinations(ctx, kms.Caller{Tenant: "beta", Principal: "bob"}); len(other) != 0 {
		t.Fatalf("tenant beta sees alpha's destinations: %+v", other)
	}
}

// Only UpdateCloudPlacement makes a placement: once RemoveCloudPlacement
// (undistribute) has run, ChangeCloudPlacement and NoteCloudError (a
// step that ends late, an error noted for cloud status) answer NotFound
// and leave no placement behind.
func TestCloudPlacementRemovedStaysRemoved(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	c := kms.Caller{Tenant: "alpha", Principal: "alice", RequestID: "r1"}
	if _, err := b.KMS.AddCloudDestination(ctx, c, kms.CloudDestination{Name: "prod", Provider: "aws", Settings: map[string]string{"region": "eu-west-1"}}); err != nil {
		t.Fatal(err)
	}
	setPending := func(p *kms.CloudPlacement) error { p.Pending = "rotate"; return nil }
	if _, err := b.KMS.ChangeCloudPlacement(ctx, c, "k1", "prod", "", setPending); kms.CodeOf(err) != kms.CodeNotFound {
		t.Fatalf("change of a placement that never was: %v", err)
	}
	if _, err := b.KMS.UpdateCloudPlacement(ctx, c, "k1", "prod", "distribute", func(p *kms.CloudPlacement) error {
		p.Versions = []kms.CloudVersion{{KeyVersion: 1, ProviderVersion: "aws-1"}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	p, err := b.KMS.ChangeCloudPlacement(ctx, c, "k1", "prod", "", setPending)
	if err != nil || p.Pending != "rotate" || len(p.Versions) != 1 {
		t.Fatalf("change of an existing placement: %v %+v", err, p)
	}
	if err := b.KMS.RemoveCloudPlacement(ctx, c, "k1", "prod"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.ChangeCloudPlacement(ctx, c, "k1", "prod", "rotate", setPending); kms.CodeOf(err) != kms.CodeNotFound {
		t.Fatalf("change after removal: %v", err)
	}
	if err := b.KMS.NoteCloudError(ctx, c, "k1", "prod", "Unavailable", "down"); kms.CodeOf(err) != kms.CodeNotFound {
		t.Fatalf("error noted after removal: %v", err)
	}
	if ps, err := b.KMS.CloudPlacements(ctx, c, "k1"); err != nil || len(ps) != 0 {
		t.Fatalf("placements after removal: %v %+v", err, ps)
	}
}
