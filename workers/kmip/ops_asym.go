package kmip

import (
	"context"
	"fmt"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/kmip/ttlv"
)

// Key pairs. A keyflow asymmetric key (RSA_3072, RSA_4096, ECC_NIST_P256,
// ECC_NIST_P384) is two KMIP objects: the Private Key, whose Unique
// Identifier is the key ID, and the Public Key, "<key ID>/public". They
// share one lifecycle (Activate, Revoke or Destroy either and the key
// changes). Get of the Public Key returns its X.509 SubjectPublicKeyInfo;
// Get of the Private Key is refused (keyflow keys are non-extractable).

const (
	tagLinkType               ttlv.Tag = 0x42004B
	tagLinkedObjectIdentifier ttlv.Tag = 0x42004C
)

// isPair reports whether k is an asymmetric key that KMIP sees as a pair.
func isPair(k *kms.Key) bool {
	switch k.Spec {
	case kms.SpecRSA3072, kms.SpecRSA4096, kms.SpecECCP256, kms.SpecECCP384:
		return true
	}
	return false
}

// pairAttributes are the algorithm, length and usage mask of one half.
func pairAttributes(k *kms.Key, public bool) (alg uint32, length int32, mask int32) {
	switch k.Spec {
	case kms.SpecRSA3072:
		alg, length = algRSA, 3072
	case kms.SpecRSA4096:
		alg, length = algRSA, 4096
	case kms.SpecECCP256:
		alg, length = algECDSA, 256
	default:
		alg, length = algECDSA, 384
	}
	switch {
	case k.Usage == kms.UsageEncryptDecrypt && public:
		mask = usageEncrypt
	case k.Usage == kms.UsageEncryptDecrypt:
		mask = usageDecrypt
	case public:
		mask = usageVerify
	default:
		mask = usageSign
	}
	return alg, length, mask
}

// pairSpec maps a Create Key Pair template to a keyflow spec and usage.
func (t *template) pairSpec() (kms.KeySpec, kms.KeyUsage, error) {
	usage := kms.UsageSignVerify
	if t.mask&int64(usageEncrypt|usageDecrypt) != 0 && t.mask&int64(usageSign|usageVerify) == 0 {
		usage = kms.UsageEncryptDecrypt
	}
	switch {
	case t.alg == int64(algRSA) && t.length == 3072:
		return kms.SpecRSA3072, usage, nil
	case t.alg == int64(algRSA) && t.length == 4096:
		return kms.SpecRSA4096, usage, nil
	case t.alg == int64(algRSA):
		return "", "", invalid("keyflow RSA keys are 3072 or 4096 bits, not %d", t.length)
	case (t.alg == int64(algECDSA) || t.alg == int64(algEC)) && (t.curve == curveP256 || (t.curve == 0 && t.length == 256)):
		return kms.SpecECCP256, kms.UsageSignVerify, nil
	case (t.alg == int64(algECDSA) || t.alg == int64(algEC)) && (t.curve == curveP384 || (t.curve == 0 && t.length == 384)):
		return kms.SpecECCP384, kms.UsageSignVerify, nil
	}
	return "", "", &opError{reasonFeatureNotSupported, "keyflow key pairs are RSA 3072/4096 and ECDSA P-256/P-384"}
}

