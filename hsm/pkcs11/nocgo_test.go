//go:build !cgo

package pkcs11_test

import "testing"

// TestNeedsCgo fails a CGO_ENABLED=0 test run instead of letting every
// HSM test vanish from it unnoticed.
func TestNeedsCgo(t *testing.T) {
	t.Fatal("the PKCS#11 backend's tests need cgo: run them with CGO_ENABLED=1")
}
