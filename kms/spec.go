package kms

import (
	"crypto"
	"crypto/hpke"
	"slices"

	"github.com/keyflow/keyflow/hsm"
)

// SigningAlgorithm names a signature algorithm (AWS names).
type SigningAlgorithm string

// Signing algorithms.
const (
	SignECDSASHA256    SigningAlgorithm = "ECDSA_SHA_256"
	SignECDSASHA384    SigningAlgorithm = "ECDSA_SHA_384"
	SignECDSASHA512    SigningAlgorithm = "ECDSA_SHA_512"
	SignRSAPSSSHA256   SigningAlgorithm = "RSASSA_PSS_SHA_256"
	SignRSAPSSSHA384   SigningAlgorithm = "RSASSA_PSS_SHA_384"
	SignRSAPSSSHA512   SigningAlgorithm = "RSASSA_PSS_SHA_512"
	SignRSAPKCS1SHA256 SigningAlgorithm = "RSASSA_PKCS1_V1_5_SHA_256"
	SignRSAPKCS1SHA384 SigningAlgorithm = "RSASSA_PKCS1_V1_5_SHA_384"
	SignRSAPKCS1SHA512 SigningAlgorithm = "RSASSA_PKCS1_V1_5_SHA_512"
	SignEd25519SHA512  SigningAlgorithm = "ED25519_SHA_512" // pure Ed25519 over the message, as AWS names it
)

// EncryptionAlgorithm names an encryption algorithm (AWS names).
type EncryptionAlgorithm string

// Encryption algorithms.
const (
	EncSymmetricDefault EncryptionAlgorithm = "SYMMETRIC_DEFAULT"
	EncRSAOAEPSHA256    EncryptionAlgorithm = "RSAES_OAEP_SHA_256"
	EncRSAOAEPSHA1      EncryptionAlgorithm = "RSAES_OAEP_SHA_1"
)

// MACAlgorithm names a MAC algorithm.
type MACAlgorithm string

// MAC algorithms.
const (
	MACHMACSHA256 MACAlgorithm = "HMAC_SHA_256"
)

// Material algorithms of versions beyond AES-256-GCM. A version's Algorithm
// says what its wrapped material is.
const (
	AlgHMACSHA256 Algorithm = "HMAC_SHA_256"
	AlgRSA3072    Algorithm = "RSA_3072"
	AlgRSA4096    Algorithm = "RSA_4096"
	AlgECCP256    Algorithm = "ECC_NIST_P256"
	AlgECCP384    Algorithm = "ECC_NIST_P384"
	AlgEd25519    Algorithm = "ECC_NIST_EDWARDS25519"
)

type materialKind int

const (
	materialAES materialKind = iota
	materialHMAC
	materialKeyPair
	// materialSoftware is a post-quantum key: generated in Go (package
	// pqc), its private key wrapped under the HSM root key with
	// hsm.SecretWrapper, unwrapped into memory for one operation only.
	materialSoftware
)

// Post-quantum signing algorithms. ML-DSA uses AWS's name.
const (
	SignMLDSA      SigningAlgorithm = "ML_DSA_SHAKE_256"
	SignSLHDSA128S SigningAlgorithm = "SLH_DSA_SHA2_128S"
	SignSLHDSA128F SigningAlgorithm = "SLH_DSA_SHA2_128F"
)

// EncHPKE is how KEM keys encrypt: HPKE (RFC 9180) with the key's KEM,
// HKDF-SHA256 and AES-256-GCM.
const EncHPKE EncryptionAlgorithm = "HPKE_HKDF_SHA256_AES_256_GCM"

func pqSign(s KeySpec, alg SigningAlgorithm) *specInfo {
	return &specInfo{spec: s, usages: []KeyUsage{UsageSignVerify}, kind: materialSoftware, alg: Algorithm(s),
		pqName: string(s), signing: []SigningAlgorithm{alg}}
}

func pqKEM(s KeySpec, envID byte, kem func() hpke.KEM) *specInfo {
	return &specInfo{spec: s, usages: []KeyUsage{UsageKeyEncapsulation}, kind: materialSoftware, alg: Algorithm(s),
		pqName: string(s), encryption: []EncryptionAlgorithm{EncHPKE}, envelopeID: envID, hpkeKEM: kem}
}

