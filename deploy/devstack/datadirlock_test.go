package devstack

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestSecondStackOnDataDirRefused: while one stack holds a data directory,
// a second Start on it is refused before it touches anything, and the
// error names the holder's PID. Once released, the directory can be
// taken again.
func TestSecondStackOnDataDirRefused(t *testing.T) {
	dir := t.TempDir()
	release, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Start(t.Context(), Config{DataDir: dir, NATSListen: "127.0.0.1:0", TemporalListen: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if !errors.Is(err, ErrDataDirLocked) || !strings.Contains(err.Error(), "process "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second start: %v, want ErrDataDirLocked naming pid %d", err, os.Getpid())
	}
	if _, err := os.Stat(dir + "/nats"); !os.IsNotExist(err) {
		t.Fatalf("the refused start created state: %v", err)
	}
	release()
	again, err := lockDataDir(dir)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	again()
}
