package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The README test: every ```sh block of README.md runs, in order, against
// one dev stack, as a reader would type it in a second terminal (in the
// directory that holds ./.keyflow, with $K and `keyflow` naming the real
// binary). A command expects exit 0 unless its comment says "exit N".
//
// The few commands that cannot run unattended are listed in readmeSkip
// with the reason; commands that run until interrupted are in
// readmeInterrupt and get SIGINT after a few seconds. A README command
// that matches neither list and fails fails the test: fix the README (or
// the CLI), not the list.

// readmeSkip: a substring of the command, and why it cannot run here.
var readmeSkip = []struct{ match, why string }{
	{"go tool task dev", "starts its own stack in the foreground; the test runs `keyflow dev` itself"},
	{"go tool task test", "runs the whole suite, this test included"},
	{"K=./bin/keyflow", "the test sets $K to the binary it built"},
	{"--syslog tcp://siem.example:514", "needs a syslog collector at siem.example"},
	{"aws --endpoint-url", "needs the AWS CLI and a stack started with --aws-listen (e2e tests of the AWS API cover it)"},
	{"migrate pause ID", "placeholder ID: the campaign ID is printed by migrate start"},
	{"migrate approve ID", "placeholder ID: the campaign ID is printed by migrate start"},
	{"approval approve ID", "placeholder ID: the approval ID is printed by the pending request"},
	{"decrypt --allow-compromised < old.b64", "old.b64 stands for a ciphertext the reader kept from before the compromise"},
}

// readmeInterrupt: commands that run until interrupted (Ctrl-C).
var readmeInterrupt = []string{"audit tail --follow", "audit forward --out", "migrate status --watch"}

// readmeRewrite maps paths a test must not touch to paths in its work dir.
var readmeRewrite = strings.NewReplacer("/var/log/keyflow/", "var/log/keyflow/")

type readmeCmd struct {
	line     int // 1-based line in README.md
	text     string
	wantCode int
}

var exitComment = regexp.MustCompile(`#.*?\bexit (\d+)`)

// readmeCommands extracts the commands of README.md's ```sh blocks: one per
// line, with backslash continuations joined and heredocs kept whole;
// comment-only lines are dropped.
func readmeCommands(t *testing.T, readme []byte) []readmeCmd {
	t.Helper()
	var cmds []readmeCmd
	sc := bufio.NewScanner(bytes.NewReader(readme))
	n := 0
	inSh := false
	var cur *readmeCmd
	heredoc := ""
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case !inSh && strings.TrimSpace(line) == "```sh":
			inSh = true
			continue
		case inSh && heredoc == "" && strings.TrimSpace(line) == "```":
			inSh = false
			continue
		case !inSh:
			continue
		}
		if cur != nil {
			cur.text += "\n" + line
			if heredoc != "" {
				if strings.TrimSpace(line) == heredoc {
					heredoc = ""
					cmds = append(cmds, *cur)
					cur = nil
				}
				continue
			}
			if !strings.HasSuffix(line, `\`) {
				cmds = append(cmds, *cur)
				cur = nil
			}
			continue
		}
		trim := strings.TrimSpace(line)
		if trim == "" || strings.HasPrefix(trim, "#") {
			continue
		}
		c := readmeCmd{line: n, text: line}
		if m := exitComment.FindStringSubmatch(line); m != nil {
			c.wantCode, _ = strconv.Atoi(m[1])
		}
		if i := strings.Index(line, "<<'"); i >= 0 {
			heredoc = strings.TrimSuffix(strings.Fields(line[i+3:])[0], "'")
			cur = &c
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cur = &c
			continue
		}
		cmds = append(cmds, c)
	}
	if inSh || cur != nil {
		t.Fatalf("README.md: an sh block or a command does not end")
	}
	return cmds
}

func TestReadme(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	cmds := readmeCommands(t, readme)
	if len(cmds) < 40 {
		t.Fatalf("found %d README commands, want the whole tour", len(cmds))
	}

	work := t.TempDir()
	st := startStack(t, filepath.Join(work, ".keyflow"), "127.0.0.1:0", "127.0.0.1:0")
	if err := os.MkdirAll(filepath.Join(work, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(kfBin, filepath.Join(work, "bin", "keyflow")); err != nil {
		t.Fatal(err)
	}
	env := append(cliEnv(st.natsURL, ""), "K=./bin/keyflow", "PATH="+filepath.Join(work, "bin")+":"+os.Getenv("PATH"))

	used := map[string]bool{}
	ran := 0
	for _, c := range cmds {
		if why := readmeSkipped(c.text, used); why != "" {
			t.Logf("README.md:%d skipped (%s): %s", c.line, why, c.text)
			continue
		}
		text := readmeRewrite.Replace(c.text)
		interrupt := false
		for _, m := range readmeInterrupt {
			if strings.Contains(text, m) {
				interrupt, used[m] = true, true
			}
		}
		code, out := runReadmeCmd(t, work, env, text, interrupt)
		ran++
		if code != c.wantCode {
			t.Errorf("README.md:%d: %s\nexit %d, want %d\n%s", c.line, c.text, code, c.wantCode, out)
		}
	}
	for _, s := range readmeSkip {
		if !used[s.match] {
			t.Errorf("readmeSkip entry %q matches no README command; remove it", s.match)
		}
	}
	for _, m := range readmeInterrupt {
		if !used[m] {
			t.Errorf("readmeInterrupt entry %q matches no README command; remove it", m)
		}
	}
	t.Logf("ran %d of %d README commands", ran, len(cmds))
}

func readmeSkipped(text string, used map[string]bool) string {
	for _, s := range readmeSkip {
		if strings.Contains(text, s.match) {
			used[s.match] = true
			return s.why
		}
	}
	return ""
}

// runReadmeCmd runs one README command with bash in dir. An interrupted
// command gets SIGINT after a few seconds, as a reader's Ctrl-C, and then
// counts as exit 0 if it stopped cleanly.
func runReadmeCmd(t *testing.T, dir string, env []string, text string, interrupt bool) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", "set -eo pipefail\n"+text)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("failed to run bash: %v", err)
	}
	if interrupt {
		done := make(chan struct{})
		go func() {
			select {
			case <-time.After(3 * time.Second):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
			case <-done:
			}
		}()
		defer close(done)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case ctx.Err() != nil:
		t.Fatalf("%s: did not finish within %v\n%s", text, cliTimeout, out.String())
	case errors.As(err, &ee):
		if interrupt && ee.ExitCode() == -1 {
			return 130, out.String() // killed by the signal: it did not stop cleanly
		}
		return ee.ExitCode(), out.String()
	}
	t.Fatalf("%s: %v", text, err)
	return 0, ""
}
