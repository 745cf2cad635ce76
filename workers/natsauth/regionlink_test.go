package natsauth

import (
	"path/filepath"
	"strings"
	"testing"
)

// Only a link user's creds pass as region link creds: a worker's or the
// full service user's would carry tenant requests and JetStream across.
func TestCheckRegionLinkCreds(t *testing.T) {
	id, err := Load(filepath.Join(t.TempDir(), "identity.json"))
	if err != nil {
		t.Fatal(err)
	}
	link, err := id.RegionLinkCreds("link")
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckRegionLinkCreds(link); err != nil {
		t.Fatalf("link creds refused: %v", err)
	}
	worker, err := id.WorkerCreds("keyflow-worker")
	if err != nil {
		t.Fatal(err)
	}
	service, err := id.ServiceCreds("keyflow")
	if err != nil {
		t.Fatal(err)
	}
	for name, creds := range map[string][]byte{"worker": worker, "service": service} {
		if err := CheckRegionLinkCreds(creds); err == nil || !strings.Contains(err.Error(), "may publish every subject") {
			t.Errorf("%s creds as link creds: %v", name, err)
		}
	}
	if err := CheckRegionLinkCreds([]byte("not creds")); err == nil || !strings.Contains(err.Error(), "not a NATS creds file") {
		t.Errorf("garbage as link creds: %v", err)
	}
}
