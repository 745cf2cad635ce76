//go:build linux

package e2e

import (
	"os/exec"
	"syscall"
)

// killWithParent makes the kernel SIGKILL the dev stack if the test binary
// dies without running its cleanups (a -timeout panic, a crash), so no
// stack outlives the test.
func killWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
