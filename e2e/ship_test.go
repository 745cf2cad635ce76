package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// What ships: the production binary and its image (Dockerfile, README
// "Running in production", docs/scaling.md).

// TestProductionBuildLeavesOutTemporalServer: `go build -tags nodev
// ./cmd/keyflow`, the binary of keyflow serve and of the image, links
// neither the Temporal server nor the dev stack, while the default build
// (keyflow dev) does; and the production binary refuses keyflow dev with a
// usage error that says which build it is, while serve is there.
func TestProductionBuildLeavesOutTemporalServer(t *testing.T) {
	const pkg = "github.com/keyflow/keyflow/cmd/keyflow"
	deps := func(tags ...string) []string {
		args := append([]string{"list", "-deps", "-f", "{{.ImportPath}}"}, tags...)
		out, err := exec.Command(depsGoTool(), append(args, pkg)...).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %v: %v\n%s", tags, err, out)
		}
		return strings.Fields(string(out))
	}
	linksTemporalServer := func(ds []string) bool {
		return slices.ContainsFunc(ds, func(d string) bool { return strings.HasPrefix(d, "go.temporal.io/server/") })
	}
	if dev := deps(); !linksTemporalServer(dev) || !slices.Contains(dev, "github.com/keyflow/keyflow/deploy/devstack") {
		t.Fatalf("the default build no longer links the dev stack and the Temporal server: this test checks nothing")
	}
	prod := deps("-tags", "nodev")
	for _, d := range prod {
		if strings.HasPrefix(d, "go.temporal.io/server/") || d == "github.com/keyflow/keyflow/deploy/devstack" {
			t.Errorf("the production build (-tags nodev) links %s", d)
		}
	}
	if !slices.Contains(prod, "github.com/keyflow/keyflow/deploy/roles") {
		t.Errorf("the production build does not link deploy/roles (keyflow serve)")
	}
	if testing.Short() {
		t.Skip("-short: not building the production binary")
	}

	bin := filepath.Join(t.TempDir(), "keyflow")
	if out, err := exec.Command(depsGoTool(), "build", "-tags", "nodev", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build -tags nodev: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "dev", "--data-dir", t.TempDir()).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitCodeUsage || !strings.Contains(string(out), "production build (-tags nodev)") {
		t.Errorf("keyflow dev in the production build: %v, %s; want exit %d naming the build", err, out, exitCodeUsage)
	}
	if out, err := exec.Command(bin, "serve", "--help").CombinedOutput(); err != nil || !strings.Contains(string(out), "--roles") {
		t.Errorf("keyflow serve --help in the production build: %v\n%s", err, out)
	}
	help, _ := exec.Command(bin, "--help").CombinedOutput()
	if strings.Contains(string(help), "\n  dev ") {
		t.Errorf("the production build lists keyflow dev in its help:\n%s", help)
	}
}

// exitCodeUsage is cmd/keyflow's exit code of a usage error.
const exitCodeUsage = 2

// dockerInstr is one Dockerfile instruction, continuations joined.
type dockerInstr struct {
	line int
	cmd  string // upper case: FROM, RUN, COPY...
	args string
}

