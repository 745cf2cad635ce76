package remediation_test

import (
	"testing"

	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
)

func TestMain(m *testing.M) { pkcs11test.Main(m) }
