// Package cbom turns a keyflow crypto inventory into a CycloneDX 1.6
// cryptographic bill of materials (CBOM).
//
// Each key is a component of type "cryptographic-asset" with assetType
// "related-crypto-material" (a secret key, or a private key for key pairs);
// each algorithm in use is a component with assetType "algorithm" and its
// NIST quantum security level. A key refers to its algorithm by bom-ref
// (relatedCryptoMaterialProperties.algorithmRef), and the dependencies
// section says the same, so generic CycloneDX tools draw the graph.
//
// The package is pure: it reads the inventory and the spec table
// (kms.SpecProfile) and writes JSON; it talks to nothing.
package cbom

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyflow/keyflow/kms"
)

// SpecVersion is the CycloneDX version written.
const SpecVersion = "1.6"

// Options are the parts of a BOM that are not in the inventory.
type Options struct {
	// SerialNumber is a urn:uuid:...; a random one when empty.
	SerialNumber string
	// Timestamp is the BOM's creation time; the inventory's when zero.
	Timestamp time.Time
	// ToolVersion is keyflow's version, for metadata.tools.
	ToolVersion string
}

// BOM is the subset of a CycloneDX 1.6 document that keyflow writes.
type BOM struct {
	BOMFormat    string       `json:"bomFormat"`
	SpecVersion  string       `json:"specVersion"`
	SerialNumber string       `json:"serialNumber"`
	Version      int          `json:"version"`
	Metadata     Metadata     `json:"metadata"`
	Components   []Component  `json:"components"`
	Dependencies []Dependency `json:"dependencies,omitempty"`
}

// Metadata is the BOM's metadata.
type Metadata struct {
	Timestamp string `json:"timestamp"`
	Tools     *Tools `json:"tools,omitempty"`
}

// Tools lists what made the BOM.
type Tools struct {
	Components []Tool `json:"components"`
}

// Tool is one tool.
type Tool struct {
	Type    string `json:"type"`
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
}

// Component is a cryptographic asset.
type Component struct {
	Type             string           `json:"type"`
	BOMRef           string           `json:"bom-ref"`
	Name             string           `json:"name"`
	CryptoProperties CryptoProperties `json:"cryptoProperties"`
	Properties       []Property       `json:"properties,omitempty"`
}

// CryptoProperties describe an asset.
type CryptoProperties struct {
	AssetType                       string                           `json:"assetType"`
	AlgorithmProperties             *AlgorithmProperties             `json:"algorithmProperties,omitempty"`
	RelatedCryptoMaterialProperties *RelatedCryptoMaterialProperties `json:"relatedCryptoMaterialProperties,omitempty"`
	OID                             string                           `json:"oid,omitempty"`
}

// AlgorithmProperties describe an algorithm.
type AlgorithmProperties struct {
	Primitive                string   `json:"primitive"`
	ParameterSetIdentifier   string   `json:"parameterSetIdentifier,omitempty"`
	NISTQuantumSecurityLevel *int     `json:"nistQuantumSecurityLevel,omitempty"`
	CryptoFunctions          []string `json:"cryptoFunctions,omitempty"`
}

// RelatedCryptoMaterialProperties describe a key.
type RelatedCryptoMaterialProperties struct {
	Type         string `json:"type"`
	ID           string `json:"id"`
	State        string `json:"state"`
	AlgorithmRef string `json:"algorithmRef,omitempty"`
	CreationDate string `json:"creationDate"`
	Size         int    `json:"size,omitempty"`
}

// Property is a name-value pair (keyflow's own facts, prefixed keyflow:).
type Property struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Dependency links a component to the ones it depends on.
type Dependency struct {
	Ref       string   `json:"ref"`
	DependsOn []string `json:"dependsOn"`
}

// states maps key states to CycloneDX's key states.
var states = map[kms.KeyState]string{
	kms.StatePreActive:   "pre-activation",
	kms.StateActive:      "active",
	kms.StateSuspended:   "suspended",
	kms.StateDeactivated: "deactivated",
	kms.StateCompromised: "compromised",
	kms.StateDestroyed:   "destroyed",
}

// functions are the CycloneDX crypto functions of each primitive.
var functions = map[string][]string{
	"ae":        {"keygen", "encrypt", "decrypt"},
	"pke":       {"keygen", "encrypt", "decrypt"},
	"signature": {"keygen", "sign", "verify"},
	"mac":       {"keygen", "tag"},
	"kem":       {"keygen", "encapsulate", "decapsulate"},
}