func init() {
	for _, si := range []*specInfo{
		pqKEM(SpecMLKEM768, 0x11, hpke.MLKEM768), pqKEM(SpecMLKEM1024, 0x12, hpke.MLKEM1024), pqKEM(SpecXWing, 0x10, hpke.MLKEM768X25519),
		pqSign(SpecMLDSA44, SignMLDSA), pqSign(SpecMLDSA65, SignMLDSA), pqSign(SpecMLDSA87, SignMLDSA),
		pqSign(SpecSLHDSA128S, SignSLHDSA128S), pqSign(SpecSLHDSA128F, SignSLHDSA128F),
	} {
		specs[si.spec] = si
		if si.envelopeID != 0 {
			algIDs[si.alg] = si.envelopeID
		}
	}
	for spec, p := range profiles {
		specs[spec].profile = p
	}
}

// Profile is what keyflow says about a key spec in an inventory or a
// cryptographic bill of materials (CBOM): whether a quantum computer breaks
// it, what to move to, and the algorithm's identifiers.
type Profile struct {
	// Algorithm is the algorithm's common name, e.g. "RSA-3072".
	Algorithm string
	// Symmetric is true for secret keys (AES, HMAC), false for key pairs.
	Symmetric bool
	// QuantumVulnerable is true when Shor's algorithm breaks the spec
	// (RSA, ECC, Ed25519). 256-bit symmetric keys keep 128 bits against
	// Grover, and the NIST PQC algorithms are designed to resist both.
	QuantumVulnerable bool
	// Targets is the recommended post-quantum spec by the key's usage; a
	// usage without one (or a spec that is already safe) has none.
	Targets map[KeyUsage]KeySpec
	// NISTLevel is the NIST PQC security category (0 for classical
	// asymmetric algorithms, 1 to 5 otherwise); -1 when not stated.
	NISTLevel int
	// SizeBits is the key size in bits (0 when not meaningful).
	SizeBits int
	// ParameterSet is the parameter set identifier ("768", "P-256", ...).
	ParameterSet string
	// OID is the algorithm's object identifier, when one is registered.
	OID string
	// Primitives is the CycloneDX primitive by the key's usage: "ae",
	// "mac", "signature", "pke" or "kem".
	Primitives map[KeyUsage]string
	// ClassicalBits is the classical security strength in bits (NIST SP
	// 800-57 Part 1, Table 2), which the nist-ir-8547 profile reads.
	ClassicalBits int
	// CNSA2 is true for the algorithms NSA's CNSA 2.0 suite allows (the
	// cnsa2 tenant profile allows only these).
	CNSA2 bool
}

// pqTargets is where quantum-vulnerable keys go: hybrid X-Wing for
// encryption, ML-DSA-65 for signatures.
var pqTargets = map[KeyUsage]KeySpec{UsageEncryptDecrypt: SpecXWing, UsageSignVerify: SpecMLDSA65}

var (
	primSign = map[KeyUsage]string{UsageSignVerify: "signature"}
	primKEM  = map[KeyUsage]string{UsageKeyEncapsulation: "kem"}
)

