package client_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
)

// Envelope encryption: keyflow makes a data key and returns it twice, in
// plaintext and wrapped under a KMS key. The application encrypts its data
// locally with the plaintext key, forgets that key, and stores the wrapped
// key next to the ciphertext. To read the data it asks keyflow to decrypt
// the wrapped key. The payload never crosses the network, and keyflow's
// audit trail records every unwrap.
func ExampleClient_GenerateDataKey() {
	ctx := context.Background()
	c, err := client.Dial(ctx, opts)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	kek, err := c.CreateKey(ctx, api.CreateKeyRequest{Description: "wraps the invoice data keys"})
	if err != nil {
		log.Fatal(err)
	}
	// The encryption context binds the wrapped key to the record it
	// protects: decrypting it needs the same context.
	ec := map[string]string{"record": "invoice-42"}

	// Write: a fresh AES-256 data key, used locally, then dropped.
	dk, err := c.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: kek.KeyID, NumberOfBytes: 32, EncryptionContext: ec})
	if err != nil {
		log.Fatal(err)
	}
	ciphertext := sealLocally(dk.Plaintext, []byte("total: 1024.00 EUR"))
	clear(dk.Plaintext)
	stored := struct{ WrappedKey, Ciphertext []byte }{dk.CiphertextBlob, ciphertext}

	// Read: unwrap the data key, open the data, drop the key again.
	key, err := c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: stored.WrappedKey, EncryptionContext: ec})
	if err != nil {
		log.Fatal(err)
	}
	plaintext := openLocally(key.Plaintext, stored.Ciphertext)
	clear(key.Plaintext)
	fmt.Printf("%s\n", plaintext)

	// The wrapped key does not open under another record's context; the
	// refusal is the one generic decryption error.
	_, err = c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: stored.WrappedKey, EncryptionContext: map[string]string{"record": "invoice-43"}})
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println(e.Code)
	}
	// Output:
	// total: 1024.00 EUR
	// InvalidCiphertextException
}

// sealLocally encrypts with AES-GCM under key; the random nonce is
// prepended to the result.
func sealLocally(key, plaintext []byte) []byte {
	return localAEAD(key).Seal(nil, nil, plaintext, nil)
}

// openLocally decrypts what sealLocally made.
func openLocally(key, ciphertext []byte) []byte {
	plaintext, err := localAEAD(key).Open(nil, nil, ciphertext, nil)
	if err != nil {
		log.Fatal(err)
	}
	return plaintext
}

// localAEAD is AES-GCM with random nonces under key.
func localAEAD(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		log.Fatal(err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		log.Fatal(err)
	}
	return aead
}

// Signatures: the private key stays in the HSM; keyflow signs and verifies.
// Anyone with the public key can also verify offline, with Go's own crypto.
func ExampleClient_Sign() {
	ctx := context.Background()
	c, err := client.Dial(ctx, opts)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	key, err := c.CreateKey(ctx, api.CreateKeyRequest{KeySpec: "ECC_NIST_P256", KeyUsage: "SIGN_VERIFY", Description: "release signing"})
	if err != nil {
		log.Fatal(err)
	}
	release := []byte("keyflow v1.2.3 sha256:9f86d081884c7d65")
	sig, err := c.Sign(ctx, api.SignRequest{KeyID: key.KeyID, Message: release, SigningAlgorithm: "ECDSA_SHA_256"})
	if err != nil {
		log.Fatal(err)
	}

	// Verify through keyflow.
	v, err := c.Verify(ctx, api.VerifyRequest{KeyID: key.KeyID, Message: release, SigningAlgorithm: "ECDSA_SHA_256", Signature: sig.Signature})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("keyflow says valid:", v.SignatureValid)

	// A changed message is refused with a code, not a false.
	_, err = c.Verify(ctx, api.VerifyRequest{KeyID: key.KeyID, Message: []byte("keyflow v6.6.6"), SigningAlgorithm: "ECDSA_SHA_256", Signature: sig.Signature})
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println("changed message:", e.Code)
	}

	// Verify offline with the public key (DER SubjectPublicKeyInfo; the
	// signature is DER too).
	pk, err := c.GetPublicKey(ctx, api.PublicKeyRequest{KeyID: key.KeyID})
	if err != nil {
		log.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(pk.PublicKey)
	if err != nil {
		log.Fatal(err)
	}
	digest := sha256.Sum256(release)
	fmt.Println("offline valid:", ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sig.Signature))
	// Output:
	// keyflow says valid: true
	// changed message: KMSInvalidSignatureException
	// offline valid: true
}

// Every refusal is an *Error with a stable code (AWS KMS's exception
// names), a message for people and the request ID the audit record
// carries. Match on the code, never on the message. Transport failures are
// plain wrapped errors; ErrNoService means no worker answered.
func ExampleError() {
	ctx := context.Background()
	c, err := client.Dial(ctx, opts)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	handle := func(err error) {
		var e *client.Error
		switch {
		case err == nil:
			fmt.Println("ok")
		case errors.As(err, &e):
			switch e.Code {
			case "NotFoundException":
				fmt.Println("no such key; create it or fix the alias")
			case "InvalidCiphertextException":
				// One generic error for every decryption failure: wrong
				// key, wrong context, tampered or foreign ciphertext.
				fmt.Println("cannot decrypt")
			case "ThrottlingException":
				fmt.Println("over quota; retry after", e.RetryAfter.Round(time.Second))
			case "PendingApprovalException":
				fmt.Println("waits for dual control; approval", e.ApprovalID)
			case "AccessDeniedException":
				fmt.Println("this principal may not do that")
			default:
				fmt.Println("refused:", e.Code)
			}
			// RequestID finds the refusal in the audit trail.
			_ = e.RequestID
		case errors.Is(err, client.ErrNoService):
			fmt.Println("no keyflow worker answers")
		default:
			fmt.Println("transport failure:", err)
		}
	}

	_, err = c.DescribeKey(ctx, "alias/no-such-key")
	handle(err)
	_, err = c.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: []byte("not a keyflow ciphertext")})
	handle(err)
	_, err = c.GenerateDataKey(ctx, api.DataKeyRequest{KeyID: "alias/no-such-key", NumberOfBytes: 32})
	handle(err)
	// Output:
	// no such key; create it or fix the alias
	// cannot decrypt
	// no such key; create it or fix the alias
}
