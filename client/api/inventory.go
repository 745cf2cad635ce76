package api

import (
	"encoding/json"
	"time"
)

// Crypto inventory, for the post-quantum migration:
//
//	kf.v1.<tenant>.keys.inventory  the tenant's keys as crypto assets
//
// Format "json" (the default) answers with Keys; "cyclonedx" answers with
// Cbom, a CycloneDX 1.6 cryptographic bill of materials.

// OpKeyInventory is the inventory operation.
const OpKeyInventory = "keys.inventory"

// Inventory formats.
const (
	InventoryFormatJSON      = "json"
	InventoryFormatCycloneDX = "cyclonedx"
)

// InventoryRequest asks for the inventory of the caller's tenant, limited
// to keys of FromAlgorithms (empty: all), with To as the migration target
// instead of the recommended one.
type InventoryRequest struct {
	FromAlgorithms []string `json:"fromAlgorithms,omitempty"`
	To             string   `json:"to,omitempty"`
	Format         string   `json:"format,omitempty"`
}

// InventoryReply is the inventory: Keys for format json, Cbom for
// cyclonedx.
type InventoryReply struct {
	Keys []InventoryKey  `json:"keys,omitzero"`
	Cbom json.RawMessage `json:"cbom,omitempty"`
}

// InventoryKey is one key in an inventory.
type InventoryKey struct {
	KeyID             string    `json:"keyId"`
	Alias             string    `json:"alias,omitempty"`
	KeySpec           string    `json:"keySpec"`
	KeyUsage          string    `json:"keyUsage"`
	KeyState          string    `json:"keyState"`
	Versions          int       `json:"versions"`
	PrimaryVersion    uint32    `json:"primaryVersion"`
	CreationDate      time.Time `json:"creationDate"`
	QuantumVulnerable bool      `json:"quantumVulnerable"`
	// Exportable marks a key whose material can be released (KMIP Get).
	Exportable bool `json:"exportable,omitempty"`
	// Regions are a multi-region key's regions, its primary first
	// (docs/multi-region.md); absent for a single-region key.
	Regions []string `json:"regions,omitempty"`
	// TargetKeySpec is the spec to migrate to; absent when the key is
	// safe or nothing fits its usage.
	TargetKeySpec string `json:"targetKeySpec,omitempty"`
	// RegisteredDataKeys counts the key's registered wrapped data keys
	// (datakeys.register), which a migration rewraps.
	RegisteredDataKeys int `json:"registeredDataKeys"`
	// Clouds is where copies of the key live (docs/multi-cloud.md).
	Clouds []CloudPlacement `json:"clouds,omitempty"`
	// RecentPrincipals are the principals seen using the key in the most
	// recent audit records (a bounded window, not the whole trail).
	RecentPrincipals []string `json:"recentPrincipals"`
}
