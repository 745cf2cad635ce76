package client_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/hsm/pkcs11"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// opts is what the examples dial with. In an application it names a server
// and a creds file:
//
//	client.Options{Server: "nats://127.0.0.1:4222", CredsFile: "app.creds", Tenant: "alpha"}
//
// Here it is a connection to the stack TestMain starts, as the principal
// "app" of tenant "alpha" with the key-admin and crypto-user roles.
var opts client.Options

// TestMain starts one real stack (a SoftHSM token, an in-process
// nats-server, the KV store, the audit stream and the NATS services) for
// all the examples, so their // Output: lines are checked against real
// replies. Like pkcs11test.Main it fails, rather than skips, when SoftHSM is
// missing.
func TestMain(m *testing.M) {
	if mod := pkcs11.DefaultModule(); mod == "" {
		fmt.Fprintln(os.Stderr, "softhsm2 is not installed: apt-get install softhsm2 (or set "+pkcs11.ModuleEnv+")")
		os.Exit(1)
	}
	stopHSM, err := pkcs11test.Setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tb := &mainTB{stopHSM: stopHSM}
	bed := testbed.New(tb)
	bed.StartRPC(nil)
	creds := bed.PrincipalCreds("alpha", "app", keypolicy.RoleKeyAdmin, keypolicy.RoleCryptoUser)
	nc, err := natsserver.Connect(bed.NATS, creds, "client-examples")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	opts = client.Options{Conn: nc, Creds: creds, Tenant: "alpha"}
	code := m.Run()
	if tb.stop() && code == 0 {
		code = 1
	}
	os.Exit(code)
}

// mainTB is the testing.TB the testbed builds the shared stack with: no
// test runs yet in TestMain. It implements what the testbed and pkcs11test
// call; any other method hits the nil embedded TB and panics, which shows
// at once that this list needs one more.
type mainTB struct {
	testing.TB
	cleanups []func()
	stopHSM  func()
	failed   bool
}

func (t *mainTB) Helper()          {}
func (t *mainTB) Cleanup(f func()) { t.cleanups = append(t.cleanups, f) }
func (t *mainTB) Log(args ...any)  { fmt.Fprintln(os.Stderr, args...) }
func (t *mainTB) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func (t *mainTB) Errorf(format string, args ...any) {
	t.failed = true
	t.Logf("client examples: "+format, args...)
}

func (t *mainTB) Fatal(args ...any) {
	t.Errorf("failed to start the stack: %s", fmt.Sprint(args...))
	t.stop()
	os.Exit(1)
}

func (t *mainTB) Fatalf(format string, args ...any) { t.Fatal(fmt.Sprintf(format, args...)) }

func (t *mainTB) TempDir() string {
	dir, err := os.MkdirTemp("", "keyflow-client-examples-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// stop runs the cleanups, last first, then removes the SoftHSM token
// directory; it reports whether anything failed.
func (t *mainTB) stop() (failed bool) {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
	t.stopHSM()
	return t.failed
}
