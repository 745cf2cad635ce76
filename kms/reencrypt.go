package kms

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"

	"github.com/keyflow/keyflow/events"
)

// ReEncryptParams are the inputs of ReEncrypt. DestinationKeyRef defaults
// to the source key, which re-encrypts under its current primary version.
type ReEncryptParams struct {
	Ciphertext         []byte
	SourceContext      EncryptionContext
	SourceKeyRef       string
	DestinationKeyRef  string
	DestinationContext EncryptionContext
}

// ReEncryptResult is the new ciphertext and where it came from.
type ReEncryptResult struct {
	SourceKeyID      string
	SourceKeyVersion uint32
	KeyID            string
	KeyVersion       uint32
	Ciphertext       []byte
}

// ReEncrypt decrypts and re-encrypts inside keyflow, so the plaintext never
// reaches the caller. It works on symmetric ciphertexts (with a header).
func (s *Service) ReEncrypt(ctx context.Context, c Caller, p ReEncryptParams) (*ReEncryptResult, error) {
	return s.reencryptOne(ctx, c, reencryptInput{
		ciphertext: p.Ciphertext, sourceContext: p.SourceContext, sourceKeyRef: p.SourceKeyRef,
		destinationKeyRef: p.DestinationKeyRef, destinationContext: p.DestinationContext,
	})
}

