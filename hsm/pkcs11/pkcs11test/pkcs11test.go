// Package pkcs11test gives tests a real SoftHSM2 token of their own.
//
// A PKCS#11 library reads its configuration once per process, so a test
// binary that uses the HSM calls [Main] from TestMain, which points
// SoftHSM at a fresh temporary token directory before anything
// initialises the library:
//
//	func TestMain(m *testing.M) { pkcs11test.Main(m) }
//
// Each test then takes its own token:
//
//	tok := pkcs11test.NewToken(t)
//
// When SoftHSM2 is not installed, Main fails the test binary rather than
// skipping: CI installs it, and a silent skip would hide that it did not.
package pkcs11test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/keyflow/keyflow/hsm/pkcs11"
)

// ConfEnv is the variable SoftHSM2 reads its configuration file from.
const ConfEnv = "SOFTHSM2_CONF"

// Setup creates a temporary SoftHSM2 token directory and configuration
// and points SOFTHSM2_CONF at it. It must run before anything in the
// process initialises the library (that is, from TestMain): SoftHSM reads
// the variable only in C_Initialize. cleanup restores the variable and
// removes the directory.
func Setup() (cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "keyflow-softhsm-")
	if err != nil {
		return nil, fmt.Errorf("pkcs11test: failed to create a temporary directory: %w", err)
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pkcs11test: failed to create the token directory: %w", err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	// slots.removable=false keeps every initialised token in a slot of
	// its own, with one spare uninitialised slot for the next InitToken.
	text := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pkcs11test: failed to write %s: %w", conf, err)
	}
	old, had := os.LookupEnv(ConfEnv)
	if err := os.Setenv(ConfEnv, conf); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pkcs11test: failed to set %s: %w", ConfEnv, err)
	}
	isSetUp.Store(true)
	return func() {
		isSetUp.Store(false)
		if had {
			os.Setenv(ConfEnv, old)
		} else {
			os.Unsetenv(ConfEnv)
		}
		os.RemoveAll(dir)
	}, nil
}

// isSetUp keeps tests from creating tokens in the system's SoftHSM token
// directory when TestMain forgot to call Main or Setup.
var isSetUp atomic.Bool

// Main is a TestMain for packages whose tests use the HSM: it checks that
// the PKCS#11 module exists, runs Setup, runs the tests, cleans up and
// exits with the tests' status.
func Main(m *testing.M) {
	mod := pkcs11.DefaultModule()
	if mod == "" {
		fmt.Fprintln(os.Stderr, "softhsm2 is not installed: apt-get install softhsm2 (or set "+pkcs11.ModuleEnv+")")
		os.Exit(1)
	}
	if _, err := os.Stat(mod); err != nil {
		if os.Getenv(pkcs11.ModuleEnv) != "" {
			fmt.Fprintf(os.Stderr, "the PKCS#11 module named by %s is missing: %v\n", pkcs11.ModuleEnv, err)
		} else {
			fmt.Fprintf(os.Stderr, "softhsm2 is not installed: apt-get install softhsm2 (or set %s): %v\n", pkcs11.ModuleEnv, err)
		}
		os.Exit(1)
	}
	cleanup, err := Setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// NewTokenConfig initialises a fresh token with a unique label and random
// PINs, and returns the Config that opens it. Use it to open several
// Tokens on one token, as several workers sharing a root key do.
func NewTokenConfig(t testing.TB) pkcs11.Config {
	t.Helper()
	cfg, _ := NewTokenConfigWithSO(t)
	return cfg
}

// NewTokenConfigWithSO is NewTokenConfig that also returns the security
// officer's PIN, for tests of what only the SO may do (the root key
// ceremony).
func NewTokenConfigWithSO(t testing.TB) (cfg pkcs11.Config, soPIN string) {
	t.Helper()
	if !isSetUp.Load() {
		t.Fatal("pkcs11test: call pkcs11test.Main (or Setup) from TestMain before making tokens")
	}
	label := "kf-test-" + randomHex(8)
	userPIN, soPIN := randomHex(8), randomHex(8)
	if err := pkcs11.InitToken(context.Background(), "", label, soPIN, userPIN); err != nil {
		t.Fatalf("pkcs11test: %v", err)
	}
	return pkcs11.Config{TokenLabel: label, PIN: userPIN}, soPIN
}

// NewToken initialises a fresh token and opens it. The test's cleanup
// closes it.
func NewToken(t testing.TB) *pkcs11.Token {
	t.Helper()
	cfg := NewTokenConfig(t)
	tok, err := pkcs11.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pkcs11test: %v", err)
	}
	t.Cleanup(func() {
		if err := tok.Close(); err != nil {
			t.Errorf("pkcs11test: %v", err)
		}
	})
	return tok
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails since Go 1.24
	return hex.EncodeToString(b)
}
