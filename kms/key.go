package kms

import (
	"regexp"
	"time"
)

// KeySpec names the kind of key material, as AWS KMS does.
type KeySpec string

// Key specs. The foundation ships the symmetric default; more come with the
// crypto-core work.
const (
	SpecSymmetricDefault KeySpec = "SYMMETRIC_DEFAULT" // AES-256-GCM
)

// KeyUsage is the one thing a key may be used for.
type KeyUsage string

// Key usages.
const (
	UsageEncryptDecrypt KeyUsage = "ENCRYPT_DECRYPT"
)

// KeyState is a key's (or a version's) lifecycle state, after NIST SP 800-57
// Part 1. The foundation uses PreActive, Active and Deactivated; the
// lifecycle work adds the transitions between all of them.
type KeyState string

// Key states.
const (
	StatePreActive   KeyState = "PRE_ACTIVE"
	StateActive      KeyState = "ACTIVE"
	StateSuspended   KeyState = "SUSPENDED"
	StateDeactivated KeyState = "DEACTIVATED"
	StateCompromised KeyState = "COMPROMISED"
	StateDestroyed   KeyState = "DESTROYED"
)

// CanEncrypt reports whether new ciphertexts may be made in state s.
func (s KeyState) CanEncrypt() bool { return s == StateActive }

// CanDecrypt reports whether existing ciphertexts may be opened in state s.
func (s KeyState) CanDecrypt() bool {
	return s == StateActive || s == StateSuspended || s == StateDeactivated
}

// Key is a customer key's metadata. It holds no key material: versions'
// wrapped material is kept apart (see [VersionMaterial]) so that metadata can
// be listed, described and logged freely.
type Key struct {
	ID             string    `json:"keyId"`
	Tenant         string    `json:"tenant"`
	Alias          string    `json:"alias,omitempty"`
	Description    string    `json:"description,omitempty"`
	Spec           KeySpec   `json:"keySpec"`
	Usage          KeyUsage  `json:"keyUsage"`
	State          KeyState  `json:"keyState"`
	CreatedAt      time.Time `json:"creationDate"`
	CreatedBy      string    `json:"createdBy,omitempty"`
	PrimaryVersion uint32    `json:"primaryVersion"`
	Versions       []Version `json:"versions"`
	RotatedAt      time.Time `json:"lastRotationDate,omitzero"`
	// Migration links a key to its peer in a post-quantum migration
	// campaign (see migration.go); nil otherwise.
	Migration *MigrationLink `json:"migration,omitempty"`
}

// Version is one generation of a key's material.
type Version struct {
	Number    uint32    `json:"version"`
	State     KeyState  `json:"state"`
	Algorithm Algorithm `json:"algorithm"`
	CreatedAt time.Time `json:"creationDate"`
}

// Version returns version n and whether it exists.
func (k *Key) Version(n uint32) (Version, bool) {
	for _, v := range k.Versions {
		if v.Number == n {
			return v, true
		}
	}
	return Version{}, false
}

// ResourceName is the key's name in audit events and policies.
func (k *Key) ResourceName() string { return ResourceName(k.Tenant, k.ID) }

// ResourceName builds a key resource name, e.g. kf:default:key/<id>.
func ResourceName(tenant, keyID string) string { return "kf:" + tenant + ":key/" + keyID }

// VersionMaterial is a version's key material as stored: wrapped by the HSM
// root key, never plaintext.
type VersionMaterial struct {
	Tenant    string    `json:"tenant"`
	KeyID     string    `json:"keyId"`
	Version   uint32    `json:"version"`
	Algorithm Algorithm `json:"algorithm"`
	Wrapped   []byte    `json:"wrapped"`
	WrappedBy string    `json:"wrappedBy"` // root key label
	// PublicKey is the DER SubjectPublicKeyInfo of an asymmetric version.
	PublicKey []byte `json:"publicKey,omitempty"`
}

var (
	tenantRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	aliasRE  = regexp.MustCompile(`^[A-Za-z0-9/_-]{1,250}$`)
	keyIDRE  = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

// ValidTenant reports whether s is a well-formed tenant name. Tenant names
// appear in NATS subjects, so they are restricted to [a-z0-9-].
func ValidTenant(s string) bool { return tenantRE.MatchString(s) }

// ValidKeyID reports whether s is a well-formed key ID (a UUID).
func ValidKeyID(s string) bool { return keyIDRE.MatchString(s) }

// validAlias accepts AWS-style aliases with or without the "alias/" prefix.
func validAlias(s string) bool { return aliasRE.MatchString(s) && !ValidKeyID(s) }
