//go:build nodev

package main

import (
	"context"
	"errors"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/hsm/pkcs11"
)

// The production build: `go build -tags nodev ./cmd/keyflow` leaves out
// keyflow dev and its embedded stack (deploy/devstack: the Temporal server,
// SQLite), so the binary that runs keyflow serve does not link them. What
// the dev-only commands need from the dev stack's data directory is
// stubbed here; they say so instead of running. dev.go and devdata.go are
// the default build's side.

// errNoDevStack is what a dev-stack command says in the production build.
var errNoDevStack = usageError{"this keyflow is the production build (-tags nodev), without the dev stack; " +
	"run keyflow serve against your NATS, Temporal and HSM, or build without -tags nodev for keyflow dev"}

// newDevCmd is keyflow dev's stand-in: hidden, and refusing with a usage error.
func newDevCmd(*globals) *cobra.Command {
	return &cobra.Command{
		Use:                "dev",
		Short:              "Not in this build: keyflow dev needs the default build (without -tags nodev)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE:               func(*cobra.Command, []string) error { return errNoDevStack },
	}
}

// devTenant is the dev stack's tenant name (devstack.DefaultTenant), the
// default of kmip client add --tenant.
const (
	devTenant       = "default"
	devRootKeyLabel = "keyflow-root"
)

var errDevDataDirLocked = errors.New("data directory in use")

func devKMIPDir(dataDir string) string { return filepath.Join(dataDir, "kmip") }

func devOpenToken(context.Context, string, bool) (*pkcs11.Token, error) { return nil, errNoDevStack }

func devSOPIN(string) (string, error) { return "", errNoDevStack }

func devLockDataDir(string) (func(), error) { return nil, errNoDevStack }
