package main

import (
	"os"
	"path/filepath"
	"testing"
)

// `keyflow region link|unlink|show` save what `keyflow dev` reads at its
// next start when its region flags are absent; flags given win whole.
func TestRegionLinkSavedForDev(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "region-link.creds")
	if err := os.WriteFile(creds, []byte("creds"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "--data-dir", dir, "region", "link", "--region", "eu-west", "--to", "nats-leaf://10.0.0.5:7422"); err == nil {
		t.Fatal("--to without --creds was accepted")
	}
	if _, err := runCLI(t, "--data-dir", dir, "region", "link", "--region", "eu-west", "--to", "nats-leaf://10.0.0.5:7422", "--creds", filepath.Join(dir, "absent")); err == nil {
		t.Fatal("a creds file that does not exist was accepted")
	}
	if _, err := runCLI(t, "--data-dir", dir, "region", "link", "--region", "eu-west", "--to", "nats-leaf://10.0.0.5:7422", "--creds", creds); err != nil {
		t.Fatal(err)
	}
	var rf regionFlags
	if err := rf.applySaved(dir); err != nil {
		t.Fatal(err)
	}
	if rf != (regionFlags{region: "eu-west", linkTo: "nats-leaf://10.0.0.5:7422", linkCreds: creds}) {
		t.Fatalf("dev would start with %+v", rf)
	}
	given := regionFlags{region: "us-east"}
	if err := given.applySaved(dir); err != nil || given != (regionFlags{region: "us-east"}) {
		t.Fatalf("flags given were overridden: %+v %v", given, err)
	}
	if _, err := runCLI(t, "--data-dir", dir, "region", "unlink"); err != nil {
		t.Fatal(err)
	}
	rf = regionFlags{}
	if err := rf.applySaved(dir); err != nil || rf != (regionFlags{region: "eu-west"}) {
		t.Fatalf("after unlink dev would start with %+v (%v)", rf, err)
	}
	if err := os.WriteFile(filepath.Join(dir, regionFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := (&regionFlags{}).applySaved(dir); err == nil {
		t.Fatal("a broken region.json was accepted")
	}
}