// Build returns the CBOM of inv.
func Build(inv *kms.Inventory, o Options) (*BOM, error) {
	if inv == nil {
		return nil, fmt.Errorf("cbom: no inventory")
	}
	if o.SerialNumber == "" {
		o.SerialNumber = "urn:uuid:" + randomUUID()
	}
	if o.Timestamp.IsZero() {
		o.Timestamp = inv.GeneratedAt
	}
	b := &BOM{
		BOMFormat: "CycloneDX", SpecVersion: SpecVersion, SerialNumber: o.SerialNumber, Version: 1,
		Metadata: Metadata{
			Timestamp: o.Timestamp.UTC().Format(time.RFC3339),
			Tools:     &Tools{Components: []Tool{{Type: "application", Name: "keyflow", Version: o.ToolVersion}}},
		},
		Components: []Component{},
	}
	algs := map[string]Component{}
	for _, k := range inv.Keys {
		p, ok := kms.SpecProfile(k.Spec)
		if !ok {
			return nil, fmt.Errorf("cbom: key %s has unknown spec %q", k.ID, k.Spec)
		}
		prim := p.Primitives[k.Usage]
		if prim == "" {
			return nil, fmt.Errorf("cbom: key %s: spec %s has no primitive for usage %s", k.ID, k.Spec, k.Usage)
		}
		algRef := "algorithm/" + string(k.Spec) + "/" + prim
		if _, ok := algs[algRef]; !ok {
			ap := &AlgorithmProperties{Primitive: prim, ParameterSetIdentifier: p.ParameterSet, CryptoFunctions: functions[prim]}
			if p.NISTLevel >= 0 {
				ap.NISTQuantumSecurityLevel = new(p.NISTLevel)
			}
			algs[algRef] = Component{
				Type: "cryptographic-asset", BOMRef: algRef, Name: p.Algorithm,
				CryptoProperties: CryptoProperties{AssetType: "algorithm", AlgorithmProperties: ap, OID: p.OID},
				Properties:       []Property{{Name: "keyflow:keySpec", Value: string(k.Spec)}, {Name: "keyflow:quantumVulnerable", Value: strconv.FormatBool(p.QuantumVulnerable)}},
			}
		}
		typ := "private-key"
		if p.Symmetric {
			typ = "secret-key"
		}
		state := states[k.State]
		if state == "" {
			state = "active"
		}
		name := k.ID
		if k.Alias != "" {
			name = k.Alias
		}
		props := []Property{
			{Name: "keyflow:keySpec", Value: string(k.Spec)},
			{Name: "keyflow:keyUsage", Value: string(k.Usage)},
			{Name: "keyflow:versions", Value: strconv.Itoa(k.Versions)},
			{Name: "keyflow:primaryVersion", Value: strconv.FormatUint(uint64(k.PrimaryVersion), 10)},
			{Name: "keyflow:quantumVulnerable", Value: strconv.FormatBool(k.QuantumVulnerable)},
		}
		if k.Exportable {
			props = append(props, Property{Name: "keyflow:exportable", Value: "true"})
		}
		if len(k.Regions) > 0 { // a multi-region key: its primary region first
			props = append(props, Property{Name: "keyflow:primaryRegion", Value: k.Regions[0]}, Property{Name: "keyflow:regions", Value: strings.Join(k.Regions, ",")})
		}
		if k.Target != "" {
			props = append(props, Property{Name: "keyflow:migrationTarget", Value: string(k.Target)})
		}
		props = append(props, cloudProperties(k.Clouds)...)
		keyRef := "key/" + k.ID
		b.Components = append(b.Components, Component{
			Type: "cryptographic-asset", BOMRef: keyRef, Name: name,
			CryptoProperties: CryptoProperties{
				AssetType: "related-crypto-material",
				RelatedCryptoMaterialProperties: &RelatedCryptoMaterialProperties{
					Type: typ, ID: k.ID, State: state, AlgorithmRef: algRef,
					CreationDate: k.CreatedAt.UTC().Format(time.RFC3339), Size: p.SizeBits,
				},
			},
			Properties: props,
		})
		b.Dependencies = append(b.Dependencies, Dependency{Ref: keyRef, DependsOn: []string{algRef}})
	}
	for _, ref := range slices.Sorted(maps.Keys(algs)) {
		b.Components = append(b.Components, algs[ref])
	}
	return b, nil
}

// cloudProperties lists where a key's copies live in cloud KMSs
// (docs/multi-cloud.md): keyflow:cloudDestinations names them, and
// keyflow:cloud:<destination>:<field> describes each, as the regions of a
// multi-region key are listed.
func cloudProperties(ps []kms.CloudPlacement) []Property {
	if len(ps) == 0 {
		return nil
	}
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b kms.CloudPlacement) int { return strings.Compare(a.Destination, b.Destination) })
	names := make([]string, len(ps))
	var out []Property
	for i, p := range ps {
		names[i] = p.Destination
		pre := "keyflow:cloud:" + p.Destination + ":"
		out = append(out, Property{Name: pre + "provider", Value: p.Provider}, Property{Name: pre + "state", Value: p.State})
		if p.Resource != "" {
			out = append(out, Property{Name: pre + "resource", Value: p.Resource})
		}
		if v, ok := p.Primary(); ok {
			out = append(out, Property{Name: pre + "keyVersion", Value: strconv.FormatUint(uint64(v.KeyVersion), 10)},
				Property{Name: pre + "providerVersion", Value: v.ProviderVersion})
		}
		if !p.LastSync.IsZero() {
			out = append(out, Property{Name: pre + "lastSync", Value: p.LastSync.UTC().Format(time.RFC3339)})
		}
	}
	return append([]Property{{Name: "keyflow:cloudDestinations", Value: strings.Join(names, ",")}}, out...)
}

// JSON returns the CBOM of inv as indented JSON.
func JSON(inv *kms.Inventory, o Options) ([]byte, error) {
	b, err := Build(inv, o)
	if err != nil {
		return nil, err
	}
	return json.MarshalIndent(b, "", "  ")
}

// randomUUID is an RFC 9562 version 4 UUID.
func randomUUID() string {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
