//go:build !nodev

package main

import "github.com/keyflow/keyflow/deploy/devstack"

// The dev stack's data directory, as the offline commands (root, kmip
// client add) reach it. This file and dev.go are the only ones that import
// deploy/devstack, which links the embedded Temporal server; the
// production build (-tags nodev, see nodev.go and docs/scaling.md) leaves
// both out.

const (
	devTenant       = devstack.DefaultTenant
	devRootKeyLabel = devstack.RootKeyLabel
)

var (
	devKMIPDir          = devstack.KMIPDir
	devOpenToken        = devstack.OpenToken
	devSOPIN            = devstack.SOPIN
	devLockDataDir      = devstack.LockDataDir
	errDevDataDirLocked = devstack.ErrDataDirLocked
)
