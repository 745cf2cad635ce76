package kms_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"testing"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/cloudfake"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// An exportable RSA or EC key pair signs (and decrypts) in the HSM like
// any key pair, and leaves only through WrapForCloud, as its PKCS#8 under
// RSA-AES key wrap: the private key opened here has keyflow's public key,
// and signs what keyflow verifies (and decrypts what keyflow encrypts).
// The refusals: RSA-OAEP cannot carry it, ExportKey does not release it,
// and an Ed25519 or registered pair cannot be exportable.
func TestWrapForCloudKeyPair(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	c := kms.Caller{Tenant: "alpha", Principal: "alice", RequestID: "r1"}
	wrapPriv, _ := rsa.GenerateKey(rand.Reader, 3072)
	wrapDER, _ := x509.MarshalPKIXPublicKey(&wrapPriv.PublicKey)
	for _, tc := range []struct {
		spec  kms.KeySpec
		usage kms.KeyUsage
		alg   kms.SigningAlgorithm
		hash  crypto.Hash
	}{
		{kms.SpecRSA3072, kms.UsageSignVerify, kms.SignRSAPKCS1SHA256, crypto.SHA256},
		{kms.SpecRSA4096, kms.UsageEncryptDecrypt, "", 0},
		{kms.SpecECCP256, kms.UsageSignVerify, kms.SignECDSASHA256, crypto.SHA256},
		{kms.SpecECCP384, kms.UsageSignVerify, kms.SignECDSASHA384, crypto.SHA384},
	} {
		k, err := b.KMS.CreateKey(ctx, c, kms.CreateKeyParams{Spec: tc.spec, Usage: tc.usage, Exportable: true})
		if err != nil {
			t.Fatalf("%s: %v", tc.spec, err)
		}
		pub, err := b.KMS.GetPublicKey(ctx, c, k.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		w, err := b.KMS.WrapForCloud(ctx, c, kms.WrapForCloudParams{KeyID: k.ID, Version: 1, Destination: "d", Scheme: kms.WrapRSAAESSHA256, PublicKey: wrapDER})
		if err != nil {
			t.Fatalf("%s: %v", tc.spec, err)
		}
		pkcs8, err := cloudfake.UnwrapRSAAES(wrapPriv, crypto.SHA256, w)
		if err != nil {
			t.Fatalf("%s: %v", tc.spec, err)
		}
		priv, err := x509.ParsePKCS8PrivateKey(pkcs8)
		if err != nil {
			t.Fatalf("%s: the wrapped material is not PKCS#8: %v", tc.spec, err)
		}
		signer := priv.(crypto.Signer)
		gotPub, _ := x509.MarshalPKIXPublicKey(signer.Public())
		if !bytes.Equal(gotPub, pub.PublicKeyDER) {
			t.Fatalf("%s: the distributed private key is not keyflow's key pair", tc.spec)
		}
		msg := []byte("signed where the key was distributed")
		if tc.usage == kms.UsageSignVerify {
			var d []byte
			if tc.hash == crypto.SHA256 {
				s := sha256.Sum256(msg)
				d = s[:]
			} else {
				s := sha512.Sum384(msg)
				d = s[:]
			}
			sig, err := signer.Sign(rand.Reader, d, tc.hash)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.KMS.Verify(ctx, c, kms.VerifyParams{KeyRef: k.ID, Message: msg, Algorithm: tc.alg, Signature: sig}); err != nil {
				t.Fatalf("%s: keyflow does not verify the distributed key's signature: %v", tc.spec, err)
			}
			ks, err := b.KMS.Sign(ctx, c, kms.SignParams{KeyRef: k.ID, Message: msg, Algorithm: tc.alg})
			if err != nil {
				t.Fatal(err)
			}
			ok := false
			switch p := signer.Public().(type) {
			case *ecdsa.PublicKey:
				ok = ecdsa.VerifyASN1(p, d, ks.Signature)
			case *rsa.PublicKey:
				ok = rsa.VerifyPKCS1v15(p, tc.hash, d, ks.Signature) == nil
			}
			if !ok {
				t.Fatalf("%s: keyflow's HSM signature does not verify with the distributed key", tc.spec)
			}
		} else {
			ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, signer.Public().(*rsa.PublicKey), msg, nil)
			if err != nil {
				t.Fatal(err)
			}
			pt, err := b.KMS.Decrypt(ctx, c, kms.DecryptParams{KeyRef: k.ID, Ciphertext: ct, Algorithm: kms.EncRSAOAEPSHA256})
			if err != nil || !bytes.Equal(pt.Plaintext, msg) {
				t.Fatalf("%s: keyflow does not decrypt for the distributed key: %v", tc.spec, err)
			}
		}
		clear(pkcs8)
		if _, err := b.KMS.WrapForCloud(ctx, c, kms.WrapForCloudParams{KeyID: k.ID, Version: 1, Scheme: kms.WrapRSAOAEPSHA256, PublicKey: wrapDER}); kms.CodeOf(err) != kms.CodeValidation {
			t.Fatalf("%s: RSA-OAEP of a private key: %v", tc.spec, err)
		}
		if _, err := b.KMS.ExportKey(ctx, c, k.ID); kms.CodeOf(err) != kms.CodeAccessDenied {
			t.Fatalf("%s: ExportKey released a key pair: %v", tc.spec, err)
		}
	}
	if _, err := b.KMS.CreateKey(ctx, c, kms.CreateKeyParams{Spec: kms.SpecEd25519, Usage: kms.UsageSignVerify, Exportable: true}); kms.CodeOf(err) != kms.CodeValidation {
		t.Fatalf("an exportable Ed25519 key: %v", err)
	}
	// Non-exportable pairs stay in the HSM.
	plain, err := b.KMS.CreateKey(ctx, c, kms.CreateKeyParams{Spec: kms.SpecECCP256, Usage: kms.UsageSignVerify})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.WrapForCloud(ctx, c, kms.WrapForCloudParams{KeyID: plain.ID, Version: 1, Scheme: kms.WrapRSAAESSHA256, PublicKey: wrapDER}); kms.CodeOf(err) != kms.CodeAccessDenied {
		t.Fatalf("a non-exportable key pair: %v", err)
	}
	var refused int
	for _, e := range b.EventsOfType("alpha", events.TypeCloudMaterialWrapped) {
		if e.Outcome != "success" {
			refused++
		}
	}
	if refused != 5 {
		t.Fatalf("%d refused material.wrapped records, want 5 (4 RSA-OAEP, 1 not exportable)", refused)
	}
}
