// Package workflows runs keyflow's long-lived lifecycle steps as Temporal
// workflows: key rotation (on demand, on a per-key Temporal Schedule, and
// for a whole fleet), activation at a date, the end of each version's
// cryptoperiod, the waiting period and the destruction of a key scheduled
// for deletion, compromise remediation (lifecycle.go, docs/lifecycle.md),
// archival and recovery (archive.go), approvals (approval.go), the expiry
// of imported material (imports.go), the rewrap of registered data keys
// (rewrap.go: batches, heartbeats, ContinueAsNew with a cursor) and the
// post-quantum migration campaign (migrate.go: targets, dual signing,
// rewrap, an approval gate, cutover, a grace timer, retirement, with
// pause, resume and rollback signals and a status query).
//
// Rules every workflow here keeps:
//
//   - Workflow code is deterministic: workflow.Now and workflow.Sleep, never
//     time.Now, rand, goroutines or map iteration. `go tool task lint` runs
//     Temporal's workflowcheck analyzer over this package.
//   - Inputs and results carry key IDs, version numbers and principals,
//     never key material or plaintext, so nothing secret enters the
//     workflow history.
//   - Activities are methods on [Activities], thin calls into the domain
//     (package kms), and idempotent: each looks before it creates, and a
//     retried activity re-emits its audit event under the same event ID,
//     which the audit stream deduplicates.
//   - Validation failures are non-retryable application errors whose type
//     is the keyflow error code.
package workflows
