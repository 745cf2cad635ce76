package workflows_test

import (
	"context"
	"testing"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workflows"
)

// testWorkflowID is the testsuite's workflow ID (tokens bind to it).
const testWorkflowID = "default-test-workflow-id"

// opToken mints what keyflow's API would send with a signal or update to
// the test workflow, as principal of tenant alpha.
func opToken(t *testing.T, s *kms.Service, principal, op, detail string) *kms.OpToken {
	t.Helper()
	tok, err := s.MintOpToken(context.Background(), kms.Caller{Tenant: "alpha", Principal: principal}, testWorkflowID, op, detail)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// ctl is a campaign control signal as keyflow's API sends it.
func ctl(t *testing.T, s *kms.Service, signal, principal string) workflows.ControlSignal {
	return workflows.ControlSignal{Principal: principal, Token: opToken(t, s, principal, signal, "")}
}