func (s *Server) createKeyPair(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	if err := s.authorize(ctx, cl, cl.op); err != nil {
		return ttlv.Item{}, err
	}
	t, err := parseTemplate(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	if t.exportable {
		return ttlv.Item{}, &opError{reasonPermissionDenied, "key pairs cannot be exportable: keyflow private keys are non-extractable"}
	}
	spec, usage, err := t.pairSpec()
	if err != nil {
		return ttlv.Item{}, err
	}
	k, err := s.o.KMS.CreateKey(ctx, cl.c, kms.CreateKeyParams{Spec: spec, Usage: usage, ActivationDate: t.activation, Attributes: t.attrs})
	if err != nil {
		return ttlv.Item{}, err
	}
	s.keyChanged(ctx, cl.c, k)
	return payload(ttlv.Text(tagPrivateKeyUniqueIdentifier, k.ID), ttlv.Text(tagPublicKeyUniqueIdentifier, k.ID+publicSuffix)), nil
}

// getPublic answers Get of a Public Key: its SubjectPublicKeyInfo.
func (s *Server) getPublic(ctx context.Context, cl call, id string) (ttlv.Item, error) {
	res, err := s.o.KMS.GetPublicKey(ctx, cl.c, id, 0)
	if err != nil {
		return ttlv.Item{}, err
	}
	alg, length, _ := pairAttributes(&kms.Key{Spec: res.KeySpec, Usage: res.KeyUsage}, true)
	block := ttlv.Struct(tagKeyBlock,
		ttlv.Enum(tagKeyFormatType, fmtX509),
		ttlv.Struct(tagKeyValue, ttlv.Bytes(tagKeyMaterial, res.PublicKeyDER)),
		ttlv.Enum(tagCryptographicAlgorithm, alg),
		ttlv.Int(tagCryptographicLength, length))
	return payload(ttlv.Enum(tagObjectType, objPublicKey), ttlv.Text(tagUniqueIdentifier, res.KeyID+publicSuffix), ttlv.Struct(tagPublicKey, block)), nil
}

// signingAlgorithm maps KMIP's Cryptographic Parameters to keyflow's
// signing algorithm for the key's spec: a Digital Signature Algorithm, or
// a Hashing Algorithm and Padding Method; SHA-256 (P-384: SHA-384) and,
// for RSA, PKCS#1 v1.5 by default.
func signingAlgorithm(spec kms.KeySpec, cp *ttlv.Item) (kms.SigningAlgorithm, error) {
	hash, _ := cp.EnumOf(tagHashingAlgorithm)
	pad, _ := cp.EnumOf(tagPaddingMethod)
	if dsa, ok := cp.EnumOf(tagDigitalSignatureAlgorithm); ok {
		switch dsa {
		case dsaECDSASHA256, dsaSHA256RSA:
			hash = hashSHA256
		case dsaECDSASHA384, dsaSHA384RSA:
			hash = hashSHA384
		case dsaECDSASHA512, dsaSHA512RSA:
			hash = hashSHA512
		case dsaRSASSAPSS:
			pad = padPSS
		default:
			return "", &opError{reasonFeatureNotSupported, fmt.Sprintf("digital signature algorithm 0x%02x is not one keyflow signs with", dsa)}
		}
		if dsa == dsaSHA256RSA || dsa == dsaSHA384RSA || dsa == dsaSHA512RSA {
			pad = padPKCS1v15
		}
	}
	suffix := map[uint32]string{0: "", hashSHA256: "SHA_256", hashSHA384: "SHA_384", hashSHA512: "SHA_512"}[hash]
	if hash != 0 && suffix == "" {
		return "", &opError{reasonFeatureNotSupported, "keyflow signs with SHA-256, SHA-384 or SHA-512"}
	}
	switch spec {
	case kms.SpecECCP256, kms.SpecECCP384:
		if suffix == "" {
			suffix = map[kms.KeySpec]string{kms.SpecECCP256: "SHA_256", kms.SpecECCP384: "SHA_384"}[spec]
		}
		return kms.SigningAlgorithm("ECDSA_" + suffix), nil
	case kms.SpecRSA3072, kms.SpecRSA4096:
		if suffix == "" {
			suffix = "SHA_256"
		}
		if pad == padPSS {
			return kms.SigningAlgorithm("RSASSA_PSS_" + suffix), nil
		}
		return kms.SigningAlgorithm("RSASSA_PKCS1_V1_5_" + suffix), nil
	}
	return "", &opError{reasonIllegalOperation, "this object is not a signing key"}
}

// signInput reads Sign and Signature Verify.
func (s *Server) signInput(ctx context.Context, cl call, p *ttlv.Item) (*kms.Key, kms.SigningAlgorithm, []byte, error) {
	id, data, err := keyData(p)
	if err != nil {
		return nil, "", nil, err
	}
	if err := s.authorize(ctx, cl, cl.op, id); err != nil {
		return nil, "", nil, err
	}
	k, err := s.o.KMS.GetKey(ctx, cl.c, id)
	if err != nil {
		return nil, "", nil, err
	}
	alg, err := signingAlgorithm(k.Spec, p.Find(tagCryptographicParameters))
	return k, alg, data, err
}

func (s *Server) sign(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	k, alg, data, err := s.signInput(ctx, cl, p)
	if err != nil {
		return ttlv.Item{}, err
	}
	res, err := s.o.KMS.Sign(ctx, cl.c, kms.SignParams{KeyRef: k.ID, Message: data, MessageType: kms.MessageRaw, Algorithm: alg})
	if err != nil {
		return ttlv.Item{}, err
	}
	return payload(ttlv.Text(tagUniqueIdentifier, res.KeyID), ttlv.Bytes(tagSignatureData, res.Signature)), nil
}

func (s *Server) signatureVerify(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	k, alg, data, err := s.signInput(ctx, cl, p)
	if err != nil {
		return ttlv.Item{}, err
	}
	sig, ok := p.BytesOf(tagSignatureData)
	if !ok {
		return ttlv.Item{}, missing("Signature Data")
	}
	validity := validityValid
	_, err = s.o.KMS.Verify(ctx, cl.c, kms.VerifyParams{KeyRef: k.ID, Message: data, MessageType: kms.MessageRaw, Algorithm: alg, Signature: sig})
	switch {
	case kms.CodeOf(err) == kms.CodeInvalidSignature:
		validity = validityInvalid
	case err != nil:
		return ttlv.Item{}, err
	}
	id, _ := p.TextOf(tagUniqueIdentifier)
	return payload(ttlv.Text(tagUniqueIdentifier, id), ttlv.Enum(tagValidityIndicator, validity)), nil
}
