package natsserver

import (
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyflow/keyflow/workers/natsauth"
)

// TestListenAddressInUse: a taken port is reported as "address already in
// use" at once, not as a server that never became ready.
func TestListenAddressInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	id, err := natsauth.Load(filepath.Join(t.TempDir(), "identity.json"))
	if err != nil {
		t.Fatal(err)
	}
	ns, err := Start(Config{StoreDir: t.TempDir(), Listen: l.Addr().String(), Identity: id})
	if err == nil {
		ns.Shutdown()
		t.Fatal("started on a taken port")
	}
	if !strings.Contains(err.Error(), "address already in use") || strings.Contains(err.Error(), "not ready") {
		t.Fatalf("error %q, want one saying the address is in use", err)
	}
}
