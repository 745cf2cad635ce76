package cbom_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/cbom"
)

var (
	uuidURN = regexp.MustCompile(`^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	states  = map[string]bool{"pre-activation": true, "active": true, "suspended": true, "deactivated": true, "compromised": true, "destroyed": true}
	prims   = map[string]bool{"ae": true, "signature": true, "kem": true, "mac": true, "pke": true}
)

func TestCBOM(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	item := func(id string, spec kms.KeySpec, usage kms.KeyUsage, state kms.KeyState, vulnerable bool, target kms.KeySpec) kms.InventoryItem {
		return kms.InventoryItem{ID: id, Alias: "a-" + id[:4], Spec: spec, Usage: usage, State: state, Versions: 2, PrimaryVersion: 2,
			CreatedAt: at, QuantumVulnerable: vulnerable, Target: target}
	}
	inv := &kms.Inventory{Tenant: "alpha", GeneratedAt: at, Keys: []kms.InventoryItem{
		item("00000000-0000-4000-8000-000000000001", kms.SpecSymmetricDefault, kms.UsageEncryptDecrypt, kms.StateActive, false, ""),
		item("00000000-0000-4000-8000-000000000002", kms.SpecRSA3072, kms.UsageEncryptDecrypt, kms.StateDeactivated, true, kms.SpecXWing),
		item("00000000-0000-4000-8000-000000000003", kms.SpecRSA3072, kms.UsageSignVerify, kms.StateActive, true, kms.SpecMLDSA65),
		item("00000000-0000-4000-8000-000000000004", kms.SpecECCP256, kms.UsageSignVerify, kms.StateActive, true, kms.SpecMLDSA65),
		item("00000000-0000-4000-8000-000000000005", kms.SpecMLKEM768, kms.UsageKeyEncapsulation, kms.StateActive, false, ""),
		item("00000000-0000-4000-8000-000000000006", kms.SpecMLDSA65, kms.UsageSignVerify, kms.StateSuspended, false, ""),
		item("00000000-0000-4000-8000-000000000007", kms.SpecXWing, kms.UsageKeyEncapsulation, kms.StateActive, false, ""),
		item("00000000-0000-4000-8000-000000000008", kms.SpecSLHDSA128S, kms.UsageSignVerify, kms.StateActive, false, ""),
		item("00000000-0000-4000-8000-000000000009", kms.SpecHMAC256, kms.UsageGenerateVerifyMAC, kms.StateActive, false, ""),
		item("00000000-0000-4000-8000-00000000000a", kms.SpecMLDSA65, kms.UsageSignVerify, kms.StateActive, false, ""),
	}}
	raw, err := cbom.JSON(inv, cbom.Options{ToolVersion: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	// Read it back generically, as a CycloneDX consumer would.
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if doc["bomFormat"] != "CycloneDX" || doc["specVersion"] != "1.6" || doc["version"] != 1.0 {
		t.Errorf("header: %v %v %v", doc["bomFormat"], doc["specVersion"], doc["version"])
	}
	if s, _ := doc["serialNumber"].(string); !uuidURN.MatchString(s) {
		t.Errorf("serialNumber %q is not a urn:uuid", s)
	}
	md, _ := doc["metadata"].(map[string]any)
	if ts, _ := md["timestamp"].(string); ts != "2026-03-04T05:06:07Z" {
		t.Errorf("metadata.timestamp = %v", md["timestamp"])
	}
	comps, _ := doc["components"].([]any)
	refs := map[string]map[string]any{}
	for _, c := range comps {
		c := c.(map[string]any)
		ref, _ := c["bom-ref"].(string)
		if ref == "" || c["type"] != "cryptographic-asset" || c["name"] == "" {
			t.Errorf("component lacks bom-ref, type or name: %v", c)
		}
		if refs[ref] != nil {
			t.Errorf("bom-ref %s appears twice", ref)
		}
		refs[ref] = c
	}
	levels := map[string]any{}
	var keys int
	for ref, c := range refs {
		cp := c["cryptoProperties"].(map[string]any)
		switch cp["assetType"] {
		case "algorithm":
			ap := cp["algorithmProperties"].(map[string]any)
			if !prims[ap["primitive"].(string)] {
				t.Errorf("%s: primitive %v", ref, ap["primitive"])
			}
			levels[c["name"].(string)+"/"+ap["primitive"].(string)] = ap["nistQuantumSecurityLevel"]
		case "related-crypto-material":
			keys++
			rp := cp["relatedCryptoMaterialProperties"].(map[string]any)
			for _, f := range []string{"type", "id", "state", "algorithmRef", "creationDate"} {
				if s, _ := rp[f].(string); s == "" {
					t.Errorf("%s: relatedCryptoMaterialProperties.%s missing", ref, f)
				}
			}
			alg := refs[rp["algorithmRef"].(string)]
			if alg == nil || alg["cryptoProperties"].(map[string]any)["assetType"] != "algorithm" {
				t.Errorf("%s: algorithmRef %v does not resolve to an algorithm", ref, rp["algorithmRef"])
			}
			if !states[rp["state"].(string)] {
				t.Errorf("%s: state %v", ref, rp["state"])
			}
			if _, err := time.Parse(time.RFC3339, rp["creationDate"].(string)); err != nil {
				t.Errorf("%s: creationDate: %v", ref, err)
			}
		default:
			t.Errorf("%s: assetType %v", ref, cp["assetType"])
		}
	}
	if keys != len(inv.Keys) {
		t.Errorf("%d key components, want %d", keys, len(inv.Keys))
	}
	// The two ML-DSA-65 keys share one algorithm component; RSA has two
	// (pke and signature).
	if n := len(refs) - keys; n != 9 {
		t.Errorf("%d algorithm components, want 9", n)
	}
	for alg, want := range map[string]any{
		"RSA-3072/pke": 0.0, "RSA-3072/signature": 0.0, "ECDSA-P256/signature": 0.0,
		"ML-KEM-768/kem": 3.0, "ML-DSA-65/signature": 3.0, "X-Wing/kem": 3.0,
		"SLH-DSA-SHA2-128s/signature": 1.0, "AES-256-GCM/ae": 5.0, "HMAC-SHA256/mac": nil,
	} {
		got, ok := levels[alg]
		if !ok || got != want {
			t.Errorf("%s: nistQuantumSecurityLevel %v (present %v), want %v", alg, got, ok, want)
		}
	}
	// Key types and states.
	byID := map[string]map[string]any{}
	for _, c := range refs {
		if rp, ok := c["cryptoProperties"].(map[string]any)["relatedCryptoMaterialProperties"].(map[string]any); ok {
			byID[rp["id"].(string)] = rp
		}
	}
	for id, want := range map[string][2]string{
		"00000000-0000-4000-8000-000000000001": {"secret-key", "active"},
		"00000000-0000-4000-8000-000000000002": {"private-key", "deactivated"},
		"00000000-0000-4000-8000-000000000006": {"private-key", "suspended"},
		"00000000-0000-4000-8000-000000000009": {"secret-key", "active"},
	} {
		if rp := byID[id]; rp == nil || rp["type"] != want[0] || rp["state"] != want[1] {
			t.Errorf("key %s: %v, want type %s state %s", id, rp, want[0], want[1])
		}
	}
	// Dependencies resolve.
	deps, _ := doc["dependencies"].([]any)
	if len(deps) != len(inv.Keys) {
		t.Errorf("%d dependencies, want %d", len(deps), len(inv.Keys))
	}
	for _, d := range deps {
		d := d.(map[string]any)
		if refs[d["ref"].(string)] == nil {
			t.Errorf("dependency ref %v does not resolve", d["ref"])
		}
		for _, on := range d["dependsOn"].([]any) {
			if refs[on.(string)] == nil {
				t.Errorf("dependsOn %v does not resolve", on)
			}
		}
	}
	// OIDs where known.
	for _, c := range refs {
		if c["name"] == "ML-DSA-65" {
			if oid := c["cryptoProperties"].(map[string]any)["oid"]; oid != "2.16.840.1.101.3.4.3.18" {
				t.Errorf("ML-DSA-65 oid = %v", oid)
			}
		}
	}
}

func TestCBOMEmptyAndFixed(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b, err := cbom.Build(&kms.Inventory{Tenant: "alpha", GeneratedAt: at}, cbom.Options{SerialNumber: "urn:uuid:0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b", Timestamp: at.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(b)
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if comps, ok := doc["components"].([]any); !ok || len(comps) != 0 {
		t.Errorf("components = %v, want []", doc["components"])
	}
	if doc["serialNumber"] != "urn:uuid:0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b" || doc["metadata"].(map[string]any)["timestamp"] != "2026-01-01T01:00:00Z" {
		t.Errorf("options not kept: %s", raw)
	}
	if _, err := cbom.Build(&kms.Inventory{Keys: []kms.InventoryItem{{ID: "x", Spec: "RSA_1024"}}}, cbom.Options{}); err == nil {
		t.Error("a key of an unknown spec was accepted")
	}
}

// A distributed key lists where its copies live: the destinations, and
// each one's provider, resource, versions, state and last sync.
func TestCBOMCloudPlacements(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	inv := &kms.Inventory{Tenant: "alpha", GeneratedAt: at, Keys: []kms.InventoryItem{
		{ID: "00000000-0000-4000-8000-000000000001", Spec: kms.SpecSymmetricDefault, Usage: kms.UsageEncryptDecrypt, State: kms.StateActive,
			Versions: 2, PrimaryVersion: 2, CreatedAt: at, Exportable: true, Clouds: []kms.CloudPlacement{
				{Destination: "gcp-eu", Provider: "gcp", State: kms.PlacementDisabled, Resource: "projects/p/locations/l/keyRings/r/cryptoKeys/keyflow-1",
					Versions: []kms.CloudVersion{{KeyVersion: 1, ProviderVersion: "v1"}}},
				{Destination: "aws-prod", Provider: "aws", State: kms.PlacementEnabled, Resource: "alias/keyflow/1", LastSync: at,
					Versions: []kms.CloudVersion{{KeyVersion: 1, ProviderVersion: "k1"}, {KeyVersion: 2, ProviderVersion: "k2"}}},
			}},
		{ID: "00000000-0000-4000-8000-000000000002", Spec: kms.SpecSymmetricDefault, Usage: kms.UsageEncryptDecrypt, State: kms.StateActive,
			Versions: 1, PrimaryVersion: 1, CreatedAt: at},
	}}
	b, err := cbom.Build(inv, cbom.Options{ToolVersion: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	props := map[string]map[string]string{}
	for _, c := range b.Components {
		m := map[string]string{}
		for _, p := range c.Properties {
			m[p.Name] = p.Value
		}
		props[c.BOMRef] = m
	}
	got := props["key/00000000-0000-4000-8000-000000000001"]
	want := map[string]string{
		"keyflow:cloudDestinations":              "aws-prod,gcp-eu",
		"keyflow:cloud:aws-prod:provider":        "aws",
		"keyflow:cloud:aws-prod:state":           "ENABLED",
		"keyflow:cloud:aws-prod:resource":        "alias/keyflow/1",
		"keyflow:cloud:aws-prod:keyVersion":      "2",
		"keyflow:cloud:aws-prod:providerVersion": "k2",
		"keyflow:cloud:aws-prod:lastSync":        "2026-03-04T05:06:07Z",
		"keyflow:cloud:gcp-eu:provider":          "gcp",
		"keyflow:cloud:gcp-eu:state":             "DISABLED",
		"keyflow:cloud:gcp-eu:keyVersion":        "1",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if _, ok := got["keyflow:cloud:gcp-eu:lastSync"]; ok {
		t.Error("a placement never synced has a lastSync")
	}
	for k := range props["key/00000000-0000-4000-8000-000000000002"] {
		if strings.HasPrefix(k, "keyflow:cloud") {
			t.Errorf("a key in no cloud has %s", k)
		}
	}
}
