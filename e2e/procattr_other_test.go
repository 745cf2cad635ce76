//go:build !linux

package e2e

import "os/exec"

// killWithParent has no portable equivalent of Linux's Pdeathsig; the
// tests' cleanups stop the stack.
func killWithParent(*exec.Cmd) {}
