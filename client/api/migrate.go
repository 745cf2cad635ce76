package api

import "time"

// The post-quantum migration campaign (docs/migration.md):
//
//	kf.v1.<tenant>.migrate.start     start a campaign from a plan
//	kf.v1.<tenant>.migrate.status    its progress (counts, rate, ETA)
//	kf.v1.<tenant>.migrate.pause     hold it between batches and steps
//	kf.v1.<tenant>.migrate.resume    go on
//	kf.v1.<tenant>.migrate.rollback  undo it (before retirement)
//	kf.v1.<tenant>.migrate.approve   approve the cutover
//
// Every one answers with the campaign's MigrationStatus.

// Campaign operations.
const (
	OpMigrateStart    = "migrate.start"
	OpMigrateStatus   = "migrate.status"
	OpMigratePause    = "migrate.pause"
	OpMigrateResume   = "migrate.resume"
	OpMigrateRollback = "migrate.rollback"
	OpMigrateApprove  = "migrate.approve"
)

// MigrationStartRequest starts a campaign: each key moves to its target
// spec. CampaignID names it (the workflow ID derives from it); the same
// ID twice joins the running campaign.
type MigrationStartRequest struct {
	CampaignID         string             `json:"campaignId"`
	Keys               []MigrationKeyPlan `json:"keys"`
	GracePeriodSeconds int64              `json:"gracePeriodSeconds,omitempty"`
	DualSigningSeconds int64              `json:"dualSigningSeconds,omitempty"`
	BatchSize          int                `json:"batchSize,omitempty"`
}

// MigrationKeyPlan is one key of a campaign.
type MigrationKeyPlan struct {
	KeyID         string `json:"keyId"`
	TargetKeySpec string `json:"targetKeySpec"`
}

// MigrationRequest names a campaign; for status, empty means the one
// campaign in progress.
type MigrationRequest struct {
	CampaignID string `json:"campaignId,omitempty"`
}

// MigrationStatus is a campaign's progress.
type MigrationStatus struct {
	CampaignID        string               `json:"campaignId"`
	WorkflowID        string               `json:"workflowId"`
	Phase             string               `json:"phase"`
	Paused            bool                 `json:"paused"`
	Done              bool                 `json:"done"`
	Approvals         []string             `json:"approvals"`
	RequiredApprovals int                  `json:"requiredApprovals"`
	Keys              []MigrationKeyStatus `json:"keys"`
	Total             int                  `json:"total"`
	Rewrapped         int                  `json:"rewrapped"`
	Failed            int                  `json:"failed"`
	Skipped           int                  `json:"skipped"`
	RatePerSecond     float64              `json:"ratePerSecond"`
	EtaSeconds        float64              `json:"etaSeconds"`
	StartedAt         time.Time            `json:"startedAt"`
	GraceEndsAt       time.Time            `json:"graceEndsAt,omitzero"`
	Error             string               `json:"error,omitempty"`
}

// MigrationKeyStatus is one key of a campaign.
type MigrationKeyStatus struct {
	SourceKeyID   string `json:"sourceKeyId"`
	TargetKeyID   string `json:"targetKeyId,omitempty"`
	TargetKeySpec string `json:"targetKeySpec"`
	Signing       bool   `json:"signing"`
	Total         int    `json:"total"`
	Rewrapped     int    `json:"rewrapped"`
	Failed        int    `json:"failed"`
	Skipped       int    `json:"skipped"`
	Retired       bool   `json:"retired"`
	RetireBlocked bool   `json:"retireBlocked"`
}

// AdditionalSignature is a second signature of the same message, by the
// key a migration moves the signing key to. Verify accepts it on either
// key.
type AdditionalSignature struct {
	KeyID            string `json:"keyId"`
	KeyVersion       uint32 `json:"keyVersion"`
	SigningAlgorithm string `json:"signingAlgorithm"`
	Signature        []byte `json:"signature"`
}
