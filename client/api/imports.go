package api

import "time"

// BYOK (External Key Origination) operations, on the control plane:
//
//	kf.v1.<tenant>.keys.importparams   a wrapping public key and an import token
//	kf.v1.<tenant>.keys.import         import wrapped key material
//	kf.v1.<tenant>.keys.deleteimport   delete imported key material now
const (
	OpKeyImportParams = "keys.importparams"
	OpKeyImport       = "keys.import"
	OpKeyDeleteImport = "keys.deleteimport"
)

// ImportParamsRequest asks for import parameters for an EXTERNAL key.
type ImportParamsRequest struct {
	KeyID string `json:"keyId"`
	// WrappingAlgorithm: RSAES_OAEP_SHA_256, RSAES_OAEP_SHA_1,
	// RSA_AES_KEY_WRAP_SHA_256, RSA_AES_KEY_WRAP_SHA_1 or XWING_HPKE.
	WrappingAlgorithm string `json:"wrappingAlgorithm"`
	// WrappingKeySpec: RSA_3072 (default) or RSA_4096; X_WING for
	// XWING_HPKE.
	WrappingKeySpec string `json:"wrappingKeySpec,omitempty"`
}

// ImportParamsReply is a wrapping public key and the import token that
// goes with it.
type ImportParamsReply struct {
	KeyID             string `json:"keyId"`
	WrappingAlgorithm string `json:"wrappingAlgorithm"`
	WrappingKeySpec   string `json:"wrappingKeySpec"`
	// PublicKey is DER SubjectPublicKeyInfo (RSA) or the raw X-Wing
	// public key.
	PublicKey         []byte    `json:"publicKey"`
	ImportToken       []byte    `json:"importToken"`
	ParametersValidTo time.Time `json:"parametersValidTo"`
}

// ImportRequest imports wrapped key material into an EXTERNAL key.
type ImportRequest struct {
	KeyID                string `json:"keyId"`
	EncryptedKeyMaterial []byte `json:"encryptedKeyMaterial"`
	ImportToken          []byte `json:"importToken"`
	// WrappingAlgorithm, when given, must be the token's.
	WrappingAlgorithm string `json:"wrappingAlgorithm,omitempty"`
	// ValidTo makes the material expire (KEY_MATERIAL_EXPIRES); absent,
	// it does not.
	ValidTo *time.Time `json:"validTo,omitempty"`
}

// ImportReply reports an import.
type ImportReply struct {
	KeyMetadata KeyMetadata `json:"keyMetadata"`
	ImportID    string      `json:"importId"`
	// Reimport is true when the same material had been imported before.
	Reimport bool `json:"reimport"`
	// WorkflowID is the expiry workflow's ID, for expiring material.
	WorkflowID string `json:"workflowId,omitempty"`
}
