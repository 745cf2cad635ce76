package devstack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/keyflow/keyflow/hsm/pkcs11"
)

// RootKeyLabel is the label of the dev stack's root key (kms's default).
const RootKeyLabel = "keyflow-root"

// soPINPath is where the dev stack keeps the token's security officer PIN.
// A production HSM's SO PIN belongs to its security officer, never on the
// workers' disks; the dev stack keeps it so that one person can run the
// root key ceremony on a laptop.
func soPINPath(dir string) string { return filepath.Join(dir, "hsm", "so-pin") }

// ErrNoToken is returned by OpenToken when the data directory holds no
// token and create is false.
var ErrNoToken = errors.New("devstack: the data directory has no SoftHSM token")

// OpenToken opens the dev stack's SoftHSM token under dir for the offline
// commands (the root key ceremony), with the stack stopped. With create,
// a directory without a token gets a new, empty one (to import a root key
// into); without, it is ErrNoToken. Call it once per process: SoftHSM
// reads its configuration once.
func OpenToken(ctx context.Context, dir string, create bool) (*pkcs11.Token, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("failed to resolve data dir: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "hsm", "pin")); errors.Is(err, os.ErrNotExist) {
		if !create {
			return nil, fmt.Errorf("%w: %s (is --data-dir right?)", ErrNoToken, dir)
		}
		if err := os.MkdirAll(filepath.Join(dir, "hsm", "tokens"), 0o700); err != nil {
			return nil, fmt.Errorf("failed to create %s: %w", dir, err)
		}
	}
	return openToken(ctx, dir, nil, nil)
}

// SOPIN reads the dev stack's security officer PIN.
func SOPIN(dir string) (string, error) {
	b, err := os.ReadFile(soPINPath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("no SO PIN in %s: this data directory predates the root key ceremony; pass --so-pin-file", soPINPath(dir))
	}
	if err != nil {
		return "", fmt.Errorf("failed to read the SO PIN: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
