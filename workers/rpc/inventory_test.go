package rpc_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/schemas"
)

// TestInventoryOverNATS checks keys.inventory end to end: the flags and
// targets, the consumers found in the audit trail, and the CBOM format.
func TestInventoryOverNATS(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	b.StartRPC(nil)
	admin := b.Client("alpha", "admin")
	app := b.Client("alpha", "billing-app")

	signer, err := admin.CreateKey(ctx, api.CreateKeyRequest{Alias: "inv-signer", KeySpec: "ECC_NIST_P256"})
	if err != nil {
		t.Fatal(err)
	}
	aes, err := admin.CreateKey(ctx, api.CreateKeyRequest{Alias: "inv-aes"})
	if err != nil {
		t.Fatal(err)
	}
	rsa, err := admin.CreateKey(ctx, api.CreateKeyRequest{Alias: "inv-rsa", KeySpec: "RSA_3072", KeyUsage: "ENCRYPT_DECRYPT"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.Sign(ctx, api.SignRequest{KeyID: "inv-signer", Message: []byte("hello"), SigningAlgorithm: "ECDSA_SHA_256"}); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Encrypt(ctx, api.EncryptRequest{KeyID: "inv-aes", Plaintext: []byte("hello")}); err != nil {
		t.Fatal(err)
	}

	inv, err := admin.Inventory(ctx, api.InventoryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(inv)
	if err := schemas.ValidateAPI("InventoryReply", raw); err != nil {
		t.Errorf("%s: %v", raw, err)
	}
	if len(inv.Keys) != 3 || inv.Cbom != nil {
		t.Fatalf("inventory: %s", raw)
	}
	byID := map[string]api.InventoryKey{}
	for _, k := range inv.Keys {
		byID[k.KeyID] = k
	}
	s, a, r := byID[signer.KeyID], byID[aes.KeyID], byID[rsa.KeyID]
	if !s.QuantumVulnerable || s.TargetKeySpec != "ML_DSA_65" || !r.QuantumVulnerable || r.TargetKeySpec != "X_WING" || a.QuantumVulnerable || a.TargetKeySpec != "" {
		t.Errorf("flags and targets: %s", raw)
	}
	// The app used the signer and the AES key; the admin created all three.
	if !slices.Contains(s.RecentPrincipals, "billing-app") || !slices.Contains(s.RecentPrincipals, "admin") {
		t.Errorf("signer's recent principals = %v", s.RecentPrincipals)
	}
	if !slices.Contains(a.RecentPrincipals, "billing-app") {
		t.Errorf("AES key's recent principals = %v", a.RecentPrincipals)
	}
	if slices.Contains(r.RecentPrincipals, "billing-app") || !slices.Contains(r.RecentPrincipals, "admin") {
		t.Errorf("RSA key's recent principals = %v", r.RecentPrincipals)
	}

	// CycloneDX.
	inv, err = admin.Inventory(ctx, api.InventoryRequest{Format: "cyclonedx", FromAlgorithms: []string{"ECC_NIST_P256", "RSA_3072"}})
	if err != nil {
		t.Fatal(err)
	}
	if inv.Keys != nil || len(inv.Cbom) == 0 {
		t.Fatalf("cyclonedx reply: keys %v, cbom %d bytes", inv.Keys, len(inv.Cbom))
	}
	var bom struct {
		BOMFormat   string `json:"bomFormat"`
		SpecVersion string `json:"specVersion"`
		Components  []struct {
			BOMRef           string `json:"bom-ref"`
			CryptoProperties struct {
				AssetType string `json:"assetType"`
			} `json:"cryptoProperties"`
		} `json:"components"`
	}
	if err := json.Unmarshal(inv.Cbom, &bom); err != nil {
		t.Fatalf("the CBOM is not JSON: %v", err)
	}
	var keys int
	for _, c := range bom.Components {
		if c.CryptoProperties.AssetType == "related-crypto-material" {
			keys++
		}
	}
	if bom.BOMFormat != "CycloneDX" || bom.SpecVersion != "1.6" || keys != 2 {
		t.Errorf("CBOM: %s", inv.Cbom)
	}

	// A tenant sees its own keys only.
	other, err := b.Client("beta", "bob").Inventory(ctx, api.InventoryRequest{})
	if err != nil || len(other.Keys) != 0 {
		t.Errorf("beta's inventory: %+v, %v", other, err)
	}

	if evs := b.EventsOfType("alpha", events.TypeKeyInventoryRead); len(evs) != 2 {
		t.Errorf("%d inventory events, want 2", len(evs))
	}
}
