package hsm

import "context"

// GCMLongIVSize is the one other AES-GCM IV length keyflow accepts, and only
// to open ciphertexts: the AWS KMS External Key Store proxy API lets an
// external key manager have made a ciphertext under a 16-byte (128-bit) IV,
// which keyflow must then be able to decrypt. keyflow itself always
// encrypts under a 12-byte IV drawn in Go (GCMIVSize).
const GCMLongIVSize = 16

// GCMLongIVDecrypter is the optional ability to open AES-GCM ciphertexts
// made under a 16-byte IV. A 16-byte GCM IV is hashed (GHASH) into the
// initial counter block, so it is as safe as a 12-byte one for decryption;
// there is deliberately no matching encrypt method.
//
// DecryptGCMLongIV behaves as AEAD.DecryptGCM except that iv must be
// exactly GCMLongIVSize bytes (any other length is ErrInvalidInput).
type GCMLongIVDecrypter interface {
	DecryptGCMLongIV(ctx context.Context, key KeyHandle, iv, ciphertext, aad []byte) ([]byte, error)
}
