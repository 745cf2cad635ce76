package api

// Post-quantum operations on KEY_ENCAPSULATION keys (ML_KEM_768,
// ML_KEM_1024, X_WING):
//
//	kf.v1.<tenant>.crypto.seal         HPKE-encrypt to the key's public key
//	kf.v1.<tenant>.crypto.open         HPKE-decrypt with the key
//	kf.v1.<tenant>.crypto.encapsulate  raw KEM encapsulation
//	kf.v1.<tenant>.crypto.decapsulate  raw KEM decapsulation
//
// Seal and open use HPKE (RFC 9180) in base mode with the key's KEM,
// HKDF-SHA256 and AES-256-GCM, and no additional data: a sealed payload is
// enc || ciphertext, exactly what Go's crypto/hpke.Seal returns. Anyone with
// the public key (crypto.publickey) can seal without asking keyflow; only
// keyflow can open. ML-DSA and SLH-DSA keys sign with crypto.sign and
// SignRequest.SignatureContext.

// Operations.
const (
	OpSeal        = "crypto.seal"
	OpOpen        = "crypto.open"
	OpEncapsulate = "crypto.encapsulate"
	OpDecapsulate = "crypto.decapsulate"
)

// SealRequest asks to HPKE-encrypt Plaintext to KeyID's primary version.
type SealRequest struct {
	KeyID     string `json:"keyId"`
	Plaintext []byte `json:"plaintext"`
	// Info is the HPKE info string; open needs the same.
	Info []byte `json:"info,omitempty"`
}

// SealReply is the sealed payload: enc || ciphertext.
type SealReply struct {
	KeyID      string `json:"keyId"`
	KeyVersion uint32 `json:"keyVersion"`
	Sealed     []byte `json:"sealed"`
}

// OpenRequest asks to open a payload sealed to KeyID (by seal, or by anyone
// with the public key). It carries no header, so every version that may
// decrypt is tried, newest first.
type OpenRequest struct {
	KeyID  string `json:"keyId"`
	Sealed []byte `json:"sealed"`
	Info   []byte `json:"info,omitempty"`
}

// OpenReply is the plaintext and the version that opened it.
type OpenReply struct {
	KeyID      string `json:"keyId"`
	KeyVersion uint32 `json:"keyVersion"`
	Plaintext  []byte `json:"plaintext"`
}

// EncapsulateRequest asks for a fresh shared secret encapsulated to KeyID's
// primary version.
type EncapsulateRequest struct {
	KeyID string `json:"keyId"`
}

// EncapsulateReply is the KEM ciphertext and the shared secret it carries.
type EncapsulateReply struct {
	KeyID        string `json:"keyId"`
	KeyVersion   uint32 `json:"keyVersion"`
	Ciphertext   []byte `json:"ciphertext"`
	SharedSecret []byte `json:"sharedSecret"`
}

// DecapsulateRequest asks for the shared secret in a KEM ciphertext.
// KeyVersion 0 means the primary version.
type DecapsulateRequest struct {
	KeyID      string `json:"keyId"`
	KeyVersion uint32 `json:"keyVersion,omitempty"`
	Ciphertext []byte `json:"ciphertext"`
}

// DecapsulateReply is the shared secret. ML-KEM rejects implicitly: a
// ciphertext of the right length that was not made for this key yields an
// unrelated secret, not an error.
type DecapsulateReply struct {
	KeyID        string `json:"keyId"`
	KeyVersion   uint32 `json:"keyVersion"`
	SharedSecret []byte `json:"sharedSecret"`
}
