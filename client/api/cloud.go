package api

import "time"

// Cloud distribution (docs/multi-cloud.md): keyflow owns a key, and AWS
// KMS, Google Cloud KMS and Azure Key Vault hold copies. A tenant admin
// registers destinations (cloud.add, cloud.remove); a key admin
// distributes keys into them (cloud.distribute, cloud.undistribute);
// tenant admins, key admins and auditors read where keys live and how the
// destinations fare (cloud.list, cloud.status).
const (
	OpCloudAdd          = "cloud.add"
	OpCloudList         = "cloud.list"
	OpCloudStatus       = "cloud.status"
	OpCloudRemove       = "cloud.remove"
	OpCloudDistribute   = "cloud.distribute"
	OpCloudUndistribute = "cloud.undistribute"
)

// CloudDestination is a registered destination: an AWS account and
// region, a GCP key ring or an Azure vault. Settings name where it is and
// where its credentials come from, never a credential.
type CloudDestination struct {
	Name     string            `json:"name"`
	Provider string            `json:"provider"`
	Settings map[string]string `json:"settings,omitempty"`
	// Drift is "report" (the default) or "repair".
	Drift string `json:"drift"`
	// ReconcileEverySeconds is how often the reconcile compares the
	// destination with keyflow (0: no scheduled reconcile).
	ReconcileEverySeconds int64     `json:"reconcileEverySeconds,omitempty"`
	CreationDate          time.Time `json:"creationDate"`
}

// CloudAddRequest registers (or replaces) a destination. A positive
// ReconcileEverySeconds schedules the tenant's reconcile at least that
// often.
type CloudAddRequest struct {
	Name                  string            `json:"name"`
	Provider              string            `json:"provider"`
	Settings              map[string]string `json:"settings,omitempty"`
	Drift                 string            `json:"drift,omitempty"`
	ReconcileEverySeconds int64             `json:"reconcileEverySeconds,omitempty"`
}

// CloudListReply lists the tenant's destinations.
type CloudListReply struct {
	Destinations []CloudDestination `json:"destinations"`
}

// CloudNameRequest names one destination (cloud.remove).
type CloudNameRequest struct {
	Name string `json:"name"`
}

// CloudStatusRequest asks for the health and pending work of one
// destination (Name), or of every one (Name empty). With Probe, each
// destination is asked a cheap question (one Describe of a key that does
// not exist), so its health is current rather than the last call's.
type CloudStatusRequest struct {
	Name  string `json:"name,omitempty"`
	Probe bool   `json:"probe,omitempty"`
}

// Health of a destination in CloudDestinationStatus.
const (
	CloudHealthOK          = "ok"          // the probe, or every placement's last call, succeeded
	CloudHealthError       = "error"       // the provider refused (a placement's last error, or the probe)
	CloudHealthUnreachable = "unreachable" // the provider did not answer
	CloudHealthUnknown     = "unknown"     // nothing distributed and no probe asked
)

// CloudStatusReply is the health and pending work of destinations.
type CloudStatusReply struct {
	Destinations []CloudDestinationStatus `json:"destinations"`
}

// CloudDestinationStatus is one destination's health and pending work.
type CloudDestinationStatus struct {
	Name     string `json:"name"`
	Provider string `json:"provider"`
	Drift    string `json:"drift"`
	// Health is ok, error, unreachable or unknown (CloudHealth*).
	Health string `json:"health"`
	// Probe is the probe's outcome, when one was asked.
	Probe *CloudProbe `json:"probe,omitempty"`
	// Placements counts the keys distributed there; Pending lists those
	// with work left: a step started and not finished, a keyflow version
	// not yet there, a state that differs from keyflow's, or an error.
	Placements int              `json:"placements"`
	Pending    []CloudPlacement `json:"pending"`
	// The most recent error of any placement there.
	LastErrorCode string     `json:"lastErrorCode,omitempty"`
	LastError     string     `json:"lastError,omitempty"`
	LastErrorAt   *time.Time `json:"lastErrorAt,omitempty"`
}

// CloudProbe is the outcome of one health probe.
type CloudProbe struct {
	At            time.Time `json:"at"`
	LatencyMillis int64     `json:"latencyMillis"`
	// ErrorCode is the provider's error code ("Unavailable" when it did
	// not answer); empty on success.
	ErrorCode string `json:"errorCode,omitempty"`
	Error     string `json:"error,omitempty"`
}

// CloudPlacement is one key in one destination: where it lives in the
// provider and how far it is in step with keyflow (key describe,
// cloud status).
type CloudPlacement struct {
	KeyID       string `json:"keyId"`
	Destination string `json:"destination"`
	Provider    string `json:"provider"`
	// Resource is the provider's name of the key (an alias ARN, a
	// CryptoKey name, a Key Vault key URL).
	Resource string `json:"resource,omitempty"`
	// KeyVersion is the newest keyflow version there, ProviderVersion the
	// provider's name of it.
	KeyVersion      uint32 `json:"keyVersion,omitempty"`
	ProviderVersion string `json:"providerVersion,omitempty"`
	// State is what keyflow wants the provider to hold: ENABLED, DISABLED
	// or PENDING_DELETION.
	State         string     `json:"state"`
	LastSync      *time.Time `json:"lastSync,omitempty"`
	Pending       string     `json:"pending,omitempty"`
	LastErrorCode string     `json:"lastErrorCode,omitempty"`
	LastError     string     `json:"lastError,omitempty"`
	LastErrorAt   *time.Time `json:"lastErrorAt,omitempty"`
	// Why names the work left, in cloud status ("step rotate started",
	// "keyflow version 3 is not there", ...).
	Why []string `json:"why,omitempty"`
}

// CloudDistributeRequest puts a key into a destination (cloud.distribute)
// or takes it out (cloud.undistribute, where the provider deletes it after
// its own window). With Wait, the reply comes when the workflow is done
// (or the server's wait ran out: Running).
type CloudDistributeRequest struct {
	KeyID       string `json:"keyId"`
	Destination string `json:"destination"`
	Wait        bool   `json:"wait,omitempty"`
}

// CloudDistributeReply names the workflow; when it finished within the
// wait, Placement is where the key now lives (absent after
// undistribute).
type CloudDistributeReply struct {
	KeyID       string          `json:"keyId"`
	Destination string          `json:"destination"`
	WorkflowID  string          `json:"workflowId"`
	Running     bool            `json:"running,omitempty"`
	Placement   *CloudPlacement `json:"placement,omitempty"`
}
