package cluster

// temporalEndpoint is how the cluster test reaches Temporal: a frontend
// address, a namespace, and mutual TLS files (empty for none). The Temporal
// server on PostgreSQL (startTemporalPostgres) and the embedded one
// (embeddedTemporal, for the benchmark) both return one.
type temporalEndpoint struct{ Addr, Namespace, CAFile, CertFile, KeyFile string }
