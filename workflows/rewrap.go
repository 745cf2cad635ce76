package workflows

import (
	"errors"

	"go.temporal.io/sdk/workflow"
)

// RewrapParams start a rewrap of the registered wrapped data keys of one
// key: every registered ciphertext made under one of FromVersions (all
// versions other than the primary when empty) is re-encrypted under
// DestinationKeyID's primary version (the same key when empty). Cursor and
// the counters carry progress across ContinueAsNew.
//
// This is the contract shared by rotation, compromise remediation and the
// crypto-agility migration campaign.
type RewrapParams struct {
	Tenant           string
	KeyID            string
	FromVersions     []uint32
	DestinationKeyID string
	Principal        string
	RequestID        string
	BatchSize        int // default 100

	Cursor    string
	Rewrapped int
	Failed    int
}

// RewrapResult reports how many registered data keys moved, how many could
// not, and how many still use the source versions afterwards.
type RewrapResult struct {
	Rewrapped int
	Failed    int
	Remaining int
}

// RewrapWorkflow rewraps registered data keys in batches.
//
// Contract stub: the body lands with the data-key registry.
func RewrapWorkflow(ctx workflow.Context, p RewrapParams) (*RewrapResult, error) {
	return nil, errors.New("rewrap is not implemented yet")
}
