package kmip

import (
	"context"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/kmip/ttlv"
)

// Encrypt, Decrypt and MAC.

// keyData reads the Unique Identifier and the Data of a crypto operation.
func keyData(p *ttlv.Item) (string, []byte, error) {
	id, err := uid(p)
	if err != nil {
		return "", nil, err
	}
	data, ok := p.BytesOf(tagData)
	if !ok {
		return "", nil, missing("Data")
	}
	return id, data, nil
}

// cryptoInput reads and authorizes the key, the data and the parameters
// of Encrypt and Decrypt. keyflow uses AES-256-GCM in its own ciphertext envelope
// (IV and tag inside), so a client-chosen IV or mode is refused.
func (s *Server) cryptoInput(ctx context.Context, cl call, p *ttlv.Item) (string, []byte, error) {
	id, data, err := keyData(p)
	if err != nil {
		return "", nil, err
	}
	if m, ok := p.Find(tagCryptographicParameters).EnumOf(tagBlockCipherMode); ok && m != modeGCM {
		return "", nil, &opError{reasonFeatureNotSupported, "keyflow encrypts with AES-256-GCM in its own envelope; leave out Block Cipher Mode or ask for GCM"}
	}
	if _, ok := p.BytesOf(tagIVCounterNonce); ok {
		return "", nil, &opError{reasonFeatureNotSupported, "keyflow draws its own IVs and keeps them in the ciphertext; leave out the IV"}
	}
	return id, data, s.authorize(ctx, cl, cl.op, id)
}

func (s *Server) encrypt(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	id, data, err := s.cryptoInput(ctx, cl, p)
	if err != nil {
		return ttlv.Item{}, err
	}
	res, err := s.o.KMS.Encrypt(ctx, cl.c, kms.EncryptParams{KeyRef: id, Plaintext: data})
	if err != nil {
		return ttlv.Item{}, err
	}
	return payload(ttlv.Text(tagUniqueIdentifier, res.KeyID), ttlv.Bytes(tagData, res.Ciphertext)), nil
}

func (s *Server) decrypt(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	id, data, err := s.cryptoInput(ctx, cl, p)
	if err != nil {
		return ttlv.Item{}, err
	}
	res, err := s.o.KMS.Decrypt(ctx, cl.c, kms.DecryptParams{KeyRef: id, Ciphertext: data})
	if err != nil {
		return ttlv.Item{}, err
	}
	return payload(ttlv.Text(tagUniqueIdentifier, res.KeyID), ttlv.Bytes(tagData, res.Plaintext)), nil
}

// macInput reads and authorizes MAC and MAC Verify: the key, the data and
// the algorithm (HMAC-SHA256 only).
func (s *Server) macInput(ctx context.Context, cl call, p *ttlv.Item) (string, []byte, error) {
	id, data, err := keyData(p)
	if err != nil {
		return "", nil, err
	}
	if a, ok := p.Find(tagCryptographicParameters).EnumOf(tagCryptographicAlgorithm); ok && a != algHMACSHA256 {
		return "", nil, &opError{reasonFeatureNotSupported, "keyflow computes HMAC-SHA256 MACs"}
	}
	return id, data, s.authorize(ctx, cl, cl.op, id)
}

func (s *Server) mac(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	id, data, err := s.macInput(ctx, cl, p)
	if err != nil {
		return ttlv.Item{}, err
	}
	res, err := s.o.KMS.GenerateMac(ctx, cl.c, kms.MACParams{KeyRef: id, Message: data, Algorithm: kms.MACHMACSHA256})
	if err != nil {
		return ttlv.Item{}, err
	}
	return payload(ttlv.Text(tagUniqueIdentifier, res.KeyID), ttlv.Bytes(tagMACData, res.MAC)), nil
}

// macVerify answers Validity Indicator Valid or Invalid.
func (s *Server) macVerify(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	id, data, err := s.macInput(ctx, cl, p)
	if err != nil {
		return ttlv.Item{}, err
	}
	tag, ok := p.BytesOf(tagMACData)
	if !ok {
		return ttlv.Item{}, missing("MAC Data")
	}
	validity := validityValid
	_, err = s.o.KMS.VerifyMac(ctx, cl.c, kms.MACParams{KeyRef: id, Message: data, Algorithm: kms.MACHMACSHA256, MAC: tag})
	switch {
	case kms.CodeOf(err) == kms.CodeInvalidMAC:
		validity = validityInvalid
	case err != nil:
		return ttlv.Item{}, err
	}
	return payload(ttlv.Text(tagUniqueIdentifier, id), ttlv.Enum(tagValidityIndicator, validity)), nil
}
