//go:build cgo

package pkcs11_test

import (
	"testing"

	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/hsm/hsmtest"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
)

func TestMain(m *testing.M) { pkcs11test.Main(m) }

func TestConformance(t *testing.T) {
	hsmtest.Run(t, func(t *testing.T) hsm.Backend { return pkcs11test.NewToken(t) })
}
