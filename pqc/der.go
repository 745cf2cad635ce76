package pqc

import (
	"encoding/asn1"
	"fmt"
)

// subjectPublicKeyInfo is RFC 5280's SubjectPublicKeyInfo. The LAMPS
// specifications for ML-KEM, ML-DSA (RFC 9881) and SLH-DSA, and the X-Wing
// draft, all require the AlgorithmIdentifier parameters to be absent, so the
// struct has no parameters field at all.
type subjectPublicKeyInfo struct {
	Algorithm struct {
		Algorithm asn1.ObjectIdentifier
	}
	PublicKey asn1.BitString
}

// PublicKeyDER returns pub, a public key of algorithm alg, as a DER-encoded
// SubjectPublicKeyInfo carrying the algorithm's standard OID. The key must
// have the right length and decode; an ML-KEM key must also pass the FIPS 203
// modulus check.
func PublicKeyDER(alg string, pub []byte) ([]byte, error) {
	a := spkiAlgorithmByName(alg)
	if a == nil {
		return nil, fmt.Errorf("pqc: failed to encode public key for %q: %w", alg, ErrUnknownAlgorithm)
	}
	if err := a.checkPublicKey(pub); err != nil {
		return nil, err
	}
	var spki subjectPublicKeyInfo
	spki.Algorithm.Algorithm = a.objectIdentifier()
	spki.PublicKey = asn1.BitString{Bytes: pub, BitLength: 8 * len(pub)}
	der, err := asn1.Marshal(spki)
	if err != nil {
		return nil, fmt.Errorf("pqc: failed to encode %s public key: %w", alg, err)
	}
	return der, nil
}

// spkiAlgorithm is what every registered algorithm knows about its public
// keys beyond the KEM and Signer interfaces.
type spkiAlgorithm interface {
	objectIdentifier() asn1.ObjectIdentifier
	checkPublicKey(pub []byte) error
}

func spkiAlgorithmByName(name string) spkiAlgorithm {
	for _, k := range kems {
		if k.Name() == name {
			return k.(spkiAlgorithm)
		}
	}
	for _, s := range signers {
		if s.Name() == name {
			return s.(spkiAlgorithm)
		}
	}
	return nil
}
