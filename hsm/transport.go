package hsm

import "context"

// TransportWrapper moves a key version from one HSM to another without the
// material ever leaving either HSM in the clear: it unwraps blob (AES-KWP
// under wrappingKey, as KeyWrapper and MACs make it) into a temporary
// object inside the HSM and wraps that object to the other HSM's RSA
// wrapping public key (publicKeyDER, a DER SubjectPublicKeyInfo) with
// RSA-OAEP, SHA-1 for both the label hash and MGF1 and an empty label,
// which KeyImporter.ImportRSAOAEP with crypto.SHA1 takes on the other side.
// Both temporary objects are destroyed before it returns.
//
// A blob that fails the KWP check returns ErrAuthFailed (wrapped); a
// target or public key keyflow does not move returns ErrInvalidInput.
type TransportWrapper interface {
	WrapForTransport(ctx context.Context, wrappingKey KeyHandle, blob []byte, target ImportTarget, publicKeyDER []byte) ([]byte, error)
}