// profiles is the crypto-agility table: one row per spec.
var profiles = map[KeySpec]Profile{
	SpecSymmetricDefault: {ClassicalBits: 256, CNSA2: true, Algorithm: "AES-256-GCM", Symmetric: true, NISTLevel: 5, SizeBits: 256, ParameterSet: "256",
		OID: "2.16.840.1.101.3.4.1.46", Primitives: map[KeyUsage]string{UsageEncryptDecrypt: "ae"}},
	SpecHMAC256: {ClassicalBits: 256, Algorithm: "HMAC-SHA256", Symmetric: true, NISTLevel: -1, SizeBits: 256, ParameterSet: "256",
		OID: "1.2.840.113549.2.9", Primitives: map[KeyUsage]string{UsageGenerateVerifyMAC: "mac"}},
	SpecRSA3072: {ClassicalBits: 128, Algorithm: "RSA-3072", QuantumVulnerable: true, Targets: pqTargets, SizeBits: 3072, ParameterSet: "3072",
		OID: "1.2.840.113549.1.1.1", Primitives: map[KeyUsage]string{UsageEncryptDecrypt: "pke", UsageSignVerify: "signature"}},
	SpecRSA4096: {ClassicalBits: 152, Algorithm: "RSA-4096", QuantumVulnerable: true, Targets: pqTargets, SizeBits: 4096, ParameterSet: "4096",
		OID: "1.2.840.113549.1.1.1", Primitives: map[KeyUsage]string{UsageEncryptDecrypt: "pke", UsageSignVerify: "signature"}},
	SpecECCP256: {ClassicalBits: 128, Algorithm: "ECDSA-P256", QuantumVulnerable: true, Targets: pqTargets, SizeBits: 256, ParameterSet: "P-256",
		OID: "1.2.840.10045.4.3.2", Primitives: primSign},
	SpecECCP384: {ClassicalBits: 192, Algorithm: "ECDSA-P384", QuantumVulnerable: true, Targets: pqTargets, SizeBits: 384, ParameterSet: "P-384",
		OID: "1.2.840.10045.4.3.3", Primitives: primSign},
	SpecEd25519: {ClassicalBits: 128, Algorithm: "Ed25519", QuantumVulnerable: true, Targets: pqTargets, SizeBits: 256, ParameterSet: "Ed25519",
		OID: "1.3.101.112", Primitives: primSign},
	SpecMLKEM768:   {ClassicalBits: 192, Algorithm: "ML-KEM-768", NISTLevel: 3, ParameterSet: "768", OID: "2.16.840.1.101.3.4.4.2", Primitives: primKEM},
	SpecMLKEM1024:  {ClassicalBits: 256, CNSA2: true, Algorithm: "ML-KEM-1024", NISTLevel: 5, ParameterSet: "1024", OID: "2.16.840.1.101.3.4.4.3", Primitives: primKEM},
	SpecXWing:      {ClassicalBits: 192, Algorithm: "X-Wing", NISTLevel: 3, ParameterSet: "ML-KEM-768+X25519", OID: "1.3.6.1.4.1.62253.25722", Primitives: primKEM},
	SpecMLDSA44:    {ClassicalBits: 128, Algorithm: "ML-DSA-44", NISTLevel: 2, ParameterSet: "44", OID: "2.16.840.1.101.3.4.3.17", Primitives: primSign},
	SpecMLDSA65:    {ClassicalBits: 192, Algorithm: "ML-DSA-65", NISTLevel: 3, ParameterSet: "65", OID: "2.16.840.1.101.3.4.3.18", Primitives: primSign},
	SpecMLDSA87:    {ClassicalBits: 256, CNSA2: true, Algorithm: "ML-DSA-87", NISTLevel: 5, ParameterSet: "87", OID: "2.16.840.1.101.3.4.3.19", Primitives: primSign},
	SpecSLHDSA128S: {ClassicalBits: 128, Algorithm: "SLH-DSA-SHA2-128s", NISTLevel: 1, ParameterSet: "SHA2-128s", OID: "2.16.840.1.101.3.4.3.20", Primitives: primSign},
	SpecSLHDSA128F: {ClassicalBits: 128, Algorithm: "SLH-DSA-SHA2-128f", NISTLevel: 1, ParameterSet: "SHA2-128f", OID: "2.16.840.1.101.3.4.3.21", Primitives: primSign},
}

// SpecProfile returns the inventory and CBOM profile of a key spec.
func SpecProfile(s KeySpec) (Profile, bool) {
	if s == specAES256Alias {
		s = SpecSymmetricDefault
	}
	info, ok := specs[s]
	if !ok {
		return Profile{}, false
	}
	return info.profile, true
}

// specInfo is everything keyflow knows about one key spec. The table below
// is the only place that knows which spec does what: the operations look
// their spec up here instead of switching on names.
type specInfo struct {
	spec       KeySpec
	usages     []KeyUsage
	kind       materialKind
	alg        Algorithm
	pair       hsm.KeyPairSpec
	signing    []SigningAlgorithm
	encryption []EncryptionAlgorithm
	mac        []MACAlgorithm
	// scalarSize is the byte length of r and s in an ECDSA signature.
	scalarSize int
	// pqName is the pqc registry name of a software key.
	pqName string
	// envelopeID is the ciphertext header's algorithm byte of a KEM key
	// (HPKE envelopes).
	envelopeID byte
	// hpkeKEM is the HPKE KEM of a KEM key.
	hpkeKEM func() hpke.KEM
	// profile is the spec's crypto-agility row (see profiles).
	profile Profile
}

