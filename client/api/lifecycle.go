package api

import "time"

// Key lifecycle operations (docs/lifecycle.md).
const (
	OpKeySetState         = "keys.setstate"
	OpKeyScheduleDeletion = "keys.scheduledeletion"
	OpKeyCancelDeletion   = "keys.canceldeletion"
	OpKeyCompromise       = "keys.compromise"
	OpKeySetRotation      = "keys.setrotation"
)

// SetKeyStateRequest moves a key, or one of its versions, to another
// lifecycle state along a transition NIST SP 800-57 allows. Version 0 (or
// absent) is the key itself.
type SetKeyStateRequest struct {
	KeyID   string `json:"keyId"`
	State   string `json:"state"`
	Version uint32 `json:"version,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// SetKeyStateReply reports the transition made; Transition is absent when
// the key was already in the state.
type SetKeyStateReply struct {
	Key           KeyMetadata `json:"key"`
	PreviousState string      `json:"previousState"`
	Transition    string      `json:"transition,omitempty"`
}

// ScheduleDeletionRequest puts a key into pending deletion for
// PendingWindowInDays (7 to 30, default 30). With CancelOnUse, an attempt
// to use the key meanwhile cancels the deletion.
type ScheduleDeletionRequest struct {
	KeyID               string `json:"keyId"`
	PendingWindowInDays int    `json:"pendingWindowInDays,omitempty"`
	CancelOnUse         bool   `json:"cancelOnUse,omitempty"`
}

// ScheduleDeletionReply says when the key will be destroyed.
type ScheduleDeletionReply struct {
	KeyID        string    `json:"keyId"`
	KeyState     string    `json:"keyState"`
	DeletionDate time.Time `json:"deletionDate"`
	WorkflowID   string    `json:"workflowId"`
}

// CompromiseRequest records that a version's material is compromised
// (Version 0 or absent: the primary version).
type CompromiseRequest struct {
	KeyID   string `json:"keyId"`
	Version uint32 `json:"version,omitempty"`
	Reason  string `json:"reason"`
}

// CompromiseReply names the remediation workflow the compromise starts.
type CompromiseReply struct {
	KeyID                 string `json:"keyId"`
	Version               uint32 `json:"version"`
	PreviousState         string `json:"previousState"`
	Transition            string `json:"transition,omitempty"`
	RemediationWorkflowID string `json:"remediationWorkflowId"`
}

// SetRotationRequest sets a key's automatic rotation period in days (1 to
// 2555; 0 turns automatic rotation off).
type SetRotationRequest struct {
	KeyID                string `json:"keyId"`
	RotationPeriodInDays int    `json:"rotationPeriodInDays"`
	// RewrapOnRotation, when present, turns the rewrap of registered
	// data keys after each rotation on or off.
	RewrapOnRotation *bool `json:"rewrapOnRotation,omitempty"`
}