// reencryptOne is one audited re-encryption (ReEncrypt, and each item of
// Rewrap).
func (s *Service) reencryptOne(ctx context.Context, c Caller, in reencryptInput) (res *ReEncryptResult, err error) {
	var src, dst *Key
	defer s.finish(ctx, c, events.TypeReEncrypt, &err, func() (string, map[string]any) {
		subject, data := "", map[string]any{"ciphertextBytes": len(in.ciphertext)}
		if dst != nil {
			subject = dst.ResourceName()
		}
		if src != nil {
			data["sourceKey"] = src.ResourceName()
		}
		if res != nil {
			data["sourceKeyVersion"], data["keyVersion"] = res.SourceKeyVersion, res.KeyVersion
		}
		return subject, data
	}, func() {
		res = nil
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	src, dst, res, err = s.reencrypt(ctx, c, in)
	return res, err
}

// reencryptInput is one ciphertext to move. sourceAlgorithm is set for raw
// RSA-OAEP ciphertexts (then sourceKeyRef is required); destination may be
// a resolved key, which saves a lookup per item in a batch.
type reencryptInput struct {
	ciphertext         []byte
	sourceContext      EncryptionContext
	sourceKeyRef       string
	sourceAlgorithm    EncryptionAlgorithm
	destinationKeyRef  string
	destination        *Key
	destinationContext EncryptionContext
	allowCompromised   bool // open under a COMPROMISED version (remediation)
}

// reencrypt is the shared body of ReEncrypt, Rewrap and the registry
// rewrap: open under the source, seal under the destination's primary
// version, zero the plaintext in between. It records nothing; its callers
// do.
func (s *Service) reencrypt(ctx context.Context, c Caller, in reencryptInput) (src, dst *Key, res *ReEncryptResult, err error) {
	if err := in.sourceContext.validate(); err != nil {
		return nil, nil, nil, err
	}
	if err := in.destinationContext.validate(); err != nil {
		return nil, nil, nil, err
	}
	var pt []byte
	var srcVer uint32
	if in.sourceAlgorithm != "" && in.sourceAlgorithm != EncSymmetricDefault {
		src, pt, srcVer, err = s.rsaDecrypt(ctx, c, in.sourceKeyRef, in.sourceAlgorithm, in.ciphertext)
	} else {
		src, pt, srcVer, err = s.open(ctx, c.Tenant, in.sourceKeyRef, in.ciphertext, in.sourceContext, processOf(in.allowCompromised))
	}
	if err != nil {
		return src, nil, nil, err
	}
	defer clear(pt)
	dst = src
	switch {
	case in.destination != nil:
		dst = in.destination
	case in.destinationKeyRef != "":
		if dst, err = s.cachedKey(ctx, c.Tenant, in.destinationKeyRef); err != nil {
			return src, nil, nil, err
		}
	}
	ct, ver, err := s.sealWith(ctx, dst, c.Tenant, pt, in.destinationContext)
	if err != nil {
		return src, dst, nil, err
	}
	return src, dst, &ReEncryptResult{SourceKeyID: src.ID, SourceKeyVersion: srcVer, KeyID: dst.ID, KeyVersion: ver, Ciphertext: ct}, nil
}

// DataKeyPairSpecs are the key pair specs GenerateDataKeyPair offers.
var DataKeyPairSpecs = []KeySpec{SpecECCP256, SpecRSA3072}

// DataKeyPairParams are the inputs of GenerateDataKeyPair.
type DataKeyPairParams struct {
	KeyRef      string
	KeyPairSpec KeySpec
	Context     EncryptionContext
	// WithoutPlaintext returns only the public key and the encrypted
	// private key.
	WithoutPlaintext bool
}

// DataKeyPairResult is a key pair for the caller's own use.
type DataKeyPairResult struct {
	KeyID                    string
	KeyVersion               uint32
	KeyPairSpec              KeySpec
	PublicKey                []byte // DER SubjectPublicKeyInfo
	PrivateKeyPlaintext      []byte // DER PKCS#8; the caller zeroes it
	PrivateKeyCiphertextBlob []byte // PKCS#8 encrypted under the KMS key
}

// GenerateDataKeyPair makes a key pair for client-side use and returns the
// private key encrypted under a symmetric key. The pair is generated in Go
// from crypto/rand, because its private key is handed to the caller anyway;
// the HSM protects the encrypted copy.
func (s *Service) GenerateDataKeyPair(ctx context.Context, c Caller, p DataKeyPairParams) (res *DataKeyPairResult, err error) {
	var k *Key
	defer s.finish(ctx, c, events.TypeGenerateDataKeyPair, &err, func() (string, map[string]any) {
		subject, data := "", map[string]any{"keyPairSpec": truncate(string(p.KeyPairSpec), 64), "withoutPlaintext": p.WithoutPlaintext}
		if k != nil {
			subject = k.ResourceName()
		}
		if res != nil {
			data["keyVersion"] = res.KeyVersion
		}
		return subject, data
	}, func() {
		if res != nil {
			clear(res.PrivateKeyPlaintext)
			res = nil
		}
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if err := p.Context.validate(); err != nil {
		return nil, err
	}
	if p.KeyPairSpec != SpecECCP256 && p.KeyPairSpec != SpecRSA3072 {
		return nil, newError(CodeValidation, "key pair spec must be one of %v", DataKeyPairSpecs)
	}
	// Look the key up before spending CPU on a key pair (RSA-3072 takes
	// tens of milliseconds).
	if k, err = s.cachedKey(ctx, c.Tenant, p.KeyRef); err != nil {
		return nil, err
	}
	var priv crypto.Signer
	if p.KeyPairSpec == SpecECCP256 {
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	} else {
		priv, err = rsa.GenerateKey(rand.Reader, 3072)
	}
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to generate the key pair")
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to encode the private key")
	}
	pub, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		clear(der)
		return nil, wrapError(CodeInternal, err, "failed to encode the public key")
	}
	ct, ver, err := s.sealWith(ctx, k, c.Tenant, der, p.Context)
	if err != nil {
		clear(der)
		return nil, err
	}
	res = &DataKeyPairResult{KeyID: k.ID, KeyVersion: ver, KeyPairSpec: p.KeyPairSpec, PublicKey: pub, PrivateKeyCiphertextBlob: ct}
	if p.WithoutPlaintext {
		clear(der)
	} else {
		res.PrivateKeyPlaintext = der
	}
	return res, nil
}
