package kms

import (
	"testing"

	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
)

// SoftHSM reads its configuration at C_Initialize, once per process, so the
// whole test binary shares one configuration and each test makes its own
// token.
func TestMain(m *testing.M) { pkcs11test.Main(m) }
