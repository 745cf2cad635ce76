package pqc

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Known-answer vectors come from Go modules located the way Go's own crypto
// tests find theirs: `go mod download -json` prints the module cache
// directory, downloading first if needed. Nothing is read from outside the
// module cache and this package's testdata.

const wycheproofModule = "github.com/c2sp/wycheproof@v0.0.0-20260902155932-3fa63dd0344a"

var (
	moduleDirsMu sync.Mutex
	moduleDirs   = map[string]moduleDirResult{}
)

type moduleDirResult struct{ dir, skip string }

// moduleDir returns the module cache directory of module@version, or skips
// the test with the reason it cannot be had (offline, no go tool, ...).
func moduleDir(t testing.TB, modVersion string) string {
	t.Helper()
	moduleDirsMu.Lock()
	defer moduleDirsMu.Unlock()
	r, ok := moduleDirs[modVersion]
	if !ok {
		r = downloadModule(modVersion)
		moduleDirs[modVersion] = r
	}
	if r.skip != "" {
		t.Skip(r.skip)
	}
	return r.dir
}

func downloadModule(modVersion string) moduleDirResult {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return moduleDirResult{skip: "cannot locate " + modVersion + " test vectors: no go tool in PATH: " + err.Error()}
	}
	cmd := exec.Command(goTool, "mod", "download", "-json", modVersion)
	// Outside this module, so the download can never touch go.mod or go.sum.
	cmd.Dir = os.TempDir()
	out, err := cmd.Output()
	var info struct{ Dir, Error string }
	_ = json.Unmarshal(out, &info)
	if err != nil || info.Dir == "" {
		why := info.Error
		if why == "" && err != nil {
			why = err.Error()
		}
		return moduleDirResult{skip: "cannot locate " + modVersion + " test vectors with `go mod download -json` (offline or no module proxy?): " + why}
	}
	return moduleDirResult{dir: info.Dir}
}

// dependencyVersion returns module@version for a requirement of this module
// (from go.mod, via `go list -m`), so the vectors shipped inside circl always
// match the circl in use.
func dependencyVersion(t testing.TB, path string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("cannot find the version of %s: no go tool in PATH: %v", path, err)
	}
	out, err := exec.Command(goTool, "list", "-m", "-f", "{{.Path}}@{{.Version}}", path).Output()
	if err != nil {
		t.Skipf("cannot find the version of %s with `go list -m`: %v", path, err)
	}
	return strings.TrimSpace(string(out))
}

// readJSON decodes a vector file, skipping the test if it is missing: a
// module version without the file is a missing vector set, not a failure.
func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			t.Skipf("vector file %s not found", filepath.Base(path))
		}
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("failed to decode %s: %v", filepath.Base(path), err)
	}
}

// hexBytes is a JSON hex string, in either case (Wycheproof uses lower case,
// ACVP upper case).
type hexBytes []byte

func (h *hexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	d, err := hex.DecodeString(s)
	if err != nil {
		return err
	}
	*h = d
	return nil
}

// vectorCount tallies what a vector file exercised, so every file can assert
// it ran something and log why the rest was skipped.
type vectorCount struct {
	run     int
	skipped map[string]int
}

func (c *vectorCount) skip(reason string) { c.skipN(reason, 1) }

func (c *vectorCount) skipN(reason string, n int) {
	if c.skipped == nil {
		c.skipped = map[string]int{}
	}
	c.skipped[reason] += n
}

func (c *vectorCount) report(t *testing.T, file string) {
	t.Helper()
	msg := fmt.Sprintf("%s: ran %d vectors", file, c.run)
	for _, reason := range slices.Sorted(maps.Keys(c.skipped)) {
		msg += fmt.Sprintf("; skipped %d (%s)", c.skipped[reason], reason)
	}
	t.Log(msg)
	if c.run == 0 {
		t.Errorf("%s: no vectors run", file)
	}
}
