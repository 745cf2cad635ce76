package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestDependencyDirection keeps the arrows of README.md ("Architecture",
// "Dependency direction") true:
// cmd → workers | workflows | deploy → kms → hsm, pqc, events, schemas,
// and kms → kms/keypolicy → schemas.
// The domain and the crypto boundary must never learn about NATS or
// Temporal; hsm and pqc must not import the project at all, and the
// policy language imports nothing of it but schemas. The domain does not
// link "testing": test-only helpers live in export_test.go files. The
// public Go client (client, client/api) stands beside them: it imports only
// its own subtree and external modules, and services share its wire types
// (client/api) but never the client itself. internal/testbed is for tests
// only: no product package may depend on it.
func TestDependencyDirection(t *testing.T) {
	const mod = "github.com/keyflow/keyflow"
	rules := []struct {
		pkg       string
		forbidden []string
		except    []string // prefixes allowed even though a forbidden prefix matches
		ownOnly   bool     // may import only its own subtree of the project
		allowed   []string // with ownOnly: other packages of the project it may import
	}{
		{pkg: mod + "/client/...", forbidden: []string{"go.temporal.io/", mod + "/kms", mod + "/workers", mod + "/workflows", mod + "/deploy", mod + "/cmd", mod + "/internal"}, ownOnly: true},
		{pkg: mod + "/kms", forbidden: []string{"testing", "github.com/nats-io/", "go.temporal.io/", mod + "/workers", mod + "/workflows", mod + "/deploy", mod + "/cmd", mod + "/client", mod + "/internal"}},
		{pkg: mod + "/events", forbidden: []string{"github.com/nats-io/", "go.temporal.io/", mod + "/kms", mod + "/workers"}},
		{pkg: mod + "/schemas", forbidden: []string{"github.com/nats-io/", "go.temporal.io/"}, ownOnly: true},
		{pkg: mod + "/hsm/...", forbidden: []string{"github.com/nats-io/", "go.temporal.io/"}, ownOnly: true},
		{pkg: mod + "/pqc/...", forbidden: []string{"github.com/nats-io/", "go.temporal.io/"}, ownOnly: true},
		{pkg: mod + "/kms/keypolicy", forbidden: []string{"github.com/nats-io/", "go.temporal.io/"}, ownOnly: true, allowed: []string{mod + "/schemas"}},
		{pkg: mod + "/workers/...", forbidden: []string{"go.temporal.io/", mod + "/workflows", mod + "/deploy", mod + "/client", mod + "/internal"}, except: []string{mod + "/client/api"}},
		{pkg: mod + "/workers/sigv4", forbidden: []string{"github.com/nats-io/", "go.temporal.io/"}, ownOnly: true},
		{pkg: mod + "/workflows/...", forbidden: []string{"github.com/nats-io/", mod + "/workers", mod + "/deploy", mod + "/client", mod + "/internal", mod + "/region"}},
		{pkg: mod + "/deploy/...", forbidden: []string{mod + "/client", mod + "/internal"}, except: []string{mod + "/client/api"}},
		{pkg: mod + "/cmd/...", forbidden: []string{mod + "/internal"}},
		// The cluster lab starts processes and reaches keyflow through its
		// binary, its files and NATS only.
		{pkg: mod + "/internal/clusterlab", forbidden: []string{"go.temporal.io/", mod + "/workflows", mod + "/deploy", mod + "/cmd", mod + "/client"}},
		// Cloud connectors (docs/multi-cloud.md): a leaf that takes wrapped
		// bytes from a callback; workflows|deploy|cmd → cloud, never kms → cloud.
		{pkg: mod + "/cloud/...", forbidden: []string{"github.com/nats-io/", "go.temporal.io/", mod + "/kms", mod + "/internal"}, ownOnly: true},
		{pkg: mod + "/kms", forbidden: []string{mod + "/cloud"}},
		// region is a NATS adapter like the workers (docs/multi-region.md):
		// it calls kms; workflows reach it only through an interface.
		{pkg: mod + "/region", forbidden: []string{"go.temporal.io/", mod + "/workflows", mod + "/deploy", mod + "/cmd", mod + "/client", mod + "/internal"}},
	}
	for _, r := range rules {
		out, err := exec.Command(depsGoTool(), "list", "-deps", "-f", "{{.ImportPath}}", r.pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", r.pkg, err, out)
		}
		root := strings.TrimSuffix(r.pkg, "/...")
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range r.forbidden {
				if strings.HasPrefix(dep, f) && !depsHasPrefix(dep, r.except) {
					t.Errorf("%s depends on %s (forbidden: %s)", r.pkg, dep, f)
				}
			}
			if r.ownOnly && strings.HasPrefix(dep, mod+"/") && dep != root && !strings.HasPrefix(dep, root+"/") && !slices.Contains(r.allowed, dep) {
				t.Errorf("%s imports %s; it must import nothing of the project", r.pkg, dep)
			}
		}
	}
}

// depsHasPrefix reports whether dep starts with one of prefixes.
func depsHasPrefix(dep string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(dep, p) {
			return true
		}
	}
	return false
}

// depsGoTool finds the go command that runs this test.
func depsGoTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); depsFileExists(p) {
		return p
	}
	return "go"
}

func depsFileExists(p string) bool { _, err := os.Stat(p); return err == nil }
