package rpc_test

import (
	"testing"

	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
)

// TestMain points SoftHSM at a temporary token directory before anything
// initialises the PKCS#11 library; every test then takes a token of its own.
func TestMain(m *testing.M) { pkcs11test.Main(m) }
