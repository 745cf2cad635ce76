//go:build unix

package loadbench

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user + system) this process has used: in a
// benchmark, the load generator, the server under test, the in-process
// NATS server and SoftHSM together.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
