//go:build !linux

package loadbench

import "time"

// PeerCPU is 0 where /proc cannot be read.
func PeerCPU(int) time.Duration { return 0 }
