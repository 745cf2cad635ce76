package cluster

// temporalEndpoint is how the keyflow processes of the cluster test reach
// Temporal: the frontend's address, the namespace, and the mutual-TLS
// files an operator hands keyflow (temporal.tls in keyflow.yaml).
type temporalEndpoint struct{ Addr, Namespace, CAFile, CertFile, KeyFile string }
