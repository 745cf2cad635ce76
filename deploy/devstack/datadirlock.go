package devstack

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// One dev stack per data directory. Two stacks on one directory (on
// different ports) would each write the same JetStream store, SQLite
// database and token: keys created through one were lost after a restart,
// and `audit verify` then raised a false tamper alarm. Start takes an
// exclusive lock on DIR/keyflow.lock (flock: the kernel drops it when the
// process dies, so a crash leaves no stale lock) and writes its PID there
// for the error the next start gives.

const lockFile = "keyflow.lock"

// ErrDataDirLocked is returned (wrapped) when another process holds the
// data directory.
var ErrDataDirLocked = errors.New("data directory in use")

// lockDataDir takes the directory's lock; release unlocks it.
func lockDataDir(dir string) (release func(), err error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("failed to open %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if b, rerr := os.ReadFile(path); rerr == nil {
				if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
					holder = "process " + strconv.Itoa(pid)
				}
			}
			return nil, fmt.Errorf("%w: %s is held by %s (another keyflow dev?); stop it, or use another --data-dir: %w", ErrDataDirLocked, dir, holder, err)
		}
		return nil, fmt.Errorf("failed to lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
	}, nil
}
