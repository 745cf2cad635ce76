package kms

// Temporary until hsm.ECDSASigToDER / ECDSASigFromDER land (strict DER).

import (
	"encoding/asn1"
	"errors"
	"math/big"
)

func ecdsaSigToDER(p1363 []byte) ([]byte, error) {
	n := len(p1363) / 2
	return asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(p1363[:n]), new(big.Int).SetBytes(p1363[n:])})
}

func ecdsaSigFromDER(der []byte, size int) ([]byte, error) {
	var sig struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &sig)
	if err != nil || len(rest) != 0 || sig.R.Sign() <= 0 || sig.S.Sign() <= 0 || sig.R.BitLen() > size*8 || sig.S.BitLen() > size*8 {
		return nil, errors.New("malformed signature")
	}
	out := make([]byte, 2*size)
	sig.R.FillBytes(out[:size])
	sig.S.FillBytes(out[size:])
	return out, nil
}
