//go:build !unix

package natsauth

// lockFile does not lock where flock is missing: one control-plane process
// per identity file there.
func lockFile(string) (unlock func(), err error) { return func() {}, nil }
