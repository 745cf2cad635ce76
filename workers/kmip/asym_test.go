package kmip_test

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"slices"
	"strings"
	"testing"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/kmip/ttlv"
)

const (
	opCreateKeyPair, opRekey, opSign, opSignatureVerify = 0x02, 0x04, 0x21, 0x22

	tCommonTemplate    ttlv.Tag = 0x42001F
	tPrivateKeyUID     ttlv.Tag = 0x420066
	tPublicKeyUID      ttlv.Tag = 0x42006F
	tPublicKey         ttlv.Tag = 0x42006D
	tCryptoParameters  ttlv.Tag = 0x42002B
	tSignatureData     ttlv.Tag = 0x4200C3
	tValidityIndicator ttlv.Tag = 0x42009B
	tDigitalSignature  ttlv.Tag = 0x4200AE
)

// TestKeyPairSignVerify: Create Key Pair makes one keyflow ECC key seen as
// a Private and a Public Key; Sign with the private key, Signature Verify
// with the public one; Get of the public key is its X.509 SPKI and the
// signature verifies with Go's crypto/ecdsa; Get of the private key is
// refused.
func TestKeyPairSignVerify(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t, f.principal(t, "alpha", "app"))
	p := c.must(opCreateKeyPair, ttlv.Struct(tCommonTemplate,
		attribute("Cryptographic Algorithm", ttlv.Enum(0, 6)), attribute("Cryptographic Length", ttlv.Int(0, 256)),
		attribute("Cryptographic Usage Mask", ttlv.Int(0, 0x03)), nameAttr("signer")))
	priv, _ := p.TextOf(tPrivateKeyUID)
	pub, _ := p.TextOf(tPublicKeyUID)
	if pub != priv+"/public" {
		t.Fatalf("key pair IDs %q / %q", priv, pub)
	}
	k, err := f.bed.KMS.GetKey(t.Context(), kms.Caller{Tenant: "alpha", Principal: "t"}, priv)
	if err != nil || k.Spec != kms.SpecECCP256 {
		t.Fatalf("the key pair is not an ECC_NIST_P256 keyflow key: %v", err)
	}
	msg := []byte("firmware image v2")
	p = c.must(opSign, uidItem(priv), ttlv.Struct(tCryptoParameters, ttlv.Enum(tDigitalSignature, 0x0E)), ttlv.Bytes(tData, msg))
	sig, _ := p.BytesOf(tSignatureData)
	p = c.must(opSignatureVerify, uidItem(pub), ttlv.Bytes(tData, msg), ttlv.Bytes(tSignatureData, sig))
	if v, _ := p.EnumOf(tValidityIndicator); v != 1 {
		t.Errorf("validity = %d, want Valid", v)
	}
	p = c.must(opSignatureVerify, uidItem(pub), ttlv.Bytes(tData, []byte("firmware image v3")), ttlv.Bytes(tSignatureData, sig))
	if v, _ := p.EnumOf(tValidityIndicator); v != 2 {
		t.Errorf("validity of a wrong message = %d, want Invalid", v)
	}
	p = c.must(opGet, uidItem(pub))
	der, _ := p.Find(tPublicKey).Find(tKeyBlock).Find(tKeyValue).BytesOf(tKeyMaterial)
	pk, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(msg)
	if !ecdsa.VerifyASN1(pk.(*ecdsa.PublicKey), h[:], sig) {
		t.Error("the KMIP signature does not verify with the KMIP public key in crypto/ecdsa")
	}
	if r := c.do(opGet, uidItem(priv)); r.reason != reasonPermissionDenied {
		t.Errorf("Get of a private key: %v", r)
	}
	p = c.must(opLocate, attribute("Object Type", ttlv.Enum(0, 3)))
	if ids := texts(p.All(tUniqueIdentifier)); !slices.Equal(ids, []string{pub}) {
		t.Errorf("Locate public keys = %v", ids)
	}
	p = c.must(opGetAttributes, uidItem(pub), ttlv.Text(tAttributeName, "Object Type"))
	if v, _ := p.Find(tAttribute).EnumOf(tAttributeValue); v != 3 {
		t.Errorf("object type of the public key = %d", v)
	}
	// Revoking the public key revokes the pair: one key, one lifecycle.
	c.must(opRevoke, uidItem(pub), ttlv.Struct(tRevocationReason, ttlv.Enum(tRevocationCode, 5)))
	if got := c.stateOf(priv); got != 3 {
		t.Errorf("private key state after revoking the public key = %d", got)
	}
	if r := c.do(opCreateKeyPair, ttlv.Struct(tCommonTemplate, attribute("Cryptographic Algorithm", ttlv.Enum(0, 4)), attribute("Cryptographic Length", ttlv.Int(0, 1024)))); r.reason != reasonInvalidField {
		t.Errorf("RSA-1024: %v", r)
	}
}

// TestRekey: Re-key rotates (a new primary version), old ciphertexts still
// decrypt; under a tenant policy that puts rotation under dual control it
// waits for approval instead.
func TestRekey(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t, f.principal(t, "alpha", "app"))
	id := c.createAES()
	p := c.must(opEncrypt, uidItem(id), ttlv.Bytes(tData, []byte("old")))
	old, _ := p.BytesOf(tData)
	p = c.must(opRekey, uidItem(id))
	if got, _ := p.TextOf(tUniqueIdentifier); got != id {
		t.Errorf("Re-key returned %q; keyflow keeps the key ID", got)
	}
	k, _ := f.bed.KMS.GetKey(t.Context(), kms.Caller{Tenant: "alpha", Principal: "t"}, id)
	if k.PrimaryVersion != 2 {
		t.Errorf("primary version after Re-key = %d", k.PrimaryVersion)
	}
	c.must(opDecrypt, uidItem(id), ttlv.Bytes(tData, old))

	// Dual control on deletion: Destroy waits for an approval.
	admin := kms.Caller{Tenant: "alpha", Principal: "tadmin", Roles: []string{"tenant-admin"}}
	if _, err := f.bed.KMS.SetTenantPolicy(t.Context(), admin, &kms.TenantPolicy{Approvals: []kms.ApprovalRule{{Operation: kms.ApprovalScheduleDeletion, Required: 2}}}); err != nil {
		t.Fatal(err)
	}
	r := c.do(opDestroy, uidItem(id))
	if r.ok() || !strings.Contains(r.message, "approval") {
		t.Errorf("Destroy under dual control: %v", r)
	}
	if len(f.life.keys) != 0 {
		t.Error("the deletion started without approval")
	}
	if len(f.bed.EventsOfType("alpha", events.TypeApprovalRequested)) != 1 {
		t.Error("no approval was requested")
	}
}
