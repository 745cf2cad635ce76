package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHelmChartConfigs parses the keyflow.yaml that the Helm chart renders
// for each role group (deploy/helm/keyflow; the chart checker keeps
// deploy/helm/chartcheck/testdata/rendered equal to it) strictly, as keyflow
// serve does: a field keyflow does not know, or a value it refuses, fails
// here. The only problems left are the secret files, which exist in the
// pods (the chart checker proves each is mounted from its Secret) and not
// on this machine.
func TestHelmChartConfigs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "helm", "chartcheck", "testdata", "rendered", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no rendered configurations: %v", err)
	}
	noEnv := func(string) (string, bool) { return "", false }
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c, err := Parse(b, noEnv)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if group := strings.TrimSuffix(filepath.Base(f), ".yaml"); !strings.Contains(group, c.Roles[0]) {
			t.Errorf("%s: roles %v", f, c.Roles)
		}
		for _, p := range c.Problems() {
			if !strings.Contains(p, ": /etc/keyflow/") || !strings.HasSuffix(p, "no such file or directory") {
				t.Errorf("%s: %s", f, p)
			}
		}
	}
}
