//go:build linux

package temporalpg

import (
	"os/exec"
	"syscall"
)

// child makes the kernel SIGKILL cmd if its parent dies without stopping
// it, and runs it as uid/gid when they are not negative.
func child(cmd *exec.Cmd, uid, gid int) {
	a := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if uid >= 0 {
		a.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	}
	cmd.SysProcAttr = a
}
