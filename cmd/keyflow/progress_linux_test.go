package main

import (
	"bytes"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/spf13/cobra"
)

// openPTY opens a pseudo-terminal (Linux): the master to read what was
// written, the slave to hand to the command as its stderr.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Skipf("unlockpt: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Skipf("ptsname: %v", e)
	}
	s, err := os.OpenFile("/dev/pts/"+itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pts: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

func itoa(n uint32) string {
	var b []byte
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		if n /= 10; n == 0 {
			return string(b)
		}
	}
}

// TestProgressOnlyOnTerminals: a long command's progress goes to stderr
// when stderr is a terminal, and nowhere when it is a file, a pipe or
// /dev/null (scripts and logs stay clean).
func TestProgressOnlyOnTerminals(t *testing.T) {
	run := func(stderr any) {
		cmd := &cobra.Command{}
		switch w := stderr.(type) {
		case *os.File:
			cmd.SetErr(w)
		case *bytes.Buffer:
			cmd.SetErr(w)
		}
		stop := showProgress(cmd, waiting("rotating k"))
		time.Sleep(1200 * time.Millisecond)
		stop()
	}
	var buf bytes.Buffer
	run(&buf)
	if buf.Len() != 0 {
		t.Errorf("progress written to a buffer: %q", buf.String())
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	if isTerminal(devnull) {
		t.Errorf("/dev/null is taken for a terminal")
	}

	master, slave := openPTY(t)
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 4096)
		n, _ := master.Read(b)
		got <- string(b[:n])
	}()
	run(slave)
	select {
	case s := <-got:
		if !strings.Contains(s, "rotating k ...") {
			t.Errorf("terminal progress: %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no progress on a terminal")
	}
}
