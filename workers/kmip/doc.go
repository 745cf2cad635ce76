// Package kmip serves OASIS KMIP 1.0-1.4 over TTLV and mutual TLS (port
// 5696 by convention), so that databases, storage arrays and hypervisors
// (MongoDB, Percona pg_tde, VMware vCenter, PyKMIP) keep their keys in
// keyflow.
//
// It is a thin adapter, like workers/xks. A connection's client
// certificate (verified against the configured CA) names the keyflow
// identity: Organization = tenant, CommonName = principal, whose roles
// come from the identity directory (Options.Roles). Each batch item then
// goes through the same domain path as a NATS request: the tenant's quota
// (quota.go), kms.Authorize on the operation's row "kmip.<operation>" of
// kms's operation table, and one domain call that writes the audit record
// (Create is io.keyflow.key.created.v1, Encrypt io.keyflow.crypto.encrypt.v1,
// Get io.keyflow.key.exported.v1, attribute changes
// io.keyflow.kmip.attributes.changed.v1, refusals before any domain call
// io.keyflow.request.rejected.v1 with operation kmip.<operation>).
//
// KMIP objects ARE keyflow keys: the Unique Identifier is the key ID, a
// Symmetric Key is a SYMMETRIC_DEFAULT (AES-256) or HMAC_256 key, and the
// KMIP state is the key's SP 800-57 state (ops.go, stateOf). Get releases
// material only for keys made exportable at Create or Register (Operation
// Policy Name "exportable", or the custom attribute x-keyflow-exportable),
// see kms/export.go.
//
// Bad input: ttlv bounds every message (size, depth, item count) before
// it is read into memory; a message that does not decode gets one Invalid
// Message response and the connection is closed; the server stays up.
//
// The supported operations, profiles and client configurations are in
// docs/kmip.md.
package kmip