var specs = map[KeySpec]*specInfo{
	SpecSymmetricDefault: {spec: SpecSymmetricDefault, usages: []KeyUsage{UsageEncryptDecrypt}, kind: materialAES, alg: AlgAES256GCM,
		encryption: []EncryptionAlgorithm{EncSymmetricDefault}},
	SpecHMAC256: {spec: SpecHMAC256, usages: []KeyUsage{UsageGenerateVerifyMAC}, kind: materialHMAC, alg: AlgHMACSHA256,
		mac: []MACAlgorithm{MACHMACSHA256}},
	SpecRSA3072: rsaSpec(SpecRSA3072, AlgRSA3072, 3072),
	SpecRSA4096: rsaSpec(SpecRSA4096, AlgRSA4096, 4096),
	SpecECCP256: {spec: SpecECCP256, usages: []KeyUsage{UsageSignVerify}, kind: materialKeyPair, alg: AlgECCP256,
		pair: hsm.KeyPairSpec{Algorithm: "EC", Curve: "P-256"}, signing: []SigningAlgorithm{SignECDSASHA256}, scalarSize: 32},
	SpecECCP384: {spec: SpecECCP384, usages: []KeyUsage{UsageSignVerify}, kind: materialKeyPair, alg: AlgECCP384,
		pair: hsm.KeyPairSpec{Algorithm: "EC", Curve: "P-384"}, signing: []SigningAlgorithm{SignECDSASHA384}, scalarSize: 48},
	SpecEd25519: {spec: SpecEd25519, usages: []KeyUsage{UsageSignVerify}, kind: materialKeyPair, alg: AlgEd25519,
		pair: hsm.KeyPairSpec{Algorithm: "ED25519"}, signing: []SigningAlgorithm{SignEd25519SHA512}},
}

func rsaSpec(s KeySpec, alg Algorithm, bits int) *specInfo {
	return &specInfo{spec: s, usages: []KeyUsage{UsageEncryptDecrypt, UsageSignVerify}, kind: materialKeyPair, alg: alg,
		pair: hsm.KeyPairSpec{Algorithm: "RSA", RSABits: bits},
		signing: []SigningAlgorithm{SignRSAPSSSHA256, SignRSAPSSSHA384, SignRSAPSSSHA512,
			SignRSAPKCS1SHA256, SignRSAPKCS1SHA384, SignRSAPKCS1SHA512},
		encryption: []EncryptionAlgorithm{EncRSAOAEPSHA256, EncRSAOAEPSHA1}}
}

// specByAlgorithm finds the spec whose versions hold material alg.
func specByAlgorithm(alg Algorithm) *specInfo {
	for _, s := range specs {
		if s.alg == alg {
			return s
		}
	}
	return nil
}

// Specs lists the key specs keyflow supports, for documentation and CLIs.
func Specs() []KeySpec {
	return []KeySpec{SpecSymmetricDefault, SpecHMAC256, SpecRSA3072, SpecRSA4096, SpecECCP256, SpecECCP384, SpecEd25519,
		SpecMLKEM768, SpecMLKEM1024, SpecXWing, SpecMLDSA44, SpecMLDSA65, SpecMLDSA87, SpecSLHDSA128S, SpecSLHDSA128F}
}

func (s *specInfo) allowsUsage(u KeyUsage) bool {
	for _, x := range s.usages {
		if x == u {
			return true
		}
	}
	return false
}

// signingParams maps a signing algorithm to the HSM scheme and hash.
var signingParams = map[SigningAlgorithm]hsm.SignParams{
	SignECDSASHA256:    {Scheme: hsm.SchemeECDSA, Hash: crypto.SHA256},
	SignECDSASHA384:    {Scheme: hsm.SchemeECDSA, Hash: crypto.SHA384},
	SignECDSASHA512:    {Scheme: hsm.SchemeECDSA, Hash: crypto.SHA512},
	SignRSAPSSSHA256:   {Scheme: hsm.SchemeRSAPSS, Hash: crypto.SHA256},
	SignRSAPSSSHA384:   {Scheme: hsm.SchemeRSAPSS, Hash: crypto.SHA384},
	SignRSAPSSSHA512:   {Scheme: hsm.SchemeRSAPSS, Hash: crypto.SHA512},
	SignRSAPKCS1SHA256: {Scheme: hsm.SchemeRSAPKCS1, Hash: crypto.SHA256},
	SignRSAPKCS1SHA384: {Scheme: hsm.SchemeRSAPKCS1, Hash: crypto.SHA384},
	SignRSAPKCS1SHA512: {Scheme: hsm.SchemeRSAPKCS1, Hash: crypto.SHA512},
	SignEd25519SHA512:  {Scheme: hsm.SchemeEd25519},
}

var oaepHash = map[EncryptionAlgorithm]crypto.Hash{
	EncRSAOAEPSHA256: crypto.SHA256,
	EncRSAOAEPSHA1:   crypto.SHA1,
}

// SpecAlgorithms lists the algorithms a key of spec offers, by kind, for
// transports that describe keys (the AWS KMS API's KeyMetadata). Unknown
// specs have none.
func SpecAlgorithms(spec KeySpec) (enc []EncryptionAlgorithm, sign []SigningAlgorithm, mac []MACAlgorithm) {
	si, ok := specs[spec]
	if !ok {
		return nil, nil, nil
	}
	return slices.Clone(si.encryption), slices.Clone(si.signing), slices.Clone(si.mac)
}
