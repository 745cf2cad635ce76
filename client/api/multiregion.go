package api

import "time"

// Multi-region keys (docs/multi-region.md).
const (
	OpKeyReplicate           = "keys.replicate"
	OpKeyUpdatePrimaryRegion = "keys.updateprimaryregion"
	OpKeyReplicaDeletion     = "keys.replicadeletion"
	// OpKeyCancelReplicaDeletion takes a ReplicateKeyRequest naming the
	// replica region whose deletion is cancelled.
	OpKeyCancelReplicaDeletion = "keys.cancelreplicadeletion"
)

// ReplicaDeletionRequest schedules the deletion of one replica of a
// multi-region key, on its primary, with its own waiting period.
type ReplicaDeletionRequest struct {
	KeyID               string `json:"keyId"`
	Region              string `json:"region"`
	PendingWindowInDays int    `json:"pendingWindowInDays"`
}

// ReplicateKeyRequest names a multi-region primary key and a region: for
// keys.replicate, the new replica region (or a disabled one to enable
// again); for keys.updateprimaryregion, the replica region that becomes
// the primary; for keys.cancelreplicadeletion, the replica region whose
// scheduled deletion is cancelled.
type ReplicateKeyRequest struct {
	KeyID  string `json:"keyId"`
	Region string `json:"region"`
}

// ReplicaMetadata is one replica region of a multi-region key, as its
// primary records it.
type ReplicaMetadata struct {
	Region            string `json:"region"`
	State             string `json:"state"`
	LastSyncedVersion uint32 `json:"lastSyncedVersion"`
	// DeletionDate is when a replica PENDING_DELETION is destroyed in
	// its region.
	DeletionDate time.Time `json:"deletionDate,omitzero"`
}
