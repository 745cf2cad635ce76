package api

import "time"

// Rotation with rewrap and retirement of old versions (docs/lifecycle.md,
// "Rotation and rewrap").
const (
	// OpKeyRewrapStatus answers the progress of the key's rewrap workflow
	// (rewrap/<tenant>/<key>): the one a rotation with rewrap starts.
	OpKeyRewrapStatus = "keys.rewrapstatus"
	// OpKeyRetireVersion destroys an old version's material once no
	// registered data key uses it.
	OpKeyRetireVersion = "keys.retireversion"
)

// RotateKeyRequest is the request of keys.rotate. With Rewrap the rotation
// then rewraps every registered data key of the key to the new primary
// version (a key whose policy has rewrapOnRotation does so anyway).
type RotateKeyRequest struct {
	KeyID  string `json:"keyId"`
	Rewrap bool   `json:"rewrap,omitempty"`
}

// RewrapCounts is what a rewrap after a rotation did: registrations moved,
// failed, found already current, and still under older versions after it.
// Problem says why the rewrap did not finish (the rotation itself did).
type RewrapCounts struct {
	WorkflowID string `json:"workflowId"`
	Rewrapped  int    `json:"rewrapped"`
	Failed     int    `json:"failed"`
	Skipped    int    `json:"skipped"`
	Remaining  int    `json:"remaining"`
	Problem    string `json:"problem,omitempty"`
}

// RewrapStatusReply is the progress of a key's rewrap workflow, running
// (Done false) or finished.
type RewrapStatusReply struct {
	KeyID      string `json:"keyId"`
	WorkflowID string `json:"workflowId"`
	Rewrapped  int    `json:"rewrapped"`
	Failed     int    `json:"failed"`
	Skipped    int    `json:"skipped"`
	Done       bool   `json:"done"`
}

// RetireVersionRequest names the old version to retire. By default the
// version becomes pending retirement for PendingWindowInDays (7–30,
// default 30); Now destroys it at once; Cancel ends a pending retirement.
type RetireVersionRequest struct {
	KeyID               string `json:"keyId"`
	Version             uint32 `json:"version"`
	PendingWindowInDays int    `json:"pendingWindowInDays,omitempty"`
	Now                 bool   `json:"now,omitempty"`
	Cancel              bool   `json:"cancel,omitempty"`
}

// RetireVersionReply reports the retired version's state change;
// Transition is absent when it was already destroyed.
type RetireVersionReply struct {
	Key           KeyMetadata `json:"key"`
	Version       uint32      `json:"version"`
	PreviousState string      `json:"previousState"`
	State         string      `json:"state"`
	Transition    string      `json:"transition,omitempty"`
	// RetirementDate is set while the version is pending retirement.
	RetirementDate *time.Time `json:"retirementDate,omitempty"`
	WorkflowID     string     `json:"workflowId,omitempty"`
}