// readDockerfile parses a Dockerfile into instructions: comments dropped,
// backslash continuations joined. No Docker engine runs here, so this and
// the checks below are what is tested of the image; `docker build` is not.
func readDockerfile(t *testing.T, path string) []dockerInstr {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []dockerInstr
	var cur *dockerInstr
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur == nil) {
			continue
		}
		cont := strings.HasSuffix(line, "\\")
		line = strings.TrimSuffix(line, "\\")
		if cur == nil {
			cmd, args, _ := strings.Cut(line, " ")
			cur = &dockerInstr{line: n, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		} else {
			cur.args += " " + strings.TrimSpace(line)
		}
		if !cont {
			out = append(out, *cur)
			cur = nil
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDockerfile checks the image's recipe without building it: a Go build
// stage that builds ./cmd/keyflow with -tags nodev from files that exist, a
// slim Debian runtime stage that copies exactly that binary from it, a
// non-root user, and `keyflow serve` as the container's command.
func TestDockerfile(t *testing.T) {
	if p := dockerfileProblems(t, filepath.Join("..", "Dockerfile")); len(p) > 0 {
		t.Errorf("Dockerfile:\n%s", strings.Join(p, "\n"))
	}
}

// TestDockerfileFaults: a Dockerfile that builds the default binary, copies
// another file, runs as root and starts keyflow dev is refused on each count.
func TestDockerfileFaults(t *testing.T) {
	p := dockerfileProblems(t, filepath.Join("testdata", "Dockerfile.broken"))
	for _, want := range []string{
		"builds without -tags nodev",
		"copies missing.txt",
		"does not copy /out/keyflow",
		`runs as "root"`,
		"want /usr/local/bin/keyflow serve",
	} {
		if !slices.ContainsFunc(p, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("no problem %q in:\n%s", want, strings.Join(p, "\n"))
		}
	}
}

// dockerfileProblems lists what is wrong with the Dockerfile at path; its
// COPY sources and build target are looked up in the repository root.
func dockerfileProblems(t *testing.T, path string) []string {
	t.Helper()
	root := filepath.Join("..")
	var problems []string
	addf := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	instrs := readDockerfile(t, path)
	type stage struct {
		name, image string
		instrs      []dockerInstr
	}
	var stages []stage
	for _, in := range instrs {
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			s := stage{image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) > 0 {
			stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, in)
		}
	}
	if len(stages) < 2 {
		return []string{fmt.Sprintf("want a multi-stage Dockerfile, got %d stage(s)", len(stages))}
	}
	build, final := stages[0], stages[len(stages)-1]
	if !strings.HasPrefix(build.image, "golang:") {
		addf("build stage from %s, want a golang image", build.image)
	}
	if !strings.HasPrefix(final.image, "debian:") || !strings.Contains(final.image, "slim") {
		addf("runtime stage from %s, want a slim Debian", final.image)
	}

	// The build stage: COPY sources exist; go build of ./cmd/keyflow, nodev, -o OUT.
	var out string
	for _, in := range build.instrs {
		switch in.cmd {
		case "COPY":
			f := strings.Fields(in.args)
			for _, src := range f[:len(f)-1] {
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					addf("line %d copies %s: %v", in.line, src, err)
				}
			}
		case "RUN":
			if !strings.Contains(in.args, "go build") {
				continue
			}
			f := strings.Fields(in.args)
			target := f[len(f)-1]
			if st, err := os.Stat(filepath.Join(root, target, "main.go")); err != nil || st.IsDir() {
				addf("line %d builds %s, which is no main package here", in.line, target)
			}
			if target != "./cmd/keyflow" {
				addf("line %d builds %s, want ./cmd/keyflow", in.line, target)
			}
			if !strings.Contains(in.args, "-tags nodev") {
				addf("line %d builds without -tags nodev: the image would link the Temporal server", in.line)
			}
			if i := slices.Index(f, "-o"); i >= 0 && i+1 < len(f) {
				out = f[i+1]
			}
		}
	}
	if out == "" {
		return append(problems, "the build stage has no `go build -o OUT ./cmd/keyflow`")
	}

	// The runtime stage: copies OUT from the build stage, runs as non-root,
	// and its command is keyflow serve.
	var copied, user string
	var entry, cmd []string
	for _, in := range final.instrs {
		switch in.cmd {
		case "COPY":
			f := strings.Fields(in.args)
			if len(f) == 3 && f[0] == "--from="+build.name && f[1] == out {
				copied = f[2]
			}
		case "USER":
			user = in.args
		case "ENTRYPOINT", "CMD":
			var v []string
			if err := json.Unmarshal([]byte(in.args), &v); err != nil {
				addf("line %d: %s is not in exec form (a JSON array): %v", in.line, in.cmd, err)
			}
			if in.cmd == "ENTRYPOINT" {
				entry = v
			} else {
				cmd = v
			}
		}
	}
	if copied == "" {
		addf("the runtime stage does not copy %s from the %q stage", out, build.name)
		copied = "/usr/local/bin/keyflow"
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "0" || u == "root" {
		addf("the runtime stage runs as %q, want a non-root user", user)
	}
	argv := append(slices.Clone(entry), cmd...)
	if len(argv) < 2 || argv[0] != copied || argv[1] != "serve" {
		addf("the container runs %q, want %s serve ...", argv, copied)
	}
	if i := slices.Index(argv, "--config"); i < 0 || i+1 >= len(argv) {
		addf("the container runs %q without --config FILE", argv)
	}
	return problems
}
