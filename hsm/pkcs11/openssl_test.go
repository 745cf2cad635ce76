//go:build cgo

package pkcs11_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"strings"
	"testing"

	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
)

// TestHMACMatchesOpenSSL computes HMAC-SHA256 in SoftHSM with an imported
// test key and compares it with `openssl dgst -mac HMAC`, an independent
// implementation.
func TestHMACMatchesOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl is not installed (apt-get install openssl); it is the independent implementation of this test")
	}
	ctx := context.Background()
	tok := pkcs11test.NewToken(t)
	for _, size := range []int{32, 48, 64, 100} {
		key := make([]byte, size)
		msg := make([]byte, 1000)
		rand.Read(key)
		rand.Read(msg)
		h, err := tok.ImportHMACKeyForTesting(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tok.HMACSHA256(ctx, h, msg)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(openssl, "dgst", "-sha256", "-mac", "HMAC", "-macopt", "hexkey:"+hex.EncodeToString(key), "-binary")
		cmd.Stdin = bytes.NewReader(msg)
		want, err := cmd.Output()
		if err != nil {
			t.Fatalf("openssl: %v", err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("key of %d bytes: HSM HMAC %x, openssl %x", size, got, want)
		}
		msg[0] ^= 1
		other, _ := tok.HMACSHA256(ctx, h, msg)
		if bytes.Equal(other, got) || strings.TrimSpace(hex.EncodeToString(other)) == "" {
			t.Fatal("HMAC does not depend on the message")
		}
	}
}
