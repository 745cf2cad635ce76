//go:build !linux

package temporalpg

import "os/exec"

// child does nothing off Linux: PostgreSQL comes from Debian's package.
func child(*exec.Cmd, int, int) {}
